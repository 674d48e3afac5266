"""Token layers: transformer activations ``(N, T, C)`` seen as ``(N, C, h, w)`` maps of their patch tokens.

A vision transformer's tokens are ``P`` prefix tokens (a class token, a
distillation token, register tokens) followed by the ``h x w`` patch tokens in
row-major order, so ``T = P + h*w``. Grad-CAM and its family need a spatial
map, so a token layer is explained through a *view*: drop the prefix, reshape
the patch tokens to the grid, move channels to axis 1. pytorch-grad-cam asks
its users for that ``reshape_transform`` by hand; here the grid is read from the
graph, where the patch embedding's output grid is known:

* the spatial size of a feature map the tokens are computed from (the patch
  embedding Conv, or a Swin stage's channels-last map), or that size halved,
  quartered, ... (patch merging), whichever leaves ``0 <= P <= MAX_PREFIX``;
* failing that (a patch embedding written as Reshape + MatMul), the grid with
  the image's aspect ratio and the fewest prefix tokens.

``token_grid`` and ``prefix_tokens`` override both. The batch axis is found from
the input's batch dim, so ``(T, N, C)`` layers (``batch_first=False``
attention) are views too, and the ``(N * windows, L, C)`` tensors inside a Swin
window attention, whose leading dim is not the batch, are not layers at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxcam.errors import LayerError
from onnxcam.graph.builder import GraphBuilder
from onnxcam.graph.index import Dim, Shape

#: The most prefix tokens a detected grid may leave (class + distillation + registers; DINOv2 uses 1 + 4).
MAX_PREFIX = 32
#: Patch-merging factors tried from a feature map's grid to a later stage's token count.
_MERGE_FACTORS = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens of a token layer are: ``T = prefix + grid[0] * grid[1]`` along ``token_axis``."""

    grid: tuple[int, int]
    prefix: int
    batch_axis: int  # 0 for (N, T, C), 1 for (T, N, C)
    source: str  # how the grid was found, for messages

    @property
    def token_axis(self) -> int:
        return 1 - self.batch_axis

    def describe(self) -> str:
        h, w = self.grid
        layout = "NTC" if self.batch_axis == 0 else "TNC"
        prefix = f"{self.prefix} prefix + " if self.prefix else ""
        return f"tokens {layout}: {prefix}{h}x{w} patches"


@dataclass(frozen=True)
class TokenOverrides:
    """The user's ``token_grid`` and ``prefix_tokens``: either may be None (found from the graph)."""

    grid: tuple[int, int] | None = None
    prefix: int | None = None

    def __post_init__(self) -> None:
        grid, prefix = self.grid, self.prefix
        if grid is not None and (
            not isinstance(grid, (tuple, list)) or len(grid) != 2 or not all(type(d) is int and d > 0 for d in grid)
        ):
            raise LayerError(f"token_grid must be two positive ints (height, width), e.g. (14, 14); got {grid!r}")
        if prefix is not None and (type(prefix) is not int or prefix < 0):
            raise LayerError(f"prefix_tokens must be a non-negative int, e.g. 1 for a class token; got {prefix!r}")
        if grid is not None:
            object.__setattr__(self, "grid", (int(grid[0]), int(grid[1])))

    @property
    def given(self) -> bool:
        return self.grid is not None or self.prefix is not None


def token_axes(shape: Shape, batch: Dim) -> tuple[int, int] | None:
    """(batch axis, token count) of a rank-3 ``shape`` whose channels are last, or None if it is not a token layer."""
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in (shape[2],)):
        return None
    for batch_axis in (0, 1):
        tokens = shape[1 - batch_axis]
        if shape[batch_axis] == batch and isinstance(tokens, int) and tokens >= 2 and tokens != batch:
            return batch_axis, tokens
    return None


def find_layout(
    tokens: int,
    batch_axis: int,
    map_grids: Sequence[tuple[int, int]],
    image_hw: tuple[Dim, Dim],
) -> TokenLayout | None:
    """The grid and prefix of ``tokens`` tokens, from upstream maps' grids (latest first), else the image's shape.

    The image's aspect ratio is only a guess for models with no feature map
    upstream (a linear patch embedding): where there are maps and the count
    fits none of their grids, the tokens are not patches of the image (a DETR
    decoder's object queries, computed from a backbone's map), and no layout
    is returned.
    """
    for h0, w0 in map_grids:
        for factor in _MERGE_FACTORS:
            if h0 % factor or w0 % factor:
                break
            h, w = h0 // factor, w0 // factor
            if 0 <= tokens - h * w <= min(MAX_PREFIX, h * w - 1):  # not (N, C, h*w) read as tokens
                return TokenLayout((h, w), tokens - h * w, batch_axis, f"the {h0}x{w0} feature map it comes from")
    height, width = image_hw
    if map_grids or not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        return None
    for prefix in range(min(MAX_PREFIX, (tokens - 1) // 2) + 1):
        grid = _grid_with_aspect(tokens - prefix, height, width)
        if grid is not None:
            return TokenLayout(grid, prefix, batch_axis, f"the {height}x{width} image's aspect ratio")
    return None


def overridden(
    layer_name: str, tokens: int, layout: TokenLayout | None, batch_axis: int, given: TokenOverrides
) -> TokenLayout:
    """``layout`` with the user's grid and prefix count applied, or a LayerError that names both options."""
    what = f"layer {layer_name!r} has {tokens} tokens"
    grid, prefix = given.grid, given.prefix
    if prefix is not None and prefix >= tokens:
        raise LayerError(f"{what}, so prefix_tokens={prefix} leaves no patch tokens; pass a smaller --prefix-tokens")
    if grid is None:
        assert prefix is not None
        shaped = layout.grid if layout is not None and layout.grid[0] * layout.grid[1] == tokens - prefix else None
        grid = shaped or _square_ish(tokens - prefix)
        if grid is None:
            raise LayerError(
                f"{what}; with prefix_tokens={prefix} the other {tokens - prefix} fit no grid onnxcam can guess: "
                "pass token_grid=(h, w) too (--token-grid HxW)"
            )
    if prefix is None:
        prefix = tokens - grid[0] * grid[1]
        if prefix < 0:
            raise LayerError(
                f"{what}, fewer than the {grid[0] * grid[1]} patches of token_grid={grid[0]}x{grid[1]}; "
                "pass the grid the model's patch embedding makes (--token-grid HxW)"
            )
    if prefix + grid[0] * grid[1] != tokens:
        raise LayerError(
            f"{what}, which token_grid={grid[0]}x{grid[1]} with prefix_tokens={prefix} does not fit "
            f"({prefix} + {grid[0]}*{grid[1]} = {prefix + grid[0] * grid[1]}); "
            "set --token-grid HxW and --prefix-tokens P so that P + H*W equals the token count"
        )
    return TokenLayout(grid, prefix, batch_axis, "token_grid/prefix_tokens")


def _grid_with_aspect(count: int, height: int, width: int) -> tuple[int, int] | None:
    """(h, w) with h*w = count and h/w = height/width exactly, if there is one."""
    h = round(math.sqrt(count * height / width))
    for cand in (h - 1, h, h + 1):
        if cand > 0 and count % cand == 0 and cand * width == (count // cand) * height:
            return cand, count // cand
    return None


def _square_ish(count: int) -> tuple[int, int] | None:
    side = math.isqrt(count)
    return (side, side) if side * side == count else None


def token_map(b: GraphBuilder, tensor: str, layout: TokenLayout) -> str:
    """In the graph: a token tensor -> the ``(N, C, h, w)`` map of its patch tokens; the batch axis stays dynamic."""
    h, w = layout.grid
    batch_first = tensor if layout.batch_axis == 0 else b.op("Transpose", tensor, perm=[1, 0, 2], hint="tokens_ntc")
    patches = batch_first
    if layout.prefix:
        end = layout.prefix + h * w
        patches = b.op("Slice", batch_first, b.ints([layout.prefix]), b.ints([end]), b.ints([1]), hint="patch_tokens")
    grid = b.op("Reshape", patches, b.ints([0, h, w, -1]), hint="token_grid")
    return b.op("Transpose", grid, perm=[0, 3, 1, 2], hint="token_map")


def tokens_from_map(patch_map: np.ndarray, tokens: np.ndarray, layout: TokenLayout | None) -> np.ndarray:
    """On the host, :func:`token_map` undone: ``tokens`` (n, T, C) with the patch tokens of ``patch_map`` (n, C, h, w).

    The prefix tokens stay the model's own (Ablation-CAM replaces the map, not
    the class token); returned in the layer's own order, (T, n, C) for TNC layers.
    """
    assert layout is not None and len(patch_map) == len(tokens)
    rows = tokens.astype(patch_map.dtype, copy=True)
    rows[:, layout.prefix :, :] = patch_map.reshape(len(patch_map), patch_map.shape[1], -1).transpose(0, 2, 1)
    return rows if layout.batch_axis == 0 else rows.transpose(1, 0, 2)

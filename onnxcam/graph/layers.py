"""Find the spatial feature maps a CAM can be computed on, and pick one automatically.

ONNX convolutions are always channels-first, but tf2onnx and Keras exports
wrap them in Transposes (or, with one channel, Reshapes) so that the tensors
between them are channels-last. Layout is therefore propagated through the
graph from the ops that fix it (Conv, pooling, normalisation) instead of being
guessed from shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import onnx

from onnxcam.errors import LayerError, OnnxcamError
from onnxcam.graph.index import Dim, GraphIndex, Shape, static_dims
from onnxcam.graph.tokens import TokenLayout, TokenOverrides, find_layout, overridden, token_axes

#: Ops whose 4-D inputs and outputs are channels-first by the ONNX spec.
_CHANNELS_FIRST_OPS = {
    "Conv",
    "ConvTranspose",
    "ConvInteger",
    "QLinearConv",
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
    "BatchNormalization",
    "InstanceNormalization",
    "LRN",
    "DepthToSpace",
    "SpaceToDepth",
    "MaxRoiPool",
    "RoiAlign",
}
#: Ops whose 4-D inputs and outputs all share one layout (broadcast operands included).
_LAYOUT_PRESERVING_OPS = {
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Softplus",
    "Softsign",
    "Erf",
    "Gelu",
    "Mish",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "Mean",
    "Max",
    "Min",
    "Pow",
    "Sqrt",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Identity",
    "Dropout",
    "Cast",
    "Concat",
    "Pad",
    "Slice",
    "Split",
    "Resize",
    "Upsample",
    "QuantizeLinear",
    "DequantizeLinear",
    "Where",
    "Reciprocal",
}


@dataclass(frozen=True)
class CandidateLayer:
    """A layer a CAM can be computed on: the tensor, the node that makes it, its shape and layout.

    A 4-D feature map is NCHW (``channel_axis`` 1) or NHWC (3). A token layer
    (``tokens`` set, see :mod:`onnxcam.graph.tokens`) is ``(N, T, C)`` or
    ``(T, N, C)``; the CAM head sees it as the ``(N, C, h, w)`` map of its patch
    tokens, so ``channel_axis``, ``spatial_axes`` and ``spatial_size`` describe
    that map, and ``shape`` the tensor itself.
    """

    name: str
    node_name: str
    op_type: str
    shape: Shape
    channel_axis: int
    position: int
    tokens: TokenLayout | None = None

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return (2, 3) if self.channel_axis == 1 else (1, 2)

    @property
    def spatial_size(self) -> tuple[Dim, ...]:
        if self.tokens is not None:
            return self.tokens.grid
        return tuple(self.shape[a] for a in self.spatial_axes)

    @property
    def channels(self) -> Dim:
        return self.shape[-1] if self.tokens is not None else self.shape[self.channel_axis]

    @property
    def map_shape(self) -> Shape:
        """The shape of the map the CAM head reads: the tensor's, or a token layer's (N, C, h, w) view."""
        if self.tokens is None:
            return self.shape
        return (self.shape[self.tokens.batch_axis], self.channels, *self.tokens.grid)

    @property
    def layout(self) -> str:
        if self.tokens is not None:
            return "NTC" if self.tokens.batch_axis == 0 else "TNC"
        return "NCHW" if self.channel_axis == 1 else "NHWC"

    def describe(self) -> str:
        where = f"{self.op_type} node {self.node_name!r}, {self.channels} channels"
        if self.tokens is not None:
            return f"{self.name!r} ({where}, {self.tokens.describe()})"
        dims = "x".join(str(d) if isinstance(d, int) else "?" for d in self.spatial_size)
        return f"{self.name!r} ({where}, {dims}, {self.layout})"

    def row(self) -> dict[str, Any]:
        """What ``onnxcam layers --json`` and the server's ``/layers`` say of the layer.

        ``channel_axis`` is the tensor's own (2 for ``(N, T, C)`` tokens); token
        layers add their patch grid and prefix token count.
        """
        row: dict[str, Any] = {
            "name": self.name,
            "op": self.op_type,
            "shape": [d if isinstance(d, int) else str(d) for d in self.shape],
            "layout": self.layout,
            "channel_axis": 2 if self.tokens is not None else self.channel_axis,
        }
        if self.tokens is not None:
            row["token_grid"] = list(self.tokens.grid)
            row["prefix_tokens"] = self.tokens.prefix
        return row

    def with_tokens(self, overrides: TokenOverrides) -> CandidateLayer:
        """This layer with the user's token grid and prefix count, or a LayerError saying why they do not apply."""
        if not overrides.given:
            return self
        if self.tokens is None and len(self.shape) == 4:
            raise LayerError(
                f"token_grid and prefix_tokens apply to token layers (batch, tokens, channels), but layer "
                f"{self.name!r} is a 4-D feature map already ({self.layout}); drop --token-grid/--prefix-tokens"
            )
        batch_axis = 0 if self.tokens is None else self.tokens.batch_axis
        count = self.shape[1 - batch_axis]
        assert isinstance(count, int)  # token_axes only accepts static token counts
        return replace(self, tokens=overridden(self.name, count, self.tokens, batch_axis, overrides))


def _spatial_above_one(c: CandidateLayer) -> bool:
    return any(not isinstance(d, int) or d > 1 for d in c.spatial_size)


def infer_channel_axes(index: GraphIndex) -> dict[str, int]:
    """Channel axis (1 or 3) of every 4-D tensor whose layout the graph pins down."""
    axis: dict[str, int] = {}

    def rank4(name: str) -> bool:
        s = index.shape(name)
        return s is not None and len(s) == 4

    # The ops the ONNX spec fixes first; then, for what is still unknown, the channels-last hints (a LayerNorm over
    # the last axis, a linear layer after it), so that a Conv's NCHW always wins over a hint.
    for hints in (False, True):
        _sweep(index, axis, rank4, hints)
    return axis


def _sweep(index: GraphIndex, axis: dict[str, int], rank4: Callable[[str], bool], hints: bool) -> None:
    """Forward and backward sweeps over the graph until no tensor's layout changes (see infer_channel_axes)."""
    for _ in range(4):
        before = len(axis)
        for node in index.nodes:
            op = node.op_type
            data_in = [i for i in node.input if i and rank4(i)]
            outs = [o for o in node.output if o and rank4(o)]
            if op in _CHANNELS_FIRST_OPS:
                for t in data_in[:1] + outs[:1]:
                    axis.setdefault(t, 1)
            elif op == "Transpose":
                perm = _perm(node)
                if perm is None or len(perm) != 4 or not node.input or not rank4(node.input[0]):
                    continue
                src, dst = node.input[0], node.output[0]
                if src in axis:
                    axis.setdefault(dst, perm.index(axis[src]))
                elif dst in axis:
                    axis.setdefault(src, perm[axis[dst]])
            elif op in _LAYOUT_PRESERVING_OPS and outs:
                known = next((axis[t] for t in data_in + outs if t in axis), None)
                if known is not None:
                    for t in data_in + outs:
                        axis.setdefault(t, known)
            elif op == "LayerNormalization" and hints and outs and data_in[:1] == node.input[:1]:
                labelled = {a for a in (axis.get(node.input[0]), axis.get(outs[0])) if a is not None}
                if _last_axis_only(node) and labelled <= {3}:  # normalising channels-last maps (Swin, ConvNeXt)
                    for t in data_in[:1] + outs[:1]:
                        axis.setdefault(t, 3)
            elif op == "MatMul" and hints and outs and data_in[:1] == node.input[:1]:
                if axis.get(node.input[0]) == 3 and _is_matrix(index, node.input[1]):  # a linear layer over NHWC C
                    axis.setdefault(outs[0], 3)
            elif op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze") and outs and data_in:
                # tf2onnx swaps NHWC<->NCHW with a Reshape when there is one channel
                src, dst = data_in[0], outs[0]
                s_src, s_dst = index.shape(src), index.shape(dst)
                assert s_src is not None and s_dst is not None  # both rank 4
                if dst in axis and src not in axis and axis[dst] == 1 and s_dst[1] == 1 and s_src[3] == 1:
                    axis[src] = 3
                elif src in axis and dst not in axis and axis[src] == 3 and s_src[3] == 1 and s_dst[1] == 1:
                    axis[dst] = 1
        if len(axis) == before:
            break


def _last_axis_only(node: onnx.NodeProto) -> bool:
    """True for a 4-D LayerNormalization over the last axis alone (its ``axis`` is -1 or 3)."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    return axis in (-1, 3)


def _is_matrix(index: GraphIndex, name: str) -> bool:
    """True when ``name`` is a constant 2-D weight matrix."""
    shape = index.shape(name)
    return name in index.initializers and shape is not None and len(shape) == 2


def _perm(node: onnx.NodeProto) -> list[int] | None:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None


_FEATURE_OPS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"}
#: Ops with learned weights that may embed patches as tokens (a patch embedding written as Reshape + MatMul).
_TOKEN_EMBEDDING_OPS = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"}
#: How many grids of upstream feature maps a token layer remembers (latest first) to find its own grid.
_GRIDS_KEPT = 4


def candidate_layers(index: GraphIndex) -> list[CandidateLayer]:
    """Every layer a CAM can be computed on, in graph order: feature maps and token layers.

    Feature maps are 4-D floating-point activations with a known layout and a
    spatial size above 1x1; token layers are ``(N, T, C)`` / ``(T, N, C)``
    activations whose patch grid is found (:func:`onnxcam.graph.tokens.find_layout`).
    Only tensors computed by some convolution (for tokens: or a learned matrix
    product) count: the input image and its in-graph preprocessing
    (transposes, mean subtraction) are not feature maps.
    """
    axes = infer_channel_axes(index)
    batch, image_hw = _batch_and_image_size(index)
    normalised = _normalised_token_shapes(index, batch)
    learned: set[str] = set()
    token_learned: set[str] = set()
    grids: dict[str, tuple[tuple[int, int], ...]] = {}  # the grids of the maps a tensor is computed from
    found = []
    for pos, node in enumerate(index.nodes):
        if node.op_type in _FEATURE_OPS or any(i in learned for i in node.input):
            learned.update(node.output)
        embeds = node.op_type in _TOKEN_EMBEDDING_OPS and any(i in index.initializers for i in node.input)
        if embeds or node.op_type in _FEATURE_OPS or any(i in token_learned for i in node.input):
            token_learned.update(node.output)
        inherited = _merged_grids([grids.get(i, ()) for i in node.input if i])
        for out in node.output:
            t = index.type_of(out)
            if not out or t is None or not t.is_float or t.shape is None:
                continue
            cand = None
            if out in axes and out in learned:
                cand = CandidateLayer(out, node.name, node.op_type, t.shape, axes[out], pos)
                if not _spatial_above_one(cand):
                    cand = None
            elif out in token_learned and (found_axes := token_axes(t.shape, batch)) is not None:
                layout = find_layout(found_axes[1], found_axes[0], inherited, image_hw)
                if layout is not None and (found_axes[1], t.shape[2]) in normalised:
                    cand = CandidateLayer(out, node.name, node.op_type, t.shape, 1, pos, tokens=layout)
            if cand is not None:
                found.append(cand)
            own = static_dims(cand.spatial_size) if cand is not None and cand.tokens is None else None
            if own is not None and len(own) == 2:
                grids[out] = _merged_grids([((own[0], own[1]),), inherited])
            elif inherited:
                grids[out] = inherited
    return found


#: Ops that normalise over their input's last axis when ``axis`` / ``axes`` says -1 (or the rank minus one).
_LAST_AXIS_NORMALISERS = {"LayerNormalization", "ReduceMean", "RMSNormalization", "SimplifiedLayerNormalization"}


def _normalised_token_shapes(index: GraphIndex, batch: Dim) -> set[tuple[int, int]]:
    """(tokens, channels) of every rank-3 tensor some node normalises over its channels (its last axis).

    Every vision-transformer family normalises its tokens over the channels
    (LayerNorm, or its decomposition ``x - ReduceMean(x, axes=[-1])`` in
    exports before opset 17, or RMSNorm), so a (tokens, channels) pair seen
    there tells the residual stream and its projections from look-alikes of
    the same rank: a transposed key ``(N, C, T)``, the token-by-token
    attention scores ``(N, T, T)``, a channels-first ``(N, C, h*w)`` reshape.
    """
    pairs = set()
    for node in index.nodes:
        if node.op_type not in _LAST_AXIS_NORMALISERS or not node.input:
            continue
        shape = index.shape(node.input[0])
        if shape is None or len(shape) != 3 or not _over_last_axis(index, node):
            continue
        found, channels = token_axes(shape, batch), shape[2]
        if found is not None and isinstance(channels, int):
            pairs.add((found[1], channels))
    return pairs


def normalises_tokens(index: GraphIndex) -> bool:
    """Whether some node normalises a rank-3 tensor over its last axis: the mark of a transformer's token stream.

    Unlike :func:`_normalised_token_shapes` this needs no sizes, so it also
    answers for a model exported with a dynamic image size, whose token count
    is only known once the size is pinned.
    """
    return any(
        node.op_type in _LAST_AXIS_NORMALISERS
        and node.input
        and len(index.shape(node.input[0]) or ()) == 3
        and _over_last_axis(index, node)
        for node in index.nodes
    )


def _over_last_axis(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """True when a normalising node of a rank-3 input reduces its last axis alone."""
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "ReduceMean":
        axes = list(attrs["axes"].ints) if "axes" in attrs else None
        if axes is None and len(node.input) > 1:
            value = index.constant_value(node.input[1])
            axes = None if value is None else [int(v) for v in value.reshape(-1)]
        return axes in ([-1], [2])
    return (attrs["axis"].i if "axis" in attrs else -1) in (-1, 2)


def _merged_grids(lists: Sequence[tuple[tuple[int, int], ...]]) -> tuple[tuple[int, int], ...]:
    """The grids of several inputs, the first list's first, without repeats, at most :data:`_GRIDS_KEPT`."""
    merged: list[tuple[int, int]] = []
    for grid in (g for grids in lists for g in grids):
        if grid not in merged:
            merged.append(grid)
    return tuple(merged[:_GRIDS_KEPT])


def _batch_and_image_size(index: GraphIndex) -> tuple[Dim, tuple[Dim, Dim]]:
    """The batch dim of the model's first 4-D input (else its first input) and that image's (height, width)."""
    for name in index.inputs:
        axes = input_spatial_axes(index, name)
        shape = index.shape(name)
        if axes is not None and shape is not None:
            return shape[0], (shape[axes[0]], shape[axes[1]])
    first = index.shape(index.inputs[0]) if index.inputs else None
    return (first[0] if first else None), (None, None)


def input_spatial_axes(index: GraphIndex, input_name: str) -> tuple[int, int] | None:
    """Spatial axes of a 4-D model input, from the layout the graph implies, else from its shape."""
    shape = index.shape(input_name)
    if shape is None or len(shape) != 4:
        return None
    axis = infer_channel_axes(index).get(input_name)
    if axis is None:
        small = {1, 2, 3, 4}
        if shape[1] in small and shape[3] not in small:
            axis = 1
        elif shape[3] in small and shape[1] not in small:
            axis = 3
        else:
            axis = 1
    return (2, 3) if axis == 1 else (1, 2)


def image_axes(index: GraphIndex, image: str) -> tuple[int, int]:
    """The (height, width) axes of ``image``, an input :func:`image_input` picked (so it is 4-D)."""
    axes = input_spatial_axes(index, image)
    if axes is None:
        raise OnnxcamError(f"input {image!r} is not a 4-D image, so it has no height and width to map a heatmap on")
    return axes


def image_size(index: GraphIndex, image: str) -> tuple[Dim, Dim]:
    """The (height, width) of ``image``, an input :func:`image_input` picked: ints where static."""
    shape = index.known_type(image).dims
    height, width = image_axes(index, image)
    return shape[height], shape[width]


def image_input(index: GraphIndex, layers: Sequence[CandidateLayer | str] | None = None) -> str:
    """The model input the heatmap covers: the 4-D input the layers are computed from.

    The one picker for the explainer graph and for preprocessing, so the image
    is sized and fed for the input its heatmap is drawn over. Input 0 need not
    be the image: a model may take a vector, a scalar or another 4-D tensor
    beside it (metadata, a mask, a timestep). Several image inputs of one
    static size (RGB + depth) share one heatmap size and the first is used; of
    different sizes there is no single image to draw over. Without ``layers``
    (preprocessing before a layer is chosen) the image is the first 4-D input
    some feature map is computed from, else the first 4-D input.
    """
    if layers is None:
        return _default_image_input(index)
    names = [layer if isinstance(layer, str) else layer.name for layer in layers]
    images = _image_inputs_of(index, names)
    shown = ", ".join(map(repr, names))
    if not images:
        shapes = ", ".join(f"{n!r} {index.shape(n)}" for n in index.inputs)
        raise OnnxcamError(
            f"layer {shown} is not computed from a 4-D image input (model inputs: {shapes}); "
            "onnxcam explains image models with NCHW or NHWC inputs"
        )
    sizes = set()
    for n in images:
        shape, spatial = index.shape(n), input_spatial_axes(index, n)
        assert shape is not None and spatial is not None  # _image_inputs_of returns 4-D inputs only
        sizes.add(tuple(shape[a] for a in spatial))
    if len(images) > 1 and (len(sizes) > 1 or not all(isinstance(d, int) and d > 0 for hw in sizes for d in hw)):
        raise OnnxcamError(
            f"layer {shown} is computed from several image inputs of different or dynamic sizes "
            f"({', '.join(map(repr, images))}), so the heatmap has no single image to cover; "
            "choose a layer computed from one of them"
        )
    return images[0]


def _default_image_input(index: GraphIndex) -> str:
    """The first 4-D input a feature map is computed from, else the first 4-D input: never a side input."""
    images = _image_inputs_of(index, [c.name for c in candidate_layers(index)])
    images = images or [n for n in index.inputs if input_spatial_axes(index, n) is not None]
    if not images:
        raise OnnxcamError(f"the model has no 4-D image input (inputs: {[(n, index.shape(n)) for n in index.inputs]})")
    return images[0]


def _image_inputs_of(index: GraphIndex, tensors: Sequence[str]) -> list[str]:
    """The 4-D model inputs that any of ``tensors`` is computed from, in input order."""
    upstream = index.upstream(tensors)
    return [name for name in index.inputs if name in upstream and input_spatial_axes(index, name) is not None]


def resolve_layer(
    index: GraphIndex, spec: str, candidates: list[CandidateLayer], tokens: TokenOverrides | None = None
) -> CandidateLayer:
    """Map a tensor name or node name to a candidate, with an error that lists what exists.

    ``tokens``: the user's token grid and prefix count, applied to the layer
    (a rank-3 tensor whose grid was not found becomes a token layer with them).
    """
    tokens = tokens or TokenOverrides()
    by_name = {c.name: c for c in candidates}
    if spec in by_name:
        return by_name[spec].with_tokens(tokens)
    node = index.node_by_name(spec)
    if node is not None:
        for out in node.output:
            if out in by_name:
                return by_name[out].with_tokens(tokens)
        spec_tensor = node.output[0] if node.output else spec
    else:
        spec_tensor = spec
    if spec_tensor in index.inputs:
        raise LayerError(
            f"layer {spec!r} is the model's input, not a feature map inside it: a CAM weighs the channels of an "
            f"inner layer; pick one of `onnxcam layers MODEL`, e.g. {_examples(candidates)}, or use layer='auto'"
        )
    if spec_tensor in index.types or spec_tensor in index.producer or node is not None:
        token_layer = _unplaced_token_layer(index, spec_tensor, tokens)
        if token_layer is not None:
            return token_layer
        shape = index.shape(spec_tensor)
        hint = ""
        if shape is not None and len(shape) == 3:
            hint = "; for a token layer whose grid onnxcam cannot find, pass token_grid=(h, w) (--token-grid HxW)"
        raise LayerError(
            f"layer {spec!r} is not a spatial feature map or token layer (shape {shape}); "
            f"pick a 4-D activation with height and width above 1 or a (batch, tokens, channels) one, "
            f"e.g. {_examples(candidates)}{hint}"
        )
    raise LayerError(
        f"layer {spec!r} is neither a tensor nor a node of the model; candidates include {_examples(candidates)}"
    )


def _unplaced_token_layer(index: GraphIndex, tensor: str, tokens: TokenOverrides) -> CandidateLayer | None:
    """A rank-3 float tensor made a token layer by the user's grid, when onnxcam found none for it."""
    t = index.type_of(tensor)
    node = index.producer.get(tensor)
    if not tokens.given or t is None or not t.is_float or t.shape is None or node is None:
        return None
    found = token_axes(t.shape, _batch_and_image_size(index)[0])
    if found is None:
        return None
    batch_axis, count = found
    layout = overridden(tensor, count, None, batch_axis, tokens)
    return CandidateLayer(tensor, node.name, node.op_type, t.shape, 1, index.position(node), tokens=layout)


def _examples(candidates: list[CandidateLayer]) -> str:
    names = [repr(c.name) for c in candidates[-3:]]
    return ", ".join(names) if names else "(none found)"

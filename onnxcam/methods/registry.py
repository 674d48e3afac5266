"""The CAM method registry, and the one pipeline step every method shares: the sum over channels.

Most methods are what pytorch-grad-cam calls ``get_cam_weights``: one weight
``w_k`` per channel, and the map is ``sum_k w_k A_k``. They register with
:func:`channel_weighting` and return the weights; the pipeline then takes the
sum as one batched MatMul, ``(N, 1, C) @ (N, C, h*w)``, instead of
materialising every ``w_k A_k`` and reducing it (two passes over the layer,
and most of the cost of the CAM head on a small model).

Methods that weight each position (HiResCAM, LayerCAM, ...) register with
:func:`position_weighting` and return the contributions ``M_k^ij`` themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from onnxcam.graph.builder import GraphBuilder

#: (builder, A, G, spatial_axes) -> a tensor name: channel weights (spatial dims kept as 1) or contributions.
CamFormula = Callable[[GraphBuilder, str, str, Sequence[int]], str]


@dataclass(frozen=True)
class CamMethod:
    """One registered method: its formula, and whether that formula gives channel weights or contributions."""

    name: str
    formula: CamFormula
    per_channel: bool  # True: ``formula`` returns w_k shaped (N, C, 1, 1) / (N, 1, 1, C); False: M_k shaped like A

    def __call__(self, b: GraphBuilder, A: str, G: str, spatial_axes: Sequence[int]) -> str:
        return self.formula(b, A, G, spatial_axes)


CAM_METHODS: dict[str, CamMethod] = {}


def channel_weighting(name: str) -> Callable[[CamFormula], CamFormula]:
    """Register a method whose formula returns one weight per channel (``M_k = w_k A_k``)."""
    return _register(name, per_channel=True)


def position_weighting(name: str) -> Callable[[CamFormula], CamFormula]:
    """Register a method whose formula returns the per-position contributions ``M_k^ij``."""
    return _register(name, per_channel=False)


def _register(name: str, per_channel: bool) -> Callable[[CamFormula], CamFormula]:
    def register(fn: CamFormula) -> CamFormula:
        CAM_METHODS[name] = CamMethod(name, fn, per_channel)
        return fn

    return register


def contributions(b: GraphBuilder, method: str, A: str, G: str, spatial_axes: Sequence[int]) -> str:
    """``M_k^ij`` shaped like ``A``: what eigen-smoothing decomposes instead of summing."""
    m = CAM_METHODS[method]
    out = m(b, A, G, spatial_axes)
    return b.op("Mul", out, A, hint="weighted") if m.per_channel else out


def channel_sum(b: GraphBuilder, method: str, A: str, G: str, channel_axis: int,
                spatial_size: Sequence[int | str | None]) -> str:
    """``sum_k M_k^ij`` as ``(N, h, w)``, before the ReLU: the low-resolution map of one layer.

    ``channel_axis`` is 1 (NCHW) or 3 (NHWC); ``spatial_size`` is the layer's
    ``(h, w)`` (ints where static), used to shape the NCHW product back.
    """
    m = CAM_METHODS[method]
    spatial_axes = (2, 3) if channel_axis == 1 else (1, 2)
    out = m(b, A, G, spatial_axes)
    if not m.per_channel:
        return b.reduce("ReduceSum", out, [channel_axis], keepdims=False, hint="cam_sum")
    if channel_axis == 3:  # (N, h, w, C) @ (N, 1, C, 1) -> (N, h, w, 1)
        column = b.op("Reshape", out, b.ints([0, 1, -1, 1]), hint="weights_col")
        return b.op("Squeeze", b.op("MatMul", A, column, hint="cam_sum4"), b.ints([3]), hint="cam_sum")
    row = b.op("Reshape", out, b.ints([0, 1, -1]), hint="weights_row")  # (N, 1, C)
    flat = b.op("Reshape", A, b.ints([0, 0, -1]), hint="A_flat")  # (N, C, h*w)
    summed = b.op("MatMul", row, flat, hint="cam_sum_flat")  # (N, 1, h*w)
    if all(isinstance(d, int) and d > 0 for d in spatial_size):
        shape = b.ints([0, *spatial_size])
    else:
        shape = b.op("Concat", b.shape_of(A, start=0, end=1), b.shape_of(A, start=2, end=4), axis=0, hint="cam_shape")
    return b.op("Reshape", summed, shape, hint="cam_sum")

"""The in-graph step every gradient method shares: its formula, then the sum over channels.

Most methods are what pytorch-grad-cam calls ``get_cam_weights``: one weight
``w_k`` per channel (``per_channel`` in :mod:`onnxcam.methods.table`), and
the map is ``sum_k w_k A_k``. The sum is one batched MatMul,
``(N, 1, C) @ (N, C, h*w)``, instead of materialising every ``w_k A_k`` and
reducing it (two passes over the layer, and most of the cost of the CAM head
on a small model). Methods that weight each position (HiResCAM, LayerCAM, ...)
return the contributions ``M_k^ij`` themselves, and those are summed.
"""

from __future__ import annotations

from collections.abc import Sequence

from onnxcam.graph.builder import GraphBuilder
from onnxcam.graph.index import Dim, static_dims
from onnxcam.methods.spec import CamFormula
from onnxcam.methods.table import method_spec


def _formula(method: str) -> tuple[CamFormula, bool]:
    """The in-graph formula of ``method``, and whether it gives channel weights (True) or contributions."""
    spec = method_spec(method)
    if spec.formula is None:
        raise ValueError(f"method {method!r} has no in-graph formula; its graph computes {spec.graph_method!r}")
    return spec.formula, spec.per_channel


def contributions(b: GraphBuilder, method: str, A: str, G: str, spatial_axes: Sequence[int]) -> str:
    """``M_k^ij`` shaped like ``A``: what eigen-smoothing decomposes instead of summing."""
    formula, per_channel = _formula(method)
    out = formula(b, A, G, spatial_axes)
    return b.op("Mul", out, A, hint="weighted") if per_channel else out


def channel_sum(b: GraphBuilder, method: str, A: str, G: str, channel_axis: int, spatial_size: Sequence[Dim]) -> str:
    """``sum_k M_k^ij`` as ``(N, h, w)``, before the ReLU: the low-resolution map of one layer.

    ``channel_axis`` is 1 (NCHW) or 3 (NHWC); ``spatial_size`` is the layer's
    ``(h, w)`` (ints where static), used to shape the NCHW product back.
    """
    formula, per_channel = _formula(method)
    spatial_axes = (2, 3) if channel_axis == 1 else (1, 2)
    out = formula(b, A, G, spatial_axes)
    if not per_channel:
        return b.reduce("ReduceSum", out, [channel_axis], keepdims=False, hint="cam_sum")
    if channel_axis == 3:  # (N, h, w, C) @ (N, 1, C, 1) -> (N, h, w, 1)
        column = b.op("Reshape", out, b.ints([0, 1, -1, 1]), hint="weights_col")
        return b.op("Squeeze", b.op("MatMul", A, column, hint="cam_sum4"), b.ints([3]), hint="cam_sum")
    row = b.op("Reshape", out, b.ints([0, 1, -1]), hint="weights_row")  # (N, 1, C)
    flat = b.op("Reshape", A, b.ints([0, 0, -1]), hint="A_flat")  # (N, C, h*w)
    summed = b.op("MatMul", row, flat, hint="cam_sum_flat")  # (N, 1, h*w)
    static = static_dims(spatial_size)
    if static is not None:
        shape = b.ints([0, *static])
    else:
        shape = b.op("Concat", b.shape_of(A, start=0, end=1), b.shape_of(A, start=2, end=4), axis=0, hint="cam_shape")
    return b.op("Reshape", summed, shape, hint="cam_sum")

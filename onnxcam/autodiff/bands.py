"""Cotangents that are zero outside one band of rows: a class token's gradient, carried without its zeros.

A vision transformer's head reads one token (``x[:, 0]``, a Gather or a
Slice), so the gradient entering the last block is zero on every other token.
Written back densely, the last block's MLP and attention are then
differentiated on all ``T`` rows (197 for ViT-B/16) to move one row's worth of
information. Here such a cotangent stays a *band*: the ``length`` rows from
``start`` on ``axis``, shaped like the tensor with ``length`` on that axis.
While the nodes it meets act on each row alone along that axis (elementwise
ops, a token-wise MatMul, LayerNorm and Softmax over other axes, reductions
that keep it), the engine runs their unchanged VJP rules on the band's rows of
their inputs and outputs (:func:`band_axes` says which inputs to slice, on
which axis); elsewhere, or where it meets a dense cotangent, the band is
padded back to full size (:func:`densify`). Zero rows contribute nothing to
the gradient of a weight or of a broadcast input, so those come out exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx

from onnxcam.graph.builder import GraphBuilder
from onnxcam.graph.index import GraphIndex, Shape


@dataclass(frozen=True)
class Band:
    """Rows ``[start, start + length)`` of ``axis``, out of ``size`` (static): the cotangent's only non-zero part."""

    axis: int
    start: int
    length: int
    size: int
    rank: int

    def on(self, axis: int, rank: int) -> Band:
        """The same rows on another axis of another tensor (an input's, through a Transpose or broadcasting)."""
        return Band(axis, self.start, self.length, self.size, rank)


def densify(b: GraphBuilder, part: str, band: Band) -> str:
    """The band padded with zeros to the full tensor."""
    pads = [0] * (2 * band.rank)
    pads[band.axis], pads[band.rank + band.axis] = band.start, band.size - band.start - band.length
    return b.op("Pad", part, b.ints(pads), hint="grad_band_dense")


#: (node, index, output axis) -> per input, the axis its band is sliced on (None: used whole), or None
#: when the node's output rows along that axis are not each computed from the same rows of its inputs.
BandAxesFn = Callable[[onnx.NodeProto, GraphIndex, int], list[int | None] | None]


def band_axes(node: onnx.NodeProto, index: GraphIndex, axis: int) -> list[int | None] | None:
    """Which inputs of ``node`` to slice for a band on output axis ``axis`` (see :data:`BandAxesFn`)."""
    fn = _BAND_LOCAL.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    return fn(node, index, axis) if fn else None


def _broadcast_axes(node: onnx.NodeProto, index: GraphIndex, axis: int) -> list[int | None] | None:
    """Elementwise with broadcasting: an input of the full size there is sliced, one of size 1 (or absent) is not."""
    out = index.shape(node.output[0])
    size = None if out is None else out[axis]
    if not isinstance(size, int):
        return None
    axes: list[int | None] = []
    for name in node.input:
        shape = index.shape(name) if name else ()
        if shape is None:
            return None
        at = axis - (len(out) - len(shape))  # type: ignore[arg-type]
        dim = shape[at] if at >= 0 else 1
        if dim == size and size != 1:
            axes.append(at)
        elif dim == 1:
            axes.append(None)
        else:  # symbolic: cannot tell a broadcast from a full axis
            return None
    return axes


def _attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _normalised(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _rank(index: GraphIndex, name: str) -> int | None:
    shape: Shape | None = index.shape(name)
    return None if shape is None else len(shape)


def _matmul_axes(node: onnx.NodeProto, index: GraphIndex, axis: int) -> list[int | None] | None:
    """Rows of A (axis -2) stay rows of the product; a batch axis is sliced on each input that has it in full."""
    rank, rank_a = _rank(index, node.output[0]), _rank(index, node.input[0])
    if rank is None or rank_a is None or rank < 2 or rank_a < 2:
        return None
    if axis == rank - 2:
        return [rank_a - 2, None]
    if axis < rank - 2:
        return _broadcast_axes(node, index, axis) if _rank(index, node.input[1]) == rank else None
    return None


def _layer_norm_axes(node: onnx.NodeProto, index: GraphIndex, axis: int) -> list[int | None] | None:
    rank = _rank(index, node.input[0])
    if rank is None or axis >= _normalised(int(_attribute(node, "axis", -1)), rank):
        return None
    return [axis, *([None] * (len(node.input) - 1))]


def _softmax_axes(node: onnx.NodeProto, index: GraphIndex, axis: int) -> list[int | None] | None:
    rank = _rank(index, node.input[0])
    opset = next((o.version for o in index.model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if rank is None:
        return None
    over = _normalised(int(_attribute(node, "axis", -1 if opset >= 13 else 1)), rank)
    mixed = axis == over if opset >= 13 else axis >= over  # before opset 13: every axis from ``axis`` on
    return None if mixed else [axis]


def _reduce_axes(node: onnx.NodeProto, index: GraphIndex, axis: int) -> list[int | None] | None:
    rank = _rank(index, node.input[0])
    if rank is None or not int(_attribute(node, "keepdims", 1)):
        return None
    axes = _attribute(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = index.constant_value(node.input[1])
        if value is None:
            return None
        axes = value.reshape(-1).tolist()
    if not axes or axis in {_normalised(int(a), rank) for a in axes}:  # no axes (or empty): every axis reduced
        return None
    return [axis, *([None] * (len(node.input) - 1))]


def _transpose_axes(node: onnx.NodeProto, index: GraphIndex, axis: int) -> list[int | None] | None:
    perm = _attribute(node, "perm", None)
    return None if perm is None else [int(perm[axis])]


def _same_axis(node: onnx.NodeProto, index: GraphIndex, axis: int) -> list[int | None] | None:
    return [axis, *([None] * (len(node.input) - 1))]


_ELEMENTWISE = (
    "Add Sub Mul Div Pow Max Min Where Sum Mean "
    "Relu LeakyRelu Elu Selu Celu Sigmoid HardSigmoid HardSwish Tanh Softplus Softsign Erf Gelu "
    "Exp Log Sqrt Reciprocal Neg Abs"
).split()

_BAND_LOCAL: dict[str, BandAxesFn] = {
    **dict.fromkeys(_ELEMENTWISE, _broadcast_axes),
    **dict.fromkeys(("Identity", "Cast", "Clip"), _same_axis),
    "MatMul": _matmul_axes,
    "LayerNormalization": _layer_norm_axes,
    **dict.fromkeys(("Softmax", "LogSoftmax"), _softmax_axes),
    **dict.fromkeys(("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL2"), _reduce_axes),
    "Transpose": _transpose_axes,
}

"""VJP rules of pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

Window geometry follows onnxruntime (which agrees with torch): with
``ceil_mode`` the last window must start inside the input or its left
padding, and a window that runs past the right padding only counts the
positions inside ``[-pad_begin, size + pad_end)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from onnx import helper

from onnxcam.autodiff.registry import VJPContext, vjp_rule
from onnxcam.autodiff.rules._scatter import scatter_elements
from onnxcam.errors import UnsupportedModelError
from onnxcam.graph.builder import AttrValue
from onnxcam.graph.index import static_dims


@dataclass(frozen=True)
class _Axis:
    """One spatial axis of a pooling window: input size, kernel, stride, dilation, pads, output size."""

    size: int
    kernel: int
    stride: int
    dilation: int
    pad_begin: int
    pad_end: int
    out: int

    def positions(self) -> NDArray[np.signedinteger[Any]]:
        """(out, kernel) input coordinates each window reads (may lie in the padding)."""
        starts = np.arange(self.out) * self.stride - self.pad_begin
        return starts[:, None] + np.arange(self.kernel)[None, :] * self.dilation

    def count(self, include_pad: bool) -> NDArray[np.intp]:
        """Per output position: elements the average divides by."""
        p = self.positions()
        inside = (p < self.size + self.pad_end) if include_pad else ((p >= 0) & (p < self.size))
        counts: NDArray[np.intp] = inside.sum(axis=1)
        return counts


def _pool_axes(ctx: VJPContext, x: str) -> list[_Axis]:
    """Resolve kernel/strides/dilations/pads/auto_pad/ceil_mode on static spatial sizes."""
    shape = ctx.shape(x)
    kernel = ctx.attr_ints("kernel_shape")
    if kernel is None:
        raise UnsupportedModelError(
            f"{ctx.node.op_type} node {ctx.node.name!r} has no kernel_shape, which ONNX "
            "requires; the model is invalid, re-export it"
        )
    n = len(kernel)
    spatial = None if shape is None or len(shape) != n + 2 else static_dims(shape[-n:])
    if spatial is None:
        raise UnsupportedModelError(
            f"{ctx.node.op_type} node {ctx.node.name!r}: the gradient needs static spatial sizes but the input "
            f"has shape {shape}; re-export the model with a fixed input height/width (a dynamic batch is fine)"
        )
    strides = ctx.attr_ints("strides", [1] * n)
    dilations = ctx.attr_ints("dilations", [1] * n)
    pads = ctx.attr_ints("pads", [0] * (2 * n))
    ceil_mode = bool(ctx.attr_int("ceil_mode", 0))
    auto_pad = ctx.attr_str("auto_pad", "NOTSET")
    axes = []
    for i in range(n):
        size, k, s, d = spatial[i], kernel[i], strides[i], dilations[i]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            # onnxruntime sizes SAME padding with the undilated kernel
            total = max(0, (-(-size // s) - 1) * s + k - size)
            pb = total // 2 if auto_pad == "SAME_UPPER" else (total + 1) // 2
            pe = total - pb
        else:
            pb, pe = (0, 0) if auto_pad == "VALID" else (pads[i], pads[i + n])
        span = size + pb + pe - ((k - 1) * d + 1)
        if ceil_mode:
            out = -(-span // s) + 1
            if (out - 1) * s >= size + pb:  # the last window must start inside the input or left pad
                out -= 1
        else:
            out = span // s + 1
        if out <= 0:
            raise UnsupportedModelError(
                f"{ctx.node.op_type} node {ctx.node.name!r}: the pooling window is larger than its padded input"
            )
        axes.append(_Axis(size, k, s, d, pb, pe, out))
    return axes


def _node_attrs(ctx: VJPContext, drop: tuple[str, ...] = ()) -> dict[str, AttrValue]:
    return {a.name: helper.get_attribute_value(a) for a in ctx.node.attribute if a.name not in drop}


@vjp_rule("MaxPool")
def vjp_max_pool(ctx: VJPContext) -> Sequence[str | None]:
    """Each output's cotangent goes to the input element its window selected.

    A MaxPool with the same attributes returns those elements as flat indices
    into the whole input (row-major, storage_order 0; the first maximum of a
    window wins, as in torch). Windows overlap, so the cotangents are scattered
    with ``ScatterElements(reduction="add")`` into zeros of the flattened input.
    """
    b = ctx.b
    x, g = ctx.inputs[0], ctx.grad_out
    outs = ctx.outputs
    if len(outs) > 1 and outs[1] and ctx.attr_int("storage_order", 0) == 0:
        indices = outs[1]
    else:
        # domain named too, so that the node's attributes can only be attributes
        _, indices = b.op_outputs(
            "MaxPool", x, outputs=2, hint="maxpool_argmax", domain="", **_node_attrs(ctx, ("storage_order",))
        )
    flat = b.ints([-1])
    zeros = b.op("Expand", ctx.zero(x), b.op("Reshape", b.op("Size", x), b.ints([1])))
    scattered = scatter_elements(
        ctx, zeros, b.op("Reshape", indices, flat), b.op("Reshape", g, flat), x, "add", "maxpool_grad"
    )
    return [b.op("Reshape", scattered, b.op("Shape", x))]


@vjp_rule("AveragePool")
def vjp_average_pool(ctx: VJPContext) -> Sequence[str | None]:
    """y = W(x) / count with W the sum over each window, so dx = W^T(g / count).

    ``count`` (window size, or its non-pad part when count_include_pad=0,
    clipped to the padded input under ceil_mode) is a numpy constant of the
    output's spatial shape. W^T is a ConvTranspose with a ones kernel on the
    channels folded into the batch, (N*C, 1, ...); its pads crop the left
    padding and whatever the last window read past the input, and
    ``output_padding`` restores input elements no window reached.
    """
    b = ctx.b
    x, g = ctx.inputs[0], ctx.grad_out
    axes = _pool_axes(ctx, x)
    include_pad = bool(ctx.attr_int("count_include_pad", 0))
    count = np.ones(())
    for a in axes:
        count = np.multiply.outer(count, np.maximum(a.count(include_pad), 1))
    if np.all(count == count.flat[0]):
        inv_count = ctx.const(1.0 / count.flat[0], like=x)
    else:
        inv_count = ctx.const(1.0 / count, like=x)
        y_shape = ctx.shape(ctx.outputs[0])
        if y_shape is None or tuple(y_shape[2:]) != count.shape:
            # ONNX shape inference sizes some ceil_mode outputs one larger than onnxruntime does;
            # take the (identical) runtime size from g so the static shapes stay consistent
            inv_count = b.op("Reshape", inv_count, b.op("Shape", g, start=2))
    scaled = b.op("Mul", g, inv_count)
    folded = b.op("Reshape", scaled, b.ints([-1, 1] + [0] * len(axes)))
    full = [a.stride * (a.out - 1) + (a.kernel - 1) * a.dilation + 1 for a in axes]
    crop_end = [max(0, f - a.pad_begin - a.size) for f, a in zip(full, axes)]
    extend = [max(0, a.pad_begin + a.size - f) for f, a in zip(full, axes)]
    kernel = ctx.const(np.ones((1, 1, *[a.kernel for a in axes])), like=x)
    dx = b.op(
        "ConvTranspose",
        folded,
        kernel,
        strides=[a.stride for a in axes],
        dilations=[a.dilation for a in axes],
        pads=[a.pad_begin for a in axes] + crop_end,
        output_padding=extend if any(extend) else None,
        hint="avgpool_grad",
    )
    return [b.op("Reshape", dx, b.op("Shape", x))]


@vjp_rule("GlobalAveragePool")
def vjp_global_average_pool(ctx: VJPContext) -> Sequence[str | None]:
    """y = mean over the spatial axes, so dx = g / (H*W*...) expanded to the input shape."""
    b = ctx.b
    x, g = ctx.inputs[0], ctx.grad_out
    shape = ctx.shape(x)
    spatial = None if shape is None else static_dims(shape[2:])
    if spatial is not None:
        scaled = b.op("Mul", g, ctx.const(1.0 / math.prod(spatial), like=x))
    else:
        n = b.reduce("ReduceProd", b.op("Shape", x, start=2), None, keepdims=True)
        count = b.op("Cast", n, to=helper.np_dtype_to_tensor_dtype(ctx.dtype(x)))
        scaled = b.op("Div", g, count)
    if shape is None:
        return [b.op("Expand", scaled, b.op("Shape", x))]
    return [b.expand(scaled, b.op("Shape", x), constant_axes=range(2, len(shape)))]


@vjp_rule("GlobalMaxPool")
def vjp_global_max_pool(ctx: VJPContext) -> Sequence[str | None]:
    """The cotangent goes to the maxima of each (n, c) map. Ties share it evenly,
    as torch.amax does (F.adaptive_max_pool2d instead routes all of it to one of
    them): dx = where(x == y, g / #ties, 0)."""
    b = ctx.b
    x, y, g = ctx.inputs[0], ctx.outputs[0], ctx.grad_out
    rank = ctx.require_rank(x)
    mask = b.op("Equal", x, y)
    ties = b.reduce(
        "ReduceSum",
        b.op("Cast", mask, to=helper.np_dtype_to_tensor_dtype(ctx.dtype(x))),
        list(range(2, rank)),
        keepdims=True,
    )
    return [b.op("Where", mask, b.op("Div", g, ties), ctx.zero(x))]

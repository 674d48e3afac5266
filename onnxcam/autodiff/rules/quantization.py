"""Straight-through VJP rules of QuantizeLinear / DequantizeLinear.

Rounding has derivative 0 almost everywhere, which would make every quantised
model un-explainable. Like quantisation-aware training we use the
straight-through estimator and treat rounding as the identity: q = x / s + z
gives dx = g / s, and x = (q - z) s gives dq = g s, so a Q -> DQ pair with the
same scale passes g through unchanged.

Saturation has two causes. Quantizers fold a ReLU into the QuantizeLinear
after it by putting the zero point at the bottom of the integer range, so
that real 0 is the lowest level: clamping there *is* the model's ReLU, and
the gradient below it is 0 (as in torch's ``fake_quantize_*`` backward, the
"clipped" straight-through estimator). Any other clamp (the top of the
range, or a bottom below real 0) is a calibration limit: a value the
calibration images never reached. Zeroing the gradient there would make the
top-1 logit of most images flat (the largest logits are the ones past the
calibrated maximum), so it passes straight through like rounding. The
integer tensor between Q and DQ carries a float gradient; the engine lets it
through because both ops are listed in ``STRAIGHT_THROUGH_OPS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnx import TensorProto

from onnxcam.autodiff.registry import VJPContext, vjp_rule
from onnxcam.autodiff.rules.elementwise import cast_like
from onnxcam.errors import UnsupportedModelError


#: Representable range of each integer quantized type (float8 types saturate differently: no mask).
_INT_RANGE: dict[int, tuple[int, int]] = {
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT8: (0, 255),
    TensorProto.INT16: (-32768, 32767),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT4: (-8, 7),
    TensorProto.UINT4: (0, 15),
}


def _broadcast_scale(ctx: VJPContext, position: int = 1) -> str:
    """The scale (or, with ``position=2``, zero-point) input shaped to broadcast against the data input."""
    b = ctx.b
    x, scale = ctx.inputs[0], ctx.inputs[position]
    if ctx.attr_int("block_size", 0):
        raise UnsupportedModelError(
            f"blocked quantization ({ctx.node.op_type} node {ctx.node.name!r}, block_size="
            f"{ctx.attr_int('block_size', 0)}) is not supported; choose a layer after it"
        )
    scale_rank = ctx.rank(scale)
    if scale_rank is None:
        value = ctx.constant_value(scale)
        scale_rank = None if value is None else value.ndim
    if scale_rank == 0:
        return scale
    rank = ctx.require_rank(x)
    axis = ctx.attr_int("axis", 1) % max(rank, 1)
    trailing = rank - 1 - axis
    if scale_rank != 1 or trailing <= 0:
        return scale
    return b.op("Reshape", scale, b.ints([-1] + [1] * trailing))


@vjp_rule("QuantizeLinear")
def vjp_quantize_linear(ctx: VJPContext) -> Sequence[str | None]:
    """q = round(x / s) + z, rounding taken as the identity: dx = g / s, 0 below a folded ReLU's zero.

    The incoming gradient belongs to an integer tensor and so has no declared
    type; it is cast to x's float type first.
    """
    b, x = ctx.b, ctx.inputs[0]
    if not ctx.wants[0]:
        return [None]
    g = cast_like(ctx, ctx.grad_out, x)
    scale = _broadcast_scale(ctx)
    if ctx.dtype(ctx.inputs[1]) != ctx.dtype(x):
        scale = cast_like(ctx, scale, x)
    dx = b.op("Div", g, scale)
    q_type = ctx.index.type_of(ctx.outputs[0])
    bounds = _INT_RANGE.get(q_type.elem_type) if q_type is not None else None
    if bounds is None:
        return [dx]
    has_zero = len(ctx.inputs) > 2 and bool(ctx.inputs[2])
    zero_value = ctx.constant_value(ctx.inputs[2]) if has_zero else np.zeros(())
    folded = None if zero_value is None else (np.asarray(zero_value) == bounds[0])
    if folded is not None and not folded.any():  # the zero point is above the range's bottom: no ReLU was folded
        return [dx]
    qmin = ctx.const(float(bounds[0]), x)
    level = b.op("Round", b.op("Div", x, scale), hint="q_level")
    zero = cast_like(ctx, _broadcast_scale(ctx, 2), x) if has_zero else ctx.zero(x)
    level = b.op("Add", level, zero, hint="q_level")
    inside = b.op("GreaterOrEqual", level, qmin, hint="q_not_relu_clamped")
    if folded is None or not folded.all():  # per channel, or unknown until run time: mask only where folded
        inside = b.op("Or", inside, b.op("Not", b.op("Equal", zero, qmin)), hint="q_not_relu_clamped")
    return [b.op("Mul", dx, cast_like(ctx, inside, x), hint="q_clipped_grad")]


@vjp_rule("DequantizeLinear")
def vjp_dequantize_linear(ctx: VJPContext) -> Sequence[str | None]:
    """y = (q - z) s: dq = g s, a float tensor in the scale's (= y's) type."""
    if not ctx.wants[0]:
        return [None]
    return [ctx.b.op("Mul", ctx.grad_out, _broadcast_scale(ctx))]

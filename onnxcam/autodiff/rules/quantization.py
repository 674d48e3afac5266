"""Straight-through VJP rules of QuantizeLinear / DequantizeLinear.

Rounding has derivative 0 almost everywhere, which would make every quantised
model un-explainable. Like quantisation-aware training we use the
straight-through estimator and treat rounding (and saturation) as the
identity: q = x / s + z gives dx = g / s, and x = (q - z) s gives dq = g s, so
a Q -> DQ pair with the same scale passes g through unchanged. The integer
tensor between them carries a float gradient; the engine lets it through
because both ops are listed in ``STRAIGHT_THROUGH_OPS``.
"""

from __future__ import annotations

from onnxcam.autodiff.registry import VJPContext, vjp_rule
from onnxcam.autodiff.rules.elementwise import cast_like
from onnxcam.errors import UnsupportedModelError


def _broadcast_scale(ctx: VJPContext) -> str:
    """The scale input shaped to broadcast against the data input (per-tensor or per-axis)."""
    b = ctx.b
    x, scale = ctx.inputs[0], ctx.inputs[1]
    if ctx.attr("block_size", 0):
        raise UnsupportedModelError(
            f"blocked quantization ({ctx.node.op_type} node {ctx.node.name!r}, block_size="
            f"{ctx.attr('block_size', 0)}) is not supported; choose a layer after it"
        )
    scale_rank = ctx.rank(scale)
    if scale_rank is None:
        value = ctx.constant_value(scale)
        scale_rank = None if value is None else value.ndim
    if scale_rank == 0:
        return scale
    rank = ctx.require_rank(x)
    axis = ctx.attr("axis", 1) % max(rank, 1)
    trailing = rank - 1 - axis
    if scale_rank != 1 or trailing <= 0:
        return scale
    return b.op("Reshape", scale, b.ints([-1] + [1] * trailing))


@vjp_rule("QuantizeLinear")
def vjp_quantize_linear(ctx: VJPContext):
    """q = round(x / s) + z, rounding taken as the identity: dx = g / s.

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
    return [b.op("Div", g, scale)]


@vjp_rule("DequantizeLinear")
def vjp_dequantize_linear(ctx: VJPContext):
    """y = (q - z) s: dq = g s, a float tensor in the scale's (= y's) type."""
    if not ctx.wants[0]:
        return [None]
    return [ctx.b.op("Mul", ctx.grad_out, _broadcast_scale(ctx))]

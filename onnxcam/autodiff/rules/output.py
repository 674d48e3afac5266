"""VJP rules of the normalising output ops, written with the forward output y.

From opset 13 Softmax/LogSoftmax normalise over one ``axis`` (default -1).
Before 13 the input was coerced to 2-D at ``axis`` (default 1), i.e. they
normalised over all axes from ``axis`` on; both forms reduce to a sum over a
set of axes below.
"""

from __future__ import annotations

from collections.abc import Sequence

from onnxcam.autodiff.registry import VJPContext, vjp_rule


def _normalised_axes(ctx: VJPContext) -> list[int]:
    rank = ctx.require_rank(ctx.inputs[0])
    if ctx.b.opset >= 13:
        return [ctx.attr_int("axis", -1) % rank]
    return list(range(ctx.attr_int("axis", 1) % rank, rank))


@vjp_rule("Softmax")
def vjp_softmax(ctx: VJPContext) -> Sequence[str | None]:
    """dx = y * (g - sum_axis(g * y))."""
    b, y, g = ctx.b, ctx.outputs[0], ctx.grad_out
    dot = b.reduce("ReduceSum", b.op("Mul", g, y), _normalised_axes(ctx), keepdims=True)
    return [b.op("Mul", y, b.op("Sub", g, dot))]


@vjp_rule("LogSoftmax")
def vjp_log_softmax(ctx: VJPContext) -> Sequence[str | None]:
    """dx = g - e^y * sum_axis(g)."""
    b, y, g = ctx.b, ctx.outputs[0], ctx.grad_out
    total = b.reduce("ReduceSum", g, _normalised_axes(ctx), keepdims=True)
    return [b.op("Sub", g, b.op("Mul", b.op("Exp", y), total))]

"""VJP rules of broadcasting arithmetic: each input gets ``unbroadcast(g * d out / d input)``."""

from __future__ import annotations

from collections.abc import Sequence

from onnxcam.autodiff.registry import VJPContext, vjp_rule
from onnxcam.autodiff.rules._broadcast import unbroadcast


def _each_input(ctx: VJPContext, grad: str) -> list[str | None]:
    """Every wanted input receives ``grad`` summed down to its shape (sums and means of inputs)."""
    return [unbroadcast(ctx, grad, x) if want else None for x, want in zip(ctx.inputs, ctx.wants)]


def cast_like(ctx: VJPContext, t: str, like: str) -> str:
    """``t`` cast to the element type of ``like`` (a bool mask becomes 0/1, an int exponent a float)."""
    ty = ctx.index.type_of(like)
    return ctx.b.op("Cast", t, to=ty.elem_type if ty is not None else 1)


@vjp_rule("Add")
def vjp_add(ctx: VJPContext) -> Sequence[str | None]:
    """y = a + c: each input gets g."""
    return _each_input(ctx, ctx.grad_out)


@vjp_rule("Sum")
def vjp_sum(ctx: VJPContext) -> Sequence[str | None]:
    """y = x_1 + ... + x_n: each input gets g."""
    return _each_input(ctx, ctx.grad_out)


@vjp_rule("Mean")
def vjp_mean(ctx: VJPContext) -> Sequence[str | None]:
    """y = (x_1 + ... + x_n) / n: each input gets g / n."""
    y = ctx.outputs[0]
    n = len([i for i in ctx.inputs if i])
    return _each_input(ctx, ctx.b.op("Mul", ctx.grad_out, ctx.const(1.0 / n, y)) if n > 1 else ctx.grad_out)


@vjp_rule("Sub")
def vjp_sub(ctx: VJPContext) -> Sequence[str | None]:
    """y = a - c: da = g, dc = -g."""
    a, c = ctx.inputs
    g = ctx.grad_out
    return [
        unbroadcast(ctx, g, a) if ctx.wants[0] else None,
        unbroadcast(ctx, ctx.b.op("Neg", g), c) if ctx.wants[1] else None,
    ]


@vjp_rule("Mul")
def vjp_mul(ctx: VJPContext) -> Sequence[str | None]:
    """y = a c: da = g c, dc = g a."""
    a, c = ctx.inputs
    g = ctx.grad_out
    return [
        unbroadcast(ctx, ctx.b.op("Mul", g, c), a) if ctx.wants[0] else None,
        unbroadcast(ctx, ctx.b.op("Mul", g, a), c) if ctx.wants[1] else None,
    ]


@vjp_rule("Div")
def vjp_div(ctx: VJPContext) -> Sequence[str | None]:
    """y = a / c: da = g / c, dc = -g a / c^2 = -(g / c) y."""
    b, g = ctx.b, ctx.grad_out
    a, c = ctx.inputs
    g_over_c = b.op("Div", g, c)
    return [
        unbroadcast(ctx, g_over_c, a) if ctx.wants[0] else None,
        unbroadcast(ctx, b.op("Neg", b.op("Mul", g_over_c, ctx.outputs[0])), c) if ctx.wants[1] else None,
    ]


@vjp_rule("Max", "Min")
def vjp_max_min(ctx: VJPContext) -> Sequence[str | None]:
    """y = max_i x_i (or min): g goes to the inputs equal to y, split evenly among ties.

    For two inputs this is torch.maximum/minimum's rule (half each on a tie).
    """
    b, g, y = ctx.b, ctx.grad_out, ctx.outputs[0]
    ins = ctx.inputs
    if len(ins) == 1:
        return [g if ctx.wants[0] else None]
    hits = [b.op("Equal", x, y) for x in ins]
    count = b.add_all(*[cast_like(ctx, h, y) for h in hits])
    share = b.op("Div", g, count)
    zero = ctx.zero(y)
    return [
        unbroadcast(ctx, b.op("Where", h, share, zero), x) if want else None for x, h, want in zip(ins, hits, ctx.wants)
    ]


@vjp_rule("Where")
def vjp_where(ctx: VJPContext) -> Sequence[str | None]:
    """y = cond ? a : c: da = g where cond, dc = g elsewhere; cond is not differentiable."""
    b, g, y = ctx.b, ctx.grad_out, ctx.outputs[0]
    cond, a, c = ctx.inputs
    zero = ctx.zero(y)
    return [
        None,
        unbroadcast(ctx, b.op("Where", cond, g, zero), a) if ctx.wants[1] else None,
        unbroadcast(ctx, b.op("Where", cond, zero, g), c) if ctx.wants[2] else None,
    ]

"""VJP rules of Reduce* ops: put the reduced axes back into g (size 1), then broadcast it over x.

The axes come from the ``axes`` attribute (before opset 18; ReduceSum before
13) or from a constant second input. No axes means every axis, unless
``noop_with_empty_axes`` is set: then the set of reduced axes is empty and
each formula below degenerates to its elementwise case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from onnxcam.autodiff.registry import VJPContext, vjp_rule
from onnxcam.autodiff.rules.elementwise import cast_like
from onnxcam.errors import UnsupportedModelError
from onnxcam.graph.index import static_dims


def _reduced_axes(ctx: VJPContext) -> list[int]:
    """The reduced axes of x, non-negative and sorted (empty for a no-op reduction)."""
    x = ctx.inputs[0]
    rank = ctx.require_rank(x)
    if len(ctx.inputs) > 1 and ctx.inputs[1]:
        value = ctx.constant_value(ctx.inputs[1])
        if value is None:
            raise UnsupportedModelError(
                f"{ctx.node.op_type} node {ctx.node.name!r} takes its axes from a tensor computed at run time; "
                "re-export the model with constant reduction axes (constant folding)"
            )
        axes = [int(a) for a in value.reshape(-1)]
    else:
        axes = ctx.attr_ints("axes") or []
    if not axes:
        return [] if ctx.attr_int("noop_with_empty_axes", 0) else list(range(rank))
    return sorted({a % rank for a in axes})


def _kept(ctx: VJPContext, t: str, axes: list[int]) -> str:
    """``t`` (shaped like the output) with the reduced axes present as size-1 dims, so it broadcasts over x."""
    if ctx.attr_int("keepdims", 1) or not axes:
        return t
    if ctx.b.opset < 13:
        return ctx.b.op("Unsqueeze", t, axes=axes)
    return ctx.b.op("Unsqueeze", t, ctx.b.ints(axes))


def _expand_like(ctx: VJPContext, t: str, x: str) -> str:
    """Broadcast ``t`` to the shape of ``x`` (a constant shape when static, else ``Shape(x)``)."""
    tx = ctx.index.type_of(x)
    static = tx.static_shape() if tx is not None else None
    return ctx.b.op("Expand", t, ctx.b.ints(list(static)) if static is not None else ctx.b.shape_of(x))


@vjp_rule("ReduceSum")
def vjp_reduce_sum(ctx: VJPContext) -> Sequence[str | None]:
    """y = sum_A x: every element of x gets the g of its slice."""
    x = ctx.inputs[0]
    axes = _reduced_axes(ctx)
    if not axes:
        return [ctx.grad_out]
    return [_expand_like(ctx, _kept(ctx, ctx.grad_out, axes), x)]


@vjp_rule("ReduceMean")
def vjp_reduce_mean(ctx: VJPContext) -> Sequence[str | None]:
    """y = sum_A x / N, N the number of reduced elements: every element gets g / N."""
    b, x, y = ctx.b, ctx.inputs[0], ctx.outputs[0]
    axes = _reduced_axes(ctx)
    if not axes:
        return [ctx.grad_out]
    shape = ctx.require_shape(x)  # known: _reduced_axes required the rank
    dims = static_dims([shape[a] for a in axes])
    if dims is not None:
        inv_n = ctx.const(1.0 / math.prod(dims), x)
    else:
        n = b.op("Div", b.op("Size", x), b.op("Size", y))
        inv_n = b.op("Reciprocal", cast_like(ctx, n, x))
    g = b.op("Mul", _kept(ctx, ctx.grad_out, axes), inv_n)
    return [_expand_like(ctx, g, x)]


@vjp_rule("ReduceMax", "ReduceMin")
def vjp_reduce_max_min(ctx: VJPContext) -> Sequence[str | None]:
    """y = max_A x (or min): g goes to the elements equal to y, split evenly among ties (torch.amax/amin)."""
    b, x, y = ctx.b, ctx.inputs[0], ctx.outputs[0]
    axes = _reduced_axes(ctx)
    if not axes:
        return [ctx.grad_out]
    hit = b.op("Equal", x, _kept(ctx, y, axes))
    count = b.reduce("ReduceSum", cast_like(ctx, hit, x), axes, keepdims=True)
    share = b.op("Div", _kept(ctx, ctx.grad_out, axes), count)
    return [b.op("Where", hit, share, ctx.zero(x))]


@vjp_rule("ReduceSumSquare")
def vjp_reduce_sum_square(ctx: VJPContext) -> Sequence[str | None]:
    """y = sum_A x^2: dx = 2 x g."""
    b, x = ctx.b, ctx.inputs[0]
    axes = _reduced_axes(ctx)
    return [b.op("Mul", b.op("Mul", x, ctx.const(2.0, x)), _kept(ctx, ctx.grad_out, axes))]


@vjp_rule("ReduceL1")
def vjp_reduce_l1(ctx: VJPContext) -> Sequence[str | None]:
    """y = sum_A |x|: dx = sign(x) g."""
    b, x = ctx.b, ctx.inputs[0]
    axes = _reduced_axes(ctx)
    return [b.op("Mul", b.op("Sign", x), _kept(ctx, ctx.grad_out, axes))]


@vjp_rule("ReduceL2")
def vjp_reduce_l2(ctx: VJPContext) -> Sequence[str | None]:
    """y = sqrt(sum_A x^2): dx = x g / y, and 0 for an all-zero slice (torch.linalg.vector_norm)."""
    b, x, y = ctx.b, ctx.inputs[0], ctx.outputs[0]
    axes = _reduced_axes(ctx)
    y_kept = _kept(ctx, y, axes)
    zero = ctx.zero(y)
    scale = b.op("Where", b.op("Equal", y_kept, zero), zero, b.op("Div", _kept(ctx, ctx.grad_out, axes), y_kept))
    return [b.op("Mul", x, scale)]


@vjp_rule("ReduceLogSumExp")
def vjp_reduce_log_sum_exp(ctx: VJPContext) -> Sequence[str | None]:
    """y = log sum_A e^x: dx = g softmax_A(x) = g e^(x - y)."""
    b, x, y = ctx.b, ctx.inputs[0], ctx.outputs[0]
    axes = _reduced_axes(ctx)
    return [b.op("Mul", b.op("Exp", b.op("Sub", x, _kept(ctx, y, axes))), _kept(ctx, ctx.grad_out, axes))]


@vjp_rule("ReduceLogSum")
def vjp_reduce_log_sum(ctx: VJPContext) -> Sequence[str | None]:
    """y = log sum_A x: dx = g / sum_A x = g e^-y."""
    b, x, y = ctx.b, ctx.inputs[0], ctx.outputs[0]
    axes = _reduced_axes(ctx)
    g = b.op("Div", ctx.grad_out, b.op("Exp", y))
    return [_expand_like(ctx, _kept(ctx, g, axes), x) if axes else g]

"""VJP rules of pointwise activations: ``dx = g * f'(x)``, written with the forward output where cheaper."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from onnxcam.autodiff.registry import VJPContext, vjp_rule
from onnxcam.autodiff.rules._broadcast import unbroadcast
from onnxcam.autodiff.rules.elementwise import cast_like


def _times(ctx: VJPContext, derivative: str) -> list[str]:
    """``[g * f']``: the whole rule of a one-input op once its derivative tensor is built."""
    return [ctx.b.op("Mul", ctx.grad_out, derivative)]


def _where_positive(ctx: VJPContext, pos: str, neg: str) -> str:
    """``pos`` where the input is > 0, else ``neg`` (the kink at 0 takes the negative side, as torch does)."""
    x = ctx.inputs[0]
    return ctx.b.op("Where", ctx.b.op("Greater", x, ctx.zero(x)), pos, neg)


@vjp_rule("Relu")
def vjp_relu(ctx: VJPContext) -> Sequence[str | None]:
    """dx = g where y > 0 (the subgradient at 0 is 0, as in torch)."""
    b, y = ctx.b, ctx.outputs[0]
    return [b.op("Where", b.op("Greater", y, ctx.zero(y)), ctx.grad_out, ctx.zero(y))]


@vjp_rule("LeakyRelu")
def vjp_leaky_relu(ctx: VJPContext) -> Sequence[str | None]:
    """y = x (x > 0) or alpha x: dx = g or alpha g."""
    x, g = ctx.inputs[0], ctx.grad_out
    alpha = ctx.attr_float("alpha", 0.01)
    return [_where_positive(ctx, g, ctx.b.op("Mul", g, ctx.const(alpha, x)))]


@vjp_rule("PRelu")
def vjp_prelu(ctx: VJPContext) -> Sequence[str | None]:
    """y = x (x > 0) or slope x, slope broadcast to x: dx = g or slope g; dslope = sum of g x over x <= 0."""
    b, g = ctx.b, ctx.grad_out
    x, slope = ctx.inputs
    dx = _where_positive(ctx, g, b.op("Mul", g, slope)) if ctx.wants[0] else None
    dslope = None
    if ctx.wants[1]:
        dslope = unbroadcast(ctx, _where_positive(ctx, ctx.zero(x), b.op("Mul", g, x)), slope)
    return [dx, dslope]


def _exp_linear(ctx: VJPContext, pos_slope: float, shift: float, scale: float) -> list[str]:
    """The ELU family: y = pos_slope x for x > 0, else a exp(x / c) + const, so dy/dx = (y + shift) * scale."""
    b, g, x, y = ctx.b, ctx.grad_out, ctx.inputs[0], ctx.outputs[0]
    neg = b.op("Add", y, ctx.const(shift, y))
    if scale != 1.0:
        neg = b.op("Mul", neg, ctx.const(scale, y))
    pos = g if pos_slope == 1.0 else b.op("Mul", g, ctx.const(pos_slope, x))
    return [_where_positive(ctx, pos, b.op("Mul", g, neg))]


@vjp_rule("Elu")
def vjp_elu(ctx: VJPContext) -> Sequence[str | None]:
    """y = alpha (e^x - 1) for x <= 0: dy/dx = alpha e^x = y + alpha."""
    alpha = ctx.attr_float("alpha", 1.0)
    return _exp_linear(ctx, 1.0, alpha, 1.0)


@vjp_rule("Selu")
def vjp_selu(ctx: VJPContext) -> Sequence[str | None]:
    """y = gamma x (x > 0) or gamma alpha (e^x - 1): dy/dx = gamma or y + gamma alpha."""
    alpha = ctx.attr_float("alpha", 1.67326319217681884765625)
    gamma = ctx.attr_float("gamma", 1.05070102214813232421875)
    return _exp_linear(ctx, gamma, gamma * alpha, 1.0)


@vjp_rule("Celu")
def vjp_celu(ctx: VJPContext) -> Sequence[str | None]:
    """y = alpha (e^(x/alpha) - 1) for x <= 0: dy/dx = e^(x/alpha) = (y + alpha) / alpha."""
    alpha = ctx.attr_float("alpha", 1.0)
    return _exp_linear(ctx, 1.0, alpha, 1.0 / alpha)


@vjp_rule("Clip")
def vjp_clip(ctx: VJPContext) -> Sequence[str | None]:
    """y = min(max(x, lo), hi): dx = g strictly inside (lo, hi), 0 at and beyond the bounds.

    That is torch.clamp's rule for scalar bounds (and hardtanh's, relu6's),
    the torch calls that export to Clip. A bound receives the summed gradient
    of the elements it holds (x <= lo, x >= hi); when lo > hi every element
    equals hi, so all of it goes to hi, as in torch.
    """
    b, g = ctx.b, ctx.grad_out
    ins = ctx.inputs + [""] * (3 - len(ctx.inputs))
    x, lo, hi = ins[:3]
    zero = ctx.zero(x)
    grads: list[str | None] = [None, None, None]
    if ctx.wants[0]:
        conds = []
        if lo:
            conds.append(b.op("Greater", x, lo))
        if hi:
            conds.append(b.op("Less", x, hi))
        if not conds:
            grads[0] = g
        else:
            inside = conds[0] if len(conds) == 1 else b.op("And", *conds)
            grads[0] = b.op("Where", inside, g, zero)

    def bound_grad(cond: str) -> str:
        return b.reduce("ReduceSum", b.op("Where", cond, g, zero), None, keepdims=False)

    if lo and len(ctx.wants) > 1 and ctx.wants[1]:
        below = b.op("LessOrEqual", x, lo)
        if hi:
            below = b.op("And", below, b.op("Less", lo, hi))
        grads[1] = bound_grad(below)
    if hi and len(ctx.wants) > 2 and ctx.wants[2]:
        above = b.op("GreaterOrEqual", x, hi)
        if lo:
            above = b.op("Or", above, b.op("Less", hi, lo))
        grads[2] = bound_grad(above)
    return grads[: len(ctx.inputs)]


@vjp_rule("Sigmoid")
def vjp_sigmoid(ctx: VJPContext) -> Sequence[str | None]:
    """dy/dx = y (1 - y)."""
    b, y = ctx.b, ctx.outputs[0]
    return _times(ctx, b.op("Mul", y, b.op("Sub", ctx.one(y), y)))


@vjp_rule("HardSigmoid")
def vjp_hard_sigmoid(ctx: VJPContext) -> Sequence[str | None]:
    """y = clip(alpha x + beta, 0, 1): dy/dx = alpha strictly inside (0, 1), else 0 (torch's convention)."""
    b, y, g = ctx.b, ctx.outputs[0], ctx.grad_out
    alpha = ctx.attr_float("alpha", 0.2)
    inside = b.op("And", b.op("Greater", y, ctx.zero(y)), b.op("Less", y, ctx.one(y)))
    return [b.op("Where", inside, b.op("Mul", g, ctx.const(alpha, y)), ctx.zero(y))]


@vjp_rule("HardSwish")
def vjp_hard_swish(ctx: VJPContext) -> Sequence[str | None]:
    """y = x clip(x/6 + 1/2, 0, 1): dy/dx = 0 (x <= -3), x/3 + 1/2 (-3 < x < 3), 1 (x >= 3), as in torch."""
    b, x, g = ctx.b, ctx.inputs[0], ctx.grad_out
    ramp = b.op("Mul", g, b.op("Add", b.op("Mul", x, ctx.const(1.0 / 3.0, x)), ctx.const(0.5, x)))
    upper = b.op("Where", b.op("Less", x, ctx.const(3.0, x)), ramp, g)
    return [b.op("Where", b.op("LessOrEqual", x, ctx.const(-3.0, x)), ctx.zero(x), upper)]


@vjp_rule("Tanh")
def vjp_tanh(ctx: VJPContext) -> Sequence[str | None]:
    """dy/dx = 1 - y^2."""
    b, y = ctx.b, ctx.outputs[0]
    return _times(ctx, b.op("Sub", ctx.one(y), b.op("Mul", y, y)))


@vjp_rule("Softplus")
def vjp_softplus(ctx: VJPContext) -> Sequence[str | None]:
    """y = log(1 + e^x): dy/dx = sigmoid(x)."""
    return _times(ctx, ctx.b.op("Sigmoid", ctx.inputs[0]))


@vjp_rule("Softsign")
def vjp_softsign(ctx: VJPContext) -> Sequence[str | None]:
    """y = x / (1 + |x|): dy/dx = 1 / (1 + |x|)^2."""
    b, x = ctx.b, ctx.inputs[0]
    d = b.op("Add", b.op("Abs", x), ctx.one(x))
    return [b.op("Div", ctx.grad_out, b.op("Mul", d, d))]


@vjp_rule("Erf")
def vjp_erf(ctx: VJPContext) -> Sequence[str | None]:
    """dy/dx = 2/sqrt(pi) e^(-x^2)."""
    b, x = ctx.b, ctx.inputs[0]
    gauss = b.op("Exp", b.op("Neg", b.op("Mul", x, x)))
    return [b.op("Mul", b.op("Mul", ctx.grad_out, ctx.const(2.0 / math.sqrt(math.pi), x)), gauss)]


@vjp_rule("Gelu")
def vjp_gelu(ctx: VJPContext) -> Sequence[str | None]:
    """Exact: y = x Phi(x), dy/dx = Phi(x) + x phi(x).

    tanh approximation: y = x (1 + t) / 2 with t = tanh(k (x + c x^3)), so
    dy/dx = (1 + t) / 2 + x (1 - t^2) k (1 + 3 c x^2) / 2.
    """
    b, x = ctx.b, ctx.inputs[0]
    half = ctx.const(0.5, x)
    if ctx.attr_str("approximate", "none") == "tanh":
        k, c = math.sqrt(2.0 / math.pi), 0.044715
        x2 = b.op("Mul", x, x)
        inner = b.op("Mul", b.op("Add", x, b.op("Mul", b.op("Mul", x2, x), ctx.const(c, x))), ctx.const(k, x))
        t = b.op("Tanh", inner)
        left = b.op("Mul", b.op("Add", t, ctx.one(x)), half)
        dinner = b.op("Add", b.op("Mul", x2, ctx.const(3.0 * c * k, x)), ctx.const(k, x))
        right = b.op("Mul", b.op("Mul", b.op("Mul", x, half), b.op("Sub", ctx.one(x), b.op("Mul", t, t))), dinner)
        return _times(ctx, b.op("Add", left, right))
    cdf = b.op("Mul", b.op("Add", b.op("Erf", b.op("Mul", x, ctx.const(1.0 / math.sqrt(2.0), x))), ctx.one(x)), half)
    pdf = b.op(
        "Mul",
        b.op("Exp", b.op("Mul", b.op("Mul", x, x), ctx.const(-0.5, x))),
        ctx.const(1.0 / math.sqrt(2.0 * math.pi), x),
    )
    return _times(ctx, b.op("Add", cdf, b.op("Mul", x, pdf)))


@vjp_rule("Exp")
def vjp_exp(ctx: VJPContext) -> Sequence[str | None]:
    """dy/dx = e^x = y."""
    return _times(ctx, ctx.outputs[0])


@vjp_rule("Log")
def vjp_log(ctx: VJPContext) -> Sequence[str | None]:
    """dy/dx = 1 / x."""
    return [ctx.b.op("Div", ctx.grad_out, ctx.inputs[0])]


@vjp_rule("Sqrt")
def vjp_sqrt(ctx: VJPContext) -> Sequence[str | None]:
    """dy/dx = 1 / (2 sqrt(x)) = 0.5 / y."""
    b, y = ctx.b, ctx.outputs[0]
    return [b.op("Div", b.op("Mul", ctx.grad_out, ctx.const(0.5, y)), y)]


@vjp_rule("Reciprocal")
def vjp_reciprocal(ctx: VJPContext) -> Sequence[str | None]:
    """dy/dx = -1 / x^2 = -y^2."""
    b, y = ctx.b, ctx.outputs[0]
    return [b.op("Neg", b.op("Mul", ctx.grad_out, b.op("Mul", y, y)))]


@vjp_rule("Neg")
def vjp_neg(ctx: VJPContext) -> Sequence[str | None]:
    """dy/dx = -1."""
    return [ctx.b.op("Neg", ctx.grad_out)]


@vjp_rule("Abs")
def vjp_abs(ctx: VJPContext) -> Sequence[str | None]:
    """dy/dx = sign(x) (0 at 0, as in torch)."""
    return _times(ctx, ctx.b.op("Sign", ctx.inputs[0]))


@vjp_rule("Pow")
def vjp_pow(ctx: VJPContext) -> Sequence[str | None]:
    """y = x^p: dx = g p x^(p-1) (0 where p == 0, as torch); dp = g y log(x) (0 where x == 0 and p >= 0).

    A constant exponent is folded: p == 1 passes g through, p == 2 is g 2x.
    """
    b, g = ctx.b, ctx.grad_out
    x, p = ctx.inputs
    y = ctx.outputs[0]
    zero = ctx.zero(x)
    dx = dp = None
    if ctx.wants[0]:
        pv = ctx.constant_value(p)
        if pv is not None and pv.size == 1:
            e = float(pv.reshape(-1)[0])
            if e == 0.0:
                dx = b.op("Mul", g, zero)
            elif e == 1.0:
                dx = g
            elif e == 2.0:
                dx = b.op("Mul", g, b.op("Mul", x, ctx.const(2.0, x)))
            else:
                dx = b.op("Mul", b.op("Mul", g, ctx.const(e, x)), b.op("Pow", x, ctx.const(e - 1.0, x)))
            dx = unbroadcast(ctx, dx, x)
        else:
            pf = p if ctx.dtype(p) == ctx.dtype(x) else cast_like(ctx, p, x)
            raw = b.op("Mul", b.op("Mul", g, pf), b.op("Pow", x, b.op("Sub", pf, ctx.one(x))))
            if pv is None or np.any(pv == 0):
                raw = b.op("Where", b.op("Equal", pf, zero), zero, raw)
            dx = unbroadcast(ctx, raw, x)
    if ctx.wants[1]:
        raw = b.op("Mul", b.op("Mul", g, y), b.op("Log", x))
        masked = b.op("And", b.op("Equal", x, zero), b.op("GreaterOrEqual", p, ctx.zero(p)))
        dp = unbroadcast(ctx, b.op("Where", masked, ctx.zero(y), raw), p)
    return [dx, dp]

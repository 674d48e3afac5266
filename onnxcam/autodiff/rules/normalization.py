"""VJP rules of normalisation layers: BatchNormalization (inference), InstanceNormalization,
LayerNormalization and LRN.

Only the gradient of the data input ``X`` is emitted. Scale, bias and running
statistics are weights in every model onnxcam explains; if one of them does
depend on the explained layer the rule refuses rather than drop a term.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxcam.autodiff.registry import VJPContext, vjp_rule
from onnxcam.errors import UnsupportedModelError


def _only_data_gradient(ctx: VJPContext) -> None:
    """Refuse when a parameter input (index >= 1) would need a gradient."""
    if any(ctx.wants[1:]):
        raise UnsupportedModelError(
            f"{ctx.node.op_type} node {ctx.node.name!r}: its scale/bias/statistics depend on the explained layer; "
            "onnxcam differentiates normalisation layers only through their data input; choose a layer after it"
        )


def _only_first_output(ctx: VJPContext) -> None:
    if any(g is not None for g in ctx.grads_out[1:]):
        raise UnsupportedModelError(
            f"{ctx.node.op_type} node {ctx.node.name!r}: the score depends on a statistics output "
            "(mean / inverse std), which onnxcam does not differentiate; choose a layer after this node"
        )


def _per_channel(ctx: VJPContext, v: str, rank: int) -> str:
    """A (C,) tensor reshaped to (C, 1, ..., 1) so it broadcasts over axis 1 of a rank-``rank`` tensor."""
    if rank <= 2:
        return v
    return ctx.b.op("Unsqueeze", v, ctx.b.ints(list(range(1, rank - 1))))


def _normalized_grad(ctx: VJPContext, x: str, gxhat: str, axes: list[int], eps: float) -> str:
    """dx of xhat = (x - mean) / sqrt(var + eps) over ``axes``, given g_xhat.

    dx = inv_std * (g_xhat - mean(g_xhat) - xhat * mean(g_xhat * xhat)), the
    standard result of differentiating through the mean and the biased variance.
    """
    b = ctx.b
    mean = b.reduce("ReduceMean", x, axes, keepdims=True, hint="norm_mean")
    centered = b.op("Sub", x, mean)
    var = b.reduce("ReduceMean", b.op("Mul", centered, centered), axes, keepdims=True, hint="norm_var")
    inv_std = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, ctx.const(eps, like=x))))
    xhat = b.op("Mul", centered, inv_std, hint="xhat")
    mean_g = b.reduce("ReduceMean", gxhat, axes, keepdims=True)
    mean_gx = b.reduce("ReduceMean", b.op("Mul", gxhat, xhat), axes, keepdims=True)
    inner = b.op("Sub", b.op("Sub", gxhat, mean_g), b.op("Mul", xhat, mean_gx))
    return b.op("Mul", inner, inv_std)


@vjp_rule("BatchNormalization")
def vjp_batch_normalization(ctx: VJPContext) -> Sequence[str | None]:
    """Inference mode is affine per channel: y = x * s + t with s = scale / sqrt(var + eps),
    so dx = g * s, with s broadcast over channel axis 1."""
    if ctx.attr_int("training_mode", 0) or len([o for o in ctx.outputs if o]) > 1:
        raise UnsupportedModelError(
            f"BatchNormalization node {ctx.node.name!r} is in training mode; export the model in eval mode "
            "(model.eval() before torch.onnx.export)"
        )
    _only_data_gradient(ctx)
    b = ctx.b
    x, scale, _bias, _mean, var = ctx.inputs[:5]
    eps = ctx.attr_float("epsilon", 1e-5)
    rank = ctx.require_rank(x)
    scale_v, var_v = ctx.constant_value(scale), ctx.constant_value(var)
    if scale_v is not None and var_v is not None:
        s = scale_v.astype(np.float64) / np.sqrt(var_v.astype(np.float64) + eps)
        factor = ctx.const(s.reshape(s.shape + (1,) * max(rank - 2, 0)), like=x)
    else:
        s_name = b.op("Div", scale, b.op("Sqrt", b.op("Add", var, ctx.const(eps, like=var))))
        factor = _per_channel(ctx, s_name, rank)
    return [b.op("Mul", ctx.grad_out, factor)]


@vjp_rule("InstanceNormalization")
def vjp_instance_normalization(ctx: VJPContext) -> Sequence[str | None]:
    """y = scale_c * xhat + B_c with xhat normalised over the spatial axes of each (n, c):
    dx = scale_c / sigma * (g - mean(g) - xhat * mean(g * xhat))."""
    _only_data_gradient(ctx)
    x, scale = ctx.inputs[0], ctx.inputs[1]
    rank = ctx.require_rank(x)
    eps = ctx.attr_float("epsilon", 1e-5)
    gxhat = ctx.b.op("Mul", ctx.grad_out, _per_channel(ctx, scale, rank))
    return [_normalized_grad(ctx, x, gxhat, list(range(2, rank)), eps)]


@vjp_rule("LayerNormalization")
def vjp_layer_normalization(ctx: VJPContext) -> Sequence[str | None]:
    """y = scale * xhat + B with xhat normalised over axes [axis, rank):
    dx = (1/sigma) * (gs - mean(gs) - xhat * mean(gs * xhat)) with gs = g * scale.
    The optional Mean / InvStdDev outputs are not differentiated."""
    _only_data_gradient(ctx)
    _only_first_output(ctx)
    x, scale = ctx.inputs[0], ctx.inputs[1]
    rank = ctx.require_rank(x)
    axis = ctx.attr_int("axis", -1)
    axis = axis + rank if axis < 0 else axis
    eps = ctx.attr_float("epsilon", 1e-5)
    gxhat = ctx.b.op("Mul", ctx.grad_out, scale)
    return [_normalized_grad(ctx, x, gxhat, list(range(axis, rank)), eps)]


@vjp_rule("LRN")
def vjp_lrn(ctx: VJPContext) -> Sequence[str | None]:
    """y = x * D^-beta with D = bias + alpha/size * W(x^2), W the sum over the channel window
    [c - floor((size-1)/2), c + ceil((size-1)/2)]. Then

        dx = g * D^-beta - (2 alpha beta / size) * x * W^T(g * D^-beta * x / D)

    W is a Conv with a ones kernel of length ``size`` along the channel axis of
    x unsqueezed to (N, 1, C, ...); its transpose W^T is the same Conv with the
    two paddings swapped.
    """
    b = ctx.b
    x, g = ctx.inputs[0], ctx.grad_out
    rank = ctx.require_rank(x)
    size = ctx.attr_int("size")
    alpha = ctx.attr_float("alpha", 1e-4)
    beta = ctx.attr_float("beta", 0.75)
    bias = ctx.attr_float("bias", 1.0)
    lo, hi = (size - 1) // 2, size // 2
    n_sp = rank - 1  # spatial rank of the window Conv: channels plus x's own spatial axes
    kernel = ctx.const(np.ones((1, 1, size) + (1,) * (n_sp - 1)), like=x)
    zeros = [0] * (n_sp - 1)

    def window(t: str, before: int, after: int) -> str:
        t = b.op("Unsqueeze", t, b.ints([1]))
        t = b.op("Conv", t, kernel, pads=[before, *zeros, after, *zeros], hint="lrn_window")
        return b.op("Squeeze", t, b.ints([1]))

    d = b.op(
        "Add",
        ctx.const(bias, like=x),
        b.op("Mul", ctx.const(alpha / size, like=x), window(b.op("Mul", x, x), lo, hi)),
        hint="lrn_den",
    )
    gp = b.op("Mul", g, b.op("Pow", d, ctx.const(-beta, like=x)))  # g * D^-beta
    back = window(b.op("Div", b.op("Mul", gp, x), d), hi, lo)
    cross = b.op("Mul", b.op("Mul", x, back), ctx.const(2.0 * alpha * beta / size, like=x))
    return [b.op("Sub", gp, cross)]

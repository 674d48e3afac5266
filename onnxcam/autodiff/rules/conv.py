"""VJP rules of convolutions: the input gradient of a Conv is a ConvTranspose and vice versa.

Conv is a linear map ``x -> y`` whose adjoint is the transposed convolution
with the same weight, strides, dilations and groups (a Conv weight
``(M, C/group, k...)`` read as a ConvTranspose weight ``(C_in=M, C_out/group=C/group, k...)``
pairs input and output channels group by group exactly as the adjoint needs,
so the weight is used as is). All padding is resolved at graph-build time into
explicit begin/end pads, so the emitted nodes never depend on ``auto_pad``.

Throughout, for one spatial axis: ``S`` is the forward input length, ``s`` the
stride, ``ke = (k - 1) * d + 1`` the dilated kernel extent and ``pb``/``pe``
the begin/end pads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from onnxcam.autodiff.registry import VJPContext, vjp_rule
from onnxcam.errors import UnsupportedModelError
from onnxcam.graph.index import static_dims

#: (spatial rank, kernel shape, strides, dilations, group) of a Conv/ConvTranspose node.
_Geometry: TypeAlias = tuple[int, list[int], list[int], list[int], int]


def _where(ctx: VJPContext) -> str:
    return f"{ctx.node.op_type} node {ctx.node.name!r}"


def _geometry(ctx: VJPContext, x: str, w: str) -> _Geometry:
    """(spatial rank, kernel shape, strides, dilations, group) of a Conv/ConvTranspose node."""
    kernel = ctx.attr_ints("kernel_shape")
    w_shape = ctx.shape(w)
    if kernel is None and w_shape is not None:
        w_kernel = [k for k in w_shape[2:] if isinstance(k, int)]
        kernel = w_kernel if len(w_kernel) == len(w_shape[2:]) else None
    if kernel is None:
        raise UnsupportedModelError(
            f"the kernel shape of {_where(ctx)} is unknown (no kernel_shape attribute, weight shape not static); "
            "re-export the model with constant convolution weights"
        )
    n = len(kernel)
    strides = ctx.attr_ints("strides") or [1] * n
    dilations = ctx.attr_ints("dilations") or [1] * n
    return n, kernel, strides, dilations, ctx.attr_int("group", 1)


def _static_spatial(ctx: VJPContext, x: str, n: int, why: str) -> list[int]:
    dims = _spatial_if_static(ctx, x, n)
    if dims is None:
        raise UnsupportedModelError(
            f"the gradient of {_where(ctx)} needs the static spatial size of its input {x!r} ({why}), "
            f"but shape inference gives {ctx.shape(x)}; fix the input's height/width (e.g. re-export with a "
            "static input size, or set the input shape before explaining)"
        )
    return dims


def _split_total(total: int, extra_at_end: bool) -> tuple[int, int]:
    """Begin/end pads for an odd-or-even total: the odd pixel goes to the end or the beginning."""
    head = total // 2 if extra_at_end else total - total // 2
    return head, total - head


def _bias_grad(ctx: VJPContext, n: int) -> str:
    """d/dB of ``y + B[None, :, None...]``: the cotangent summed over batch and space."""
    return ctx.b.reduce("ReduceSum", ctx.grad_out, [0, *range(2, n + 2)], keepdims=False, hint="dbias")


def _refuse_weight(ctx: VJPContext) -> None:
    if ctx.wants[1]:
        raise UnsupportedModelError(
            f"the weight of {_where(ctx)} depends on the chosen layer; onnxcam differentiates "
            "convolutions with respect to their input only; choose a layer after this node"
        )


def _start(ctx: VJPContext) -> tuple[str, str, _Geometry, list[str | None]]:
    """The shared start of Conv/ConvTranspose: refuse dW, read the geometry, emit dB where wanted.

    Returns ``(x, w, (n, kernel, strides, dilations, group), grads)`` with ``grads[0]`` still unset.
    """
    _refuse_weight(ctx)
    x, w = ctx.inputs[:2]
    geometry = _geometry(ctx, x, w)
    grads: list[str | None] = [None] * len(ctx.inputs)
    if len(ctx.inputs) > 2 and ctx.wants[2]:
        grads[2] = _bias_grad(ctx, geometry[0])
    return x, w, geometry, grads


@vjp_rule("Conv")
def vjp_conv(ctx: VJPContext) -> Sequence[str | None]:
    """dx = ConvTranspose(g, W) with the forward's strides, dilations and groups.

    Per axis, the padded input has length ``Lp = S + pb + pe`` and the output
    windows cover its first ``(out - 1) * s + ke`` positions; the ``r`` pixels
    left over (stride not dividing) get zero gradient via ``output_padding = r``,
    and cropping ``pb``/``pe`` drops the padding: the result has length
    ``(out - 1) * s + ke + r - pb - pe = S`` exactly. With stride 1 there is no
    leftover and ``SAME`` pads total ``ke - 1`` whatever ``S`` is, so only
    strided axes need the input size; where it is symbolic, ``r`` (and SAME
    pads) are computed at run time instead.
    """
    x, w, (n, kernel, strides, dilations, group), grads = _start(ctx)
    if not ctx.wants[0]:
        return grads
    w = ctx.own_constant(w)

    auto_pad = ctx.attr_str("auto_pad", "NOTSET")
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    strided = [i for i in range(n) if strides[i] > 1]
    spatial = _spatial_if_static(ctx, x, n) if strided else []  # only strided axes read it
    if spatial is None:
        grads[0] = _conv_input_grad_dynamic(ctx, w, n, kernel, strides, dilations, group, extent, auto_pad)
        return grads
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads_b, pads_e = [], []
        for i in range(n):
            if strides[i] == 1:
                total = extent[i] - 1
            else:
                size = spatial[i]
                total = max(0, (-(-size // strides[i]) - 1) * strides[i] + extent[i] - size)
            head, tail = _split_total(total, extra_at_end=auto_pad == "SAME_UPPER")
            pads_b.append(head)
            pads_e.append(tail)
    else:
        pads_b, pads_e = _explicit_pads(ctx, n, auto_pad)

    leftover = [0] * n
    for i in strided:
        padded = spatial[i] + pads_b[i] + pads_e[i]
        leftover[i] = (padded - extent[i]) % strides[i]
    grads[0] = ctx.b.op(
        "ConvTranspose",
        ctx.grad_out,
        w,
        hint="dconv",
        kernel_shape=kernel,
        strides=strides,
        dilations=dilations,
        group=group,
        pads=pads_b + pads_e,
        output_padding=leftover if any(leftover) else None,
    )
    return grads


def _explicit_pads(ctx: VJPContext, n: int, auto_pad: str) -> tuple[list[int], list[int]]:
    if auto_pad == "VALID":
        return [0] * n, [0] * n
    pads = ctx.attr_ints("pads") or [0] * (2 * n)
    return pads[:n], pads[n:]


def _spatial_if_static(ctx: VJPContext, x: str, n: int) -> list[int] | None:
    """The input's spatial sizes (after batch and channels) when all are known, else None."""
    shape = ctx.shape(x)
    dims = None if shape is None or len(shape) != n + 2 else static_dims(shape[2:])
    return None if dims is None else list(dims)


def _conv_input_grad_dynamic(
    ctx: VJPContext,
    w: str,
    n: int,
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    group: int,
    extent: list[int],
    auto_pad: str,
) -> str:
    """Conv's input gradient when a strided axis has a symbolic size ``S`` (pads/leftover known at run time).

    The unpadded ConvTranspose covers padded positions ``[0, (out - 1) * s + ke)``;
    padding its end with the leftover ``r = (S + pb + pe - ke) mod s`` zeros
    gives the whole padded input, and slicing ``[pb, pb + S)`` drops the pads.
    SAME pads are ``total = max(0, (ceil(S / s) - 1) * s + ke - S)`` split as
    the forward splits them.
    """
    b = ctx.b
    x = ctx.inputs[0]
    size = b.op("Shape", x, start=2, hint="conv_size")
    stride_v, extent_v = b.ints(strides), b.ints(extent)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        n_out = b.op("Div", b.op("Add", size, b.ints([s - 1 for s in strides])), stride_v)
        reach = b.op("Add", b.op("Mul", b.op("Sub", n_out, b.ints([1] * n)), stride_v), extent_v)
        total = b.op("Max", b.op("Sub", reach, size), b.ints([0] * n))
        half = b.op("Div", total, b.ints([2] * n))
        head = half if auto_pad == "SAME_UPPER" else b.op("Sub", total, half)
    else:
        pads_b, pads_e = _explicit_pads(ctx, n, auto_pad)
        head = b.ints(pads_b)
        total = b.ints([pb + pe for pb, pe in zip(pads_b, pads_e)])
    leftover = b.op("Mod", b.op("Sub", b.op("Add", size, total), extent_v), stride_v)
    full = b.op(
        "ConvTranspose",
        ctx.grad_out,
        w,
        hint="dconv_full",
        kernel_shape=kernel,
        strides=strides,
        dilations=dilations,
        group=group,
    )
    pads = b.op("Concat", b.ints([0] * (n + 4)), leftover, axis=0)
    padded = b.op("Pad", full, pads, hint="dconv_padded")
    axes = b.ints(list(range(2, n + 2)))
    return b.op("Slice", padded, head, b.op("Add", head, size), axes, hint="dconv")


@vjp_rule("ConvTranspose")
def vjp_conv_transpose(ctx: VJPContext) -> Sequence[str | None]:
    """dx = Conv(g, W) with the forward's strides, dilations and groups.

    Per axis, ConvTranspose scatters into a full output of length
    ``(S - 1) * s + ke``, appends ``output_padding`` zeros and crops ``pb``/``pe``
    (a negative ``pe``, from an ``output_shape`` larger than that, appends more
    zeros). Its adjoint gathers with the same windows: a Conv of ``g`` padded by
    ``pb`` at the start and by ``pe - output_padding`` at the end returns exactly
    ``S`` positions. A negative end pad within ``s - 1`` is absorbed by Conv's
    floor; a larger one becomes a Slice of the cotangent's tail (those outputs
    are constant zeros). ``auto_pad``/``output_shape`` are resolved the way
    onnxruntime does: total pad ``s*(S-1) + output_padding + ke - out`` with
    ``out = output_shape`` or ``S * s`` for SAME (clamped at 0 there), the odd
    pixel at the end for SAME_UPPER and at the beginning otherwise.
    """
    x, w, (n, kernel, strides, dilations, group), grads = _start(ctx)
    if not ctx.wants[0]:
        return grads

    auto_pad = ctx.attr_str("auto_pad", "NOTSET")
    out_pad = ctx.attr_ints("output_padding") or [0] * n
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    output_shape = ctx.attr_ints("output_shape")
    if output_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if output_shape:
            spatial = _static_spatial(ctx, x, n, "ConvTranspose with output_shape")
            target = [int(v) for v in output_shape[-n:]]
            totals = [strides[i] * (spatial[i] - 1) + out_pad[i] + extent[i] - target[i] for i in range(n)]
        else:  # output = S * s, so the total does not depend on S; never below the full output
            totals = [max(0, out_pad[i] + extent[i] - strides[i]) for i in range(n)]
        pads_b, pads_e = [], []
        for total in totals:
            head, tail = _split_total(total, extra_at_end=auto_pad == "SAME_UPPER") if total >= 0 else (0, total)
            pads_b.append(head)
            pads_e.append(tail)
    else:
        pads_b, pads_e = _explicit_pads(ctx, n, auto_pad)

    g = ctx.grad_out
    conv_end, cut = [], []
    for i in range(n):
        end = pads_e[i] - out_pad[i]
        if end >= -(strides[i] - 1):
            conv_end.append(max(end, 0))
            cut.append(0)
        else:
            conv_end.append(0)
            cut.append(-end)
    if any(cut):
        axes = [i + 2 for i in range(n) if cut[i]]
        g = ctx.b.op(
            "Slice",
            g,
            ctx.b.ints([0] * len(axes)),
            ctx.b.ints([-c for c in cut if c]),
            ctx.b.ints(axes),
            hint="dconvT_crop",
        )
    grads[0] = ctx.b.op(
        "Conv",
        g,
        w,
        hint="dconvT",
        kernel_shape=kernel,
        strides=strides,
        dilations=dilations,
        group=group,
        pads=pads_b + conv_end,
    )
    return grads

"""VJP rules of pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

Window geometry follows onnxruntime (which agrees with torch): with
``ceil_mode`` the last window must start inside the input or its left
padding, and a window that runs past the right padding only counts the
positions inside ``[-pad_begin, size + pad_end)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from onnx import TensorProto, helper

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


@vjp_rule("MaxPool", portable=True)
def vjp_max_pool_portable(ctx: VJPContext) -> Sequence[str | None]:
    """MaxPool's gradient as a mask, with ops every execution provider has (no Indices, no scatter).

    With the channels folded into the batch, a Conv whose K = prod(kernel)
    one-hot kernels pick each window's k-th element lays the windows out as
    (N*C, K, *out) patches; they equal the pooled output where a window's
    maximum sits. Ties go to the first such k, as MaxPool's own index does
    (row-major within the window): a 1x1 Conv with a strictly lower-triangular
    ones matrix counts the earlier hits, and ``Relu(hit - earlier)`` keeps a
    hit only where that count is zero. Padding never wins: the static
    ``inside`` mask clears positions outside the input. The cotangent times
    that mask goes back through the same one-hot kernels as a ConvTranspose,
    which sums overlapping windows as the scatter-add does. Compares and
    sums run in float32 below it (as the scatter does), exact for 0/1 masks.
    """
    b = ctx.b
    x, y, g = ctx.inputs[0], ctx.outputs[0], ctx.grad_out
    t = ctx.index.type_of(x)
    work = TensorProto.DOUBLE if t is not None and t.elem_type == TensorProto.DOUBLE else TensorProto.FLOAT
    work_np = helper.tensor_dtype_to_np_dtype(work)

    def folded(name: str, target: str) -> str:
        flat = b.op("Reshape", name, target, hint="maxpool_fold")
        return flat if t is not None and t.elem_type == work else b.op("Cast", flat, to=work, hint="maxpool_f32")

    shape = ctx.shape(x)
    kernel = ctx.attr_ints("kernel_shape") or []
    n = len(kernel)
    if shape is not None and len(shape) == n + 2 and static_dims(shape[2:]) is not None:
        window = _static_windows(ctx, x, y, g, folded)
    else:
        window = _dynamic_windows(ctx, x, y, g, folded, work)
    k = math.prod(kernel)
    picks = b.const(np.eye(k).reshape(k, 1, *kernel), work_np)
    strides, dilations = window.strides, window.dilations
    patches = b.op(
        "Conv", window.x_f, picks, hint="maxpool_windows", pads=window.pads, strides=strides, dilations=dilations
    )
    hits = b.op("Cast", b.op("Equal", patches, window.y_f), to=work, hint="maxpool_hits")
    if window.inside is not None:
        inside = window.inside(picks) if callable(window.inside) else b.const(window.inside, work_np)
        hits = b.op("Mul", hits, inside, hint="maxpool_inside")
    if k > 1:
        earlier = b.op("Conv", hits, b.const(np.tril(np.ones((k, k)), -1).reshape(k, k, *[1] * n), work_np))
        hits = b.op("Relu", b.op("Sub", hits, earlier), hint="maxpool_first")
    routed = b.op("Mul", hits, window.g_f, hint="maxpool_routed")
    dx = window.tail(
        b.op(
            "ConvTranspose",
            routed,
            picks,
            hint="maxpool_grad",
            pads=window.back_pads,
            strides=strides,
            dilations=dilations,
        )
    )
    dx = b.op("Reshape", dx, ctx.reshape_target(x))
    return [dx if t is None or t.elem_type == work else b.op("Cast", dx, to=t.elem_type, hint="maxpool_back")]


@dataclass
class _Windows:
    """How the portable MaxPool rule lays out its windows: its inputs folded to (N*C, 1, ...), the Conv
    geometry, which window positions lie inside the input, and how the transposed sum is completed."""

    x_f: str
    y_f: str
    g_f: str
    strides: list[int]  # the Conv laying out the windows, and the ConvTranspose summing them back
    dilations: list[int]
    pads: list[int]
    back_pads: list[int]  # the ConvTranspose summing them back: what it crops of the padded input
    inside: NDArray[np.float64] | Callable[[str], str] | None  # (K, *out) constant, or built from the kernels
    tail: Callable[[str], str]  # pads the ConvTranspose output with the input positions no window reached


def _static_windows(ctx: VJPContext, x: str, y: str, g: str, folded: Callable[[str, str], str]) -> _Windows:
    """Static spatial sizes: any geometry (auto_pad, ceil_mode), everything a constant."""
    b = ctx.b
    axes = _pool_axes(ctx, x)
    full = [a.stride * (a.out - 1) + (a.kernel - 1) * a.dilation + 1 for a in axes]
    pads = [a.pad_begin for a in axes] + [max(0, f - a.pad_begin - a.size) for f, a in zip(full, axes)]
    x_f = folded(x, b.ints([-1, 1, *[a.size for a in axes]]))
    outs = [a.out for a in axes]
    inferred = ctx.shape(y)
    if inferred is not None and list(inferred[2:]) == outs:
        y_f, g_f = folded(y, b.ints([-1, 1, *outs])), folded(g, b.ints([-1, 1, *outs]))
    else:  # ONNX shape inference sizes some ceil_mode pools one larger than onnxruntime: (N*C) from Flatten,
        # whose first dim does not depend on the misjudged spatial ones, keeps the static shapes consistent
        flat_target = b.ints([0, 1, *outs])
        y_f = folded(b.op("Flatten", y, axis=2), flat_target)
        g_f = folded(b.op("Flatten", g, axis=2), flat_target)
    inside = _inside_windows(axes)
    extend = [max(0, a.pad_begin + a.size - f) for f, a in zip(full, axes)]
    return _Windows(
        x_f,
        y_f,
        g_f,
        [a.stride for a in axes],
        [a.dilation for a in axes],
        pads,
        pads,
        None if inside.all() else inside,
        lambda dx: _zero_padded_end(ctx, dx, extend),
    )


def _dynamic_windows(ctx: VJPContext, x: str, y: str, g: str, folded: Callable[[str, str], str], work: int) -> _Windows:
    """Run-time spatial sizes: explicit pads and floor sizing only (the Conv then sizes its windows as MaxPool)."""
    b = ctx.b
    n = len(ctx.attr_ints("kernel_shape") or [])
    if ctx.attr_int("ceil_mode", 0) or ctx.attr_str("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedModelError(
            f"MaxPool node {ctx.node.name!r} sizes its output with ceil_mode or SAME padding on run-time image "
            "sizes, which a portable export cannot write; export without --portable, or re-export the model "
            "with a fixed input height/width"
        )
    pads = [0] * (2 * n) if ctx.attr_str("auto_pad", "NOTSET") == "VALID" else ctx.attr_ints("pads", [0] * (2 * n))
    strides, dilations = ctx.attr_ints("strides", [1] * n), ctx.attr_ints("dilations", [1] * n)
    same_spatial = b.ints([-1, 1] + [0] * n)  # 0: the spatial sizes as they are
    x_f = folded(x, same_spatial)

    def inside(picks: str) -> str:  # the windows of a ones image: 1 inside the input, 0 in its padding
        ones = b.op("ConstantOfShape", b.op("Shape", x_f), value=helper.make_tensor("one", work, [1], [1.0]))
        return b.op("Conv", ones, picks, hint="maxpool_inside", strides=strides, dilations=dilations, pads=pads)

    def tail(dx: str) -> str:  # the sum covers [-pb, last window's end): cut it to the input, pad what no window read
        size = b.op("Shape", x_f, start=2, hint="maxpool_size")
        cut = b.op("Slice", dx, b.ints([0] * n), size, b.ints(list(range(2, n + 2))), hint="maxpool_cut")
        missing = b.op("Sub", size, b.op("Shape", cut, start=2), hint="maxpool_missing")
        return b.op("Pad", cut, b.op("Concat", b.ints([0] * (n + 4)), missing, axis=0), hint="pool_grad_tail")

    return _Windows(
        x_f,
        folded(y, same_spatial),
        folded(g, same_spatial),
        strides,
        dilations,
        pads,
        pads[:n] + [0] * n,  # crop the left padding only; the tail cuts the right
        inside if any(pads) else None,
        tail,
    )


def _zero_padded_end(ctx: VJPContext, dx: str, extend: Sequence[int]) -> str:
    """``dx`` with ``extend`` zeros after each spatial axis: input elements no window reached.

    ConvTranspose's ``output_padding`` says the same, but CoreML's builder takes only its default.
    """
    if not any(extend):
        return dx
    rank = len(extend) + 2
    return ctx.b.op("Pad", dx, ctx.b.ints([0] * rank + [0, 0, *extend]), hint="pool_grad_tail")


def _inside_windows(axes: Sequence[_Axis]) -> NDArray[np.float64]:
    """(K, *out) 1 where window offset k (row-major over the kernel) of an output position lies inside the input."""
    inside = np.ones((1, 1))  # (kernel positions so far, outputs so far), flattened row-major
    for a in axes:
        p = a.positions()  # (out, kernel)
        ok = ((p >= 0) & (p < a.size)).T.astype(np.float64)  # (kernel, out)
        inside = np.einsum("ko,lp->klop", inside, ok).reshape(inside.shape[0] * a.kernel, inside.shape[1] * a.out)
    return inside.reshape(inside.shape[0], *[a.out for a in axes])


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
        output_padding=extend if any(extend) and not ctx.portable else None,
        hint="avgpool_grad",
    )
    if ctx.portable:
        dx = _zero_padded_end(ctx, dx, extend)
    return [b.op("Reshape", dx, ctx.reshape_target(x))]


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
    return [b.expand(scaled, ctx.expand_target(x), constant_axes=range(2, len(shape)))]


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

"""VJP rules of shape and data-movement ops.

Every op here is linear in its data input and only moves (or copies, or
interpolates) elements, so its VJP moves the cotangent back: a reshape undoes
a reshape, a split undoes a concat, a scatter undoes a gather. Shape, axes,
index and pad inputs are integer tensors and get no gradient.

Ops that pick elements by position (Slice with steps, Gather, GatherElements,
GatherND, non-constant Pad) share one exact trick: run the forward op on an
"iota" tensor holding each element's flat position, which yields, for every
output element, the input position it came from; then scatter-add the
cotangent into zeros at those positions. It needs no constant indices and
works with any dynamic shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeGuard

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from onnxcam.autodiff.registry import VJPContext, vjp_rule
from onnxcam.autodiff.rules._broadcast import unbroadcast
from onnxcam.autodiff.rules._scatter import scatter_elements
from onnxcam.errors import UnsupportedModelError
from onnxcam.graph.index import Dim, Shape

_INT64_MAX = np.iinfo(np.int64).max

#: An element of a traced int64 tensor: an int, ``("dim", tensor, axis)`` for ``Shape(tensor)[axis]``, or None.
_Traced: TypeAlias = int | tuple[str, str, int] | None
#: How a Resize node resizes (see :func:`_resize_plan`).
_ResizePlan: TypeAlias = tuple[list[int], list[int], NDArray[Any] | None, list[Dim] | None, NDArray[Any] | None]


# ----------------------------------------------------------------------------------------- helpers


def _static(shape: Shape | None) -> TypeGuard[tuple[int, ...]]:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def _all_int(dims: Sequence[Dim]) -> TypeGuard[Sequence[int]]:
    return all(isinstance(d, int) for d in dims)


def _shape_of(ctx: VJPContext, x: str) -> str:
    """``Shape(x)``: a constant when the shape is static, else a runtime Shape node."""
    s = ctx.shape(x)
    return ctx.b.ints(list(s)) if _static(s) else ctx.b.shape_of(x)


def _reshape_like(ctx: VJPContext, g: str, x: str) -> str:
    """``g`` (as many elements as ``x``) reshaped to ``x``'s shape.

    With one unknown dimension (the batch, usually) the target shape is still
    a constant, with -1 there for Reshape to infer, so no Shape runs per call.
    """
    s = ctx.shape(x)
    if s is not None and sum(not (isinstance(d, int) and d > 0) for d in s) == 1:
        shape = ctx.b.ints([d if isinstance(d, int) and d > 0 else -1 for d in s])
        return ctx.b.op("Reshape", g, shape, hint="grad_reshape")
    return ctx.b.op("Reshape", g, _shape_of(ctx, x), hint="grad_reshape")


def _elem_type(ctx: VJPContext, like: str) -> int | None:
    t = ctx.index.type_of(like)
    return None if t is None else t.elem_type


def _zeros_of_shape(ctx: VJPContext, shape: str, like: str) -> str:
    """Zeros of runtime/constant int64 shape ``shape`` with the element type of ``like``."""
    et = _elem_type(ctx, like) or onnx.TensorProto.FLOAT
    value = helper.make_tensor("value", et, [1], np.zeros(1, dtype=helper.tensor_dtype_to_np_dtype(et)))
    return ctx.b.op("ConstantOfShape", shape, value=value, hint="zeros")


def _const_ints(ctx: VJPContext, name: str, what: str) -> list[int] | None:
    """The constant int values of optional input ``name`` (None when omitted); raise if not constant."""
    if not name:
        return None
    v = ctx.constant_value(name)
    if v is None:
        raise UnsupportedModelError(
            f"{ctx.node.op_type} node {ctx.node.name!r}: its {what} input {name!r} is computed at run time; "
            "onnxcam needs it constant (export with static sizes, or constant-fold the model)"
        )
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _scatter_back(
    ctx: VJPContext,
    x: str,
    g: str,
    positions_of: Callable[[str, str], str],
    reduction: str = "add",
    dump_slot: bool = False,
) -> str:
    """dx = zeros(x); dx.flat[positions] += g, where ``positions = positions_of(iota, size)``.

    ``iota`` is an int64 tensor shaped like ``x`` holding each element's flat
    position, so running the forward op on it tells where each output element
    came from; ``size`` is the number of elements of ``x``. With ``dump_slot``
    the flat buffer has one extra element, at position ``size``, which
    ``positions_of`` may use for output elements that come from no input
    element (constant padding); it is dropped.
    """
    b = ctx.b
    s = ctx.shape(x)
    if _static(s):
        n = int(np.prod(s, dtype=np.int64))
        size, shape = b.ints(n), b.ints(list(s))
    else:
        size, shape = b.op("Size", x, hint="size"), b.shape_of(x)
    iota = b.op("Reshape", b.op("Range", b.ints(0), size, b.ints(1), hint="iota"), shape, hint="iota")
    pos = positions_of(iota, size)
    n_buf = b.op("Add", size, b.ints(1)) if dump_slot else size
    buf = _zeros_of_shape(ctx, b.op("Reshape", n_buf, b.ints([1])), x)
    flat = scatter_elements(
        ctx, buf, b.op("Reshape", pos, b.ints([-1])), b.op("Reshape", g, b.ints([-1])), x, reduction, "scatter"
    )
    if dump_slot:
        flat = b.op("Slice", flat, b.ints([0]), b.op("Reshape", size, b.ints([1])), b.ints([0]))
    return b.op("Reshape", flat, shape, hint="grad_scatter")


def _matmul_along(ctx: VJPContext, g: str, axis: int, rank: int, m: NDArray[np.float64], like: str) -> str:
    """Contract axis ``axis`` of ``g`` (length m.shape[0]) with ``m``: result length m.shape[1] there."""
    b = ctx.b
    if axis == rank - 1:
        return b.op("MatMul", g, ctx.const(m, like), hint="grad_resize")
    if axis == rank - 2:
        return b.op("MatMul", ctx.const(np.ascontiguousarray(m.T), like), g, hint="grad_resize")
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    t = b.op("Transpose", g, perm=perm)
    t = b.op("MatMul", t, ctx.const(m, like), hint="grad_resize")
    return b.op("Transpose", t, perm=perm)


# ------------------------------------------------------------------------- reshapes and identities


@vjp_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def vjp_reshape(ctx: VJPContext) -> Sequence[str | None]:
    """A reshape keeps the elements in order: dx = Reshape(g, Shape(x))."""
    return [_reshape_like(ctx, ctx.grad_out, ctx.inputs[0]) if ctx.wants[0] else None]


@vjp_rule("Identity")
def vjp_identity(ctx: VJPContext) -> Sequence[str | None]:
    """dx = g."""
    return [ctx.grad_out]


@vjp_rule("Dropout")
def vjp_dropout(ctx: VJPContext) -> Sequence[str | None]:
    """Inference-mode dropout is the identity: dx = g (the mask output carries no gradient)."""
    ins = ctx.inputs + [""] * (3 - len(ctx.inputs))
    training = ins[2]
    if training:
        v = ctx.constant_value(training)
        if v is None or bool(np.asarray(v).reshape(-1)[0]):
            raise UnsupportedModelError(
                f"Dropout node {ctx.node.name!r} runs in training mode (training_mode input {training!r}); "
                "export the model in eval mode (model.eval()) so dropout is the identity"
            )
    return [ctx.grads_out[0]]


@vjp_rule("Cast")
def vjp_cast(ctx: VJPContext) -> Sequence[str | None]:
    """y = x in another type: dx = g cast back to x's (float) type; integer inputs get none."""
    x = ctx.inputs[0]
    t = ctx.index.type_of(x)
    if not ctx.wants[0] or (t is not None and not t.is_float):
        return [None]
    g = ctx.grad_out
    if t is None:
        return [ctx.b.op("CastLike", g, x, hint="grad_cast")]
    if _elem_type(ctx, ctx.outputs[0]) == t.elem_type:
        return [g]
    return [ctx.b.op("Cast", g, to=t.elem_type, hint="grad_cast")]


@vjp_rule("Expand")
def vjp_expand(ctx: VJPContext) -> Sequence[str | None]:
    """y = broadcast of x: dx = g summed over the broadcast axes."""
    return [unbroadcast(ctx, ctx.grad_out, ctx.inputs[0]) if ctx.wants[0] else None, None]


@vjp_rule("Transpose")
def vjp_transpose(ctx: VJPContext) -> Sequence[str | None]:
    """y = x permuted by perm (default: reversed axes): dx = g permuted by the inverse permutation."""
    x = ctx.inputs[0]
    perm = ctx.attr_ints("perm")
    if perm is None:
        perm = list(range(ctx.require_rank(x)))[::-1]
    inv = [int(i) for i in np.argsort(np.asarray(perm))]
    return [ctx.b.op("Transpose", ctx.grad_out, perm=inv, hint="grad_transpose")]


# ------------------------------------------------------------------------------- concat and split


@vjp_rule("Concat")
def vjp_concat(ctx: VJPContext) -> Sequence[str | None]:
    """y = [x_0, x_1, ...] along axis: dx_i is the block of g at x_i's offset along that axis.

    Static sizes along the axis give one Split; otherwise each block is a Slice
    whose bounds are running sums of the inputs' runtime sizes.
    """
    b, g = ctx.b, ctx.grad_out
    xs = ctx.inputs
    if len(xs) == 1:
        return [g if ctx.wants[0] else None]
    rank = ctx.require_rank(xs[0])
    axis = ctx.attr_int("axis") % rank
    dims = [(ctx.shape(x) or [None] * rank)[axis] for x in xs]
    if _all_int(dims):
        parts = b.op_outputs("Split", g, b.ints(dims), axis=axis, outputs=len(xs), hint="grad_concat")
        return [p if want else None for p, want in zip(parts, ctx.wants)]
    grads: list[str | None] = []
    start = b.ints([0])
    for x, d, want in zip(xs, dims, ctx.wants):
        size = b.ints([d]) if isinstance(d, int) else b.shape_of(x, axis, axis + 1)
        end = b.op("Add", start, size)
        grads.append(b.op("Slice", g, start, end, b.ints([axis]), hint="grad_concat") if want else None)
        start = end
    return grads


@vjp_rule("Split")
def vjp_split(ctx: VJPContext) -> Sequence[str | None]:
    """x = [y_0, y_1, ...] along axis: dx = Concat(g_0, g_1, ...), zeros for outputs with no gradient."""
    x = ctx.inputs[0]
    if not ctx.wants[0]:
        return [None]
    rank = ctx.require_rank(x)
    axis = ctx.attr_int("axis", 0) % rank
    parts = []
    for y, g in zip(ctx.outputs, ctx.grads_out):
        parts.append(g if g is not None else _zeros_of_shape(ctx, _shape_of(ctx, y), x))
    if len(parts) == 1:
        return [parts[0]]
    return [ctx.b.op("Concat", *parts, axis=axis, hint="grad_split")]


# ---------------------------------------------------------------------------------- slice and pad


def _slice_pads(
    starts: list[int], ends: list[int], axes: list[int], steps: list[int], shape: Shape
) -> list[int] | None:
    """Pad widths (begin, end) per axis that undo a unit-step Slice, or None if they need a dynamic dim."""
    rank = len(shape)
    begin, end = [0] * rank, [0] * rank
    for s, e, a, st in zip(starts, ends, axes, steps):
        a %= rank
        d = shape[a]
        if st != 1 or not isinstance(d, int):
            return None
        s = min(max(s + d if s < 0 else s, 0), d)
        e = min(max(e + d if e < 0 else e, 0), d)
        e = max(e, s)
        begin[a], end[a] = s, d - e
    return begin + end


@vjp_rule("Slice")
def vjp_slice(ctx: VJPContext) -> Sequence[str | None]:
    """y = x[starts:ends:steps] on axes: dx = zeros(x) with g written back into the sliced window.

    Unit steps with constant bounds and static sizes on the sliced axes give a
    zero Pad (other axes may be dynamic); anything else (negative or strided
    steps, runtime bounds) scatters g to the positions Slice picks from an iota.
    """
    if not ctx.wants[0]:
        return [None]
    x, g = ctx.inputs[0], ctx.grad_out
    ins = ctx.inputs + [""] * (5 - len(ctx.inputs))
    _, starts, ends, axes, steps = ins[:5]
    shape = ctx.require_shape(x)  # a clear UnsupportedOpError when the rank is unknown, before anything is emitted
    s_val, e_val, a_val, st_val = (ctx.constant_value(n) if n else None for n in (starts, ends, axes, steps))
    if (
        s_val is not None
        and e_val is not None
        and (not axes or a_val is not None)
        and (not steps or st_val is not None)
    ):
        sv, ev = [int(v) for v in s_val.reshape(-1)], [int(v) for v in e_val.reshape(-1)]
        av = [int(v) for v in a_val.reshape(-1)] if a_val is not None else list(range(len(sv)))
        stv = [int(v) for v in st_val.reshape(-1)] if st_val is not None else [1] * len(sv)
        pads = _slice_pads(sv, ev, av, stv, shape)
        if pads is not None:
            if not any(pads):
                return [g]
            cut = [a for a in range(len(shape)) if pads[a] or pads[len(shape) + a]]
            if len(cut) == 1:  # a window of one axis (a class token kept as (N, 1, C)): a band
                a = cut[0]
                return [ctx.rows(g, x, a, pads[a], shape[a] - pads[a] - pads[len(shape) + a])]  # type: ignore[operator]
            return [ctx.b.op("Pad", g, ctx.b.ints(pads), hint="grad_slice")]
    node_ins = [starts, ends, axes, steps]
    while node_ins and not node_ins[-1]:
        node_ins.pop()
    return [_scatter_back(ctx, x, g, lambda iota, size: ctx.b.op("Slice", iota, *node_ins), reduction="none")]


@vjp_rule("Pad")
def vjp_pad(ctx: VJPContext) -> Sequence[str | None]:
    """Constant padding by non-negative widths: dx = g sliced back to x's window.

    Reflect/edge/wrap padding copies some elements several times and negative
    widths crop: dx scatter-adds g to the source positions that the same Pad
    picks from an iota (constant-pad positions go to a dropped extra slot).
    """
    if not ctx.wants[0]:
        return [None]
    b, x, g = ctx.b, ctx.inputs[0], ctx.grad_out
    ins = ctx.inputs + [""] * (4 - len(ctx.inputs))
    _, pads, _, axes = ins[:4]
    mode = ctx.attr_str("mode", "constant")
    rank = ctx.require_rank(x)
    p_val = ctx.constant_value(pads)
    a_val = ctx.constant_value(axes) if axes else np.arange(rank)
    if mode == "constant" and p_val is not None and a_val is not None:
        pv = [int(p) for p in p_val.reshape(-1)]
        av = [int(a) % rank for a in np.asarray(a_val).reshape(-1)]
        n = len(av)
        if all(p >= 0 for p in pv):
            if not any(pv):
                return [g]
            ends = [-pv[n + i] if pv[n + i] > 0 else _INT64_MAX for i in range(n)]
            return [b.op("Slice", g, b.ints(pv[:n]), b.ints(ends), b.ints(av), hint="grad_pad")]

    def positions(iota: str, size: str) -> str:
        extra = [axes] if axes else []
        if mode == "constant":
            return b.op("Pad", iota, pads, size, *extra, mode="constant")
        return b.op("Pad", iota, pads, "", *extra, mode=mode)

    return [_scatter_back(ctx, x, g, positions, reduction="add", dump_slot=True)]


# --------------------------------------------------------------------------------------- gathers


@vjp_rule("Gather")
def vjp_gather(ctx: VJPContext) -> Sequence[str | None]:
    """y = x[..., indices, ...] along axis: dx = zeros(x) with g scatter-added at the gathered positions.

    Repeated indices add up; negative indices are resolved by Gather itself on the iota.
    """
    if not ctx.wants[0]:
        return [None, None]
    x, idx = ctx.inputs
    axis = ctx.attr_int("axis", 0)
    iv = ctx.constant_value(idx)
    size = (ctx.shape(x) or [None] * (axis + 1))[axis]
    if iv is not None and iv.ndim == 0 and isinstance(size, int):  # one row, e.g. the class token: a band of it
        axis %= ctx.require_rank(x)
        return [ctx.rows(ctx.b.op("Unsqueeze", ctx.grad_out, ctx.b.ints([axis])), x, axis, int(iv) % size, 1), None]
    unique = iv is not None and _unique_indices(iv, size)
    return [
        _scatter_back(
            ctx,
            x,
            ctx.grad_out,
            lambda iota, size: ctx.b.op("Gather", iota, idx, axis=axis),
            reduction="none" if unique else "add",
        ),
        None,
    ]


def _unique_indices(iv: NDArray[Any], dim: Dim) -> bool:
    if not isinstance(dim, int):
        return False
    flat = np.asarray(iv).reshape(-1).astype(np.int64)
    flat = np.where(flat < 0, flat + dim, flat)
    return len(np.unique(flat)) == flat.size


def _regather_grad(ctx: VJPContext, op_type: str, attr: str) -> list[str | None]:
    """[dx, None] of ``y = op_type(x, indices)``: g scatter-added where the same gather, run on an
    iota with the node's ``attr`` (an int, default 0), says each output element came from."""
    if not ctx.wants[0]:
        return [None, None]
    x, idx = ctx.inputs
    value = ctx.attr_int(attr, 0)

    def regather(iota: str, size: str) -> str:  # every parameter named, so {attr: value} can only be an attribute
        return ctx.b.op(op_type, iota, idx, outputs=1, hint=None, domain="", **{attr: value})

    return [_scatter_back(ctx, x, ctx.grad_out, regather), None]


@vjp_rule("GatherElements")
def vjp_gather_elements(ctx: VJPContext) -> Sequence[str | None]:
    """y[i] = x[i with i_axis := indices[i]]: dx = scatter-add of g at those positions."""
    return _regather_grad(ctx, "GatherElements", "axis")


@vjp_rule("GatherND")
def vjp_gather_nd(ctx: VJPContext) -> Sequence[str | None]:
    """y = x[indices tuples] (with batch_dims): dx = scatter-add of g at the gathered positions."""
    return _regather_grad(ctx, "GatherND", "batch_dims")


@vjp_rule("Tile")
def vjp_tile(ctx: VJPContext) -> Sequence[str | None]:
    """y = x repeated r_i times along each axis: dx = g viewed as [r_0, d_0, r_1, d_1, ...] summed over r_i."""
    if not ctx.wants[0]:
        return [None, None]
    b, x, g = ctx.b, ctx.inputs[0], ctx.grad_out
    repeats = ctx.inputs[1]
    rank = ctx.require_rank(x)
    rv, s = ctx.constant_value(repeats), ctx.shape(x)
    if rv is not None and _static(s):
        shape = b.ints([v for r, d in zip(rv.reshape(-1), s) for v in (int(r), d)])
    else:
        pairs = b.op(
            "Concat", b.op("Unsqueeze", repeats, b.ints([1])), b.op("Unsqueeze", _shape_of(ctx, x), b.ints([1])), axis=1
        )
        shape = b.op("Reshape", pairs, b.ints([-1]))
    split = b.op("Reshape", g, shape, hint="grad_tile")
    return [b.reduce("ReduceSum", split, list(range(0, 2 * rank, 2)), keepdims=False, hint="grad_tile"), None]


# ---------------------------------------------------------------------------------------- resize


def _resize_plan(ctx: VJPContext) -> _ResizePlan:
    """Which axes the Resize node really resizes, and the scales/sizes to probe it with.

    Returns (resized axes, the node's normalised axes, scales or None, sizes or None).
    Follows the reference implementation: an axis is untouched when its scale
    is 1, its output length equals its input length and its roi is [0, 1].
    """
    node, x = ctx.node, ctx.inputs[0]
    ins = ctx.inputs + [""] * (4 - len(ctx.inputs))
    _, roi, scales, sizes = ins[:4]
    sx = ctx.require_shape(x)
    rank = len(sx)
    sy = ctx.shape(ctx.outputs[0]) or (None,) * rank
    node_axes = ctx.attr_ints("axes")
    axes = list(range(rank)) if node_axes is None else [a % rank for a in node_axes]
    policy = ctx.attr_str("keep_aspect_ratio_policy", "stretch")
    mode_crop = ctx.attr_str("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize"
    roi_c = ctx.constant_value(roi) if roi else None
    if mode_crop and roi and roi_c is None:
        raise UnsupportedModelError(
            f"Resize node {node.name!r} (tf_crop_and_resize) takes its roi at run time; onnxcam needs it constant"
        )
    roi_v = None if roi_c is None or not roi_c.size else roi_c
    roi_full: dict[int, tuple[float, float]] | None = None
    if mode_crop and roi_v is not None:
        roi_v = roi_v.reshape(-1).astype(np.float64)
        roi_full = {a: (roi_v[i], roi_v[len(axes) + i]) for i, a in enumerate(axes)}

    def roi_trivial(a: int) -> bool:
        return roi_full is None or (math.isclose(roi_full[a][0], 0.0) and math.isclose(roi_full[a][1], 1.0))

    scales_v = ctx.constant_value(scales) if scales else None
    if scales_v is not None and scales_v.size == 0:
        scales_v = None
    if scales and scales_v is None and ctx.constant_value(scales) is None:
        raise UnsupportedModelError(
            f"Resize node {node.name!r} takes its scales at run time; export it with constant scale factors"
        )
    sizes_v: list[Dim] | None = None
    if scales_v is None:
        sizes_c = ctx.constant_value(sizes) if sizes else None
        if sizes_c is not None:
            sizes_v = [int(v) for v in sizes_c.reshape(-1)]
        elif policy == "stretch":  # runtime sizes, e.g. Concat(Shape(x)[:2], [h, w]) under a dynamic batch
            traced = _trace_ints(ctx, sizes)
            if traced is None or len(traced) != len(axes):
                traced = [None] * len(axes)
            sizes_v = []
            for t, a in zip(traced, axes):
                if t == ("dim", x, a):
                    sizes_v.append(sx[a])  # Shape(x)[a]: the axis is kept, static or not
                else:
                    sizes_v.append(t if isinstance(t, int) else sy[a])
        else:
            raise UnsupportedModelError(
                f"Resize node {node.name!r} takes its sizes at run time with keep_aspect_ratio_policy={policy!r}; "
                "export it with constant sizes"
            )

    resized = []
    if scales_v is not None:
        for i, a in enumerate(axes):
            if not (math.isclose(float(scales_v.reshape(-1)[i]), 1.0) and roi_trivial(a)):
                resized.append(a)
    else:
        assert sizes_v is not None  # set above whenever there are no scales
        ratio = None
        if policy != "stretch":
            in_lengths = [sx[a] for a in axes]
            if not _all_int(in_lengths):
                raise UnsupportedModelError(
                    f"Resize node {node.name!r}: keep_aspect_ratio_policy needs static input sizes"
                )
            assert _all_int(sizes_v)  # constant: runtime sizes were refused above under this policy
            rs = [sizes_v[i] / in_lengths[i] for i in range(len(axes))]
            ratio = min(rs) if policy == "not_larger" else max(rs)
        for i, a in enumerate(axes):
            d, s = sx[a], sizes_v[i]
            if ratio is not None:
                same = math.isclose(ratio, 1.0) and isinstance(d, int) and int(ratio * d + 0.5) == d
            else:
                same = s is not None and s == d
            if not (same and roi_trivial(a)):
                resized.append(a)
    for a in resized:
        if not isinstance(sx[a], int):
            raise UnsupportedModelError(
                f"Resize node {node.name!r} resizes axis {a} whose input length is not static ({sx[a]!r}); "
                "export the model with a fixed input size"
            )
        if sizes_v is not None and not isinstance(sizes_v[axes.index(a)], int):
            raise UnsupportedModelError(
                f"Resize node {node.name!r}: the output length of axis {a} is unknown; "
                "export it with constant sizes or scales"
            )
    return resized, axes, scales_v, sizes_v, roi_v


def _trace_ints(ctx: VJPContext, name: str, depth: int = 0) -> list[_Traced] | None:
    """The elements of a small 1-D int64 tensor built from constants and Shape slices, else None.

    Each element is an int, ``("dim", tensor, axis)`` for ``Shape(tensor)[axis]``, or None (unknown).
    """
    v = ctx.constant_value(name)
    if v is not None:
        return [int(i) for i in np.asarray(v).reshape(-1)]
    node = ctx.index.producer.get(name)
    if node is None or depth > 8:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op, ins = node.op_type, list(node.input)
    if op == "Shape":
        rank = ctx.rank(ins[0])
        if rank is None:
            return None
        start, end = attrs.get("start", 0), attrs.get("end", rank)
        start, end = (min(max(i + rank if i < 0 else i, 0), rank) for i in (start, end))
        return [("dim", ins[0], k) for k in range(start, end)]
    if op in ("Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten"):
        return _trace_ints(ctx, ins[0], depth + 1)
    if op == "Concat":
        parts = [_trace_ints(ctx, i, depth + 1) for i in ins]
        joined: list[_Traced] = []
        for p in parts:
            if p is None:
                return None
            joined += p
        return joined
    if op in ("Slice", "Gather"):
        src = _trace_ints(ctx, ins[0], depth + 1)
        consts = [ctx.constant_value(i) if i else None for i in ins[1:]]
        if src is None or any(c is None for i, c in zip(ins[1:], consts) if i):
            return None
        arr = np.empty(len(src), dtype=object)
        arr[:] = src
        first, second = consts[0], consts[1] if len(consts) > 1 else None
        assert first is not None  # Gather's indices, Slice's starts: a required input, so a constant here
        if op == "Gather":
            return list(np.asarray(arr[np.asarray(first).reshape(-1)]))
        assert second is not None  # Slice's ends: a required input too
        st, en = int(first.reshape(-1)[0]), int(second.reshape(-1)[0])
        step = int(consts[3].reshape(-1)[0]) if len(consts) > 3 and consts[3] is not None else 1
        return list(arr[slice(st, en, step)])
    return None


def _run_resize_probe(
    ctx: VJPContext,
    data: NDArray[np.float64],
    axes: list[int],
    scales_v: NDArray[Any] | None,
    sizes_v: list[int] | None,
    roi_v: NDArray[Any] | None,
) -> NDArray[np.float64]:
    """The node's own Resize (same attributes, extrapolation 0) on ``data``, by onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    attrs = {a.name: helper.get_attribute_value(a) for a in ctx.node.attribute}
    attrs["extrapolation_value"] = 0.0
    if "axes" in attrs:
        attrs["axes"] = list(axes)  # normalised: the reference evaluator mishandles negative axes
    inits: list[onnx.TensorProto] = []
    names = ["X"]
    f64 = onnx.TensorProto.DOUBLE
    names.append("roi" if roi_v is not None else "")
    if roi_v is not None:
        inits.append(numpy_helper.from_array(np.asarray(roi_v, dtype=np.float32), "roi"))
    if scales_v is not None:
        names.append("scales")
        inits.append(numpy_helper.from_array(np.asarray(scales_v, dtype=np.float32).reshape(-1), "scales"))
    else:
        names += ["", "sizes"]
        inits.append(numpy_helper.from_array(np.asarray(sizes_v, dtype=np.int64), "sizes"))
    node = helper.make_node("Resize", names, ["Y"], **attrs)
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("X", f64, data.shape)],
        [helper.make_tensor_value_info("Y", f64, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(ctx.b.opset, 11))])
    outputs = ReferenceEvaluator(model).run(None, {"X": data})
    assert isinstance(outputs, list)  # a dict only for intermediate=True
    return np.asarray(outputs[0], dtype=np.float64)


def _resize_matrices(
    ctx: VJPContext,
    resized: list[int],
    axes: list[int],
    scales_v: NDArray[Any] | None,
    sizes_v: list[Dim] | None,
    roi_v: NDArray[Any] | None,
) -> dict[int, NDArray[np.float64]]:
    """Interpolation matrices M_a (out_a x in_a) with Y = X x_a M_a for every resized axis a.

    Resize is separable, so M_a is read off one probe of the node's own Resize:
    an untouched axis (the carrier) indexes the basis vectors e_k laid along a.
    Each axis's interpolation depends only on its own scale (or size) and roi,
    so the other resized axes are probed at length 1 with scale 1 and roi
    [0, 1], which the reference treats as untouched. Only
    keep_aspect_ratio_policy ties the axes together (one common scale): then
    the other axes keep their real lengths and hold ones, which reads M_a up to
    a row sum of the other axes; a probe on an all-ones input fixes the product
    of those factors, which is all the Kronecker product needs.
    """
    x = ctx.inputs[0]
    sx = ctx.require_shape(x)
    rank = len(sx)
    carrier = next((a for a in range(rank) if a not in resized), None)
    if carrier is None:
        raise UnsupportedModelError(
            f"Resize node {ctx.node.name!r} resizes every axis, including batch and channels; "
            "onnxcam supports resizing spatial axes only"
        )
    coupled = scales_v is None and ctx.attr_str("keep_aspect_ratio_policy", "stretch") != "stretch"
    in_len: dict[int, int] = {}
    out_len: dict[int, int] = {}
    for a in resized:  # _resize_plan refused a resized axis whose input or output length is unknown
        d, s = sx[a], None if sizes_v is None else sizes_v[axes.index(a)]
        assert isinstance(d, int) and (s is None or isinstance(s, int))
        in_len[a] = d
        if s is not None:
            out_len[a] = s

    def probe(data: NDArray[np.float64], only: int | None = None) -> NDArray[np.float64]:
        p_scales, p_sizes, p_roi = scales_v, None, roi_v
        if scales_v is not None and only is not None:
            p_scales = np.array([v if a == only else 1.0 for v, a in zip(scales_v.reshape(-1), axes)], np.float32)
        if sizes_v is not None:
            p_sizes = [out_len[a] if a in resized and (only is None or a == only) else data.shape[a] for a in axes]
        if roi_v is not None and only is not None:
            p_roi = np.array(roi_v, dtype=np.float64).reshape(-1).copy()
            for i, a in enumerate(axes):
                if a != only:
                    p_roi[i], p_roi[len(axes) + i] = 0.0, 1.0
        return _run_resize_probe(ctx, data, axes, p_scales, p_sizes, p_roi)

    mats: dict[int, NDArray[np.float64]] = {}
    picks: dict[int, int] = {}
    for a in resized:
        n = in_len[a]
        shape = [1] * rank
        if coupled:
            for e in resized:
                shape[e] = in_len[e]
        shape[a] = shape[carrier] = n
        data = np.zeros(shape)
        idx: list[int | slice[Any, Any, Any]] = [slice(None)] * rank
        for k in range(n):
            idx[carrier], idx[a] = k, k
            data[tuple(idx)] = 1.0
        y = probe(data, None if coupled else a)
        if y.shape[carrier] != n or any(y.shape[i] != shape[i] for i in range(rank) if i not in resized):
            raise UnsupportedModelError(
                f"Resize node {ctx.node.name!r} changes an axis onnxcam took for untouched; "
                "only spatial axes may be resized"
            )
        sel: list[int | slice[Any, Any, Any]] = [0] * rank
        sel[carrier], sel[a] = slice(None), slice(None)
        for e in resized:
            if e != a and coupled:
                mag = np.abs(y).sum(axis=tuple(i for i in range(rank) if i != e))
                picks.setdefault(e, int(np.argmax(mag)))
                sel[e] = picks[e]
        block = y[tuple(sel)]  # axes (carrier, a) in axis order
        mats[a] = block.T if carrier < a else block  # -> (out, in)
    if coupled and len(resized) > 1:
        shape = [1] * rank
        for e in resized:
            shape[e] = in_len[e]
        ones = np.ones(shape)
        y1 = probe(ones)
        cand = ones
        for a in resized:
            cand = np.moveaxis(np.tensordot(mats[a], cand, axes=([1], [a])), 0, a)
        p = np.unravel_index(int(np.argmax(np.abs(y1))), y1.shape)
        if y1[p] == 0:
            return {a: np.zeros_like(m) for a, m in mats.items()}
        mats[resized[0]] = mats[resized[0]] * (y1[p] / cand[p])
    return mats


@vjp_rule("Resize")
def vjp_resize(ctx: VJPContext) -> Sequence[str | None]:
    """Resize is linear in X and separable: Y = X x_h M_h x_w M_w, so dX = G x_h M_h^T x_w M_w^T.

    The matrices M_a are computed at graph-build time by running the node's own
    Resize (all attributes: modes, coordinate transformation, cubic_coeff_a,
    exclude_outside, antialias, axes, keep_aspect_ratio_policy) in onnx's
    reference evaluator on basis vectors, so they follow the ONNX definition
    exactly; the gradient is one MatMul per resized axis. It needs static input
    lengths and constant scales or statically known output sizes on the
    resized axes; batch and channels must not be resized.
    """
    if not ctx.wants[0]:
        return [None] * len(ctx.inputs)
    x, g = ctx.inputs[0], ctx.grad_out
    rank = ctx.require_rank(x)
    resized, axes, scales_v, sizes_v, roi_v = _resize_plan(ctx)
    if not resized:
        return [g]
    mats = _resize_matrices(ctx, resized, axes, scales_v, sizes_v, roi_v)
    for a in resized:
        g = _matmul_along(ctx, g, a, rank, mats[a], x)
    return [g]

"""VJP rules of matrix products: ``d(A @ B) = dA @ B + A @ dB`` transposed onto each operand."""

from __future__ import annotations

from collections.abc import Sequence

from onnxcam.autodiff.registry import VJPContext, vjp_rule
from onnxcam.autodiff.rules._broadcast import sum_to_runtime, unbroadcast
from onnxcam.graph.index import Dim, Shape


def _scaled(ctx: VJPContext, x: str, factor: float, like: str) -> str:
    return x if factor == 1.0 else ctx.b.op("Mul", x, ctx.const(factor, like))


@vjp_rule("Gemm")
def vjp_gemm(ctx: VJPContext) -> Sequence[str | None]:
    """Y = alpha * A' @ B' + beta * C with A' = op(A), B' = op(B).

    dA' = alpha * G @ B'^T and dB' = alpha * A'^T @ G; transposing back onto a
    transposed operand swaps the factors, so each of the four (transA, transB)
    cases is one Gemm with the right trans flags and alpha. dC = beta * G summed
    over the axes C was broadcast along. A one-hot G (a class target on the
    logits) selects one row of op(B) per image: a Gather, not a Gemm.
    """
    a, bm = ctx.inputs[:2]
    c = ctx.inputs[2] if len(ctx.inputs) > 2 else ""
    g = ctx.grad_out
    alpha = ctx.attr_float("alpha", 1.0)
    beta = ctx.attr_float("beta", 1.0)
    ta, tb = ctx.attr_int("transA", 0), ctx.attr_int("transB", 0)
    al = None if alpha == 1.0 else alpha
    grads: list[str | None] = [None] * len(ctx.inputs)
    rows = ctx.one_hot_rows()
    if ctx.wants[0] and not ta and rows is not None:
        picked = _one_hot_product(ctx, bm, rows, transposed=bool(tb))
        grads[0] = _scaled(ctx, picked, alpha, picked)
    elif ctx.wants[0]:
        if not ta:  # dA = alpha * G @ op(B)^T
            grads[0] = ctx.b.op("Gemm", g, bm, alpha=al, transB=0 if tb else 1, hint="dgemm_a")
        else:  # dA = alpha * op(B) @ G^T
            grads[0] = ctx.b.op("Gemm", bm, g, alpha=al, transA=1 if tb else None, transB=1, hint="dgemm_a")
    if ctx.wants[1]:
        if not tb:  # dB = alpha * op(A)^T @ G
            grads[1] = ctx.b.op("Gemm", a, g, alpha=al, transA=0 if ta else 1, hint="dgemm_b")
        else:  # dB = alpha * G^T @ op(A)
            grads[1] = ctx.b.op("Gemm", g, a, alpha=al, transA=1, transB=1 if ta else None, hint="dgemm_b")
    if c and ctx.wants[2]:
        grads[2] = _scaled(ctx, unbroadcast(ctx, g, c), beta, c)
    return grads


def _one_hot_product(ctx: VJPContext, weight: str, rows: str, transposed: bool) -> str:
    """``one_hot(rows) @ W`` for W stored (K, M) (``transposed``), or ``one_hot(rows) @ W^T`` for W stored (M, K).

    Either way the product is the class rows of the (K, M) matrix the
    cotangent multiplies: ``Gather(W, rows, axis=0)``, or ``Gather`` along
    axis 1 and a transpose.
    """
    if transposed:
        return ctx.b.op("Gather", weight, rows, axis=0, hint="dgemm_rows")
    cols = ctx.b.op("Gather", weight, rows, axis=1, hint="dgemm_cols")
    return ctx.b.op("Transpose", cols, perm=[1, 0], hint="dgemm_rows")


def _swap_last(ctx: VJPContext, x: str, rank: int) -> str:
    perm = [*range(rank - 2), rank - 1, rank - 2]
    return ctx.b.op("Transpose", x, perm=perm, hint="mT")


def _batch_of(shape: Shape | None, rank: int) -> list[Dim]:
    return [None] * (rank - 2) if shape is None else list(shape[:-2])


def _broadcast_dims(sa: list[Dim], sb: list[Dim]) -> list[Dim]:
    """numpy broadcast of two batch shapes, None where a dim is unknown."""
    n = max(len(sa), len(sb))
    one: list[Dim] = [1]
    sa, sb = one * (n - len(sa)) + sa, one * (n - len(sb)) + sb
    out: list[Dim] = []
    for da, db in zip(sa, sb):
        if da == 1:
            out.append(db)
        elif db == 1 or da == db:
            out.append(da)
        elif isinstance(da, int):
            out.append(da)
        elif isinstance(db, int):
            out.append(db)
        else:
            out.append(None)
    return out


def _sum_batch_to(ctx: VJPContext, grad: str, x: str, grad_batch: list[Dim]) -> str:
    """Sum ``grad`` (batch ``grad_batch`` + x's two matrix dims) down to the shape of ``x``.

    Leading batch axes x lacks are summed away; an axis where x has size 1 is
    summed with keepdims (harmless if the product's axis is 1 too). Only a
    symbolic batch dim of x that may differ from the product's needs the
    runtime mask.
    """
    b = ctx.b
    rx = ctx.require_rank(x)
    lead = len(grad_batch) - (rx - 2)
    if lead > 0:
        grad = b.reduce("ReduceSum", grad, list(range(lead)), keepdims=False, hint="unbroadcast")
    axes, dynamic = [], False
    for i, (dx, dg) in enumerate(zip(_batch_of(ctx.shape(x), rx), grad_batch[lead:])):
        if dx == 1:
            if dg != 1:
                axes.append(i)
        elif isinstance(dx, int) or (dx is not None and dx == dg):
            continue
        else:
            dynamic = True
    if dynamic:
        return sum_to_runtime(ctx, grad, x)
    if axes:
        grad = b.reduce("ReduceSum", grad, axes, keepdims=True, hint="unbroadcast")
    return grad


@vjp_rule("MatMul")
def vjp_matmul(ctx: VJPContext) -> Sequence[str | None]:
    """Y = A @ B with numpy semantics: dA = G @ B^T, dB = A^T @ G, summed over broadcast batch axes.

    A 1-D A is a row ``(1, K)`` whose row axis is dropped from Y, a 1-D B a
    column ``(K, 1)`` whose column axis is dropped, so G is unsqueezed back to
    the matrix form first and the singleton axis summed (squeezed) away after.
    For a 2-D B under a batched A, dB = flatten(A)^T @ flatten(G) is one Gemm
    instead of a batched product and a sum. A one-hot G over (N, K) logits
    reads K's columns of B with a Gather (see :func:`vjp_gemm`).
    """
    a, bm = ctx.inputs
    g = ctx.grad_out
    b = ctx.b
    ra, rb = ctx.require_rank(a), ctx.require_rank(bm)
    want_a, want_b = ctx.wants
    if ra == 1 and rb == 1:  # Y = sum_k A[k] B[k], a scalar
        return [b.op("Mul", g, bm) if want_a else None, b.op("Mul", g, a) if want_b else None]
    if ra == 1:  # A (K,), B (..., K, N), G (..., N)
        da = db = None
        if want_a:  # dA[k] = sum_{..., n} B[..., k, n] G[..., n]
            col = b.op("MatMul", bm, b.op("Unsqueeze", g, b.ints([-1])), hint="dmatmul_a")
            da = b.reduce("ReduceSum", col, [*range(rb - 2), rb - 1], keepdims=False, hint="dmatmul_a")
        if want_b:  # dB[..., k, n] = A[k] G[..., n]
            db = b.op("MatMul", b.op("Unsqueeze", a, b.ints([1])), b.op("Unsqueeze", g, b.ints([-2])), hint="dmatmul_b")
        return [da, db]
    if rb == 1:  # A (..., M, K), B (K,), G (..., M)
        da = db = None
        if want_a:  # dA[..., m, k] = G[..., m] B[k]
            da = b.op(
                "MatMul", b.op("Unsqueeze", g, b.ints([-1])), b.op("Unsqueeze", bm, b.ints([0])), hint="dmatmul_a"
            )
        if want_b:  # dB[k] = sum_{..., m} G[..., m] A[..., m, k]
            row = b.op("MatMul", b.op("Unsqueeze", g, b.ints([-2])), a, hint="dmatmul_b")
            db = b.reduce("ReduceSum", row, list(range(ra - 1)), keepdims=False, hint="dmatmul_b")
        return [da, db]

    out_batch = _broadcast_dims(_batch_of(ctx.shape(a), ra), _batch_of(ctx.shape(bm), rb))
    out_shape = ctx.shape(ctx.outputs[0])
    if out_shape is not None and len(out_shape) == len(out_batch) + 2:
        out_batch = [d if isinstance(d, int) else o for d, o in zip(out_shape[:-2], out_batch)]
    da = db = None
    rows = ctx.one_hot_rows() if ra == 2 and rb == 2 else None
    if want_a and rows is not None:  # a class target on (N, K) logits: dA = B[:, rows]^T
        da = _one_hot_product(ctx, bm, rows, transposed=False)
    elif want_a:
        da = _sum_batch_to(ctx, b.op("MatMul", g, _swap_last(ctx, bm, rb), hint="dmatmul_a"), a, out_batch)
    if want_b:
        if rb == 2 and ra > 2:  # one Gemm over the flattened batch
            db = b.op(
                "Gemm", b.op("Flatten", a, axis=ra - 1), b.op("Flatten", g, axis=ra - 1), transA=1, hint="dmatmul_b"
            )
        else:
            db = b.op("MatMul", _swap_last(ctx, a, ra), g, hint="dmatmul_b")
            db = _sum_batch_to(ctx, db, bm, out_batch)
    return [da, db]

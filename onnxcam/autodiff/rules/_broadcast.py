"""Undo numpy-style broadcasting on a gradient: the shared step of every binary rule."""

from __future__ import annotations

from onnxcam.autodiff.registry import VJPContext
from onnxcam.errors import UnsupportedModelError


def unbroadcast(ctx: VJPContext, grad: str, x: str, y: str | None = None) -> str:
    """Sum ``grad`` (shaped like ``y``, default the node's output) down to the shape of ``x``.

    Static shapes give a plain ReduceSum over known axes. Where a dim is
    symbolic the broadcast axes are found at run time (``Shape`` + ``NonZero``),
    so dynamic batch and spatial sizes still work.
    """
    b = ctx.b
    y = y or ctx.outputs[0]
    sx, sy = ctx.require_shape(x), ctx.require_shape(y)
    rx, ry = len(sx), len(sy)
    if rx > ry:  # the checker lets e.g. a 4-D Gemm bias through; no runtime would run it
        raise UnsupportedModelError(
            f"{ctx.node.op_type} node {ctx.node.name!r}: input {x!r} has rank {rx}, more than "
            f"its output's {ry}; the model is invalid, re-export it"
        )
    lead = ry - rx
    if lead:
        grad = b.reduce("ReduceSum", grad, list(range(lead)), keepdims=False, hint="unbroadcast")
    sy = sy[lead:]
    axes, dynamic = [], False
    for i, (dx, dy) in enumerate(zip(sx, sy)):
        if dx == 1 and dy != 1:
            axes.append(i)
        elif isinstance(dx, int) and isinstance(dy, int) and dx == dy:
            continue
        elif dx == dy and dx is not None:  # the same symbol on both sides
            continue
        elif dx != 1:
            dynamic = dynamic or not (isinstance(dx, int) and dx > 1)
    if dynamic:
        return sum_to_runtime(ctx, grad, x)
    if axes:
        grad = b.reduce("ReduceSum", grad, axes, keepdims=True, hint="unbroadcast")
    return grad


def sum_to_runtime(ctx: VJPContext, grad: str, x: str) -> str:
    """Sum ``grad`` (same rank as ``x``) with keepdims over the axes where, at run time, ``x`` has
    size 1 and ``grad`` does not: the broadcast axes when some dims are symbolic."""
    b = ctx.b
    shape_x = b.op("Shape", x)
    shape_g = b.op("Shape", grad)
    one = b.ints(1)
    mask = b.op("And", b.op("Equal", shape_x, one), b.op("Not", b.op("Equal", shape_g, one)))
    runtime_axes = b.op("Reshape", b.op("NonZero", mask), b.ints([-1]))
    return b.op("ReduceSum", grad, runtime_axes, keepdims=1, noop_with_empty_axes=1, hint="unbroadcast")

"""Scatter-add of gradients in any float precision, the shared step of the index-routing rules.

ONNX Runtime's CPU ``ScatterElements`` with ``reduction="add"`` accepts
float32 and float64 but not float16 or bfloat16, so for those the buffer and
the updates are accumulated in float32 and the sum is cast back. Summing
overlapping windows in float32 is also the more accurate choice.
"""

from __future__ import annotations

from onnx import TensorProto

from onnxcam.autodiff.registry import VJPContext

_LOW_PRECISION = {TensorProto.FLOAT16, TensorProto.BFLOAT16}


def scatter_elements(
    ctx: VJPContext, data: str, indices: str, updates: str, like: str, reduction: str | None, hint: str
) -> str:
    """``ScatterElements(data, indices, updates, axis=0, reduction)`` typed like tensor ``like``."""
    b = ctx.b
    t = ctx.index.type_of(like)
    widen = reduction not in (None, "none") and t is not None and t.elem_type in _LOW_PRECISION
    back_to = t.elem_type if widen and t is not None else None  # accumulate in float32, then cast back to it
    if back_to is not None:
        data = b.op("Cast", data, to=TensorProto.FLOAT, hint="scatter_f32")
        updates = b.op("Cast", updates, to=TensorProto.FLOAT, hint="scatter_f32")
    out = b.op(
        "ScatterElements",
        data,
        indices,
        updates,
        axis=0,
        reduction=None if reduction == "none" else reduction,
        hint=hint,
    )
    return b.op("Cast", out, to=back_to, hint=f"{hint}_back") if back_to is not None else out

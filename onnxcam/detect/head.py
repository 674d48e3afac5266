"""A copy of a detector whose graph ends in NonMaxSuppression, with the raw head exposed as outputs.

The explainer seeds and differentiates model outputs; NMS's inputs (boxes and
per-class scores for every anchor) are inner tensors, and its output (the
selected [batch, class, box] indices) is usually consumed by Gathers. The copy
adds the three as outputs; the user's model is never modified.
"""

from __future__ import annotations

import onnx
from onnx import helper

from onnxcam.errors import TargetError


def expose_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its last NonMaxSuppression's boxes, scores and selected indices added as outputs."""
    nodes = [n for n in model.graph.node if n.op_type == "NonMaxSuppression"]
    if not nodes:
        raise TargetError("the model has no NonMaxSuppression node; it needs no exposed head")
    node = nodes[-1]
    wanted = [node.input[0], node.input[1], node.output[0]]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, strict_mode=False)
        known = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    except Exception:  # shape inference is only a nicety here: types below stay correct without it
        known = {}
    for name, elem in zip(wanted, (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT, onnx.TensorProto.INT64)):
        if name in have:
            continue
        info = known.get(name)
        copy.graph.output.append(info if info is not None else helper.make_tensor_value_info(name, elem, None))
    return copy

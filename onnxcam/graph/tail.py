"""Cut the tail of a model: the subgraph from an inner tensor (a layer) to an output (the score).

Ablation-CAM runs the tail with an edited activation as its input, and the
finite-difference oracles differentiate it on its own. Where the layer is not
on every path to the score (a skip connection that starts before it), the
tail also needs the model inputs that feed those other paths; they become
inputs of the tail too, so the cut model is always complete.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx.utils import Extractor


def tail_model(model: onnx.ModelProto, inputs: str | Sequence[str], outputs: str | Sequence[str]) -> onnx.ModelProto:
    """The subgraph computing ``outputs`` from ``inputs``, plus whichever model inputs other paths still read.

    The result keeps the model's IR version and opsets; initializers stored as
    external data stay external (the caller saves the tail beside them).
    The tail's inputs are ``inputs`` first, then the needed model inputs, in
    the model's order.
    """
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    needed = _model_inputs_reached(model, inputs, outputs)
    tail = Extractor(model).extract_model(inputs + needed, outputs)
    tail.ir_version = model.ir_version
    del tail.opset_import[:]
    tail.opset_import.extend(model.opset_import)
    return tail


def _model_inputs_reached(model: onnx.ModelProto, stops: list[str], outputs: list[str]) -> list[str]:
    """Model inputs reached walking back from ``outputs`` without crossing ``stops``."""
    producer = {out: node for node in model.graph.node for out in node.output}
    seen, stack, reached = set(stops), list(outputs), set()
    graph_inputs = {i.name for i in model.graph.input}
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is None:
            if name in graph_inputs:
                reached.add(name)
            continue
        stack.extend(n for n in node.input if n)
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name in reached and i.name not in initializers]

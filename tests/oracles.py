"""Gradient oracles for models with no torch source: finite differences on the model's tail.

The tail is the subgraph from the explained layer to the score. It is cut
out of the prepared model, converted to float64, and run by onnx's reference
evaluator, so central differences are accurate to ~1e-8 and independent of
onnxruntime and of onnxcam's gradient rules.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.utils import Extractor

from tests.vjp_check import gradient_model, ort_session

_F32 = TensorProto.FLOAT


def tail_model(model: onnx.ModelProto, layer: str, score: str) -> onnx.ModelProto:
    """The subgraph computing ``score`` from ``layer`` (everything upstream becomes an input)."""
    tail = Extractor(model).extract_model([layer], [score])
    tail.ir_version = model.ir_version
    del tail.opset_import[:]
    tail.opset_import.extend(model.opset_import)
    return tail


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph computing in float64: initializers, constants, casts and declared types."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == _F32:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == _F32:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
            if node.op_type == "Cast" and a.name == "to" and a.i == _F32:
                a.i = TensorProto.DOUBLE
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.tensor_type.elem_type == _F32:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    return m


def tail_gradient_check(model: onnx.ModelProto, layer: str, score: str, activation: np.ndarray,
                        seed: np.ndarray, directions: int = 4, eps: float = 1e-5, rng_seed: int = 0) -> dict:
    """Compare the engine's d<seed, score>/d layer with central differences along random directions.

    Returns the float64 gradient and the worst relative error of the
    directional derivatives; raises AssertionError past 1e-5 (float64 central differences across the
    occasional max-pool kink are good to about 1e-6).
    """
    tail64 = to_float64(tail_model(model, layer, score))
    grad_model, seeds, _ = gradient_model(tail64, [layer], [score])
    a = activation.astype(np.float64)
    grad = ReferenceEvaluator(grad_model).run(None, {layer: a, seeds[score]: seed.astype(np.float64)})[1]
    del grad_model
    fwd = ReferenceEvaluator(tail64)

    def f(x):
        return float(np.sum(fwd.run(None, {layer: x})[0] * seed))

    rng = np.random.default_rng(rng_seed)
    worst = 0.0
    for _ in range(directions):
        v = rng.standard_normal(a.shape)
        v /= np.linalg.norm(v)
        h = eps * max(1.0, float(np.abs(a).max()))
        numeric = (f(a + h * v) - f(a - h * v)) / (2 * h)
        analytic = float(np.sum(grad * v))
        scale = max(abs(numeric), float(np.linalg.norm(grad)) * 1e-3, 1e-12)
        worst = max(worst, abs(numeric - analytic) / scale)
    assert worst < 1e-5, f"tail gradient of {layer!r} differs from finite differences (rel. error {worst:.2e})"
    return {"gradient": grad, "rel_error": worst}


def run_with_intermediates(model: onnx.ModelProto, feeds: dict, names: list[str]) -> dict:
    """Run ``model`` in onnxruntime exposing extra intermediate tensors."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(helper.make_empty_tensor_value_info(n))
    out = ort_session(m).run(names, feeds)
    return dict(zip(names, out))

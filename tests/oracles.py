"""Gradient oracles for models with no torch source: finite differences on the model's tail.

The tail is the subgraph from the explained layer to the score. It is cut
out of the prepared model, converted to float64, and run by onnx's reference
evaluator, so central differences are accurate to ~1e-8 and independent of
onnxruntime and of onnxcam's gradient rules. The cutting and the batched
differences live in :mod:`tests.gradcheck` (the tools use them too); here
the engine's float64 gradient of the same tail is checked against them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from tests.gradcheck import directional_derivatives, random_directions, relative_errors, to_float64
from onnxcam.graph.tail import tail_model
from tests.vjp_check import gradient_model, ort_session

__all__ = ["tail_model", "to_float64", "tail_gradient_check", "run_with_intermediates"]


def tail_gradient_check(
    model: onnx.ModelProto,
    layer: str,
    score: str,
    activation: np.ndarray,
    seed: np.ndarray,
    directions: int = 4,
    eps: float = 1e-5,
    rng_seed: int = 0,
) -> dict:
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
    v = random_directions(a.shape, directions, np.random.default_rng(rng_seed))
    numeric = directional_derivatives(tail64, layer, a, seed, v, step=eps * max(1.0, float(np.abs(a).max())))
    analytic = (grad[None] * v).reshape(directions, -1).sum(axis=1)
    worst = float(relative_errors(numeric, analytic, float(np.linalg.norm(grad))).max())
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

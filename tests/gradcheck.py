"""Gradient oracles that share nothing with onnxcam's VJP rules: finite differences on a model's tail.

The tail is the subgraph from the explained layer to the score. Cutting it
out (:func:`onnxcam.graph.tail.tail_model`) turns the layer into a graph
input (beside any model input that a path skipping the layer still reads), so
perturbing the activation and re-running the tail gives central differences
of ``<seed, score>`` without touching the image or anything upstream. Run in
float64 by onnx's reference evaluator, the differences are good to ~1e-8 and
depend neither on onnxruntime nor on the rules under test. (onnxruntime has
no float64 Conv, and float32 differences through a deep tail are good to a
few percent only, too coarse to judge a float32 gradient.)

Many perturbed copies of the activation are stacked along the batch axis and
run in one call; a tail that cannot take a larger batch (a Reshape with the
batch size baked in) is run one copy at a time instead.

Used by ``tools/fd_tail_oracle.py``, ``tools/ort_training_oracle.py`` and the
tests (``tests/oracles.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxcam.graph.tail import tail_model

_F32 = TensorProto.FLOAT


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


def tail_runner(
    tail: onnx.ModelProto, layer: str, model_inputs: Mapping[str, np.ndarray] | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """``run(activation) -> score`` for the tail, in float64 by onnx's reference evaluator.

    A tail whose score also depends on the model's inputs by a path that
    skips the layer (see :func:`~onnxcam.graph.tail.tail_model`) reads them
    from ``model_inputs``, repeated along the batch axis to match stacked
    copies of the activation.
    """
    evaluator = ReferenceEvaluator(to_float64(tail))
    wanted = [i.name for i in tail.graph.input if i.name != layer]
    missing = [n for n in wanted if n not in (model_inputs or {})]
    if missing:
        raise ValueError(f"the tail from {layer!r} also reads {missing}; pass them as model_inputs")

    def run(a: np.ndarray) -> np.ndarray:
        feeds = {layer: np.asarray(a, dtype=np.float64)}
        for name in wanted:
            x = np.asarray(model_inputs[name])
            x = x.astype(np.float64) if x.dtype.kind == "f" else x
            feeds[name] = np.concatenate([x] * (len(a) // len(x)))
        return np.asarray(evaluator.run(None, feeds)[0])

    return run


def one_sided_derivatives(
    tail: onnx.ModelProto,
    layer: str,
    activation: np.ndarray,
    seed: np.ndarray,
    directions: np.ndarray,
    step: float | None = None,
    chunk: int = 16,
    model_inputs: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward differences of ``f(a) = sum(seed * score(a))`` along each of ``directions``.

    ``directions`` is (D, *activation.shape). Returns two (D,) float64 arrays,
    ``(f(a + h v) - f(a)) / h`` and ``(f(a) - f(a - h v)) / h``, with
    ``h = step``, by default 1e-5 of the activation's magnitude (at least
    1e-5). Their mean is the central difference. Where they disagree the tail
    has a kink at ``a`` along ``v`` (a ReLU input at exactly 0, tied max-pool
    maxima, common after a ReLU), and any value between them is a valid
    subgradient. ``chunk`` directions (2 * chunk perturbed copies) go through
    the tail per call. ``model_inputs``: see :func:`tail_runner`.
    """
    a = np.asarray(activation, dtype=np.float64)
    directions = np.asarray(directions, dtype=np.float64)
    if directions.shape[1:] != a.shape:
        raise ValueError(f"directions have shape {directions.shape[1:]}, the activation {a.shape}")
    h = 1e-5 * max(1.0, float(np.abs(a).max())) if step is None else float(step)
    seed = np.asarray(seed, dtype=np.float64)
    run = _StackedRunner(tail_runner(tail, layer, model_inputs), a.shape[0])
    f0 = float((run(a) * seed).sum())
    forward, backward = np.empty(len(directions)), np.empty(len(directions))
    for start in range(0, len(directions), chunk):
        vs = directions[start : start + chunk]
        scores = run(np.concatenate([np.concatenate([a + h * v, a - h * v]) for v in vs]))
        f = (scores.reshape(len(vs), 2, *seed.shape) * seed).reshape(len(vs), 2, -1).sum(-1)
        forward[start : start + len(vs)] = (f[:, 0] - f0) / h
        backward[start : start + len(vs)] = (f0 - f[:, 1]) / h
    return forward, backward


def directional_derivatives(
    tail: onnx.ModelProto,
    layer: str,
    activation: np.ndarray,
    seed: np.ndarray,
    directions: np.ndarray,
    step: float | None = None,
    chunk: int = 16,
) -> np.ndarray:
    """Central differences ``(f(a + h v) - f(a - h v)) / 2h`` (see :func:`one_sided_derivatives`)."""
    forward, backward = one_sided_derivatives(tail, layer, activation, seed, directions, step, chunk)
    return (forward + backward) / 2


class _StackedRunner:
    """Runs copies of the activation stacked along the batch axis, or one at a time where the tail forbids it."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], batch: int):
        self.run, self.batch, self.stacked = run, batch, True

    def __call__(self, copies: np.ndarray) -> np.ndarray:
        if self.stacked:
            try:
                scores = self.run(copies)
                if scores.shape[0] == copies.shape[0]:
                    return scores.astype(np.float64)
            except Exception:  # a tail with its batch size baked in (a Reshape to [1, -1])
                pass
            self.stacked = False
        n = self.batch
        return np.concatenate([self.run(copies[i : i + n]) for i in range(0, len(copies), n)]).astype(np.float64)


def random_directions(shape: tuple[int, ...], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` Gaussian directions of unit L2 norm."""
    v = rng.standard_normal((count, *shape))
    return v / np.linalg.norm(v.reshape(count, -1), axis=1).reshape(count, *[1] * len(shape))


def coordinate_directions(
    shape: tuple[int, ...], count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct one-hot directions (or every element when there are fewer), and their flat indices."""
    size = int(np.prod(shape))
    flat = np.sort(rng.choice(size, size=min(count, size), replace=False))
    v = np.zeros((len(flat), size))
    v[np.arange(len(flat)), flat] = 1.0
    return v.reshape(len(flat), *shape), flat


def relative_errors(numeric: np.ndarray, analytic: np.ndarray, gradient_norm: float) -> np.ndarray:
    """``|numeric - analytic| / max(|numeric|, 1e-3 * |grad|, 1e-12)`` per direction.

    The floor keeps a direction almost orthogonal to the gradient (a tiny
    derivative) from turning rounding noise into a large relative error.
    """
    scale = np.maximum(np.maximum(np.abs(numeric), 1e-3 * gradient_norm), 1e-12)
    return np.abs(np.asarray(numeric) - np.asarray(analytic)) / scale


def subgradient_errors(
    analytic: np.ndarray, forward: np.ndarray, backward: np.ndarray, scale: np.ndarray, kink_tolerance: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Per direction: the error of ``analytic`` as a fraction of ``scale``, and whether the direction crosses a kink.

    Where the one-sided differences agree (within ``kink_tolerance * scale``)
    the error is ``|central - analytic|``; at a kink it is how far
    ``analytic`` falls outside the interval between them (0 inside).
    """
    scale = np.maximum(np.asarray(scale, dtype=np.float64), 1e-30)
    kink = np.abs(forward - backward) > kink_tolerance * scale
    central = np.abs((forward + backward) / 2 - analytic)
    lo, hi = np.minimum(forward, backward), np.maximum(forward, backward)
    outside = np.maximum(np.maximum(lo - analytic, analytic - hi), 0.0)
    return np.where(kink, outside, central) / scale, kink


@dataclass
class GradientSample:
    """onnxcam's own gradient at one input, with what an oracle needs to recompute it."""

    model: onnx.ModelProto  # the prepared model with weights inline (tensor names as onnxcam sees them)
    layer: str
    score: str  # the differentiated tensor (the logit before a final Softmax by default)
    activation: np.ndarray  # float32, the layer's value, in the model's own layout
    gradient: np.ndarray  # float32, d<seed, score>/d layer from onnxcam's explainer graph in onnxruntime
    seed: np.ndarray  # one-hot on the explained class, shaped like the score
    targets: np.ndarray  # (N,) class ids
    model_inputs: dict[str, np.ndarray]  # what the model was fed (a tail may read it past the layer)


def onnxcam_gradient(
    model: str | os.PathLike | onnx.ModelProto,
    x: np.ndarray,
    layer: str = "auto",
    target: int | list[int] | None = None,
) -> GradientSample:
    """Run onnxcam's explainer graph on ``x`` and read back the layer's activation and gradient.

    Eigen-Grad-CAM finishes on the host, so its graph exposes both tensors;
    the gradient part of that graph is the same one every method uses.
    """
    from onnxcam.explainer import Explainer

    ex = Explainer(model, layer=layer, method="eigengradcam")
    if not isinstance(ex.layer, str):
        raise ValueError("pass one layer")
    res = ex.explain(x, target=target)
    full = ex.explainer_model
    score = ex.score_tensor
    feeds = dict(x) if isinstance(x, Mapping) else {ex.index.inputs[0]: np.asarray(x)}
    shape = tail_runner(tail_model(full, ex.layer, score), ex.layer, feeds)(res.activations).shape
    seed = np.zeros(shape, dtype=np.float32)
    seed.reshape(shape[0], -1)[np.arange(shape[0]), res.targets.astype(np.int64)] = 1.0
    return GradientSample(
        full, ex.layer, score, res.activations, res.gradients, seed, res.targets.astype(np.int64), feeds
    )


def sample_input(model: str | os.PathLike, image: str | os.PathLike | None = None, seed: int = 0) -> np.ndarray:
    """One preprocessed image (batch of 1): the file given, else random pixels, through the model's own spec.

    Random pixels (uniform 0..255) keep the input in the range the model
    expects whatever its normalisation, which random floats would not.
    """
    from PIL import Image

    from onnxcam.preprocess import derive_spec, load_image, preprocess_image

    spec = derive_spec(model)
    if image is None:
        h, w = spec.size
        photo = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    else:
        photo, _ = load_image(image)
    x, _ = preprocess_image(photo, spec)
    return x[None]


def judge(report: dict, error: float, tolerance: float, details: list[str], as_json: bool = False) -> tuple[str, int]:
    """A tool's verdict: sets ``report["passed"]``; returns the text to print (JSON, or lines ending in PASS/FAIL)
    and the exit code (1 when ``error`` exceeds ``tolerance``)."""
    report["tolerance"] = tolerance
    report["passed"] = bool(error <= tolerance)
    if as_json:
        text = json.dumps(report, indent=2)
    else:
        text = "\n".join(
            [
                f"model {report['model']}",
                f"layer {report['layer']} {tuple(report['activation_shape'])}, score {report['score']}, "
                f"class {report['target']}",
                *details,
                f"{'PASS' if report['passed'] else 'FAIL'} (tolerance {tolerance:g})",
            ]
        )
    return text, 0 if report["passed"] else 1

"""The model-randomisation sanity check (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018).

A map that explains the *model* must change when the model's learned weights
are destroyed. Cascading randomisation replaces the weights of the layers one
at a time from the top (the output) down, keeping earlier replacements, and
after each step compares the maps with the original ones by Spearman rank
correlation. A method that passes shows correlations falling towards 0; one
that stays high is an edge detector, not an explanation.

"Layer" here is a node that reads float initializers (Conv, Gemm, MatMul,
BatchNormalization, ...), in reverse graph order. Each of its weight tensors is
redrawn from a Gaussian with the tensor's own mean and standard deviation
(BatchNormalization's running mean and variance are kept, so the statistics
stay valid). Every step works on a copy of the model; the user's file and
``ModelProto`` are never touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxcam.graph.load import load_model
from onnxcam.metrics.agreement import spearman

#: Inputs of these ops that are statistics, not learned weights, by (op type, input position).
_KEPT_INPUTS = {("BatchNormalization", 3), ("BatchNormalization", 4)}


@dataclass
class RandomizationStep:
    """Maps after randomising ``layers`` (cumulative, top first) compared with the original ones."""

    layers: list[str]
    correlations: np.ndarray  # (N,) Spearman per image; NaN where a map is constant

    @property
    def mean_correlation(self) -> float:
        finite = self.correlations[np.isfinite(self.correlations)]
        return float(finite.mean()) if finite.size else math.nan


@dataclass
class SanityReport:
    method: str
    steps: list[RandomizationStep] = field(default_factory=list)


def weight_layers(model: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """``(node name, initializer names)`` for nodes that read float initializers, last node first.

    A weight shared by several nodes belongs to the last of them, so it is
    randomised once, at its first appearance from the top.
    """
    inits = {t.name: t for t in model.graph.initializer}
    seen: set[str] = set()
    layers = []
    for k, node in reversed(list(enumerate(model.graph.node))):
        names = []
        for pos, name in enumerate(node.input):
            t = inits.get(name)
            if t is None or name in seen or (node.op_type, pos) in _KEPT_INPUTS:
                continue
            if onnx.helper.tensor_dtype_to_np_dtype(t.data_type).kind != "f":
                continue
            names.append(name)
            seen.add(name)
        if names:
            layers.append((node.name or f"{node.op_type}_{k}", names))
    return layers


def randomized_copy(model: onnx.ModelProto, initializers: Sequence[str], seed: int = 0) -> onnx.ModelProto:
    """A copy of ``model`` whose listed initializers are redrawn from N(mean, std) of their own values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    wanted = set(initializers)
    for i, t in enumerate(out.graph.initializer):
        if t.name not in wanted:
            continue
        arr = numpy_helper.to_array(t)
        values = arr.astype(np.float64)
        rng = np.random.default_rng([seed, i])
        std = float(values.std()) or float(abs(values.mean())) or 1.0
        new = rng.normal(float(values.mean()), std, size=arr.shape).astype(arr.dtype)
        out.graph.initializer[i].CopyFrom(numpy_helper.from_array(new, t.name))
    return out


def cascading_randomization(
    model: str | os.PathLike | onnx.ModelProto,
    images: np.ndarray,
    targets: np.ndarray,
    explain: Callable[[onnx.ModelProto, np.ndarray, np.ndarray], np.ndarray],
    method: str = "",
    max_steps: int | None = None,
    seed: int = 0,
    progress=None,
) -> SanityReport:
    """Randomise layers from the top down and compare maps with the original model's after each step.

    ``explain(model_proto, images, targets)`` returns (N, H, W) maps (the
    caller builds an Explainer with its method, layer and providers).
    ``max_steps`` stops after that many layers (all by default).
    """
    original = load_model(model)
    base = explain(original, images, targets)
    layers = weight_layers(original)
    if max_steps is not None:
        layers = layers[:max_steps]
    report = SanityReport(method)
    done: list[str] = []
    names: list[str] = []
    for node_name, inits in layers:
        done += inits
        names.append(node_name)
        maps = explain(randomized_copy(original, done, seed), images, targets)
        report.steps.append(RandomizationStep(list(names), np.array([spearman(a, b) for a, b in zip(base, maps)])))
        if progress:
            progress(1)
    return report

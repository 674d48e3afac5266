"""Run the explanation-quality metrics for several methods on one model and one annotated set.

This is what ``onnxcam eval`` and ``tools/localization_benchmark.py`` share.
The model is loaded once: one forward pass of every image gives the
predictions (top-1 classes for the localisation error, probabilities for the
confidence metrics); each method then explains every sample's target class
(its label, else the top-1 class) and the metrics perturb the images through
the same session. ``random`` and ``center`` are pseudo-methods (see
:mod:`onnxcam.metrics.baselines`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxcam.errors import OnnxcamError
from onnxcam.explainer import ALL_METHODS, Explainer
from onnxcam.graph.load import load_model
from onnxcam.metrics.baselines import BASELINES, baseline_maps
from onnxcam.metrics.faithfulness import faithfulness, occlusion_maps
from onnxcam.metrics.localization import (
    IOU_CORRECT,
    POINTING_TOLERANCE_PX,
    localization_error,
    localization_iou,
    peak_box_distance,
)
from onnxcam.metrics.perturbation import confidence_change, deletion, insertion
from onnxcam.metrics.regions import PAPER_THRESHOLD
from onnxcam.metrics.road import ROAD_NOISE, ROAD_PERCENTAGES, road
from onnxcam.metrics.sanity import SanityReport, cascading_randomization, weight_layers
from onnxcam.metrics.scoring import ClassScorer

METRICS = ("pointing", "localization", "deletion", "insertion", "drop", "road", "faithfulness", "sanity")
DEFAULT_METRICS = ("pointing", "localization", "deletion", "insertion", "drop")
#: Metrics that run extra forward passes per sample (the progress bar counts one unit per sample and metric).
PERTURBATION_METRICS = ("deletion", "insertion", "drop", "road", "faithfulness")
#: Summary columns, in table order, with the direction that is better.
COLUMNS = {
    "pointing": ("pointing", "higher"),
    "loc_accuracy": ("localization", "higher"),
    "loc_error": ("localization", "lower"),
    "mean_iou": ("localization", "higher"),
    "deletion_auc": ("deletion", "lower"),
    "insertion_auc": ("insertion", "higher"),
    "average_drop": ("drop", "lower"),
    "average_increase": ("drop", "higher"),
    "road_morf": ("road", "lower"),
    "road_lerf": ("road", "higher"),
    "faithfulness": ("faithfulness", "higher"),
    "sanity_top": ("sanity", "lower"),
    "sanity_all": ("sanity", "lower"),
}


@dataclass
class EvalSettings:
    """Every knob of the metrics; defaults follow the papers (see each metric's module)."""

    metrics: Sequence[str] = DEFAULT_METRICS
    batch_size: int = 64  # images per ONNX Runtime call, perturbed copies included
    pointing_tolerance: float = POINTING_TOLERANCE_PX
    threshold: float = PAPER_THRESHOLD
    steps: int = 32  # deletion / insertion steps
    deletion_baseline: str = "zeros"
    road_percentages: Sequence[int] = ROAD_PERCENTAGES
    road_noise: float = ROAD_NOISE
    occlusion_patch: int | None = None
    occlusion_stride: int | None = None
    sanity_images: int = 16  # the sanity check re-explains this many samples per randomisation step
    sanity_steps: int | None = None  # randomise at most this many layers (all by default)
    seed: int = 0

    def __post_init__(self):
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise OnnxcamError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
        if self.batch_size < 1:
            raise OnnxcamError(f"batch size must be at least 1, got {self.batch_size}")


@dataclass
class EvalData:
    """Samples in the model's input space: images in the model's layout, boxes in input pixels."""

    names: list[str]
    images: np.ndarray  # (N, ...) model layout
    boxes: list[list[tuple[float, float, float, float]]]
    labels: list[int | None]

    def __post_init__(self):
        n = len(self.names)
        if not n:
            raise OnnxcamError("no samples to evaluate")
        if not (len(self.images) == len(self.boxes) == len(self.labels) == n):
            raise OnnxcamError("names, images, boxes and labels must have one entry per sample")

    @classmethod
    def from_samples(cls, samples: Sequence) -> EvalData:
        """From :class:`onnxcam.data.Sample` objects (anything with name, x, boxes and label)."""
        if not samples:
            raise OnnxcamError("no samples to evaluate")
        return cls(
            [s.name for s in samples],
            np.stack([s.x for s in samples]),
            [list(s.boxes) for s in samples],
            [s.label for s in samples],
        )


@dataclass
class MethodResult:
    method: str
    summary: dict[str, float]
    per_sample: list[dict] = field(default_factory=list)
    sanity: SanityReport | None = None
    seconds: float = 0.0
    maps: np.ndarray | None = None  # (N, H, W), when run(keep_maps=True)


def check_methods(methods: Sequence[str]) -> list[str]:
    """The requested method names, checked: any of ``onnxcam.ALL_METHODS`` or a baseline."""
    known = [*ALL_METHODS, *BASELINES]
    for m in methods:
        if m not in known:
            raise OnnxcamError(f"unknown method {m!r}; available: {', '.join(known)}")
    return list(dict.fromkeys(methods))


class Evaluation:
    """One model, one data set: call :meth:`run` once per method."""

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto,
        data: EvalData,
        layer="auto",
        settings: EvalSettings | None = None,
        layout: str = "NCHW",
        providers=None,
        threads: int | None = None,
        explainer_options: Mapping[str, Any] | None = None,
    ):
        self.model, self.data = model, data
        # token_grid, prefix_tokens, input_size: the same for every Explainer built here (one per method)
        self.explainer_options = dict(explainer_options or {})
        self.settings = settings or EvalSettings()
        self._occlusion: np.ndarray | None = None  # occlusion maps, computed once for all methods
        self.providers, self.threads = providers, threads
        self.layout = layout
        self.base = Explainer(model, layer=layer, providers=providers, threads=threads, **self.explainer_options)
        self.layer = self.base.layer
        self.scorer = ClassScorer.from_explainer(self.base, self.settings.batch_size, layout)
        x = np.asarray(data.images)
        self.images = (x.transpose(0, 3, 1, 2) if layout == "NHWC" else x).astype(np.float32)
        self.size = self.images.shape[2:]
        probs = self.scorer.probabilities(self.scorer.scores(self.images))
        self.predicted = probs.argmax(axis=1)
        classes = probs.shape[1]
        for name, label in zip(data.names, data.labels):
            if label is not None and not 0 <= label < classes:
                raise OnnxcamError(f"{name}: class id {label} is out of range (the model has {classes} classes)")
        self.targets = np.array([p if lab is None else lab for p, lab in zip(self.predicted, data.labels)])
        self.full_probs = probs[np.arange(len(probs)), self.targets]
        self._weight_layers: int | None = None

    def work_units(self, method: str) -> int:
        """Progress units of :meth:`run`: samples explained, samples per perturbation metric, sanity steps."""
        n = len(self.data.names)
        metrics = self.settings.metrics
        units = n + n * sum(m in metrics for m in PERTURBATION_METRICS)
        if "sanity" in metrics and method not in BASELINES:
            if self._weight_layers is None:
                self._weight_layers = len(weight_layers(load_model(self.model)))
            units += min(self._weight_layers, self.settings.sanity_steps or self._weight_layers)
        return units

    def maps(self, method: str, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """(N, H, W) maps of ``method`` for every sample's target, in [0, 1]."""
        n = len(self.data.names)
        if method in BASELINES:
            cams = baseline_maps(method, n, tuple(self.size), self.settings.seed)
            if progress:
                progress(n)
            return cams
        ex = (
            self.base
            if method == self.base.method
            else Explainer(
                self.model,
                layer=self.layer,
                method=method,
                providers=self.providers,
                threads=self.threads,
                **self.explainer_options,
            )
        )
        parts, step = [], self.settings.batch_size
        for s in range(0, n, step):
            parts.append(ex.explain(self.data.images[s : s + step], target=self.targets[s : s + step].tolist()).cam)
            if progress:
                progress(len(parts[-1]))
        return np.concatenate(parts)

    def run(self, method: str, progress: Callable[[int], None] | None = None, keep_maps: bool = False) -> MethodResult:
        """Every selected metric for ``method``; NaN where a metric is undefined for it."""
        t0 = time.monotonic()
        s, metrics = self.settings, set(self.settings.metrics)
        cams = self.maps(method, progress)
        n = len(cams)
        rows = [
            {"sample": name, "label": lab, "target": int(t), "predicted": int(p)}
            for name, lab, t, p in zip(self.data.names, self.data.labels, self.targets, self.predicted)
        ]
        summary: dict[str, float] = {}
        args = (self.scorer, self.images, cams, self.targets)
        if "pointing" in metrics:
            distances = [peak_box_distance(c, b) for c, b in zip(cams, self.data.boxes)]
            _column(rows, summary, "peak_box_distance", distances, None)
            _column(rows, summary, "pointing_hit", [d <= s.pointing_tolerance for d in distances], "pointing")
        if "localization" in metrics:
            ious = [localization_iou(c, b, s.threshold) for c, b in zip(cams, self.data.boxes)]
            _column(rows, summary, "iou", ious, "mean_iou")
            _column(rows, summary, "loc_correct", [iou >= IOU_CORRECT for iou in ious], "loc_accuracy")
            errors = [
                localization_error(iou, int(p), lab) for iou, p, lab in zip(ious, self.predicted, self.data.labels)
            ]
            _column(rows, summary, "loc_error", errors, "loc_error")
        if "deletion" in metrics:
            curves = deletion(*args, steps=s.steps, baseline=s.deletion_baseline, progress=progress)
            _column(rows, summary, "deletion_auc", curves.auc, "deletion_auc")
        if "insertion" in metrics:
            curves = insertion(*args, steps=s.steps, progress=progress)
            _column(rows, summary, "insertion_auc", curves.auc, "insertion_auc")
        if "drop" in metrics:
            change = confidence_change(*args, full=self.full_probs)
            _column(rows, summary, "drop", change.drop * 100, "average_drop")
            _column(rows, summary, "increase", change.increased, None)
            summary["average_increase"] = change.increase_in_confidence
            if progress:
                progress(n)
        if "road" in metrics:
            r = road(*args, percentages=s.road_percentages, noise=s.road_noise, seed=s.seed, progress=progress)
            _column(rows, summary, "road_morf", r.morf.mean(axis=1), "road_morf")
            _column(rows, summary, "road_lerf", r.lerf.mean(axis=1), "road_lerf")
        if "faithfulness" in metrics:
            if self._occlusion is None:  # the same for every method: the model, images and targets only
                self._occlusion = occlusion_maps(
                    self.scorer, self.images, self.targets, s.occlusion_patch, s.occlusion_stride, progress=progress
                )
            _column(rows, summary, "faithfulness", faithfulness(cams, self._occlusion), "faithfulness")
        sanity = None
        if "sanity" in metrics and method not in BASELINES:
            sanity = self.sanity(method, progress)
            summary["sanity_top"] = sanity.steps[0].mean_correlation if sanity.steps else math.nan
            summary["sanity_all"] = sanity.steps[-1].mean_correlation if sanity.steps else math.nan
        return MethodResult(method, summary, rows, sanity, time.monotonic() - t0, cams if keep_maps else None)

    def sanity(self, method: str, progress=None) -> SanityReport:
        """Cascading randomisation on the first ``sanity_images`` samples."""
        k = min(len(self.data.names), self.settings.sanity_images)
        x, targets = self.data.images[:k], self.targets[:k]

        def explain(proto, images, tg):
            ex = Explainer(
                proto,
                layer=self.layer,
                method=method,
                providers=self.providers,
                threads=self.threads,
                **self.explainer_options,
            )
            return ex.explain(images, target=tg.tolist()).cam

        return cascading_randomization(
            self.model, x, targets, explain, method, self.settings.sanity_steps, self.settings.seed, progress
        )


def _column(rows: list[dict], summary: dict, key: str, values, summary_key: str | None) -> None:
    """Store per-sample ``values`` under ``key`` and their mean (ignoring undefined ones) as ``summary_key``."""
    clean = []
    for row, v in zip(rows, values):
        v = None if v is None else (bool(v) if isinstance(v, (bool, np.bool_)) else float(v))
        row[key] = v
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            clean.append(float(v))
    if summary_key:
        summary[summary_key] = float(np.mean(clean)) if clean else math.nan

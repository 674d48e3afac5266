"""From what ``explain(x, target)`` is asked to explain to what the explainer graph is fed.

A target is a class per image (None: the top-1; an int; one int per image),
several classes per image (``TopK``, ``MultiLabelTarget``: one result row per
(image, class)) or a seed on any output (``OutputTarget``, ``RegionTarget``,
``SimilarityTarget``), or a detection (``DetectionTarget``: its seed is resolved
from the boxes of a forward pass first). Each picks a graph mode ("class", "rank" or "seed"), the
rows of the batch to run and the target feed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxcam.detect.target import DetectionTarget, DetectionTargets, plan_detection
from onnxcam.errors import TargetError
from onnxcam.explain.build import ScoreSpec
from onnxcam.explain.inputs import class_ids
from onnxcam.graph.index import GraphIndex
from onnxcam.targets import MultiLabelTarget, SeedTarget, TopK


@dataclass(frozen=True)
class TargetRun:
    """What one explainer run is fed: its graph mode and score, the batch rows, the feeds and the target feed."""

    mode: str
    score: ScoreSpec
    rows: np.ndarray  # the input image of each result row
    feeds: dict[str, np.ndarray]  # the model inputs, one row per result row (one placeholder row if none)
    target_feed: np.ndarray


def plan_target(
    index: GraphIndex,
    target: Any,
    feeds: dict[str, np.ndarray],
    score: ScoreSpec,
    predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
) -> TargetRun:
    """The run explaining ``target`` (whose output's score is ``score``) on ``feeds``.

    ``predict(feeds)`` returns the model outputs (multi-label targets read the probabilities first).
    """
    n = next(iter(feeds.values())).shape[0]
    if isinstance(target, (DetectionTarget, DetectionTargets)):  # its seed needs the boxes of a forward pass
        score, rows, seeds = plan_detection(index, target, feeds, score, predict)
        if not len(rows):  # no detection: run one placeholder row to learn the shapes, keep none
            placeholder = np.zeros((1, *seeds.shape[1:]), seeds.dtype)
            return TargetRun("seed", score, rows, {k: v[:1] for k, v in feeds.items()}, placeholder)
        return TargetRun("seed", score, rows, {k: v[rows] for k, v in feeds.items()}, seeds)
    if isinstance(target, SeedTarget):
        return TargetRun("seed", score, np.arange(n), feeds, seed_for(index, score, target, n))
    if score.class_axis is None:
        raise TargetError(
            f"{score.describe()} is not a (batch, classes) tensor; pass "
            "target=onnxcam.OutputTarget(output, index) or another seed target"
        )
    if not isinstance(target, (TopK, MultiLabelTarget)):
        return TargetRun(
            "class", score, np.arange(n), feeds, class_ids(target, n, class_count(index, score), score.describe())
        )
    if isinstance(target, TopK):
        rows, target_feed = target.class_rows(n, class_count(index, score))
    elif score.squash in ("Softmax", "LogSoftmax"):
        raise TargetError(
            f"output {score.output!r} comes from a {score.squash}: its classes exclude each other, "
            "so there are no multi-label probabilities; use onnxcam.TopK(k)"
        )
    else:
        values = predict(feeds)[score.output].reshape(n, -1).astype(np.float64)
        rows, target_feed = target.class_rows(values if score.squash == "Sigmoid" else 0.5 * (1 + np.tanh(values / 2)))
    # no row at all (no label above the threshold): run one to learn the shapes, keep none
    feeds = {k: v[rows if len(rows) else [0]] for k, v in feeds.items()}
    return TargetRun(
        "rank" if isinstance(target, TopK) else "class",
        score,
        rows,
        feeds,
        target_feed if len(rows) else np.zeros(1, np.int64),
    )


def seed_for(index: GraphIndex, score: ScoreSpec, target: SeedTarget, batch: int) -> np.ndarray:
    """The seed ``target`` puts on the scored tensor of ``score``, for a batch of ``batch``."""
    shape = index.shape(score.tensor)
    if shape is None:
        raise TargetError(f"the rank of {score.describe()} is unknown, so no seed can be shaped for it")
    dims = tuple(d if isinstance(d, int) and d > 0 else None for d in shape[1:])
    return target.seed((batch, *dims), index.known_type(score.tensor).np_dtype)


def class_count(index: GraphIndex, score: ScoreSpec) -> int | None:
    """Classes of the scored tensor, when it is (batch, classes, ...) with a static class axis; else None."""
    shape = index.shape(score.tensor)
    d = shape[1] if shape is not None and len(shape) >= 2 else None
    return d if isinstance(d, int) and d > 0 else None

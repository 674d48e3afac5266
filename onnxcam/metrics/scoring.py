"""The one way the metrics query a model: class scores and probabilities of image batches.

Every perturbation metric (deletion, insertion, average drop, ROAD,
occlusion) runs thousands of modified copies of each image. They all go
through a :class:`ClassScorer`, which feeds them to the model in chunks of
``batch_size`` (the memory knob) and counts the images it sent, so a benchmark
can report its cost in forward passes. Metrics work on channels-first
``(C, H, W)`` images; the scorer converts to the model's layout and dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxcam.errors import OnnxcamError

ScoreFunction = Callable[[np.ndarray], np.ndarray]  # model-layout batch -> (N, K) scores


def class_probabilities(scores: np.ndarray, squash: str | None) -> np.ndarray:
    """The model's own probabilities from its (N, K) logits: a sigmoid per class after a final Sigmoid
    (multi-label heads), else the softmax (a final Softmax or LogSoftmax, or none)."""
    if squash == "Sigmoid":
        return 1.0 / (1.0 + np.exp(-np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)))
    return softmax_probabilities(scores)


def softmax_probabilities(scores: np.ndarray) -> np.ndarray:
    """Probabilities from (N, K) scores: softmax over K classes, a sigmoid for one output unit.

    Deletion/insertion and the confidence metrics are defined on the class
    probability (the logit is unbounded, so curves of it have no common scale).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    if s.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-s))
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


class ClassScorer:
    """Scores of channels-first image batches, sent through ``score_fn`` at most ``batch_size`` at a time."""

    def __init__(
        self,
        score_fn: ScoreFunction,
        batch_size: int = 64,
        channels_last: bool = False,
        dtype: np.dtype | type = np.float32,
        squash: str | None = None,
    ):
        if batch_size < 1:
            raise OnnxcamError(f"batch size must be at least 1, got {batch_size}")
        self._score_fn = score_fn
        self.batch_size = int(batch_size)
        self.channels_last = channels_last
        self.dtype = np.dtype(dtype)
        self.images_scored = 0  # forward passes so far, one per image
        self.squash = squash  # the model's final Softmax/LogSoftmax/Sigmoid after the scored logits, if any

    @classmethod
    def from_explainer(
        cls, explainer, batch_size: int = 64, layout: str = "NCHW", input_name: str | None = None
    ) -> ClassScorer:
        """A scorer running ``explainer.predict`` (the model's own session, forward only)."""
        name = input_name or explainer.index.inputs[0]
        t = explainer.index.type_of(name)
        dtype = t.np_dtype if t is not None else np.float32
        multi = len(explainer.index.inputs) > 1

        def score(x: np.ndarray) -> np.ndarray:
            pred = explainer.predict({name: x} if multi or input_name else x)
            return pred.scores.reshape(len(x), -1)

        return cls(
            score,
            batch_size,
            channels_last=layout == "NHWC",
            dtype=dtype,
            squash=explainer.score_spec.squash if explainer.score_spec.from_logit else None,
        )

    def scores(self, images: np.ndarray) -> np.ndarray:
        """(N, K) float64 scores of a channels-first batch (N, C, H, W)."""
        images = np.asarray(images)
        parts = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            if self.channels_last:
                chunk = chunk.transpose(0, 2, 3, 1)
            if self.dtype.kind in "iub":
                info = np.iinfo(self.dtype)
                chunk = np.clip(np.rint(chunk), info.min, info.max)
            parts.append(np.asarray(self._score_fn(np.ascontiguousarray(chunk, dtype=self.dtype)), np.float64))
            self.images_scored += len(chunk)
        if not parts:
            return np.zeros((0, 0))
        return np.concatenate([p.reshape(len(p), -1) for p in parts])

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """(N, K) probabilities of (N, K) scores, per the model's final squashing op."""
        return class_probabilities(scores, self.squash)

    def target_scores(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N,) raw score (the logit by default) of each image's target class."""
        s = self.scores(images)
        return s[np.arange(len(s)), np.asarray(targets, dtype=np.int64)]

    def target_probabilities(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N,) probability of each image's target class (as the model's final Softmax/Sigmoid gives it)."""
        p = self.probabilities(self.scores(images))
        return p[np.arange(len(p)), np.asarray(targets, dtype=np.int64)]

    def images_per_call(self, per_image: int) -> int:
        """How many source images to perturb together so that one call holds about ``batch_size`` copies."""
        return max(1, self.batch_size // max(1, per_image))

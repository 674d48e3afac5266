"""Does removing what the map highlights change the prediction? Deletion, insertion, average drop.

* **Deletion / insertion** (Petsiuk et al., RISE, BMVC 2018): pixels are
  removed from the image (replaced by a baseline) or inserted into a blurred
  copy, most important first by the map, in ``steps`` equal steps; the curve is
  the target-class probability after each step and the metric is its area
  (trapezoid rule over the removed fraction 0..1). A faithful map makes the
  deletion curve fall fast (low AUC) and the insertion curve rise fast (high
  AUC).
* **Average drop / increase in confidence** (Chattopadhyay et al.,
  Grad-CAM++, WACV 2018): the image multiplied by its map keeps only what the
  map highlights. Drop: ``mean(max(0, Y - O) / Y)``; increase: the share of
  images with ``O > Y`` (``Y``, ``O`` the target probability on the full and
  the masked image), both in percent.

All images are channels-first ``(N, C, H, W)`` in the model's input space
(after normalisation), maps ``(N, H, W)`` at the same size, and "zero" means
zero in that space (the mean colour for mean/std-normalised inputs, black for
``raw01``), as in the RISE code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.metrics.scoring import ClassScorer

#: RISE's blur for insertion (and the blurred deletion baseline): an 11-tap Gaussian, sigma 5 px.
BLUR_SIGMA, BLUR_TAPS = 5.0, 11
DELETION_BASELINES = ("zeros", "blur")


@dataclass
class Curves:
    """Per-image perturbation curves ``(N, steps + 1)`` and their areas ``(N,)``."""

    curves: np.ndarray
    auc: np.ndarray


def gaussian_blur(images: np.ndarray, sigma: float = BLUR_SIGMA, taps: int = BLUR_TAPS) -> np.ndarray:
    """Separable Gaussian blur of (N, C, H, W) over H and W, with reflected borders (float32)."""
    x = np.asarray(images, dtype=np.float32)
    r = taps // 2
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    mode: Literal["reflect", "edge"] = "reflect" if min(x.shape[-2:]) > r else "edge"
    p = np.pad(x, ((0, 0), (0, 0), (r, r), (0, 0)), mode=mode)
    x = sum(k[i] * p[:, :, i : i + x.shape[2]] for i in range(taps))
    p = np.pad(x, ((0, 0), (0, 0), (0, 0), (r, r)), mode=mode)
    return sum(k[i] * p[:, :, :, i : i + x.shape[3]] for i in range(taps)).astype(np.float32)


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under curves sampled at equally spaced fractions 0, 1/steps, ..., 1 (trapezoid rule)."""
    c = np.asarray(curves, dtype=np.float64)
    steps = c.shape[-1] - 1
    if steps < 1:
        raise OnnxcamError("a curve needs at least two points")
    return (c.sum(axis=-1) - 0.5 * (c[..., 0] + c[..., -1])) / steps


def pixel_order(cam: np.ndarray) -> np.ndarray:
    """Flat pixel indices, highest map value first (ties in raster order, so a constant map is deterministic)."""
    return np.argsort(-np.asarray(cam, dtype=np.float64).ravel(), kind="stable")


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """How many pixels have been moved after each of ``steps`` equal steps (0 ... n_pixels)."""
    return np.ceil(np.arange(steps + 1) * n_pixels / steps).astype(np.int64)


def _transfer_stack(start: np.ndarray, end: np.ndarray, order: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Copies of ``start`` (C, H, W) with the first ``counts[k]`` pixels of ``order`` taken from ``end``."""
    c, h, w = start.shape
    rank = np.empty(h * w, dtype=np.int64)
    rank[order] = np.arange(h * w)
    moved = rank[None, :] < counts[:, None]  # (steps + 1, H * W)
    moved = moved.reshape(len(counts), 1, h, w)
    return np.where(moved, end[None], start[None]).astype(np.float32)


def _curves(
    scorer: ClassScorer,
    starts: np.ndarray,
    ends: np.ndarray,
    cams: np.ndarray,
    targets: np.ndarray,
    steps: int,
    progress=None,
) -> Curves:
    if steps < 1:
        raise OnnxcamError(f"steps must be at least 1, got {steps}")
    n, _, h, w = starts.shape
    counts = step_counts(h * w, steps)
    group = scorer.images_per_call(steps + 1)
    out = np.empty((n, steps + 1))
    for g0 in range(0, n, group):
        idx = range(g0, min(n, g0 + group))
        stack = np.concatenate([_transfer_stack(starts[i], ends[i], pixel_order(cams[i]), counts) for i in idx])
        tg = np.repeat(np.asarray(targets)[list(idx)], steps + 1)
        out[list(idx)] = scorer.target_probabilities(stack, tg).reshape(len(idx), steps + 1)
        if progress:
            progress(len(idx))
    return Curves(out, curve_auc(out))


def deletion(
    scorer: ClassScorer,
    images: np.ndarray,
    cams: np.ndarray,
    targets: np.ndarray,
    steps: int = 32,
    baseline: str = "zeros",
    progress=None,
) -> Curves:
    """RISE deletion: replace pixels, most important first, with ``baseline`` ("zeros" or "blur"); lower is better."""
    images = np.asarray(images, dtype=np.float32)
    if baseline == "zeros":
        ends = np.zeros_like(images)
    elif baseline == "blur":
        ends = gaussian_blur(images)
    else:
        raise OnnxcamError(f"deletion baseline must be one of {', '.join(DELETION_BASELINES)}, not {baseline!r}")
    return _curves(scorer, images, ends, cams, targets, steps, progress)


def insertion(
    scorer: ClassScorer, images: np.ndarray, cams: np.ndarray, targets: np.ndarray, steps: int = 32, progress=None
) -> Curves:
    """RISE insertion: start from the blurred image, put original pixels back most important first; higher is better."""
    images = np.asarray(images, dtype=np.float32)
    return _curves(scorer, gaussian_blur(images), images, cams, targets, steps, progress)


@dataclass
class ConfidenceChange:
    """Per image: probability on the full image, on the map-masked image, and the relative drop."""

    full: np.ndarray
    masked: np.ndarray

    @property
    def drop(self) -> np.ndarray:
        """``max(0, Y - O) / Y`` per image (0 where ``Y`` is 0)."""
        y = self.full
        return np.where(y > 0, np.maximum(0.0, y - self.masked) / np.where(y > 0, y, 1.0), 0.0)

    @property
    def increased(self) -> np.ndarray:
        return self.masked > self.full

    @property
    def average_drop(self) -> float:
        """Grad-CAM++'s Average Drop, percent (lower is better)."""
        return 100.0 * float(self.drop.mean()) if self.full.size else math.nan

    @property
    def increase_in_confidence(self) -> float:
        """Grad-CAM++'s Increase in Confidence ("average increase"), percent (higher is better)."""
        return 100.0 * float(self.increased.mean()) if self.full.size else math.nan


def confidence_change(
    scorer: ClassScorer, images: np.ndarray, cams: np.ndarray, targets: np.ndarray, full: np.ndarray | None = None
) -> ConfidenceChange:
    """Target probability on each image and on ``image * cam`` (the map in [0, 1], broadcast over channels)."""
    images = np.asarray(images, dtype=np.float32)
    cams = np.clip(np.asarray(cams, dtype=np.float32), 0.0, 1.0)
    if full is None:
        full = scorer.target_probabilities(images, targets)
    masked = scorer.target_probabilities(images * cams[:, None], targets)
    return ConfidenceChange(np.asarray(full, np.float64), masked)

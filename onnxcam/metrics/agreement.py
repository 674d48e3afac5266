"""How much two heatmaps of the same image agree.

Used to compare one model's maps across exports, precisions or versions
(``onnxcam compare``), a CAM against an occlusion map (faithfulness), and maps
before and after weight randomisation (the sanity check). Rank-based measures
are the standard here because two methods' maps differ by monotone rescaling.
"""

from __future__ import annotations

import numpy as np


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as scipy.stats.rankdata does."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, values.size])
    mean_rank = first + (counts - 1) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape, in [-1, 1].

    A constant map has no ranking: the result is NaN, which callers report as
    "undefined" rather than as agreement or disagreement.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} vs {b.size} values")
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def top_region(cam: np.ndarray, fraction: float = 0.15) -> np.ndarray:
    """Boolean mask of the ``fraction`` of pixels with the highest values (ties at the cut included)."""
    cam = np.asarray(cam, dtype=np.float64)
    k = max(1, int(round(fraction * cam.size)))
    cut = np.partition(cam.ravel(), cam.size - k)[cam.size - k]
    return cam >= cut


def top_region_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.15) -> float:
    """Intersection over union of the two maps' top-``fraction`` regions."""
    ma, mb = top_region(a, fraction), top_region(b, fraction)
    union = np.logical_or(ma, mb).sum()
    return float(np.logical_and(ma, mb).sum() / union) if union else float("nan")


def peak(cam: np.ndarray) -> tuple[int, int]:
    """(row, column) of the map's maximum (the first one in raster order on ties)."""
    cam = np.asarray(cam)
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(r), int(c)


def peak_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance in pixels between the two maps' maxima."""
    (ra, ca), (rb, cb) = peak(a), peak(b)
    return float(np.hypot(ra - rb, ca - cb))

"""ROAD: remove pixels and fill them so the hole itself carries no signal (Rong et al., ICML 2022).

Deletion with a constant baseline leaks: the *shape* of the removed region
tells the model where the object was. ROAD fills removed pixels by **noisy
linear imputation**: every removed pixel equals the weighted mean of its 8
neighbours (weight 1/6 for edge neighbours, 1/12 for corner neighbours; only
neighbours inside the image count), which gives one sparse linear system per
image, solved jointly for all removed pixels (known neighbours move to the
right-hand side), then Gaussian noise (``noise``, in the model's input units)
is added to the filled values. This is ``NoisyLinearImputer`` of the authors'
``road_evaluation`` code.

For each percentage ``p``: MoRF removes the ``p`` % of pixels the map ranks
highest (a faithful map makes the target probability fall: lower is better),
LeRF the ``p`` % it ranks lowest (the probability should stay: higher is
better). Needs scipy (``scipy.sparse``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.metrics.perturbation import pixel_order
from onnxcam.metrics.scoring import ClassScorer

ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ROAD_NOISE = 0.01
_NEIGHBOURS = (
    (0, 1, 1 / 6),
    (0, -1, 1 / 6),
    (1, 0, 1 / 6),
    (-1, 0, 1 / 6),
    (1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (-1, 1, 1 / 12),
    (-1, -1, 1 / 12),
)


def _sparse():
    try:
        from scipy import sparse
        from scipy.sparse import linalg
    except ImportError:
        raise OnnxcamError("the ROAD metric needs scipy for its sparse linear solve: pip install scipy") from None
    return sparse, linalg


def noisy_linear_impute(
    image: np.ndarray, removed: np.ndarray, noise: float = ROAD_NOISE, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Fill the ``removed`` (H, W) pixels of a (C, H, W) image by neighbour averages, plus noise."""
    sparse, linalg = _sparse()
    image = np.asarray(image, dtype=np.float64)
    removed = np.asarray(removed, dtype=bool)
    c, h, w = image.shape
    out = image.copy()
    unknown = np.flatnonzero(removed.ravel())
    if unknown.size == 0:
        return out.astype(np.float32)
    if unknown.size == h * w:  # nothing to average from: the noise is all that is left
        rng = rng or np.random.default_rng(0)
        return (noise * rng.standard_normal(image.shape)).astype(np.float32)
    slot = np.full(h * w, -1, dtype=np.int64)
    slot[unknown] = np.arange(unknown.size)
    ys, xs = np.divmod(unknown, w)
    flat = image.reshape(c, h * w)
    diag = np.zeros(unknown.size)
    rows, cols, vals = [], [], []
    rhs = np.zeros((unknown.size, c))
    for dy, dx, weight in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        i = np.flatnonzero(inside)
        nb = ny[i] * w + nx[i]
        diag[i] += weight
        j = slot[nb]
        hole = j >= 0
        rows.append(i[hole])
        cols.append(j[hole])
        vals.append(np.full(int(hole.sum()), -weight))
        np.add.at(rhs, i[~hole], weight * flat[:, nb[~hole]].T)
    rows.append(np.arange(unknown.size))
    cols.append(np.arange(unknown.size))
    vals.append(diag)
    a = sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(unknown.size, unknown.size)
    )
    solved = linalg.splu(a).solve(rhs)  # (unknowns, C): one factorisation, every channel
    if noise:
        rng = rng or np.random.default_rng(0)
        solved = solved + noise * rng.standard_normal(solved.shape)
    out.reshape(c, h * w)[:, unknown] = solved.T
    return out.astype(np.float32)


@dataclass
class RoadCurves:
    """Target probability per image and percentage: ``morf`` and ``lerf`` are (N, len(percentages))."""

    percentages: tuple[int, ...]
    morf: np.ndarray
    lerf: np.ndarray


def road(
    scorer: ClassScorer,
    images: np.ndarray,
    cams: np.ndarray,
    targets: np.ndarray,
    percentages=ROAD_PERCENTAGES,
    noise: float = ROAD_NOISE,
    seed: int = 0,
    progress=None,
) -> RoadCurves:
    """MoRF and LeRF curves of each image under noisy linear imputation."""
    pcts = tuple(int(p) for p in percentages)
    if not pcts or any(p < 0 or p > 100 for p in pcts):
        raise OnnxcamError(f"ROAD percentages must lie in 0..100, got {percentages!r}")
    images = np.asarray(images, dtype=np.float32)
    n, _, h, w = images.shape
    k = len(pcts)
    morf, lerf = np.empty((n, k)), np.empty((n, k))
    group = scorer.images_per_call(2 * k)
    for g0 in range(0, n, group):
        idx = list(range(g0, min(n, g0 + group)))
        stack = []
        for i in idx:
            rng = np.random.default_rng([seed, i])
            order = pixel_order(cams[i])
            for p in pcts:
                count = int(round(p / 100 * h * w))
                for chosen in (order[:count], order[h * w - count :]):  # most relevant, least relevant
                    mask = np.zeros(h * w, dtype=bool)
                    mask[chosen] = True
                    stack.append(noisy_linear_impute(images[i], mask.reshape(h, w), noise, rng))
        probs = scorer.target_probabilities(np.stack(stack), np.repeat(np.asarray(targets)[idx], 2 * k))
        probs = probs.reshape(len(idx), k, 2)
        morf[idx], lerf[idx] = probs[..., 0], probs[..., 1]
        if progress:
            progress(len(idx))
    return RoadCurves(pcts, morf, lerf)

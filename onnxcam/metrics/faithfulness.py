"""Faithfulness: does the CAM rank pixels as occluding them ranks them? (Grad-CAM, Sec. 5.3)

An occlusion map (Zeiler & Fergus, 2014) slides a patch of ``baseline``
over the image and records how much the target class's *score* (the logit by
default) falls; each pixel gets the mean fall over the patches covering it.
Faithfulness is the Spearman rank correlation between that map and the CAM.
Patches are scored in batches through the model's own session.
"""

from __future__ import annotations

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.metrics.agreement import spearman
from onnxcam.metrics.scoring import ClassScorer


def patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Patch offsets along one axis: every ``stride`` pixels, plus one flush with the far edge."""
    if patch > size:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def default_patch(h: int, w: int) -> tuple[int, int]:
    """A patch of about an eighth of the image side, moved by half a patch."""
    patch = max(1, round(min(h, w) / 8))
    return patch, max(1, patch // 2)


def occlusion_maps(
    scorer: ClassScorer,
    images: np.ndarray,
    targets: np.ndarray,
    patch: int | None = None,
    stride: int | None = None,
    baseline: float = 0.0,
    progress=None,
) -> np.ndarray:
    """(N, H, W) mean drop of the target score when a ``patch`` x ``patch`` square around each pixel is occluded."""
    images = np.asarray(images, dtype=np.float32)
    n, _, h, w = images.shape
    dp, ds = default_patch(h, w)
    patch, stride = patch or dp, stride or ds
    if patch < 1 or stride < 1:
        raise OnnxcamError(f"occlusion patch and stride must be at least 1, got {patch} and {stride}")
    boxes = [(y, x) for y in patch_starts(h, patch, stride) for x in patch_starts(w, patch, stride)]
    cover = np.zeros((h, w))
    for y, x in boxes:
        cover[y : y + patch, x : x + patch] += 1
    full = scorer.target_scores(images, targets)
    maps = np.zeros((n, h, w))
    group = scorer.images_per_call(len(boxes))
    for g0 in range(0, n, group):
        idx = list(range(g0, min(n, g0 + group)))
        stack = np.repeat(images[idx], len(boxes), axis=0).reshape(len(idx), len(boxes), *images.shape[1:])
        for b, (y, x) in enumerate(boxes):
            stack[:, b, :, y : y + patch, x : x + patch] = baseline
        scores = scorer.target_scores(
            stack.reshape(-1, *images.shape[1:]), np.repeat(np.asarray(targets)[idx], len(boxes))
        )
        drops = full[idx][:, None] - scores.reshape(len(idx), len(boxes))
        for b, (y, x) in enumerate(boxes):
            maps[idx, y : y + patch, x : x + patch] += drops[:, b, None, None]
        if progress:
            progress(len(idx))
    return (maps / np.maximum(cover, 1)).astype(np.float32)


def faithfulness(cams: np.ndarray, occlusion: np.ndarray) -> np.ndarray:
    """(N,) Spearman correlation of each CAM with its occlusion map (NaN where either map is constant)."""
    return np.array([spearman(c, o) for c, o in zip(cams, occlusion)])

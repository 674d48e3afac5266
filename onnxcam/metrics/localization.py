"""Does the map point at the object? The pointing game and box localisation.

Boxes everywhere are ``(x0, y0, x1, y1)`` in pixels of the map, end-exclusive
(pixel ``(x, y)`` is inside when ``x0 <= x < x1`` and ``y0 <= y < y1``), the
convention of :func:`onnxcam.metrics.regions.threshold_box`, of numpy slicing
and of ``PIL.Image.crop``. An image may have several ground-truth boxes of the
explained class (VOC images often do); a hit or a correct box on any of them
counts, as in both protocols.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxcam.metrics.agreement import peak
from onnxcam.metrics.regions import PAPER_THRESHOLD, threshold_box

#: Zhang et al. (2016) count a hit when the maximum lies within 15 pixels of an annotated object.
POINTING_TOLERANCE_PX = 15.0
#: The localisation protocol of ImageNet (and Grad-CAM, Sec. 4.1): a box is correct at IoU >= 0.5.
IOU_CORRECT = 0.5

Box = Sequence[float]


def distance_to_box(y: float, x: float, box: Box) -> float:
    """Euclidean distance in pixels from the centre of pixel ``(y, x)`` to the box (0 inside it)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cy, cx = y + 0.5, x + 0.5
    dy = max(y0 - cy, 0.0, cy - y1)
    dx = max(x0 - cx, 0.0, cx - x1)
    return float(np.hypot(dx, dy))


def peak_box_distance(cam: np.ndarray, boxes: Sequence[Box]) -> float:
    """Distance in pixels from the map's maximum to the nearest box (0 inside one; inf without boxes).

    The maximum is the first in raster order on ties, so a constant map points
    at its top-left pixel: it earns no credit it did not point at.
    """
    y, x = peak(cam)
    return min((distance_to_box(y, x, b) for b in boxes), default=float("inf"))


def pointing_hit(cam: np.ndarray, boxes: Sequence[Box], tolerance: float = POINTING_TOLERANCE_PX) -> bool:
    """The pointing game (Zhang et al., ECCV 2016) for one map: is its maximum within ``tolerance`` px of a box?"""
    return peak_box_distance(cam, boxes) <= tolerance


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two end-exclusive boxes (0 when either is empty)."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0) + max(0.0, bx1 - bx0) * max(0.0, by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def localization_iou(cam: np.ndarray, boxes: Sequence[Box], fraction: float = PAPER_THRESHOLD) -> float:
    """Best IoU between the box of the map's largest region above ``fraction`` of its maximum and a true box.

    This is Grad-CAM's weakly-supervised localisation (Sec. 4.1): threshold at
    15% of the maximum, keep the largest connected component, box it. A map
    with no positive value has no box: IoU 0.
    """
    predicted = threshold_box(cam, fraction)
    if predicted is None:
        return 0.0
    return max((box_iou(predicted, b) for b in boxes), default=0.0)


def localization_error(iou: float, predicted_class: int | None, true_class: int | None) -> float | None:
    """Top-1 localisation error of one image, as the Grad-CAM paper reports it (1 = error, 0 = correct).

    An error when the top-1 class is wrong *or* the box misses (IoU < 0.5).
    Undefined (None) without a true class: then only the box can be judged.
    """
    if true_class is None or predicted_class is None:
        return None
    return float(predicted_class != true_class or iou < IOU_CORRECT)

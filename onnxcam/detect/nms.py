"""Detections from one forward pass: confidence threshold and class-aware NMS, or the graph's own NMS.

A :class:`Detection` keeps the head row it came from, so the target that
explains it can seed exactly that row (and the rows overlapping it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from onnxcam.detect.decode import box_iou, class_confidences, decode_boxes
from onnxcam.detect.formats import DetectorFormat
from onnxcam.errors import TargetError


@dataclass(frozen=True)
class Detection:
    """One detected object: ``box`` (x0, y0, x1, y1) in model-input pixels, its class, confidence and head row."""

    image: int
    box: tuple[float, float, float, float]
    class_id: int
    score: float
    row: int


#: The most (row, class) candidates that go into NMS per image, the best by confidence (as Ultralytics' ``max_nms``):
#: greedy NMS is quadratic in its input, and a low ``conf`` on a YOLOv8 head gives 8400 x 80 of them.
MAX_CANDIDATES = 30000


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS: indices of ``boxes`` (K, 4) kept, highest score first (torchvision's ``nms`` semantics).

    ``max_keep`` stops as soon as that many are kept (the rest would be dropped anyway).
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while len(order) and (max_keep is None or len(keep) < max_keep):
        best, order = int(order[0]), order[1:]
        keep.append(best)
        if len(order):
            order = order[box_iou(boxes[best], boxes[order]) <= iou]
    return np.array(keep, dtype=np.int64)


def find_detections(
    fmt: DetectorFormat,
    outputs: Mapping[str, np.ndarray],
    size: tuple[int, int],
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 20,
) -> list[list[Detection]]:
    """Per image, its detections, best first: the graph's NMS where it has one, else threshold + class-aware NMS.

    ``size`` is the model input's (height, width); ``conf`` the confidence
    threshold, ``iou`` NMS's overlap threshold, ``max_det`` the most kept per
    image. DETR keeps every query above ``conf`` (its set prediction needs no NMS).
    At most ``MAX_CANDIDATES`` (row, class) pairs per image, the most confident,
    go into NMS, which stops once ``max_det`` are kept: the work is bounded
    whatever ``conf`` is.
    """
    check_thresholds(conf, iou, max_det)
    boxes = decode_boxes(fmt, outputs, size)
    confidences = class_confidences(fmt, outputs)
    if fmt.nms is not None and fmt.nms in outputs:
        return _from_selected(np.asarray(outputs[fmt.nms]), boxes, confidences, conf, max_det)
    found = []
    for i in range(len(boxes)):
        valid = (boxes[i][:, 2] > boxes[i][:, 0]) & (boxes[i][:, 3] > boxes[i][:, 1])  # no empty or inverted box
        rows, classes = np.nonzero((confidences[i] >= conf) & valid[:, None])
        scores = confidences[i][rows, classes]
        if fmt.kind == "detr":  # one class per query: its best
            best = confidences[i].argmax(axis=1)
            pick = classes == best[rows]
            rows, classes, scores = rows[pick], classes[pick], scores[pick]
        rows, classes, scores = _best_candidates(rows, classes, scores)
        if fmt.kind == "detr":
            keep = np.argsort(-scores, kind="stable")
        else:  # class-aware: shift each class's boxes apart, as torchvision's batched_nms
            candidates = boxes[i][rows]
            shift = (classes[:, None] * (np.abs(candidates).max() + 1.0)) if len(rows) else 0
            keep = nms(candidates + shift, scores, iou, max_keep=max_det)
        found.append([_detection(i, boxes[i][rows[k]], classes[k], scores[k], rows[k]) for k in keep[:max_det]])
    return found


def _best_candidates(rows: np.ndarray, classes: np.ndarray, scores: np.ndarray):
    """The ``MAX_CANDIDATES`` best (row, class) candidates by score, in their original order; all where fewer."""
    if len(scores) <= MAX_CANDIDATES:
        return rows, classes, scores
    top = np.sort(np.argpartition(-scores, MAX_CANDIDATES - 1)[:MAX_CANDIDATES])
    return rows[top], classes[top], scores[top]


def _from_selected(
    selected: np.ndarray, boxes: np.ndarray, confidences: np.ndarray, conf: float, max_det: int
) -> list[list[Detection]]:
    """NonMaxSuppression's ``(K, 3)`` [batch, class, box] rows as detections (the graph's own thresholds apply)."""
    if selected.ndim != 2 or selected.shape[1] != 3:
        raise TargetError(f"NonMaxSuppression's output should be (selected, 3); got shape {selected.shape}")
    found: list[list[Detection]] = [[] for _ in range(len(boxes))]
    for b, c, r in selected.astype(np.int64):
        if 0 <= b < len(boxes) and 0 <= r < boxes.shape[1] and 0 <= c < confidences.shape[2]:
            score = float(confidences[b, r, c])
            if score >= conf:
                found[b].append(_detection(b, boxes[b, r], c, score, r))
    return [sorted(d, key=lambda t: -t.score)[:max_det] for d in found]


def _detection(image, box: np.ndarray, class_id, score, row) -> Detection:
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    return Detection(int(image), (x0, y0, x1, y1), int(class_id), float(score), int(row))


def check_thresholds(conf: float, iou: float, max_det: int) -> None:
    """Refuse thresholds outside [0, 1] and a max_det below 1, with what to pass instead."""
    for name, v in (("conf", conf), ("iou", iou)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 <= v <= 1:
            raise TargetError(f"{name} must be a number in [0, 1], not {v!r}")
    if isinstance(max_det, bool) or not isinstance(max_det, (int, np.integer)) or max_det < 1:
        raise TargetError(f"max_det must be a positive int, not {max_det!r}")

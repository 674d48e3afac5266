"""From a detector's raw outputs to boxes in model-input pixels and class confidences, on the host.

Everything here is float64 numpy on the outputs of one forward pass: what the
target needs to find the rows to seed, and what NMS and the panels need.
Boxes come out as ``(x0, y0, x1, y1)`` in model-input pixels, whatever the
format stores (see :mod:`onnxcam.detect.formats`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from onnxcam.detect.formats import DetectorFormat
from onnxcam.errors import TargetError
from onnxcam.preprocess.geometry import Geometry


def rows_view(fmt: DetectorFormat, value: np.ndarray) -> np.ndarray:
    """``value`` as ``(N, rows, columns)``: YOLOv8 and NMS scores are stored columns first."""
    value = np.asarray(value)
    if value.ndim != 3:
        raise TargetError(f"{fmt.kind} head tensors are (batch, rows, columns); got shape {value.shape}")
    return np.swapaxes(value, 1, 2) if fmt.class_axis_first else value


def boxes_view(fmt: DetectorFormat, value: np.ndarray) -> np.ndarray:
    """The box tensor as ``(N, rows, columns)`` (only YOLOv8 stores its boxes columns first)."""
    value = np.asarray(value)
    if value.ndim != 3 or (value.shape[2] if fmt.kind != "yolov8" else value.shape[1]) < 4:
        raise TargetError(f"{fmt.kind} boxes must be (batch, rows, >= 4 coordinates); got shape {value.shape}")
    return np.swapaxes(value, 1, 2) if fmt.kind == "yolov8" else value


def decode_raw(fmt: DetectorFormat, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Raw box coordinates ``(..., rows, 4)`` (rows aligned with the anchors) -> xyxy in input pixels."""
    raw = np.asarray(raw, dtype=np.float64)
    h, w = size
    if fmt.kind == "ssd":
        anchors = np.asarray(fmt.anchors, dtype=np.float64)
        sx, sy, sw, sh = fmt.box_scale
        cx = raw[..., 0] / sx * anchors[:, 2] + anchors[:, 0]
        cy = raw[..., 1] / sy * anchors[:, 3] + anchors[:, 1]
        bw, bh = raw[..., 2] / sw, raw[..., 3] / sh
        if fmt.exp_wh:
            bw, bh = np.exp(np.minimum(bw, 60.0)), np.exp(np.minimum(bh, 60.0))
        bw, bh = bw * anchors[:, 2], bh * anchors[:, 3]
        return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=-1)
    if fmt.box_encoding == "xyxy":
        out = raw[..., :4].copy()
    elif fmt.box_encoding == "yxyx":
        out = raw[..., [1, 0, 3, 2]]
    else:
        cx, cy, bw, bh = (raw[..., i] for i in range(4))
        out = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=-1)
    return out * np.array([w, h, w, h], dtype=np.float64) if fmt.normalized else out


def decode_boxes(fmt: DetectorFormat, outputs: Mapping[str, np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """``(N, rows, 4)`` boxes, xyxy in model-input pixels (``size`` is the input's (height, width))."""
    return decode_raw(fmt, boxes_view(fmt, _output(outputs, fmt.boxes))[..., :4], size)


def class_confidences(fmt: DetectorFormat, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(N, rows, classes)`` confidences in [0, 1]: probabilities, times objectness where the head has one.

    DETR's softmax runs over every class and the "no object" column, which is then dropped.
    """
    cols = rows_view(fmt, _output(outputs, fmt.scores)).astype(np.float64)
    if fmt.activation == "sigmoid":
        cols = 0.5 * (1 + np.tanh(cols / 2))
    elif fmt.activation == "softmax":
        e = np.exp(cols - cols.max(axis=-1, keepdims=True))
        cols = e / e.sum(axis=-1, keepdims=True)
    start = fmt.class_offset
    conf = cols[..., start : start + fmt.classes]
    if conf.shape[-1] != fmt.classes:
        raise TargetError(f"{fmt.describe()}: the scores have {cols.shape[-1]} columns, too few for the classes")
    obj = fmt.objectness_column
    return conf * cols[..., obj : obj + 1] if obj is not None else conf


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy ``box`` with each of ``boxes`` ``(..., 4)``; 0 where the union is empty."""
    box, boxes = np.asarray(box, dtype=np.float64), np.asarray(boxes, dtype=np.float64)
    ix = np.clip(np.minimum(box[2], boxes[..., 2]) - np.maximum(box[0], boxes[..., 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[..., 3]) - np.maximum(box[1], boxes[..., 1]), 0, None)
    inter = ix * iy
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def iou_gradient(fmt: DetectorFormat, raw: np.ndarray, rows: np.ndarray, box, size: tuple[int, int]) -> np.ndarray:
    """d IoU(decoded row, ``box``) / d raw coordinates, ``(len(rows), 4)``, by float64 central differences.

    Decoding is a smooth map of four numbers per row (affine, or exp for
    torchvision's coder), so central differences with a step of 1e-6 of the
    value's scale are exact to about 1e-9: no format needs a hand-written
    derivative.
    """
    raw = np.asarray(raw, dtype=np.float64)[rows, :4]
    step = 1e-6 * np.maximum(np.abs(raw), 1.0)
    grad = np.zeros_like(raw)
    sub = fmt if fmt.anchors is None else _with_anchors(fmt, np.asarray(fmt.anchors)[rows])
    for k in range(4):
        up, down = raw.copy(), raw.copy()
        up[:, k] += step[:, k]
        down[:, k] -= step[:, k]
        grad[:, k] = (box_iou(box, decode_raw(sub, up, size)) - box_iou(box, decode_raw(sub, down, size))) / (
            2 * step[:, k]
        )
    return grad


def blazeface_anchors(size: int = 128) -> np.ndarray:
    """MediaPipe's short-range BlazeFace anchors, ``(896, 4)`` cx, cy, w, h in input pixels.

    The SSD anchor calculator's options for ``face_detection_short_range``:
    strides 8, 16, 16, 16 (layers of one stride share a grid: 2 anchors per
    cell at stride 8, 6 at stride 16), offset 0.5, fixed anchor size 1 (the
    whole input). With ``box_scale=(size,) * 4`` and a linear coder this is
    MediaPipe's decoding.
    """
    rows = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = size // stride
        for y in range(cells):
            for x in range(cells):
                rows += [((x + 0.5) / cells * size, (y + 0.5) / cells * size, float(size), float(size))] * per_cell
    return np.array(rows, dtype=np.float64)


def _with_anchors(fmt: DetectorFormat, anchors: np.ndarray) -> DetectorFormat:
    import dataclasses

    return dataclasses.replace(fmt, anchors=anchors)


def _output(outputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in outputs:
        raise TargetError(
            f"the detector's head tensor {name!r} is not among the outputs {sorted(outputs)}; for a graph that ends "
            "in NonMaxSuppression, explain onnxcam.detect.expose_head(model) instead of the model"
        )
    return np.asarray(outputs[name])


def box_to_image(box: Sequence[float], geometry: Geometry) -> tuple[float, float, float, float]:
    """A model-input box (x0, y0, x1, y1, edges) -> the original photo's pixels, clipped to the photo.

    Edges map as continuous coordinates through the same resize, crop and
    letterbox offsets as :func:`onnxcam.preprocess.point_to_image` maps pixel centres.
    """
    g = geometry
    x0, y0, x1, y1 = (float(v) for v in box)
    fx = lambda x: min(max((x + g.crop_left) / g.scale_x, 0.0), float(g.orig_w))  # noqa: E731
    fy = lambda y: min(max((y + g.crop_top) / g.scale_y, 0.0), float(g.orig_h))  # noqa: E731
    return (fx(x0), fy(y0), fx(x1), fy(y1))

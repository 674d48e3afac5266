"""Explain one detection: the seed over a detector head's rows whose boxes match it.

``DetectionTarget(box, class_id, iou=0.5)`` follows pytorch-grad-cam's
``FasterRCNNBoxScoreTarget``: the score is the sum, over the head rows whose
decoded box overlaps ``box`` by IoU >= ``iou``, of their class-``class_id``
score, plus ``box_weight`` times each such row's IoU with ``box`` (the
box-regression term; pytorch-grad-cam adds it with weight 1 for its best
match). Which rows match depends on the boxes the model predicts for that
image, so the seed is resolved from a forward pass of the image first (the
explainer runs it), then explained in the same graph as every other seed
target: ``score = sum(scored tensor * seed)``.

The seed is the derivative of the score with respect to the scored tensor,
at that image. Where the score is linear in the tensor (class logits or
probabilities) that is the score itself; where it is not (objectness times
class probability, and the IoU of a decoded box) it is the exact gradient at
the forward pass, so the heatmap is the score's Grad-CAM all the same.

What is seeded: with ``score="logit"`` (the default) and a scores output that
ends in a Sigmoid, each matched row's class logit; otherwise the class score as
the output holds it (YOLOv8: the probability; YOLOv5 and SSD heads with an
objectness column: objectness times class probability; DETR: the class logit,
its softmax being outside the graph).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from onnxcam.detect.decode import boxes_view, box_iou, decode_boxes, iou_gradient, rows_view
from onnxcam.detect.formats import DetectorFormat, detector_format
from onnxcam.detect.nms import Detection
from onnxcam.errors import TargetError
from onnxcam.explain.build import ScoreSpec, resolve_score
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.layers import image_axes, image_input


@dataclass(frozen=True, eq=False)
class DetectionTarget:
    """The score of the head rows matching ``box`` (x0, y0, x1, y1 in model-input pixels) for ``class_id``.

    ``format`` is the detector's (default: recognised from the graph, see
    :func:`onnxcam.detect.detector_format`). The same target applies to every
    image of the batch; :meth:`all` gives one row per detection instead.
    """

    box: Sequence[float]
    class_id: int
    iou: float = 0.5
    box_weight: float = 0.0
    format: DetectorFormat | None = None

    @property
    def output(self) -> str | None:
        """The output seeded: the format's scores (None: recognised when the target is run)."""
        return self.format.scores if self.format is not None else None

    @classmethod
    def all(
        cls,
        detections: Iterable[Detection],
        iou: float = 0.5,
        box_weight: float = 0.0,
        format: DetectorFormat | None = None,
    ) -> DetectionTargets:
        """Every detection (of any images of the batch, by ``Detection.image``) explained in one batched run."""
        items = tuple((int(d.image), cls(tuple(d.box), int(d.class_id), iou, box_weight, format)) for d in detections)
        return DetectionTargets(items, format)

    def resolve(
        self,
        fmt: DetectorFormat,
        score: ScoreSpec,
        outputs: Mapping[str, np.ndarray],
        size: tuple[int, int],
        shape: tuple[int, ...],
        scored: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float | None]:
        """(seed, score) for one image: ``outputs`` are that image's model outputs with a batch axis of 1.

        ``shape`` is the scored tensor's shape without its batch axis; ``scored``
        (its value for that image, with the batch axis) gives the score's value,
        else it is None.
        """
        self._check()
        if not 0 <= int(self.class_id) < fmt.classes:
            raise TargetError(f"class_id {self.class_id} is out of range: the detector has {fmt.classes} classes")
        boxes = decode_boxes(fmt, outputs, size)[0]
        ious = box_iou(np.asarray(self.box, dtype=np.float64), boxes)
        rows = np.nonzero(ious >= self.iou)[0]
        if not len(rows):
            raise TargetError(
                f"no head row of the {fmt.kind} detector has a box overlapping {tuple(self.box)} by IoU >= "
                f"{self.iou} (best {float(ious.max(initial=0)):.3f}); lower iou= or check the box's coordinates "
                "(model-input pixels, x0, y0, x1, y1)"
            )
        seed = np.zeros((1, *shape), dtype=np.float64)
        view = rows_view(fmt, seed)  # a view: writing it writes the seed
        col = fmt.class_offset + int(self.class_id)
        obj = fmt.objectness_column
        product = obj is not None and not score.from_logit and fmt.activation == "none"
        values = rows_view(fmt, np.asarray(outputs[fmt.scores], dtype=np.float64))[0]
        if product:  # d(obj * cls): cls at the objectness, obj at the class
            view[0, rows, col] = values[rows, obj]
            view[0, rows, obj] = values[rows, col]
        else:
            view[0, rows, col] = 1.0
        if self.box_weight:
            if fmt.boxes != fmt.scores or score.tensor != fmt.scores:
                raise TargetError(
                    f"box_weight needs the boxes in the explained tensor; the {fmt.kind} head has its boxes in "
                    f"{fmt.boxes!r} and explains {score.tensor!r}: pass box_weight=0"
                )
            raw = boxes_view(fmt, np.asarray(outputs[fmt.boxes]))[0]
            boxes_seed = boxes_view(fmt, seed)
            boxes_seed[0, rows, :4] += self.box_weight * iou_gradient(fmt, raw, rows, self.box, size)
        value = None
        if scored is not None:
            svals = rows_view(fmt, np.asarray(scored, dtype=np.float64))[0]
            terms = svals[rows, obj] * svals[rows, col] if product else svals[rows, col]
            value = float(terms.sum() + self.box_weight * ious[rows].sum())
        return seed[0], value

    def _check(self) -> None:
        box = np.asarray(self.box, dtype=np.float64) if _numeric(self.box) else None
        if box is None or box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            raise TargetError(f"DetectionTarget box must be 4 finite numbers x0 < x1, y0 < y1; got {self.box!r}")
        if isinstance(self.iou, bool) or not isinstance(self.iou, (int, float)) or not 0 < self.iou <= 1:
            raise TargetError(f"DetectionTarget iou must be in (0, 1], not {self.iou!r}")
        if isinstance(self.box_weight, bool) or not isinstance(self.box_weight, (int, float)):
            raise TargetError(f"DetectionTarget box_weight must be a number, not {self.box_weight!r}")
        if isinstance(self.class_id, bool) or not isinstance(self.class_id, (int, np.integer)):
            raise TargetError(f"DetectionTarget class_id must be an int, not {self.class_id!r}")


@dataclass(frozen=True, eq=False)
class DetectionTargets:
    """Several detection targets, each on one image of the batch: one result row each (see ``res.image_index``)."""

    items: tuple[tuple[int, DetectionTarget], ...]
    format: DetectorFormat | None = None

    @property
    def output(self) -> str | None:
        return self.format.scores if self.format is not None else None


def plan_detection(
    index: GraphIndex,
    target: DetectionTarget | DetectionTargets,
    feeds: dict[str, np.ndarray],
    score: ScoreSpec,
    predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
) -> tuple[ScoreSpec, np.ndarray, np.ndarray]:
    """(score, image of each row, seed of each row) explaining ``target`` on ``feeds``.

    Runs the model once on the batch to decode its boxes. The score is the
    format's scores output, resolved with the explainer's logit rule.
    """
    n = next(iter(feeds.values())).shape[0]
    items = target.items if isinstance(target, DetectionTargets) else tuple((i, target) for i in range(n))
    fmt = target.format or next((t.format for _, t in items if t.format is not None), None) or detector_format(index)
    if fmt.scores != score.output:
        score = resolve_score(index, fmt.scores, use_logit=score.from_logit or score.squash is None)
    for i, _ in items:
        if not 0 <= i < n:
            raise TargetError(f"a detection refers to image {i}, but the batch has {n} image(s)")
    shape = index.shape(score.tensor)
    outputs = predict(feeds)
    dims = tuple(np.asarray(outputs[fmt.scores]).shape[1:]) if shape is None else None
    image = image_input(index)
    h_axis, w_axis = image_axes(index, image)
    size = (int(feeds[image].shape[h_axis]), int(feeds[image].shape[w_axis]))
    dtype = index.known_type(score.tensor).np_dtype
    tensor_shape = dims or tuple(d if isinstance(d, int) and d > 0 else -1 for d in (shape or ())[1:])
    if any(d < 0 for d in tensor_shape):  # dynamic axes: the forward pass tells
        tensor_shape = tuple(np.asarray(outputs[fmt.scores]).shape[1:])
    seeds = [np.zeros((0, *tensor_shape), dtype)]
    for i, t in items:
        one = {k: np.asarray(v)[i : i + 1] for k, v in outputs.items()}
        seed, _ = t.resolve(fmt, score, one, size, tensor_shape)
        seeds.append(seed[None].astype(dtype))
    rows = np.array([i for i, _ in items], dtype=np.int64)
    return score, rows, np.concatenate(seeds)


def _numeric(value) -> bool:
    try:
        return np.asarray(value).dtype.kind in "biuf"
    except (TypeError, ValueError):
        return False

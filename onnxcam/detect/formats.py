"""Which detector a graph is: where its boxes and class scores are, and how to read them.

A :class:`DetectorFormat` names the output holding the class scores (the one a
:class:`~onnxcam.detect.target.DetectionTarget` seeds), the output holding the
boxes (the same one for YOLO heads) and how both are laid out. It is recognised
from the graph (:func:`detector_format`) in this order: a NonMaxSuppression
node (the raw head is its input), Ultralytics metadata, output names
(``logits`` + ``pred_boxes``: DETR), then output shapes; any field can be
given instead, and ``kind=`` skips the guessing.

Layouts, batch first:

=========  ========================================  ==========================================
kind       scores                                    boxes
=========  ========================================  ==========================================
yolov8     ``(N, 4 + C, A)``: cx, cy, w, h, classes  the same tensor, rows 0..3
yolov5     ``(N, A, 5 + C)``: xywh, objectness, cls  the same tensor, columns 0..3
ssd        ``(N, A, C)`` (``objectness``: ``1 + C``)  ``(N, A, >= 4)`` offsets from ``anchors``
detr       ``(N, Q, C + 1)`` logits, last: no object ``(N, Q, 4)`` cx, cy, w, h in [0, 1]
nms        ``(N, C, A)``, NonMaxSuppression's input  ``(N, A, 4)``, NonMaxSuppression's input
=========  ========================================  ==========================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxcam.errors import TargetError
from onnxcam.graph.index import GraphIndex

KINDS = ("yolov8", "yolov5", "ssd", "detr", "nms")


@dataclass(frozen=True, eq=False)
class DetectorFormat:
    """Where a detector's boxes and class scores are (see the module's table).

    ``activation`` turns the scores into probabilities for thresholds and NMS:
    "none" (already probabilities), "sigmoid" or "softmax" (over the last axis,
    DETR). ``box_scale``/``exp_wh`` are the SSD box coder's (torchvision:
    ``(10, 10, 5, 5)``, exp; BlazeFace: ``(128,) * 4``, linear). ``anchors``
    ``(A, 4)`` are cx, cy, w, h in model-input pixels. ``nms`` is the
    NonMaxSuppression node's selected-indices output when the graph runs NMS.
    ``shape_guess`` is True when the kind was guessed from output shapes alone
    (no ``kind``, metadata, output names or NonMaxSuppression node said so):
    any model with one ``(N, a, b)`` output looks like a YOLO head.
    """

    kind: str
    scores: str
    boxes: str
    classes: int
    activation: str = "none"
    objectness: bool = False
    anchors: np.ndarray | None = field(default=None, repr=False)
    box_scale: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    exp_wh: bool = False
    box_encoding: str = "cxcywh"  # or "xyxy", "yxyx" (NonMaxSuppression's center_point_box=0)
    normalized: bool = False  # boxes in [0, 1] of the input (DETR)
    nms: str | None = None
    reason: str = ""
    shape_guess: bool = False

    @property
    def class_axis_first(self) -> bool:
        """Scores laid out (N, columns, rows) rather than (N, rows, columns)."""
        return self.kind in ("yolov8", "nms")

    @property
    def class_offset(self) -> int:
        """The column of class 0 in the scores tensor."""
        return {"yolov8": 4, "yolov5": 5}.get(self.kind, 1 if self.objectness else 0)

    @property
    def objectness_column(self) -> int | None:
        if self.kind == "yolov5":
            return 4
        return 0 if self.kind == "ssd" and self.objectness else None

    def describe(self) -> str:
        where = self.scores if self.scores == self.boxes else f"scores {self.scores!r}, boxes {self.boxes!r}"
        return f"{self.kind} ({self.classes} classes; {where})" + (f": {self.reason}" if self.reason else "")


def detector_format(model: GraphIndex | onnx.ModelProto, kind: str | None = None, **given: Any) -> DetectorFormat:
    """The detector format of ``model``: recognised from the graph, with any field of ``given`` taking precedence.

    ``kind`` (one of ``KINDS``) skips recognition of the kind; fields the graph
    cannot tell (an SSD's ``anchors``) must be given. Raises TargetError with
    what to pass when the graph is not a detector onnxcam can read.
    """
    index = model if isinstance(model, GraphIndex) else GraphIndex(model)
    unknown = set(given) - {f.name for f in dataclasses.fields(DetectorFormat)}
    if unknown:
        raise TargetError(f"unknown detector format field(s) {sorted(unknown)}; see onnxcam.detect.DetectorFormat")
    if kind is not None and kind not in KINDS:
        raise TargetError(f"detector kind must be one of {', '.join(KINDS)}, not {kind!r}")
    found = _recognise(index, kind, given)
    fmt = dataclasses.replace(found, **given)
    _check(index, fmt)
    return fmt


def _recognise(index: GraphIndex, kind: str | None, given: dict[str, Any]) -> DetectorFormat:
    nms = [n for n in index.model.graph.node if n.op_type == "NonMaxSuppression"]
    if kind in (None, "nms") and nms:
        node = nms[-1]
        scores, boxes = node.input[1], node.input[0]
        centre = next((a.i for a in node.attribute if a.name == "center_point_box"), 0)
        return DetectorFormat(
            "nms",
            scores,
            boxes,
            _dim(index, scores, 1),
            box_encoding="cxcywh" if centre else "yxyx",
            nms=node.output[0],
            reason="the graph ends in NonMaxSuppression; its boxes and scores inputs are the raw head",
        )
    if kind == "nms":
        raise TargetError("kind='nms' but the graph has no NonMaxSuppression node")
    outputs = list(index.outputs)
    shapes = {name: index.shape(name) for name in outputs}
    props = {p.key.lower(): p.value for p in index.model.metadata_props}
    ultralytics = "ultralytics" in props.get("author", "").lower()
    task = props.get("task", "").strip().lower()
    if ultralytics and kind is None and task not in ("", "detect"):
        raise TargetError(
            f"the Ultralytics metadata says this model's task is {task!r}, not 'detect': its output is no plain "
            "detection head; pass kind= (--detector) to read it as one anyway"
        )
    if ultralytics and props.get("end2end", "").strip().lower() == "true":
        raise TargetError(
            "this Ultralytics export has NMS built in (end2end: its output is already the final boxes, with no "
            "scores per anchor to explain); export it again with nms=False (and end2end=False)"
        )
    if kind == "detr" or (kind is None and given.get("anchors") is None):  # DETR has no anchors
        logits = given.get("scores") or next((o for o in outputs if "logit" in o.lower()), None)
        query_boxes = given.get("boxes") or next((o for o in outputs if "box" in o.lower()), None)
        if kind == "detr" or (logits and query_boxes):
            if not (logits and query_boxes):
                raise TargetError(
                    "kind='detr' needs outputs named like 'logits' and 'pred_boxes'; pass scores=, boxes="
                )
            return DetectorFormat(
                "detr",
                logits,
                query_boxes,
                _dim(index, logits, 2) - 1,
                activation="softmax",
                normalized=True,
                reason="outputs named logits and boxes",
            )
    single = [o for o in outputs if shapes[o] is not None and len(shapes[o] or ()) == 3]
    if kind in (None, "yolov8", "yolov5") and len(single) >= 1 and (kind or len(outputs) == 1 or ultralytics):
        name = single[0]
        # a dynamic anchor count (dynamic=True exports) is the large axis
        _, a, b = (d if isinstance(d, int) and d > 0 else 1 << 30 for d in shapes[name] or ())
        guess = kind is None and not ultralytics
        if kind == "yolov8" or (kind is None and 5 <= a < b):
            why = (
                "Ultralytics metadata (task detect)"
                if ultralytics
                else f"a shape guess: one output shaped (N, 4 + classes, {b}); if wrong, pass --detector (kind=)"
                if guess
                else f"one output shaped (N, 4 + classes, {b})"
            )
            return DetectorFormat("yolov8", name, name, a - 4, reason=why, shape_guess=guess)
        if kind == "yolov5" or (kind is None and 6 <= b < a):
            why = (
                f"a shape guess: one output shaped (N, {a}, 5 + classes), YOLOv5-style; if wrong, pass --detector "
                "(kind=)"
                if guess
                else f"one output shaped (N, {a}, 5 + classes): YOLOv5-style"
            )
            return DetectorFormat("yolov5", name, name, b - 5, reason=why, shape_guess=guess)
    if kind in (None, "ssd") and len(outputs) >= 2:
        boxes_name = given.get("boxes") or next(
            (o for o in outputs if shapes[o] and len(shapes[o] or ()) == 3 and _last(shapes[o]) in (4, 16)), None
        )
        scores_name = given.get("scores") or next(
            (o for o in outputs if o != boxes_name and shapes[o] and len(shapes[o] or ()) == 3), None
        )
        if boxes_name and scores_name:
            producer = index.producer.get(scores_name)
            squashed = producer is not None and producer.op_type in ("Sigmoid", "Softmax")
            return DetectorFormat(
                "ssd",
                scores_name,
                boxes_name,
                _last(shapes[scores_name]) - (1 if given.get("objectness") else 0),
                activation="none" if squashed else "sigmoid",
                reason="a (boxes, scores) pair of outputs per anchor",
                shape_guess=kind is None,
            )
    if _nested_nms(index.model.graph):
        raise TargetError(
            "the model's NonMaxSuppression sits inside an If or Loop branch, after score thresholds and top-k (as "
            "in torchvision's detection models): no per-anchor boxes and scores reach its outputs; export the raw "
            "head instead (the backbone and head outputs, before post-processing) and pass its anchors"
        )
    raise TargetError(
        f"cannot tell which detector the model is (outputs {outputs} shaped {[shapes[o] for o in outputs]}); "
        f"if it is one, say which: --detector {'|'.join(KINDS)} (Python: kind=, with scores=/boxes= naming its "
        "outputs); a classifier is explained without --detections"
    )


def _check(index: GraphIndex, fmt: DetectorFormat) -> None:
    """Refuse a format that cannot work on this graph, before any image is run."""
    if fmt.kind not in KINDS:
        raise TargetError(f"detector kind must be one of {', '.join(KINDS)}, not {fmt.kind!r}")
    if fmt.activation not in ("none", "sigmoid", "softmax"):
        raise TargetError(f"detector activation must be none, sigmoid or softmax, not {fmt.activation!r}")
    known = set(index.outputs) | set(index.producer)
    for name in {fmt.scores, fmt.boxes}:
        if name not in known:
            raise TargetError(f"the model has no tensor {name!r}; its outputs are {index.outputs}")
    if isinstance(fmt.classes, bool) or not isinstance(fmt.classes, (int, np.integer)) or fmt.classes < 1:
        raise TargetError(f"the detector needs a positive class count, not {fmt.classes!r}; pass classes=")
    if fmt.kind == "ssd":
        if fmt.anchors is None:
            raise TargetError(
                f"the SSD-style head ({fmt.boxes!r}, {fmt.scores!r}) stores box offsets from anchors, which the "
                "graph does not hold; pass anchors= (--anchors FILE.npy): an (anchors, 4) array of cx, cy, w, h in "
                "input pixels (BlazeFace: onnxcam.detect.blazeface_anchors() with box_scale=(128,) * 4)"
            )
        anchors = np.asarray(fmt.anchors)
        rows = _dim(index, fmt.boxes, 1, required=False)
        if anchors.ndim != 2 or anchors.shape[1] != 4 or (rows and anchors.shape[0] != rows):
            raise TargetError(f"anchors must be ({rows or 'anchors'}, 4): cx, cy, w, h; got shape {anchors.shape}")
        if not np.isfinite(anchors).all():
            raise TargetError("anchors must be finite numbers")


def _nested_nms(graph: onnx.GraphProto, depth: int = 0) -> bool:
    """Whether a NonMaxSuppression node runs inside a subgraph (If/Loop/Scan branch) of ``graph``."""
    for node in graph.node:
        if depth and node.op_type == "NonMaxSuppression":
            return True
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            if any(_nested_nms(g, depth + 1) for g in subgraphs):
                return True
    return False


def _dim(index: GraphIndex, name: str, axis: int, required: bool = True) -> int:
    shape = index.shape(name)
    d = shape[axis] if shape is not None and len(shape) > axis else None
    if isinstance(d, int) and d > 0:
        return d
    if required:
        raise TargetError(
            f"tensor {name!r} has no static size on axis {axis} (shape {shape}), so the detector's class count is "
            "unknown: export the model again with static shapes (on the command line; --detector does not give it), "
            "or pass classes= to onnxcam.detect.detector_format"
        )
    return 0


def _last(shape: Any) -> int:
    d = shape[-1] if shape else None
    return d if isinstance(d, int) and d > 0 else -1

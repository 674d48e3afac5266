"""``POST /explain`` with ``detections=1``: every detection of the image, its box on the photo and its heatmap.

The detector runs once, its detections (threshold, then NMS where the graph
has none) are explained in one batched run (:meth:`DetectionTarget.all`), and
each comes back with its box in the uploaded photo's pixels (mapped through
the letterbox or resize geometry), class, confidence, the 8-bit heatmap PNG
(see :mod:`.results`) and the overlay. The request skips the micro-batcher:
its work depends on the detections found, not on a class shared with others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from onnxcam.detect import DetectionTarget, DetectorFormat, detector_format, find_detections
from onnxcam.detect.decode import box_to_image
from onnxcam.errors import OnnxcamError, TargetError
from onnxcam.explainer import Explainer
from onnxcam.graph.layers import image_axes, image_input
from onnxcam.metrics.agreement import peak
from onnxcam.preprocess import Geometry, PreprocessSpec, point_to_image
from onnxcam.render.colormaps import cam_to_index
from onnxcam.server.results import _b64, _never, label_of, on_photo, overlay, png_bytes

if TYPE_CHECKING:
    from onnxcam.server.params import ExplainParams


@dataclass(frozen=True)
class DetectOptions:
    """``conf``, NMS ``iou`` and ``max_det`` of one request."""

    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 20


def served_format(explainer: Explainer) -> DetectorFormat:
    """The model's detector head, when something besides output shapes says it is one; else TargetError.

    Ultralytics metadata, a NonMaxSuppression node or DETR's output names do;
    one ``(N, a, b)`` output alone does not (a ViT's ``(N, 197, 768)`` tokens
    look like a YOLOv8 head with 193 classes), and the server has no flag to
    say which detector a model is.
    """
    fmt = detector_format(explainer.index)
    if fmt.shape_guess:
        raise TargetError(
            f"the model's outputs only look like a {fmt.kind} head by their shape, which is no proof that it is a "
            "detector; the server explains detections of models recognised from Ultralytics metadata, a "
            "NonMaxSuppression node or DETR's output names (onnxcam explain --detections --detector KIND reads "
            "other heads)"
        )
    return fmt


def detector_info(explainer: Explainer) -> str | None:
    """What ``GET /info`` says of the model's detector head (the page then asks for detections), else None."""
    try:
        return served_format(explainer).describe()
    except OnnxcamError:
        return None


def explain_detections(
    explainer: Explainer,
    x: np.ndarray,
    photo: Image.Image,
    geometry: Geometry,
    params: ExplainParams,
    spec: PreprocessSpec,
    check: Callable[[], None] = _never,
) -> dict:
    """The JSON body (without the request-level fields) for one preprocessed image ``x`` (no batch axis).

    The work is bounded by ``max_det`` (NMS keeps at most that many of its best
    candidates, see :func:`find_detections`); ``check`` raises once the request
    gave up, and is called between the steps and between the detections.
    """
    options = params.detect or DetectOptions()
    labels, colormap, alpha = spec.labels, params.colormap, params.alpha
    fmt = served_format(explainer)
    name = spec.input_name or image_input(explainer.index)
    feeds = {name: x[None]}
    h_axis, w_axis = image_axes(explainer.index, name)
    size = (int(feeds[name].shape[h_axis]), int(feeds[name].shape[w_axis]))
    (found,) = find_detections(fmt, explainer.predict(feeds).outputs, size, options.conf, options.iou, options.max_det)
    check()
    res = explainer.explain(feeds, DetectionTarget.all(found, format=fmt)) if found else None
    detections, predictions = [], []
    for k, det in enumerate(found, start=1):
        check()
        assert res is not None
        cam = res.cam[k - 1]
        mapped = on_photo(cam, geometry)
        py, px = point_to_image(peak(cam), geometry)
        entry = {
            "detection": k,
            "class": det.class_id,
            "label": label_of(labels, det.class_id),
            "score": det.score,
            "box": [round(v, 2) for v in box_to_image(det.box, geometry)],
            "peak": {"x": int(round(px)), "y": int(round(py))},
        }
        predictions.append(dict(entry))
        entry["heatmap_png"] = _b64(png_bytes(Image.fromarray(cam_to_index(mapped), "L")))
        entry["overlay_png"] = _b64(png_bytes(overlay(photo, mapped, colormap, alpha, check)))
        detections.append(entry)
    return {
        "image": {"width": photo.width, "height": photo.height},
        "detector": fmt.describe(),
        "predictions": predictions,
        "explanations": detections,
    }

"""One batch of images -> result rows and failures: the work a worker does, the same in every engine.

Reading, decoding and preprocessing use exactly what ``onnxcam explain`` uses
(:func:`~onnxcam.preprocess.load_image`, :func:`~onnxcam.preprocess.preprocess_image`),
so a row describes the same heatmap the explain command draws. Everything
returned is plain Python (numbers, strings, bytes), cheap to pickle back to
the parent and to hand to pyarrow. One bad image becomes a failure row and
never stops the batch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from onnxcam.batch.sources import Job
from onnxcam.cli.explain_files import _peak
from onnxcam.errors import OnnxcamError
from onnxcam.explainer import Explainer
from onnxcam.metrics.regions import threshold_box
from onnxcam.preprocess import PreprocessSpec, cam_to_image, load_image, point_to_image, preprocess_image
from onnxcam.targets import TopK


@dataclass(frozen=True)
class RowOptions:
    """What each worker needs besides its Explainer; pickled once per worker."""

    spec: PreprocessSpec
    top: int = 1  # explain each image's top classes ...
    targets: tuple[int, ...] | None = None  # ... or these classes for every image (a label column wins over both)
    topk_scores: int = 5  # how many of the model's best classes each row lists
    heatmaps: bool = False
    max_pixels: int | None = None


@dataclass
class BatchOutcome:
    """A batch's result rows (one per image and class) and failures (one per image), in job order."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    images: int = 0  # jobs handled, explained or failed


def explain_jobs(explainer: Explainer, options: RowOptions, jobs: list[Job]) -> BatchOutcome:
    """Explain ``jobs`` with at most two ONNX Runtime calls: given classes, and top classes."""
    outcome = BatchOutcome(images=len(jobs))
    loaded = []
    for job in jobs:
        if job.error is not None:
            outcome.failures.append({"path": job.key, "error": job.error})
            continue
        try:
            img, _ = load_image(job.file, max_pixels=options.max_pixels)
            x, geometry = preprocess_image(img, options.spec)
        except OnnxcamError as e:
            outcome.failures.append({"path": job.key, "error": str(e)})
            continue
        except MemoryError:
            outcome.failures.append({"path": job.key, "error": "not enough memory to read and preprocess it"})
            continue
        classes = [job.target] if job.target is not None else list(options.targets) if options.targets else None
        loaded.append((job, x, geometry, classes))
    given = [item for item in loaded if item[3] is not None]
    ranked = [item for item in loaded if item[3] is None]
    by_key: dict[str, list[dict[str, Any]]] = {}
    for group, explicit in ((given, True), (ranked, False)):
        if group:
            _explain_group(explainer, options, group, explicit, by_key, outcome.failures)
    for job, *_ in loaded:  # job order, whichever call explained it
        outcome.rows.extend(by_key.get(job.key, []))
    return outcome


def _explain_group(
    explainer: Explainer,
    options: RowOptions,
    group: list,
    explicit: bool,
    by_key: dict[str, list[dict[str, Any]]],
    failures: list[dict[str, str]],
) -> None:
    name = options.spec.input_name or explainer.index.inputs[0]
    try:
        if explicit:  # each image once per class, image-major
            counts = [len(classes) for *_, classes in group]
            batch = np.stack([x for _, x, _, classes in group for _ in classes])
            target: Any = [c for *_, classes in group for c in classes]
            images = np.repeat(np.arange(len(group)), counts)
        else:
            batch = np.stack([x for _, x, _, _ in group])
            target = TopK(min(options.top, explainer.num_classes or options.top))
            images = None
        res = explainer.explain({name: batch}, target=target)
    except OnnxcamError as e:
        failures.extend({"path": job.key, "error": str(e)} for job, *_ in group)
        return
    rows = res.image_index if images is None else images
    if rows is None:
        rows = np.arange(len(res.cam))
    scores = explainer.class_scores(res)
    low = res.cam_lowres if isinstance(res.cam_lowres, np.ndarray) else res.cam_lowres[0]
    for r, i in enumerate(rows):
        job, _, geometry, _ = group[int(i)]
        by_key.setdefault(job.key, []).append(
            _row(explainer, options, job, geometry, int(res.targets[r]), res.cam[r], low[r], scores[r])
        )


def _row(
    explainer: Explainer,
    options: RowOptions,
    job: Job,
    geometry,
    cls: int,
    cam: np.ndarray,
    low: np.ndarray,
    scores: np.ndarray,
) -> dict[str, Any]:
    labels = options.spec.labels
    order = np.argsort(-scores, kind="stable")[: options.topk_scores]
    peak = _peak(cam, geometry)
    box = _box(cam, geometry)
    return {
        "path": job.key,
        "width": geometry.orig_w,
        "height": geometry.orig_h,
        "class_id": cls,
        "label": labels[cls] if labels and 0 <= cls < len(labels) else None,
        "score": float(scores[cls]),
        "topk_classes": [int(c) for c in order],
        "topk_scores": [float(scores[c]) for c in order],
        "layer": explainer.layer,
        "method": explainer.method,
        "peak_x": peak["x"] if peak else None,
        "peak_y": peak["y"] if peak else None,
        "box_x0": box[0] if box else None,
        "box_y0": box[1] if box else None,
        "box_x1": box[2] if box else None,
        "box_y1": box[3] if box else None,
        "cam_lowres": np.ascontiguousarray(low, dtype="<f2").tobytes(),
        "cam_shape": list(low.shape),
        "heatmap_png": _heatmap_png(cam, geometry) if options.heatmaps else None,
    }


def _box(cam: np.ndarray, geometry) -> tuple[int, int, int, int] | None:
    """The threshold box of the model-input map, in the original image's pixels (exclusive ends).

    Computed at the input's size (cheap whatever the photo's size), then its first and last pixels are mapped
    onto the photo.
    """
    if not np.isfinite(cam).all():
        return None
    box = threshold_box(cam)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    top, left = point_to_image((y0, x0), geometry)
    bottom, right = point_to_image((y1 - 1, x1 - 1), geometry)
    return int(round(left)), int(round(top)), int(round(right)) + 1, int(round(bottom)) + 1


def _heatmap_png(cam: np.ndarray, geometry) -> bytes:
    """The map on the photo's pixels as an 8-bit greyscale PNG (0 = none, 255 = the maximum)."""
    full = np.nan_to_num(cam_to_image(cam, geometry), nan=0.0)
    buffer = io.BytesIO()
    Image.fromarray(np.rint(np.clip(full, 0.0, 1.0) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()

"""One batch of images -> result rows and failures: the work a worker does, the same in every engine.

Reading, decoding and preprocessing use exactly what ``onnxcam explain`` uses
(:func:`~onnxcam.preprocess.load_image`, :func:`~onnxcam.preprocess.preprocess_image`),
so a row describes the same heatmap the explain command draws. Everything
returned is plain Python (numbers, strings, bytes), cheap to pickle back to
the parent and to hand to pyarrow. One bad image becomes a failure row and
never stops the batch: when a batch's ONNX Runtime call fails, its images are
explained one by one, so only the image at fault fails (whatever it raised).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from PIL import Image

from onnxcam.batch.sources import Job
from onnxcam.cli.explain_files import PANEL_SUFFIX, RenderOptions, _not_finite, _peak, _render, _short, save_panel
from onnxcam.errors import OnnxcamError
from onnxcam.explainer import Explainer
from onnxcam.metrics.regions import threshold_box
from onnxcam.render import format_caption
from onnxcam.preprocess import PreprocessSpec, cam_to_image, load_image, point_to_image, preprocess_image
from onnxcam.targets import TopK

#: What drew one row: its class, the explanation result and the row's index in it (for the panel).
Pick = tuple[int, Any, int]


@dataclass(frozen=True)
class RowOptions:
    """What each worker needs besides its Explainer; pickled once per worker."""

    spec: PreprocessSpec
    top: int = 1  # explain each image's top classes ...
    targets: tuple[int, ...] | None = None  # ... or these classes for every image (a label column wins over both)
    topk_scores: int = 5  # how many of the model's best classes each row lists
    heatmaps: bool = False
    max_pixels: int | None = None
    panels: str | None = None  # --panels: write each image's PNG panel, as onnxcam explain draws it, in this folder
    render: RenderOptions = field(default_factory=RenderOptions)  # the panels' colours, opacity, contour, box


@dataclass
class BatchOutcome:
    """A batch's result rows (one per image and class) and failures (one per image), in job order."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    images: int = 0  # jobs handled, explained or failed


def explain_jobs(explainer: Explainer, options: RowOptions, jobs: list[Job]) -> BatchOutcome:
    """Explain ``jobs`` with at most two ONNX Runtime calls: given classes, and top classes."""
    outcome = BatchOutcome(images=len(jobs))
    loaded: list[tuple[Job, np.ndarray, Any, list[int] | None, Image.Image | None]] = []
    for job in jobs:
        if job.error is not None:
            outcome.failures.append({"path": job.key, "error": job.error})
            continue
        try:
            source = job.data if job.data is not None else job.file
            img, _ = load_image(source, max_pixels=options.max_pixels, name=job.key)
            x, geometry = preprocess_image(img, options.spec)
        except Exception as e:  # whatever one image does (a decoder's bug too), the batch goes on
            outcome.failures.append({"path": job.key, "error": failure_message(e)})
            continue
        classes = [job.target] if job.target is not None else list(options.targets) if options.targets else None
        loaded.append((job, x, geometry, classes, img if options.panels else None))  # a photo can be large
    given = [item for item in loaded if item[3] is not None]
    ranked = [item for item in loaded if item[3] is None]
    by_key: dict[str, list[tuple[dict[str, Any], Pick]]] = {}
    for group, explicit in ((given, True), (ranked, False)):
        if group:
            _explain_isolating(explainer, options, group, explicit, by_key, outcome.failures)
    for job, _, geometry, _, photo in loaded:  # job order, whichever call explained it
        found = by_key.get(job.key, [])
        error = _panel(explainer, options, job, photo, geometry, found) if found and options.panels else None
        if error is None:
            outcome.rows.extend(row for row, _ in found)
        else:  # in exactly one table: no rows for an image whose panel could not be drawn
            outcome.failures.append({"path": job.key, "error": error})
    return outcome


def panel_file(folder: str, job: Job) -> Path:
    """Where ``job``'s panel goes: its name under the source (or its path as listed) + ``.cam.png``, in ``folder``.

    Names come from lists and tables too, so absolute parts and ``..`` are dropped: a panel never lands outside
    ``folder``.
    """
    parts = [p for p in PurePath(job.name or job.key).parts if p not in ("", ".", "..") and not PurePath(p).anchor]
    return Path(folder, *parts[:-1], f"{parts[-1] if parts else 'image'}{PANEL_SUFFIX}")


def panels_over_inputs(folder: str, jobs: Sequence[Job]) -> tuple[Job, Path] | None:
    """The first job whose panel would be written over an input image (``--panels`` into the source folder)."""
    inputs = {os.path.realpath(job.file) for job in jobs}
    for job in jobs:
        target = panel_file(folder, job)
        if os.path.realpath(target) in inputs:
            return job, target
    return None


def _panel(
    explainer: Explainer,
    options: RowOptions,
    job: Job,
    img: Image.Image | None,
    geometry: Any,
    found: list[tuple[dict[str, Any], Pick]],
) -> str | None:
    """Draw and write one image's panel with ``onnxcam explain``'s own code; why it could not be, or None."""
    assert img is not None, "explain_jobs keeps the photo when there are panels to draw"
    picks = [pick for _, pick in found]
    cams = [cam_to_image(res.cam[i], geometry) for _, res, i in picks]
    layer = _short(explainer.layer)
    captions = [
        format_caption(label=r["label"], score=r["score"], layer=layer, class_id=r["class_id"]) for r, _ in found
    ]
    try:
        picture = _not_finite(cams) or _render(
            explainer, options.spec, Path(job.key), img, geometry, picks, cams, captions, options.render, None
        )
    except Exception as e:  # a drawing bug must not stop the batch either
        return failure_message(e)
    if isinstance(picture, str):
        return picture
    return save_panel(panel_file(options.panels or ".", job), picture)


def failure_message(error: BaseException) -> str:
    """One line for the failures table: an onnxcam error as it reads, anything else with its type's name."""
    if isinstance(error, MemoryError):
        return "not enough memory to read, preprocess or explain it"
    text = str(error) if isinstance(error, OnnxcamError) else f"{type(error).__name__}: {error}"
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:500]


def _explain_isolating(
    explainer: Explainer,
    options: RowOptions,
    group: list,
    explicit: bool,
    by_key: dict[str, list[tuple[dict[str, Any], Pick]]],
    failures: list[dict[str, str]],
) -> None:
    """Explain ``group`` in one call; if that fails, each image alone, so only the image at fault fails.

    An exception here may come from one image's pixels, a worker's own fault or a bug: none of them may stop the
    run or take the batch's other images down with it.
    """
    try:
        found = _explain_group(explainer, options, group, explicit)
    except Exception as e:  # recorded as the image's failure, one line
        if len(group) == 1:
            failures.append({"path": group[0][0].key, "error": failure_message(e)})
            return
        for item in group:
            _explain_isolating(explainer, options, [item], explicit, by_key, failures)
        return
    for key, rows in found.items():
        by_key.setdefault(key, []).extend(rows)


def _explain_group(
    explainer: Explainer, options: RowOptions, group: list, explicit: bool
) -> dict[str, list[tuple[dict[str, Any], Pick]]]:
    """The rows of ``group``'s images, by path, each with what drew it, from one ONNX Runtime call; raises on
    any failure."""
    name = options.spec.input_name or explainer.index.inputs[0]
    if explicit:  # each image once per class, image-major
        counts = [len(item[3]) for item in group]
        batch = np.stack([item[1] for item in group for _ in item[3]])
        target: Any = [c for item in group for c in item[3]]
        images = np.repeat(np.arange(len(group)), counts)
    else:
        batch = np.stack([item[1] for item in group])
        target = TopK(min(options.top, explainer.num_classes or options.top))
        images = None
    res = explainer.explain({name: batch}, target=target)
    rows = res.image_index if images is None else images
    if rows is None:
        rows = np.arange(len(res.cam))
    scores = explainer.class_scores(res)
    low = res.cam_lowres if isinstance(res.cam_lowres, np.ndarray) else res.cam_lowres[0]
    by_key: dict[str, list[tuple[dict[str, Any], Pick]]] = {}
    for r, i in enumerate(rows):
        job, geometry = group[int(i)][0], group[int(i)][2]
        cls = int(res.targets[r])
        row = _row(explainer, options, job, geometry, cls, res.cam[r], low[r], scores[r])
        by_key.setdefault(job.key, []).append((row, (cls, res, r)))
    return by_key


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

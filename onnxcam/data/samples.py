"""Annotated images -> model inputs with their boxes in the model input's pixels.

Every metric works where the model sees the image, so each box is carried
through the same resize (and centre crop) as the photo: ``u -> u * scale -
crop_offset`` per axis (:class:`onnxcam.preprocess.Geometry`), then clipped to
the input. One sample is one (image, class) pair: the boxes of that class in
that image, as in the pointing game's protocol; unlabelled boxes form one sample
judged against the model's top-1 class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxcam.data.annotations import (
    AnnotatedImage,
    AnnotatedObject,
    Box,
    DataIssue,
    Dataset,
)
from onnxcam.errors import OnnxcamError
from onnxcam.preprocess import (
    DEFAULT_MAX_PIXELS,
    Geometry,
    PreprocessSpec,
    load_image,
    preprocess_image,
)

#: A box may overshoot the image by this much (rounding in annotation tools) before it counts as bad.
OVERSHOOT_PX = 1.0


@dataclass
class Sample:
    """One (image, class) pair ready for the metrics."""

    name: str  # image path, plus "#label" when the image holds several classes
    image: Path
    x: np.ndarray  # the preprocessed image, model layout, no batch axis
    boxes: list[Box]  # in model-input pixels, end-exclusive
    label: int | None  # class id, or None: judge the top-1 class


def box_to_input(box: Box, g: Geometry) -> Box | None:
    """A box in original pixels -> model-input pixels (clipped); None when nothing of it is left."""
    x0, y0, x1, y1 = box
    sx, sy = g.scale_x, g.scale_y
    bx0, bx1 = max(0.0, x0 * sx - g.crop_left), min(float(g.input_w), x1 * sx - g.crop_left)
    by0, by1 = max(0.0, y0 * sy - g.crop_top), min(float(g.input_h), y1 * sy - g.crop_top)
    if bx1 <= bx0 or by1 <= by0:
        return None
    return (bx0, by0, bx1, by1)


def resolve_label(label: int | str | None, class_names: Sequence[str] | None, num_classes: int | None) -> int | None:
    """A class id from an id or a name (exact, then case-insensitive), else a one-line OnnxcamError."""
    if label is None:
        return None
    if isinstance(label, int):
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise OnnxcamError(f"class id {label} is out of range (the model has {num_classes} classes)")
        return label
    if not class_names:
        raise OnnxcamError(
            f"label {label!r} is a class name but the model has no class names; pass --labels or use class ids"
        )
    if label in class_names:
        return list(class_names).index(label)
    lower = [c.lower() for c in class_names]
    if label.lower() in lower:
        return lower.index(label.lower())
    raise OnnxcamError(
        f"unknown class name {label!r}; the model's classes are {', '.join(class_names[:8])}"
        + (", ..." if len(class_names) > 8 else "")
    )


def _labelled_objects(
    entry: AnnotatedImage,
    class_names,
    num_classes,
) -> tuple[list[tuple[AnnotatedObject, int | None]], list[DataIssue]]:
    """Each object with its class id; an unknown label is an issue of that box alone, not of the whole image.

    One misspelt label among an image's boxes should not take the image's other, good boxes out of the evaluation.
    """
    labelled, issues = [], []
    for number, obj in enumerate(entry.objects, start=1):
        try:
            labelled.append((obj, resolve_label(obj.label, class_names, num_classes)))
        except OnnxcamError as e:
            issues.append(DataIssue(f"{entry.where} ({entry.image.name}) box {number}", str(e)))
    return labelled, issues


def _samples_of(
    entry: AnnotatedImage, labelled: list[tuple[AnnotatedObject, int | None]], spec: PreprocessSpec, max_pixels
) -> list[Sample]:
    by_label: dict[int | None, list[Box]] = {}
    img, _ = load_image(entry.image, max_pixels=max_pixels)
    for obj, _label in labelled:
        _, _, x1, y1 = obj.box
        if x1 > img.width + OVERSHOOT_PX or y1 > img.height + OVERSHOOT_PX:
            raise OnnxcamError(f"box {list(obj.box)} reaches outside the {img.width}x{img.height} image")
    x, g = preprocess_image(img, spec)
    for obj, label in labelled:
        box = box_to_input(obj.box, g)
        if box is None:
            raise OnnxcamError(
                f"box {list(obj.box)} lies outside the part of the image the model sees "
                "(centre crop); use --resize squash"
            )
        by_label.setdefault(label, []).append(box)
    several = len(by_label) > 1
    return [
        Sample(f"{entry.image}#{label}" if several else str(entry.image), entry.image, x, boxes, label)
        for label, boxes in by_label.items()
    ]


def load_samples(
    dataset: Dataset,
    spec: PreprocessSpec,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[list[Sample], list[DataIssue]]:
    """Read and preprocess every image; a missing image or bad box skips that entry, an unknown label that box only."""
    samples, issues = [], list(dataset.issues)
    for entry in dataset.images:
        labelled, label_issues = _labelled_objects(entry, class_names, num_classes)
        issues += label_issues
        if label_issues and not labelled:  # every box had an unknown label: nothing of the image is left to judge
            continue
        try:
            samples += _samples_of(entry, labelled, spec, max_pixels)
        except OnnxcamError as e:
            issues.append(DataIssue(f"{entry.where} ({entry.image.name})", str(e)))
    return samples, issues

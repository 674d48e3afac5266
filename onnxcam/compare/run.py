"""Explain the same photos with two models and measure how far their heatmaps agree.

Each model keeps its own preprocessing (size, normalisation, layout, crop),
so its CAM is first mapped back onto the photo's own pixels
(:func:`~onnxcam.preprocess.cam_to_image`); only there are two maps from
models with different input sizes comparable. Both models explain the same
class -- by default model A's top-1 -- because two maps of different classes
disagree for a reason that has nothing to do with the export.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from onnxcam.errors import OnnxcamError, TargetError
from onnxcam.explainer import ExplainResult, Explainer
from onnxcam.metrics.agreement import peak, peak_distance, spearman, top_region_iou
from onnxcam.metrics.scoring import softmax_probabilities
from onnxcam.preprocess import PreprocessSpec, cam_to_image, load_image, preprocess_image
from onnxcam.render import resize_cam

#: Fraction of the pixels in the "top region" whose overlap is measured (as the paper's 15 % threshold).
TOP_FRACTION = 0.15
#: Rank agreement is measured on maps at most this many pixels on the long side: a 12-megapixel
#: photo would cost seconds per image and tell nothing a 512-pixel map does not.
METRIC_SIDE = 512


@dataclass
class ModelSide:
    """One of the two models: its explainer, its preprocessing, and how to call it in captions."""

    explainer: Explainer
    spec: PreprocessSpec
    name: str


@dataclass
class SideResult:
    """What one model says about one photo."""

    top_class: int
    top_label: str | None
    top_probability: float
    target_probability: float  # of the explained class
    cam: np.ndarray  # (orig_h, orig_w) float32 in [0, 1], on the photo's pixels
    peak: tuple[int, int] | None  # (x, y) of the map's maximum, photo pixels; None for a flat map


@dataclass
class ImageComparison:
    """Both models' answers for one photo and the agreement of their maps."""

    image: Path
    relative: Path  # the photo's name under its source folder, for the panel's file name
    photo: Image.Image
    target: int
    target_label: str | None
    target_source: str  # "model A's top-1" or "--target"
    a: SideResult
    b: SideResult
    spearman: float  # NaN (all three) when a map is flat: no ranking, no region, no peak
    top_iou: float
    peak_distance: float  # pixels of the photo
    note: str | None = None  # why the numbers are undefined


@dataclass
class ImageFailure:
    image: Path
    error: str


@dataclass
class _Loaded:
    path: Path
    relative: Path
    photo: Image.Image
    inputs: list = field(default_factory=list)  # (x, geometry) per side


def probabilities(explainer: Explainer, result: ExplainResult) -> np.ndarray:
    """(N, K) class probabilities: the output itself after a Softmax/Sigmoid, else the softmax of the logits."""
    values = explainer.class_scores(result).astype(np.float64)
    squashed = explainer.score_tensor not in result.outputs  # the score is a logit inside the graph
    is_distribution = values.min() >= 0 and values.max() <= 1 and np.allclose(values.sum(axis=1), 1.0, atol=1e-3)
    return values if squashed or is_distribution else softmax_probabilities(values)


def compare_images(
    a: ModelSide,
    b: ModelSide,
    images: list[tuple[Path, Path]],
    target: int | None = None,
    batch_size: int = 8,
    max_pixels: int | None = None,
) -> Iterator[ImageComparison | ImageFailure]:
    """One :class:`ImageComparison` per photo, in order; a photo either model cannot take is an :class:`ImageFailure`.

    ``images`` are ``(path, name relative to its source)`` pairs as
    ``collect_images`` returns them. ``target`` explains that class in both
    models; None explains model A's top-1 in both.
    """
    batch_size = max(1, int(batch_size))
    for start in range(0, len(images), batch_size):
        loaded: list[_Loaded] = []
        for path, rel in images[start : start + batch_size]:
            try:
                photo, _ = load_image(path, max_pixels=max_pixels)
                item = _Loaded(Path(path), Path(rel), photo)
                item.inputs = [preprocess_image(photo, side.spec) for side in (a, b)]
                loaded.append(item)
            except OnnxcamError as e:
                yield ImageFailure(Path(path), str(e))
        if not loaded:
            continue
        try:
            yield from _compare_batch(a, b, loaded, target)
        except TargetError:
            raise  # a bad --target is the same for every image: stop with its message
        except OnnxcamError as e:
            for item in loaded:
                yield ImageFailure(item.path, str(e))


def _run(side: ModelSide, loaded: list[_Loaded], k: int, target) -> ExplainResult:
    batch = np.stack([item.inputs[k][0] for item in loaded])
    feeds = batch if side.spec.input_name is None else {side.spec.input_name: batch}
    return side.explainer.explain(feeds, target=target)


def _compare_batch(a: ModelSide, b: ModelSide, loaded: list[_Loaded], target: int | None):
    res_a = _run(a, loaded, 0, target)
    targets = [int(t) for t in res_a.targets]
    classes_b = b.explainer.num_classes
    if classes_b is not None and max(targets) >= classes_b:
        raise TargetError(
            f"class {max(targets)} is out of range for model B ({b.name}, {classes_b} classes); "
            "compare models with the same classes, or pass --target"
        )
    res_b = _run(b, loaded, 1, targets)
    prob_a, prob_b = probabilities(a.explainer, res_a), probabilities(b.explainer, res_b)
    source = "model A's top-1" if target is None else "--target"
    for i, item in enumerate(loaded):
        t = targets[i]
        sides = [
            _side_result(side, res, prob, i, t, item.inputs[k][1])
            for k, (side, res, prob) in enumerate(((a, res_a, prob_a), (b, res_b, prob_b)))
        ]
        flat = [name for name, s in zip("AB", sides) if s.peak is None]
        note = None
        if flat:
            rho = iou = distance = math.nan
            note = f"model {' and '.join(flat)}'s map is flat (all zero): no evidence for this class at that layer"
        else:
            ma, mb = _metric_maps(sides[0].cam, sides[1].cam)
            rho, iou = spearman(ma, mb), top_region_iou(ma, mb, TOP_FRACTION)
            distance = peak_distance(sides[0].cam, sides[1].cam)
        yield ImageComparison(
            image=item.path,
            relative=item.relative,
            photo=item.photo,
            target=t,
            target_label=_label(a.spec, t) or _label(b.spec, t),
            target_source=source,
            a=sides[0],
            b=sides[1],
            spearman=rho,
            top_iou=iou,
            peak_distance=distance,
            note=note,
        )


def _side_result(side: ModelSide, res: ExplainResult, prob: np.ndarray, i: int, target: int, geometry) -> SideResult:
    top = int(np.argmax(prob[i]))
    cam = cam_to_image(res.cam[i], geometry)
    row, col = peak(cam)
    where = None if cam.max() == cam.min() else (col, row)
    return SideResult(top, _label(side.spec, top), float(prob[i, top]), float(prob[i, target]), cam, where)


def _metric_maps(cam_a: np.ndarray, cam_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both maps, shrunk alike so the long side is at most :data:`METRIC_SIDE`."""
    h, w = cam_a.shape
    if max(h, w) <= METRIC_SIDE:
        return cam_a, cam_b
    s = METRIC_SIDE / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return resize_cam(cam_a, size), resize_cam(cam_b, size)


def _label(spec: PreprocessSpec, cls: int) -> str | None:
    labels = spec.labels
    return labels[cls] if labels and 0 <= cls < len(labels) else None

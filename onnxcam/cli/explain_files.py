"""Explain image files: batches through one session, one PNG panel per image, one JSON summary per run.

One bad image never loses the others: it is reported, skipped, and makes the
run exit 1 at the end. Output never lands on an input file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxcam.cli.progress import Progress
from onnxcam.errors import OnnxcamError, TargetError
from onnxcam.explainer import Explainer
from onnxcam.preprocess import PreprocessSpec, cam_to_image, load_image, point_to_image, preprocess_image
from onnxcam.render import (
    format_caption, guided_to_unit, render_class_panels, render_guided_panel, render_layer_panel, render_panel,
    resize_cam, unit_to_rgb,
)
from onnxcam.targets import MultiLabelTarget, TopK

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
#: The pictures onnxcam itself writes: a folder walk skips them, so an output folder inside the input folder is safe.
OWN_OUTPUTS = (".cam.png", ".compare.png")


@dataclass
class RenderOptions:
    colormap: str = "viridis"
    alpha: float = 0.5
    contour: bool = False
    box: bool = False


@dataclass
class RunReport:
    records: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


def collect_images(sources: list[str]) -> list[tuple[Path, Path]]:
    """``(image path, name relative to its source)`` for files and folders (walked recursively, sorted)."""
    found = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    q = Path(root) / f
                    if q.suffix.lower() in IMAGE_SUFFIXES and not f.endswith(OWN_OUTPUTS):
                        found.append((q, q.relative_to(p)))
        else:
            found.append((p, Path(p.name)))
    return found


def prepare_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".onnxcam-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OnnxcamError(f"cannot write to output folder {out}: {e.strerror or e}; choose another with -o") from None


def check_labels(labels: tuple[str, ...] | None, explainer: Explainer) -> None:
    classes = explainer.num_classes
    if labels is not None and classes is not None and len(labels) != classes:
        raise OnnxcamError(f"the labels list has {len(labels)} names but the model has {classes} classes; "
                           "pass a labels file with one name per class, in class-id order")


def explain_files(explainer: Explainer, spec: PreprocessSpec, images: list[tuple[Path, Path]], out: Path,
                  targets: list[int] | None = None, top: int = 1, render: RenderOptions | None = None,
                  batch_size: int = 8, max_pixels: int | None = None, multilabel: float | None = None,
                  extra_inputs: dict[str, np.ndarray] | None = None) -> RunReport:
    """Explain every image; write ``<name>.cam.png`` panels and ``summary.json`` into ``out``.

    ``targets``: class ids for every image; else each image's ``top`` classes, or with ``multilabel`` every
    class whose sigmoid probability reaches that threshold (an image with none gets a summary note, no panel).
    ``extra_inputs``: the model's other inputs, one row each (see :func:`load_extra_inputs`), fed with every image.
    """
    extra_inputs = extra_inputs or {}
    render = render or RenderOptions()
    report = RunReport()
    inputs = {p.resolve() for p, _ in images}
    with Progress(len(images), "explaining") as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            loaded = []
            for path, rel in chunk:
                try:
                    img, _ = load_image(path, max_pixels=max_pixels)
                    x, geometry = preprocess_image(img, spec)
                    loaded.append((path, rel, img, x, geometry))
                except OnnxcamError as e:
                    report.failures.append({"image": str(path), "error": str(e)})
                    bar.advance()
            if not loaded:
                continue
            batch = np.stack([item[3] for item in loaded])
            feeds = batch if spec.input_name is None and not extra_inputs else {
                spec.input_name or explainer.index.inputs[0]: batch,
                **{name: np.repeat(row, len(batch), axis=0) for name, row in extra_inputs.items()}}
            try:
                per_target = _explain_targets(explainer, feeds, len(loaded), targets, top, multilabel)
            except TargetError:
                raise  # the same for every image: stop with the message instead of failing them all
            except OnnxcamError as e:
                for path, *_ in loaded:
                    report.failures.append({"image": str(path), "error": str(e)})
                bar.advance(len(loaded))
                continue
            for i, (path, rel, img, _, geometry) in enumerate(loaded):
                if per_target[i]:
                    _write_one(explainer, spec, path, rel, img, geometry, per_target[i], out, inputs, render, report,
                               title=f"classes with probability >= {multilabel}" if multilabel is not None else None)
                else:
                    report.records.append({"image": str(path), "target": None,
                                           "note": f"no class with probability >= {multilabel}"})
                bar.advance()
    summary = {"model": str(explainer.source or ""), "layer": explainer.layer, "layer_reason": explainer.layer_reason,
               "method": explainer.method, "preprocess": spec.describe(), "results": report.records,
               "failures": report.failures}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report.written.append(out / "summary.json")
    return report


def load_extra_inputs(explainer: Explainer, image_input: str | None, given: list[str]) -> dict[str, np.ndarray]:
    """``NAME=FILE.npy`` values for the model's inputs other than the image: one row each, repeated per image.

    A model with a second input (metadata, a prompt embedding, a mask) cannot be fed from image files alone.
    Each array is that input for one image, with or without its batch axis of 1.
    """
    image_input = image_input or explainer.index.inputs[0]
    values: dict[str, np.ndarray] = {}
    for item in given:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise OnnxcamError(f"--input takes NAME=FILE.npy, not {item!r}")
        if name not in explainer.index.inputs:
            raise OnnxcamError(f"--input {name}: the model has no input {name!r}; its inputs are "
                               f"{explainer.index.inputs}")
        if name == image_input:
            raise OnnxcamError(f"--input {name}: that is the image input, fed from the image files")
        try:
            value = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise OnnxcamError(f"--input {name}: cannot read {file} as a .npy array ({e}); save it with numpy.save")
        shape, kind = explainer.index.shape(name), explainer.index.type_of(name)
        if shape is not None and value.ndim == len(shape) - 1:
            value = value[None]
        if shape is not None and (value.ndim != len(shape) or value.shape[0] != 1 or any(
                isinstance(want, int) and want > 0 and have != want for have, want in zip(value.shape[1:], shape[1:]))):
            raise OnnxcamError(f"--input {name}: {file} has shape {value.shape}; pass one row for input {name!r} "
                               f"of shape {tuple(shape)}, with or without its batch axis of 1")
        if kind is not None and value.dtype.kind not in ("f" if kind.is_float else "iub"):
            raise OnnxcamError(f"--input {name}: {file} holds {value.dtype} values; input {name!r} takes "
                               f"{kind.np_dtype}")
        values[name] = value.astype(kind.np_dtype) if kind is not None else value
    missing = [n for n in explainer.index.inputs if n != image_input and n not in values]
    if missing:
        raise OnnxcamError(f"the model has inputs besides the image {image_input!r}: {missing}; pass a value for "
                           f"each with --input NAME=FILE.npy (one row, used for every image)")
    return values


def _explain_targets(explainer: Explainer, feeds, n: int, targets: list[int] | None, top: int,
                     multilabel: float | None):
    """Per image, a list of (class id, ExplainResult, its row in that result) in display order.

    Several classes per image (given ids, top k, multi-label) are explained in one batched run, one row each.
    """
    if targets:  # each image repeated once per class, image-major, as TopK lays its rows out
        k = len(targets)
        if isinstance(feeds, dict):
            repeated = {name: np.repeat(value, k, axis=0) for name, value in feeds.items()}
        else:
            repeated = np.repeat(feeds, k, axis=0)
        res = explainer.explain(repeated, target=list(targets) * n)
        return [[(t, res, i * k + j) for j, t in enumerate(targets)] for i in range(n)]
    if multilabel is not None:
        res = explainer.explain(feeds, target=MultiLabelTarget(multilabel))
    else:
        res = explainer.explain(feeds, target=TopK(min(top, explainer.num_classes or top)))
    picks: list[list] = [[] for _ in range(n)]
    for row, (image, cls) in enumerate(zip(res.image_index, res.targets)):
        picks[int(image)].append((int(cls), res, row))
    return picks


def _layer_cams(explainer: Explainer, res, i: int, geometry) -> list[tuple[str, np.ndarray]]:
    """Each layer's own map for image ``i``, upsampled and normalised like ``cam``, shallow to deep."""
    order = {c.name: c.position for c in explainer.candidates}
    pairs = []
    for name, low in zip(explainer.layer, res.cam_lowres):
        scaled = low[i] / max(float(low[i].max()), 1e-12)  # resize_cam takes [0, 1]; the min-max below undoes it
        up = resize_cam(scaled, size=(geometry.input_w, geometry.input_h))
        span = float(up.max() - up.min())
        up = (up - up.min()) / span if span > 0 else np.zeros_like(up)
        pairs.append((order.get(name, 0), name, cam_to_image(up, geometry)))
    return [(name, cam) for _, name, cam in sorted(pairs, key=lambda t: t[0])]


def _write_one(explainer, spec, path, rel, img, geometry, picks, out, inputs, render, report,
               title: str | None = None) -> None:
    labels = spec.labels
    cams, captions = [], []
    for cls, res, i in picks:
        cam = cam_to_image(res.cam[i], geometry)
        scores = explainer.class_scores(res)[i]
        score = float(scores[cls])
        peak_in = np.unravel_index(int(np.argmax(res.cam[i])), res.cam[i].shape)
        py, px = point_to_image(peak_in, geometry)
        name = labels[cls] if labels and 0 <= cls < len(labels) else None
        cams.append(cam)
        captions.append(format_caption(label=name, score=score, layer=_short(explainer.layer), class_id=cls))
        report.records.append({"image": str(path), "target": cls, "class_name": name, "score": score,
                               "layer": explainer.layer, "peak": {"x": int(round(px)), "y": int(round(py))}})
    target = out / rel.parent / f"{rel.name}.cam.png"
    if target.resolve() in inputs:
        report.failures.append({"image": str(path), "error": f"refusing to overwrite input file {target}"})
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(explainer.layer, str):
        _, res, i = picks[0]
        panel = render_layer_panel(img, _layer_cams(explainer, res, i, geometry), render.colormap, render.alpha,
                                   caption=captions[0].split(" | layer")[0] + " | per layer, shallow to deep",
                                   contour=render.contour, box=render.box)
    elif len(cams) == 1 and picks[0][1].guided is not None:
        _, res, i = picks[0]
        pictures = [_guided_picture(g[i], spec, geometry) for g in (res.guided, res.guided_gradcam)]
        panel = render_guided_panel(img, cams[0], *pictures, f"{captions[0]} | {explainer.method}", render.colormap,
                                    render.alpha, contour=render.contour, box=render.box)
    elif len(cams) == 1:
        panel = render_panel(img, cams[0], captions[0], render.colormap, render.alpha,
                             contour=render.contour, box=render.box)
    else:
        panel = render_class_panels(img, cams, captions, render.colormap, render.alpha,
                                    caption=f"{path.name}: {title or f'top {len(cams)}'}", contour=render.contour,
                                    box=render.box)
    try:
        panel.save(target)
    except OSError as e:
        report.failures.append({"image": str(path), "error": f"cannot write {target}: {e.strerror or e}"})
        return
    report.written.append(target)


def _guided_picture(gradient: np.ndarray, spec: PreprocessSpec, geometry) -> np.ndarray:
    """An input-shaped guided gradient as an RGB picture on the original photo's pixels."""
    unit = guided_to_unit(gradient, channel_axis=0 if spec.layout == "NCHW" else 2)
    if spec.bgr:
        unit = unit[..., ::-1]
    return unit_to_rgb(np.stack([cam_to_image(unit[..., c], geometry) for c in range(unit.shape[2])], axis=2))


def _short(layer) -> str:
    return layer if isinstance(layer, str) else ", ".join(layer)

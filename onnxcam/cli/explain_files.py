"""Explain image files: batches through one session, one PNG panel per image, one JSON summary per run.

One bad image never loses the others: it is reported, skipped, and makes the
run exit 1 at the end. Output never lands on a file the run reads (an image,
the model or its external data, its settings or labels file), two inputs
with the same name get two panels, and a run stopped by Ctrl-C, SIGTERM or
SIGHUP still writes ``summary.json`` for the images done.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from onnxcam.cli.progress import Progress
from onnxcam.errors import OnnxcamError, TargetError
from onnxcam.explainer import Explainer
from onnxcam.preprocess import PreprocessSpec, cam_to_image, load_image, point_to_image, preprocess_image
from onnxcam.preprocess.spec import find_settings_file
from onnxcam.strict_json import finite_json
from onnxcam.render import (
    format_caption,
    guided_to_unit,
    render_class_panels,
    render_guided_panel,
    render_layer_panel,
    render_panel,
    resize_cam,
    unit_to_rgb,
)
from onnxcam.targets import MultiLabelTarget, TopK

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
PANEL_SUFFIX, COMPARE_SUFFIX = ".cam.png", ".compare.png"
#: The pictures onnxcam itself writes: a folder walk skips them, so an output folder inside the input folder is safe.
OWN_OUTPUTS = (PANEL_SUFFIX, COMPARE_SUFFIX)
SUMMARY_NAME = "summary.json"


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
    images_done: int = 0  # explained, or failed: what an interrupted run's summary covers


def collect_images(sources: list[str]) -> list[tuple[Path, Path]]:
    """``(image path, name relative to its source)`` for files and folders (walked recursively, sorted).

    A path that does not exist is a typo, not an image to skip: it stops the run before any work, instead of
    ending in a "skipped" line and an empty summary.json.
    """
    missing = [src for src in sources if not os.path.exists(src)]
    if missing:
        raise OnnxcamError(f"no such image or folder: {missing[0]}")
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
    """Create ``out`` and prove it takes files, so a bad ``-o`` fails before any work is done.

    The probe is a new file under a random name (see :func:`new_temporary_file`), so it cannot clobber a file of
    the user's.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        with new_temporary_file(out, "onnxcam-write-test"):
            pass
    except OSError as e:
        raise OnnxcamError(f"cannot write to output folder {out}: {e.strerror or e}; choose another with -o") from None


@contextlib.contextmanager
def output_folder(out: Path) -> Iterator[Path]:
    """``with output_folder(out):`` the run's output folder, created (see :func:`prepare_output_dir`).

    When the run fails before it wrote anything there (a bad --target, a refused summary path), the folders this
    created are removed again: a failed command leaves the disk as it found it. Folders that hold anything, and
    folders that existed before, are kept.
    """
    created = _missing_folders(out)
    prepare_output_dir(out)
    try:
        yield out
    except BaseException:
        _remove_empty(created)
        raise


def _missing_folders(out: Path) -> list[Path]:
    """``out`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first: each rmdir may empty the next
        try:
            folder.rmdir()
        except OSError:
            return


class ProtectedPaths:
    """The files a run reads, which it must never write over, each with the reason shown when it refuses.

    An output folder can be the model's own folder, and a model's external-data file, its settings file or an
    input image can carry any name, ``summary.json`` or ``x.png.cam.png`` included. A target is the same file
    when its resolved path is (a symlink, another spelling) or, for an existing file, its device and inode are
    (a hard link, another letter case on a case-insensitive disk).
    """

    def __init__(self) -> None:
        self._reasons: dict[Path | tuple[int, int], str] = {}

    def add(self, paths: Iterable[str | os.PathLike[str]], reason: str) -> None:
        for path in paths:
            for key in _identities(path):
                self._reasons.setdefault(key, reason)

    def refusal(self, target: Path) -> str | None:
        """The one-line reason ``target`` must not be written, or None when it may be."""
        reason = next((self._reasons[key] for key in _identities(target) if key in self._reasons), None)
        return None if reason is None else f"refusing to write {target}: {reason}; choose another -o"

    def check(self, target: Path) -> None:
        """Raise the refusal for ``target``, if any: for files without which the whole run is pointless."""
        refusal = self.refusal(target)
        if refusal is not None:
            raise OnnxcamError(refusal)


def protected_paths(
    explainers: Explainer | Iterable[Explainer],
    images: Iterable[tuple[Path, Path]],
    labels_files: Iterable[str | os.PathLike[str] | None] = (),
) -> ProtectedPaths:
    """Every file a run reads: its images, each model with its external data and settings file, the labels files.

    ``labels_files``: each :attr:`PreprocessSpec.labels_file <onnxcam.preprocess.PreprocessSpec.labels_file>`,
    the file named by ``--labels``, a settings file or the model's metadata (None where there is none).
    """
    protected = ProtectedPaths()
    for explainer in [explainers] if isinstance(explainers, Explainer) else explainers:
        protected.add(explainer.source_files, "the model reads that file")
        settings = find_settings_file(explainer.source) if explainer.source is not None else None
        protected.add([settings] if settings is not None else [], "it is the model's settings file")
    protected.add([path for path, _ in images], "it is one of the input images")
    protected.add([path for path in labels_files if path is not None], "it is the labels file")
    return protected


def _identities(path: str | os.PathLike[str]) -> list[Path | tuple[int, int]]:
    """What makes ``path`` the same file as another: its resolved path, and (device, inode) when it exists."""
    try:
        keys: list = [Path(path).resolve()]
    except (OSError, RuntimeError):  # a symlink loop: no file we read, compare it as spelled
        keys = [Path(os.path.abspath(path))]
    try:
        st = os.stat(path)
        if st.st_ino:  # 0 where a file system has no inode numbers
            keys.append((st.st_dev, st.st_ino))
    except (OSError, ValueError):
        pass
    return keys


class PanelNames:
    """Unique panel file names: ``x.png.cam.png``, then ``x.png-2.cam.png``, ``x.png-3.cam.png``...

    Two inputs may share a name (``a/x.png`` and ``b/x.png``, or one file given twice); a second panel written
    under the first one's name would silently replace it while the summary still listed both. Names are handed
    out in the order asked, so the same inputs always get the same names; they are compared case-folded, because
    ``X.png`` and ``x.png`` are one file on macOS and Windows.
    """

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self._taken: set[str] = set()

    def claim(self, relative: PurePath) -> Path:
        """The panel's path relative to the output folder, for the image named ``relative`` under its source."""
        relative = Path(relative)
        for n in range(1, len(self._taken) + 2):
            name = relative.name if n == 1 else f"{relative.name}-{n}"
            candidate = relative.parent / f"{name}{self.suffix}"
            key = candidate.as_posix().casefold()
            if key not in self._taken:
                self._taken.add(key)
                return candidate
        raise AssertionError("unreachable: one of len(taken) + 1 names is free")


@contextlib.contextmanager
def new_temporary_file(folder: Path, name: str) -> Iterator[Path]:
    """A new empty file ``.NAME.<random>.tmp`` in ``folder``, removed on leaving unless the block renamed it away.

    Its name is chosen before the file is created, so an interruption at any point, even the instant ``open``
    returns, leaves nothing behind; ``O_EXCL`` means it never opens a file that was there before; and it gets
    the permissions the user's umask gives any new file.
    """
    temporary = folder / f".{name}.{secrets.token_hex(8)}.tmp"
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield temporary
    except FileExistsError:
        raise  # from os.open (the blocks here never raise it): that file is not ours to remove
    except BaseException:
        _remove(temporary)
        raise
    _remove(temporary)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """``with replacing(path) as temporary:`` write ``temporary``; when the block succeeds it is renamed onto ``path``.

    A run stopped half-way never leaves half a file (nor a temporary one), and the rename replaces the folder
    entry instead of writing through it: a symlink or hard link found at ``path`` (in an output folder shared with
    a downloaded model, say) is replaced, the file it leads to is never touched. Raises OSError.
    """
    with new_temporary_file(path.parent, path.name) as temporary:
        yield temporary
        os.replace(temporary, path)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def write_json(path: Path, doc: dict) -> None:
    """Write ``doc`` as strict JSON, atomically; an OSError becomes one line that says to choose another -o."""
    text = json.dumps(finite_json(doc), indent=2, allow_nan=False) + "\n"
    try:
        with replacing(path) as temporary:
            temporary.write_text(text, encoding="utf-8")
    except OSError as e:
        raise OnnxcamError(f"cannot write {path}: {e.strerror or e}; choose another -o") from None


def check_labels(labels: tuple[str, ...] | None, explainer: Explainer) -> None:
    classes = explainer.num_classes
    if explainer.score_spec.class_axis is None:  # not (batch, classes): a detector head or a map has no such count
        return
    if labels is not None and classes is not None and len(labels) != classes:
        raise OnnxcamError(
            f"the labels list has {len(labels)} names but the model has {classes} classes; "
            "pass a labels file with one name per class, in class-id order"
        )


def explain_files(
    explainer: Explainer,
    spec: PreprocessSpec,
    images: list[tuple[Path, Path]],
    out: Path,
    targets: list[int] | None = None,
    top: int = 1,
    render: RenderOptions | None = None,
    batch_size: int = 8,
    max_pixels: int | None = None,
    multilabel: float | None = None,
    extra_inputs: dict[str, np.ndarray] | None = None,
    protected: ProtectedPaths | None = None,
) -> RunReport:
    """Explain every image; write ``<name>.cam.png`` panels and ``summary.json`` into ``out``.

    ``targets``: class ids for every image; else each image's ``top`` classes, or with ``multilabel`` every
    class whose sigmoid probability reaches that threshold (an image with none gets a summary note, no panel).
    ``extra_inputs``: the model's other inputs, one row each (see :func:`load_extra_inputs`), fed with every image.
    ``protected``: files never written (default: the images, the model's files and the labels file, see
    :func:`protected_paths`).

    Interrupted (Ctrl-C, or SIGTERM/SIGHUP under ``onnxcam.cli.main``), it writes ``summary.json`` for the images
    done, with ``"interrupted": true``, and raises KeyboardInterrupt again with a line saying so.
    """
    protected = protected or protected_paths(explainer, images, [spec.labels_file])
    summary = out / SUMMARY_NAME
    protected.check(summary)  # before any work: without its summary the run is not worth doing
    names = PanelNames(PANEL_SUFFIX)
    jobs = [(path, out / names.claim(rel)) for path, rel in images]
    report = RunReport()
    try:
        with Progress(len(images), "explaining") as bar:
            run = _FileRun(explainer, spec, out, protected, render or RenderOptions(), report, bar)
            for start in range(0, len(jobs), batch_size):
                run.batch(jobs[start : start + batch_size], targets, top, multilabel, extra_inputs or {}, max_pixels)
    except KeyboardInterrupt:
        _write_summary(summary, explainer, spec, report, interrupted=True)
        raise KeyboardInterrupt(
            f"{summary} lists the {report.images_done} of {len(images)} image(s) done before it"
        ) from None
    _write_summary(summary, explainer, spec, report, interrupted=False)
    return report


def _write_summary(
    path: Path, explainer: Explainer, spec: PreprocessSpec, report: RunReport, interrupted: bool
) -> None:
    write_json(
        path,
        {
            "model": str(explainer.source or ""),
            "layer": explainer.layer,
            "layer_reason": explainer.layer_reason,
            "method": explainer.method,
            "preprocess": spec.describe(),
            "preprocessing": spec.record(),
            "interrupted": interrupted,
            "results": report.records,
            "failures": report.failures,
        },
    )
    report.written.append(path)


@dataclass
class _FileRun:
    """What every batch of one :func:`explain_files` run shares, and the work on one batch."""

    explainer: Explainer
    spec: PreprocessSpec
    out: Path
    protected: ProtectedPaths
    render: RenderOptions
    report: RunReport
    bar: Progress

    def batch(self, jobs: list[tuple[Path, Path]], targets, top, multilabel, extra_inputs, max_pixels) -> None:
        """Explain one batch of ``(image, panel path)`` in one ONNX Runtime call; record and draw each image."""
        loaded = load_batch(jobs, self.spec, max_pixels, self._failed)
        if not loaded:
            return
        batch = np.stack([item[3] for item in loaded])
        feeds = (
            batch
            if self.spec.input_name is None and not extra_inputs
            else {
                self.spec.input_name or self.explainer.index.inputs[0]: batch,
                **{name: np.repeat(row, len(batch), axis=0) for name, row in extra_inputs.items()},
            }
        )
        try:
            per_target = _explain_targets(self.explainer, feeds, len(loaded), targets, top, multilabel)
        except TargetError:
            raise  # the same for every image: stop with the message instead of failing them all
        except OnnxcamError as e:
            for path, *_ in loaded:
                self._failed(path, str(e))
            return
        title = f"classes with probability >= {multilabel}" if multilabel is not None else None
        for i, (path, panel, img, _, geometry) in enumerate(loaded):
            if per_target[i]:
                self._explained(path, panel, img, geometry, per_target[i], title)
            else:
                self.report.records.append(
                    {"image": str(path), "target": None, "note": f"no class with probability >= {multilabel}"}
                )
                self._done()

    def _explained(self, path: Path, target: Path, img, geometry, picks, title: str | None) -> None:
        """Record image ``path``'s explanations and write its panel to ``target``, unless that file is protected.

        The image enters the report only once all of it is done, so an interrupted run's summary never lists an
        image whose panel was cut off.
        """
        labels = self.spec.labels
        cams, captions, records = [], [], []
        for cls, res, i in picks:
            cams.append(cam_to_image(res.cam[i], geometry))
            score = float(self.explainer.class_scores(res)[i][cls])
            name = labels[cls] if labels and 0 <= cls < len(labels) else None
            captions.append(format_caption(label=name, score=score, layer=_short(self.explainer.layer), class_id=cls))
            records.append(
                {
                    "image": str(path),
                    "target": cls,
                    "class_name": name,
                    "score": score,
                    "layer": self.explainer.layer,
                    "peak": _peak(res.cam[i], geometry),
                    "panel": None,
                }
            )
        error = (
            self.protected.refusal(target)
            or _not_finite(cams)
            or save_panel(
                target,
                _render(self.explainer, self.spec, path, img, geometry, picks, cams, captions, self.render, title),
            )
        )
        if error is None:
            for record in records:
                record["panel"] = target.relative_to(self.out).as_posix()
            self.report.written.append(target)
        self.report.records.extend(records)
        if error is not None:
            self._failed(path, error)
        else:
            self._done()

    def _failed(self, path: Path, error: str) -> None:
        self.report.failures.append({"image": str(path), "error": error})
        self._done()

    def _done(self) -> None:
        self.report.images_done += 1
        self.bar.advance()


def _not_finite(cams: list[np.ndarray]) -> str | None:
    """Why no panel can be drawn from maps holding NaN or infinity (a broken model's numbers), else None."""
    if all(np.isfinite(cam).all() for cam in cams):
        return None
    return (
        "its heatmap holds NaN or infinite values: the model computes non-finite numbers for this image; "
        "check the model (and its preprocessing) with plain inference"
    )


def save_panel(target: Path, panel) -> str | None:
    """Write a panel picture (PNG) to ``target``; on failure, the reason, as one bad path must not stop the run."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with replacing(target) as temporary:
            panel.save(temporary, format="PNG")
    except OSError as e:
        return f"cannot write {target}: {e.strerror or e}"
    return None


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
            raise OnnxcamError(
                f"--input {name}: the model has no input {name!r}; its inputs are {explainer.index.inputs}"
            )
        if name == image_input:
            raise OnnxcamError(f"--input {name}: that is the image input, fed from the image files")
        try:
            value = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise OnnxcamError(
                f"--input {name}: cannot read {file} as a .npy array ({e}); save it with numpy.save"
            ) from None
        shape, kind = explainer.index.shape(name), explainer.index.type_of(name)
        if shape is not None and value.ndim == len(shape) - 1:
            value = value[None]
        if shape is not None and (
            value.ndim != len(shape)
            or value.shape[0] != 1
            or any(
                isinstance(want, int) and want > 0 and have != want for have, want in zip(value.shape[1:], shape[1:])
            )
        ):
            raise OnnxcamError(
                f"--input {name}: {file} has shape {value.shape}; pass one row for input {name!r} "
                f"of shape {tuple(shape)}, with or without its batch axis of 1"
            )
        if kind is not None and value.dtype.kind not in ("f" if kind.is_float else "iub"):
            raise OnnxcamError(
                f"--input {name}: {file} holds {value.dtype} values; input {name!r} takes {kind.np_dtype}"
            )
        values[name] = value.astype(kind.np_dtype) if kind is not None else value
    missing = [n for n in explainer.index.inputs if n != image_input and n not in values]
    if missing:
        raise OnnxcamError(
            f"the model has inputs besides the image {image_input!r}: {missing}; pass a value for "
            f"each with --input NAME=FILE.npy (one row, used for every image)"
        )
    return values


def _explain_targets(
    explainer: Explainer, feeds, n: int, targets: list[int] | None, top: int, multilabel: float | None
):
    """Per image, a list of (class id, ExplainResult, its row in that result) in display order.

    Several classes per image (given ids, top k, multi-label) are explained in one batched run, one row each.
    """
    if targets:  # each image repeated once per class, image-major, as TopK lays its rows out
        k = len(targets)
        repeated: np.ndarray | dict[str, np.ndarray]
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
    rows = res.image_index if res.image_index is not None else np.arange(len(res.cam))  # None: row i is image i
    for row, (image, cls) in enumerate(zip(rows, res.targets)):
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


def _peak(cam: np.ndarray, geometry) -> dict | None:
    """The map's maximum in the photo's pixels; None when the map has no maximum (NaN from a broken model)."""
    finite = np.isfinite(cam)
    if not finite.any():
        return None
    peak_y, peak_x = np.unravel_index(int(np.argmax(np.where(finite, cam, -np.inf))), cam.shape)
    py, px = point_to_image((float(peak_y), float(peak_x)), geometry)
    return {"x": int(round(px)), "y": int(round(py))}


def _render(explainer, spec, path, img, geometry, picks, cams, captions, render, title):
    """The panel picture: per layer, guided, one class, or several classes side by side."""
    if not isinstance(explainer.layer, str):
        _, res, i = picks[0]
        return render_layer_panel(
            img,
            _layer_cams(explainer, res, i, geometry),
            render.colormap,
            render.alpha,
            caption=captions[0].split(" | layer")[0] + " | per layer, shallow to deep",
            contour=render.contour,
            box=render.box,
        )
    if len(cams) == 1 and picks[0][1].guided is not None:
        _, res, i = picks[0]
        pictures = [_guided_picture(g[i], spec, geometry) for g in (res.guided, res.guided_gradcam)]
        return render_guided_panel(
            img,
            cams[0],
            *pictures,
            f"{captions[0]} | {explainer.method}",
            render.colormap,
            render.alpha,
            contour=render.contour,
            box=render.box,
        )
    if len(cams) == 1:
        return render_panel(
            img, cams[0], captions[0], render.colormap, render.alpha, contour=render.contour, box=render.box
        )
    return render_class_panels(
        img,
        cams,
        captions,
        render.colormap,
        render.alpha,
        caption=f"{path.name}: {title or f'top {len(cams)}'}",
        contour=render.contour,
        box=render.box,
    )


def _guided_picture(gradient: np.ndarray, spec: PreprocessSpec, geometry) -> np.ndarray:
    """An input-shaped guided gradient as an RGB picture on the original photo's pixels."""
    unit = guided_to_unit(gradient, channel_axis=0 if spec.layout == "NCHW" else 2)
    if spec.bgr:
        unit = unit[..., ::-1]
    return unit_to_rgb(np.stack([cam_to_image(unit[..., c], geometry) for c in range(unit.shape[2])], axis=2))


def _short(layer) -> str:
    return layer if isinstance(layer, str) else ", ".join(layer)


def load_batch(
    jobs: Sequence[tuple[Path, Any]], spec: PreprocessSpec, max_pixels: int, failed: Callable[[Path, str], None]
) -> list[tuple[Path, Any, Any, np.ndarray, Any]]:
    """``(image, tag, picture, model input, geometry)`` for each job ``(image, tag)`` that loads; ``failed(image,
    reason)`` for the others (unreadable, too many pixels, too large for memory at the model's size)."""
    loaded = []
    for path, tag in jobs:
        try:
            img, _ = load_image(path, max_pixels=max_pixels)
            x, geometry = preprocess_image(img, spec)
            loaded.append((path, tag, img, x, geometry))
        except OnnxcamError as e:
            failed(path, str(e))
        except MemoryError:  # a model whose static input is huge: its own size, not capped (see Security)
            h, w = spec.size
            failed(path, f"not enough memory to bring it to the model's input size {h}x{w}")
    return loaded

"""The :class:`PreprocessSpec` of a model, and where each of its fields comes from.

Fields (the same names in user options, the settings file and the
``onnxcam.preprocess`` metadata JSON):

``preset``  imagenet | inception | tf | caffe | raw01 | raw255 (see :mod:`.presets`)
``size``    int or [height, width]; only used when the model's input size is dynamic
``mean``    1 or 3 numbers, in scaled units and model channel order
``std``     1 or 3 numbers
``scale``   number, or a string such as "1/255"; pixel values 0..255 are multiplied by it
``bgr``     true to feed channels as B, G, R
``layout``  NCHW | NHWC; only needed where the graph does not pin the layout down
``resize``  squash (default) | crop | letterbox (see :mod:`.geometry`)
``crop_pct`` crop's share of the resized image, in (0, 1] (default 1: resize the shorter side straight to the
            size; timm's ``crop_pct``, 0.875 for torchvision's resize 256 / crop 224); implies ``crop``
``pad_value`` letterbox's padding grey level, 0..255 (default 114, as Ultralytics); implies ``letterbox``
``labels``  list of class names, or the path of a ``.txt`` (one name a line) or ``.json`` file; a path
            from a settings file or metadata must stay inside that file's (the model's) folder

Precedence, highest first, field by field:

1. **explicit user options** (``derive_spec(model, preset=..., size=...)``, CLI flags);
2. the **settings file** beside the model: ``<model stem>.onnxcam.toml`` or
   ``<model stem>.onnxcam.json`` (e.g. ``resnet50.onnxcam.toml`` next to
   ``resnet50.onnx``); having both is an error. Relative ``labels`` paths are
   relative to the settings file's folder;
3. the model's **metadata_props**, in this order of strength:
   ``onnxcam.preprocess`` (a JSON object with the fields above) >
   the ONNX standard image keys ``Image.BitmapPixelFormat`` (``Bgr8``/``Bgra8``
   -> bgr, ``Rgb8``/``Rgba8`` -> rgb, ``Gray8`` -> nothing extra) and
   ``Image.NominalPixelRange`` (``NominalRange_0_255`` -> raw255,
   ``Normalized_0_1`` -> raw01, ``Normalized_1_1`` -> inception,
   ``NominalRange_16_235`` -> ``16 + p * 219/255``) >
   Ultralytics export keys (``author`` = "Ultralytics ..." -> raw01;
   ``imgsz`` -> size, ``names`` -> labels, ``task`` = classify -> crop, any
   other task (detect, segment, pose, obb) -> letterbox, as Ultralytics'
   predictors).
   Unreadable metadata values are ignored with a warning, never an error;
4. **defaults**: preset ``imagenet`` (``raw255`` for integer-typed inputs such
   as uint8), resize ``squash``, size 224x224 for a dynamic input.

Settings files and metadata are untrusted input: what they may make onnxcam
read and allocate is bounded by :mod:`onnxcam.trust`. An input size over
``max_pixels`` (the image files' cap, ``--max-pixels``) from any source but
the graph's own static shape is a ``PreprocessError``.

``crop_pct`` and ``pad_value`` each belong to one resize mode. Given at a
stronger source than ``resize``, one picks its mode (``--crop-pct 0.875``
alone means crop); at a weaker source it is dropped when ``resize`` names
another mode (a settings file's ``crop_pct`` does not apply under
``--resize letterbox``); at the same source as a contradicting ``resize``, or
beside the other mode's field, it is an error.

A ``preset`` sets mean, std, scale and bgr together and replaces whatever a
weaker source said about them; ``mean``/``std``/``scale``/``bgr`` given at the
same or a stronger source then adjust single fields (e.g. a settings file
``preset = "caffe"`` with a user ``bgr=False``). A spec with no preset
anywhere starts from the imagenet default.

The model itself outranks all of these where it is definite: a static input
size, a layout pinned by the graph (a Conv reading the input, or a Transpose
before it), and the channel count (1: grayscale, the photo is converted to
``L``; 3: colour). A user or settings value that contradicts them is an
error; a contradicting metadata value is ignored. For 1-channel models a
3-value mean/std is averaged to one value.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxcam.errors import OnnxcamError, PreprocessError
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.load import load_model
from onnxcam.graph.layers import image_input, infer_channel_axes, input_spatial_axes
from onnxcam.preprocess.geometry import (
    DEFAULT_CROP_PCT,
    DEFAULT_PAD_VALUE,
    RESIZE_MODES,
    check_crop_pct,
    check_pad_value,
)
from onnxcam.preprocess.images import DEFAULT_MAX_PIXELS
from onnxcam.preprocess.presets import DEFAULT_PRESET, get_preset
from onnxcam.trust import (
    MAX_LABELS_BYTES,
    MAX_SETTINGS_BYTES,
    check_input_size,
    check_labels,
    check_line_count,
    confined_file,
    file_name,
    parse_json,
    parse_literal,
    parse_toml,
    read_bounded,
)

FIELDS = ("preset", "size", "mean", "std", "bgr", "scale", "layout", "resize", "crop_pct", "pad_value", "labels")
_NORM = ("scale", "mean", "std", "bgr")
#: The fields that belong to one resize mode, and that mode.
MODE_FIELDS = {"crop_pct": "crop", "pad_value": "letterbox"}
DEFAULT_SIZE = 224
METADATA_KEY = "onnxcam.preprocess"
LABELS_KEY = "onnxcam.labels"
SETTINGS_SUFFIXES = (".onnxcam.toml", ".onnxcam.json")


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn a photo into one model input: ``x = (p * scale - mean) / std``."""

    size: tuple[int, int]  # (H, W) of the model input
    layout: str = "NCHW"  # "NCHW" or "NHWC"
    channels: int = 3  # 1 (grayscale, L) or 3 (RGB / BGR)
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    bgr: bool = False
    resize: str = "squash"
    crop_pct: float = DEFAULT_CROP_PCT  # crop only: the target's share of the resized image
    pad_value: int = DEFAULT_PAD_VALUE  # letterbox only: the padding's grey level
    preset: str | None = "imagenet"  # name of the preset used unchanged, "custom" otherwise
    labels: tuple[str, ...] | None = None
    input_name: str | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # field -> where it came from
    labels_file: Path | None = field(default=None, compare=False)  # the file ``labels`` were read from, if any

    def __post_init__(self):
        if self.layout not in ("NCHW", "NHWC"):
            raise PreprocessError(f"layout must be NCHW or NHWC, not {self.layout!r}")
        if self.channels not in (1, 3):
            raise PreprocessError(f"only 1- or 3-channel image inputs are supported, not {self.channels}")
        if self.resize not in RESIZE_MODES:
            raise PreprocessError(f"unknown resize mode {self.resize!r}; choose one of {', '.join(RESIZE_MODES)}")
        object.__setattr__(self, "crop_pct", check_crop_pct(self.crop_pct))
        object.__setattr__(self, "pad_value", check_pad_value(self.pad_value))
        if self.crop_pct != DEFAULT_CROP_PCT and self.resize != "crop":
            raise PreprocessError(f"crop_pct {self.crop_pct:g} belongs to resize mode crop, not {self.resize}")
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        for name in ("mean", "std"):
            v = tuple(float(x) for x in getattr(self, name))
            if len(v) == 1 and self.channels == 3:
                v = v * 3
            elif len(v) == 3 and self.channels == 1:
                v = (sum(v) / 3,)
            if len(v) != self.channels:
                raise PreprocessError(f"{name} has {len(v)} values; give 1 or {self.channels}")
            object.__setattr__(self, name, v)
        if any(s == 0 for s in self.std):
            raise PreprocessError("std must not contain 0")

    @property
    def image_mode(self) -> str:
        """The Pillow mode photos are converted to before normalising."""
        return "L" if self.channels == 1 else "RGB"

    def describe(self) -> str:
        """One line for people: preset, channel order, layout, size, dtype, resize mode and the formula."""
        h, w = self.size
        order = "gray" if self.channels == 1 else ("BGR" if self.bgr else "RGB")
        return (
            f"{self.preset or 'custom'}: {order} {self.layout} {h}x{w} {self.dtype}, {self.describe_resize()}, "
            f"x = (p * {self.scale:.6g} - {[round(float(v), 6) for v in self.mean]}) / "
            f"{[round(float(v), 6) for v in self.std]}"
        )

    def describe_resize(self) -> str:
        """``resize=MODE`` plus the mode's own field where it matters (``crop_pct`` below 1, ``pad_value``)."""
        if self.resize == "crop" and self.crop_pct != DEFAULT_CROP_PCT:
            return f"resize=crop, crop_pct={self.crop_pct:g}"
        if self.resize == "letterbox":
            return f"resize=letterbox, pad_value={self.pad_value}"
        return f"resize={self.resize}"

    def record(self) -> dict[str, Any]:
        """The preprocessing as plain JSON values, for ``summary.json``: what a rerun needs to feed the same tensor.

        ``assumed`` lists the fields no option, settings file or metadata gave (see :meth:`assumed`).
        """
        rec: dict[str, Any] = {
            "preset": self.preset,
            "resize": self.resize,
            "size": list(self.size),
            "layout": self.layout,
            "channels": self.channels,
            "dtype": str(self.dtype),
            "bgr": self.bgr,
            "scale": float(self.scale),
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.resize == "crop":
            rec["crop_pct"] = self.crop_pct
        if self.resize == "letterbox":
            rec["pad_value"] = self.pad_value
        rec["assumed"] = self.assumed()
        return rec

    def assumed(self) -> list[str]:
        """What onnxcam fell back to a default for: any of "normalization", "resize", "size".

        "normalization" only when none of scale/mean/std/bgr came from a flag, settings file or metadata.
        A spec built by hand (no ``sources``) assumed nothing.
        """

        def default(k: str) -> bool:
            return self.sources.get(k, "").startswith("default")

        out = ["normalization"] if all(default(k) for k in _NORM) else []
        return out + [k for k in ("resize", "size") if default(k)]


def derive_spec(
    model: str | os.PathLike[str] | onnx.ModelProto | GraphIndex,
    *,
    input_name: str | None = None,
    model_path: str | os.PathLike[str] | None = None,
    settings: Any = None,
    metadata: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    **options: Any,
) -> PreprocessSpec:
    """The :class:`PreprocessSpec` for ``model``'s image input.

    ``model``: a path, a ``ModelProto`` or a :class:`GraphIndex`.
    ``model_path``: where the model lives, to find its settings file when
    ``model`` is not a path. ``settings``: ``None`` looks for
    ``<stem>.onnxcam.toml``/``.json`` beside the model; ``False`` skips it; a
    path uses that file. ``metadata=False`` ignores ``metadata_props``.
    ``max_pixels``: the largest input size (height x width) accepted from any
    source (``None``: no cap).
    ``options``: the fields listed in the module docstring; ``None`` means
    "not given".
    """
    unknown = sorted(set(options) - set(FIELDS))
    if unknown:
        raise PreprocessError(f"unknown preprocessing option(s) {unknown}; known: {', '.join(FIELDS)}")
    if isinstance(model, GraphIndex):
        index = model
    else:
        if isinstance(model, (str, os.PathLike)):
            model_path = model_path if model_path is not None else model
            try:
                proto = onnx.load(os.fspath(model), load_external_data=False)
            except Exception:
                proto = load_model(model)  # raises the ModelLoadError that explains what is wrong
        elif isinstance(model, onnx.ModelProto):
            proto = model
        else:
            raise PreprocessError(f"expected a model path, ModelProto or GraphIndex, got {type(model).__name__}")
        try:
            proto = onnx.shape_inference.infer_shapes(proto)
        except Exception:  # shape inference is a help here, never a requirement
            pass
        index = GraphIndex(proto)

    name = _image_input(index, input_name)
    shape = index.shape(name)
    assert shape is not None  # _image_input returns a 4-D input
    ttype = index.type_of(name)
    dtype = np.dtype(ttype.np_dtype) if ttype is not None else np.dtype(np.float32)

    levels: list[tuple[str, dict]] = [
        ("default", {"preset": "raw255" if dtype.kind in "iub" else DEFAULT_PRESET, "resize": "squash"})
    ]
    base_dir = Path(model_path).parent if model_path is not None else None
    if metadata:
        levels += _metadata_levels(index.model, base_dir)
    settings_file = _settings_path(settings, model_path)
    if settings_file is not None:
        levels.append((f"settings file {settings_file}", _read_settings(settings_file)))
    levels.append(("user", _user_options(options)))

    merged, sources, preset = _merge(levels)
    _settle_resize(merged, sources, [where for where, _ in levels])
    labels_file = merged.pop("labels_file", None)
    if sources.pop("labels_file", None) != sources.get("labels"):  # a stronger source gave the labels as a list
        labels_file = None

    # Layout: the graph first, where it is definite.
    pinned = infer_channel_axes(index).get(name)
    axes = input_spatial_axes(index, name)
    model_layout = None if axes is None else ("NCHW" if axes == (2, 3) else "NHWC")
    layout, src = merged.get("layout"), sources.get("layout", "")  # a layout always has a source (_merge)
    if pinned is not None:
        graph_layout = "NCHW" if pinned == 1 else "NHWC"
        if layout is not None and layout != graph_layout and not src.startswith("metadata"):
            raise PreprocessError(
                f"layout {layout} from {src} contradicts the model: the graph reads input {name!r} as {graph_layout}"
            )
        layout, src = graph_layout, "model"
    elif layout is None or src.startswith("default"):
        layout, src = model_layout or "NCHW", "model"
    sources["layout"] = src
    c_axis = 1 if layout == "NCHW" else 3
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)

    c = shape[c_axis]
    if isinstance(c, int) and c > 0:
        if c not in (1, 3):
            raise PreprocessError(
                f"input {name!r} has {c} channels on axis {c_axis} ({layout}, shape {shape}); "
                f"only 1 (grayscale) or 3 (colour) channel images are supported"
                + ("" if pinned is not None else "; if the layout is wrong, pass layout=...")
            )
        channels = c
    else:
        channels = 3
    sources["channels"] = "model" if isinstance(c, int) and c > 0 else "default"

    mh, mw = shape[h_axis], shape[w_axis]
    size = merged.get("size")
    if all(isinstance(d, int) and d > 0 for d in (mh, mw)):
        if size is not None and tuple(size) != (mh, mw) and not sources["size"].startswith("metadata"):
            raise PreprocessError(
                f"size {size[0]}x{size[1]} from {sources['size']} contradicts the model's "
                f"fixed input size {mh}x{mw}; drop it"
            )
        size, sources["size"] = (mh, mw), "model"
    elif size is None:
        size = tuple(d if isinstance(d, int) and d > 0 else DEFAULT_SIZE for d in (mh, mw))
        sources["size"] = "default"
    sources["dtype"] = "model" if ttype is not None else "default"
    if sources["size"] not in ("model", "default"):  # a static size is the model's own; the default is small
        check_input_size(size, max_pixels, sources["size"], PreprocessError)
    if merged.get("crop_pct", DEFAULT_CROP_PCT) != DEFAULT_CROP_PCT:  # photos are resized to size / crop_pct first
        scaled = (math.floor(size[0] / merged["crop_pct"]), math.floor(size[1] / merged["crop_pct"]))
        check_input_size(scaled, max_pixels, f"size / crop_pct ({sources['crop_pct']})", PreprocessError)

    return PreprocessSpec(
        size=size,
        layout=layout,
        channels=channels,
        dtype=dtype,
        scale=merged["scale"],
        mean=merged["mean"],
        std=merged["std"],
        bgr=merged["bgr"],
        resize=merged["resize"],
        crop_pct=merged.get("crop_pct", DEFAULT_CROP_PCT),
        pad_value=merged.get("pad_value", DEFAULT_PAD_VALUE),
        preset=preset,
        labels=merged.get("labels"),
        input_name=name,
        sources=sources,
        labels_file=labels_file,
    )


def _image_input(index: GraphIndex, input_name: str | None) -> str:
    """The input named by the caller (checked to be a 4-D input), else the one :func:`image_input` picks."""
    if input_name is None:
        try:
            return image_input(index)
        except PreprocessError:
            raise
        except OnnxcamError as e:
            raise PreprocessError(str(e)) from None
    if input_name not in index.inputs:
        raise PreprocessError(f"model has no input {input_name!r}; inputs are {index.inputs}")
    shape = index.shape(input_name)
    if shape is None or len(shape) != 4:
        raise PreprocessError(f"input {input_name!r} has shape {shape}; an image input must be 4-D")
    return input_name


def _merge(levels: list[tuple[str, dict]]) -> tuple[dict[str, Any], dict[str, str], str | None]:
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    preset: str | None = None
    for where, values in levels:
        if "preset" in values:
            p = get_preset(values["preset"])
            preset = p.name
            for k in _NORM:
                merged[k], sources[k] = getattr(p, k), f"{where} (preset {p.name})"
            sources["preset"] = where
        for k, v in values.items():
            if k == "preset":
                continue
            if k in _NORM:
                if preset is not None and v != merged.get(k):
                    preset = "custom"
            merged[k], sources[k] = v, where
    return merged, sources, preset


def _settle_resize(merged: dict[str, Any], sources: dict[str, str], order: list[str]) -> None:
    """Make ``resize`` agree with ``crop_pct``/``pad_value`` by source strength (rules in the module docstring).

    ``order``: the sources, weakest first. A mode field stronger than ``resize`` picks its mode; one weaker than
    a ``resize`` naming another mode is dropped; a tie is the user's (or file's) own contradiction: an error.
    """

    def rank(key: str) -> int:
        return order.index(sources[key])

    def named(key: str) -> str:
        return "your options" if sources[key] == "user" else sources[key]

    given = [k for k in MODE_FIELDS if k in merged]
    stronger = [k for k in given if rank(k) > rank("resize")]
    if len({rank(k) for k in stronger}) < len(stronger):  # both fields from the same, strongest-so-far source
        raise PreprocessError(
            f"crop_pct (resize crop) and pad_value (resize letterbox) both come from {named(stronger[0])}; "
            "give only the one of the resize mode you want"
        )
    if stronger:
        top = max(stronger, key=rank)
        merged["resize"], sources["resize"] = MODE_FIELDS[top], sources[top]
    for k in given:
        if MODE_FIELDS[k] == merged["resize"]:
            continue
        if rank(k) >= rank("resize"):
            raise PreprocessError(
                f"{k} (from {named(k)}) belongs to resize mode {MODE_FIELDS[k]}, but {named('resize')} "
                f"set resize {merged['resize']}; drop one of them"
            )
        del merged[k], sources[k]


# -- settings file -------------------------------------------------------------------------------


def find_settings_file(model_path: str | os.PathLike[str]) -> Path | None:
    """``<stem>.onnxcam.toml`` or ``<stem>.onnxcam.json`` beside ``model_path``, if one exists."""
    p = Path(model_path)
    found = [p.with_name(p.stem + s) for s in SETTINGS_SUFFIXES if p.with_name(p.stem + s).exists()]
    if len(found) > 1:
        raise PreprocessError(f"both {found[0].name} and {found[1].name} sit beside {p.name}; keep only one")
    # found by name, not named by the user: like the model's other files, it must be a file of the model's folder
    return confined_file(found[0].name, p.parent, "settings file", PreprocessError) if found else None


def _settings_path(settings: Any, model_path) -> Path | None:
    if settings is False:
        return None
    if settings is None or settings is True:
        return find_settings_file(model_path) if model_path is not None else None
    p = Path(settings)
    if not p.is_file():
        raise PreprocessError(f"settings file not found: {p}")
    return p


def _read_settings(path: Path) -> dict:
    raw = read_bounded(path, MAX_SETTINGS_BYTES, "settings file", PreprocessError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PreprocessError(f"settings file {path} is not UTF-8 text: {e}") from None
    parse = parse_toml if path.suffix.lower() == ".toml" else parse_json
    return _validate_table(parse(text, f"settings file {path}", PreprocessError), f"settings file {path}", path.parent)


def _validate_table(data: Any, where: str, base_dir: Path | None) -> dict:
    """Fields from a settings file or metadata: untrusted, so a labels path must stay inside ``base_dir``."""
    if not isinstance(data, dict):
        raise PreprocessError(f"{where} must hold a table/object of fields, not {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise PreprocessError(f"{where}: unknown field(s) {unknown}; known: {', '.join(FIELDS)}")
    return _validate_fields(data, where, base_dir, trusted=False)


def _user_options(options: dict[str, Any]) -> dict:
    """Fields the user passed (API arguments, CLI flags): trusted, so a labels path may point anywhere."""
    return _validate_fields(options, "option", Path.cwd(), trusted=True)


def _validate_fields(values: dict[str, Any], where: str, base_dir: Path | None, trusted: bool) -> dict:
    """The fields of one source, checked; ``labels`` come with ``labels_file``, the file read (None for a list)."""
    fields = {
        k: _validate(k, v, where, base_dir, trusted) for k, v in values.items() if v is not None and k != "labels"
    }
    if values.get("labels") is not None:
        fields["labels"], fields["labels_file"] = _labels_and_file(values["labels"], base_dir, where, trusted)
    return fields


# -- metadata_props ------------------------------------------------------------------------------

_PIXEL_RANGES: dict[str, dict[str, Any]] = {
    "nominalrange_0_255": {"preset": "raw255"},
    "normalized_0_1": {"preset": "raw01"},
    "normalized_1_1": {"preset": "inception"},
    "nominalrange_16_235": {"preset": "raw255", "scale": 219 / 255, "mean": (-16.0,), "std": (1.0,)},
}
_PIXEL_FORMATS: dict[str, bool | None] = {"bgr8": True, "bgra8": True, "rgb8": False, "rgba8": False, "gray8": None}


def metadata_hints(model: onnx.ModelProto, base_dir: Path | None = None) -> dict:
    """All preprocessing hints in ``metadata_props``, merged (strongest key wins)."""
    merged: dict = {}
    for _, values in _metadata_levels(model, base_dir):
        if "preset" in values:
            for k in _NORM:
                merged.pop(k, None)
        merged.update(values)
    return merged


def _metadata_levels(model: onnx.ModelProto, base_dir: Path | None) -> list[tuple[str, dict]]:
    props = {p.key: p.value for p in model.metadata_props}
    lower = {k.lower(): v for k, v in props.items()}
    levels: list[tuple[str, dict]] = []

    if "ultralytics" in lower.get("author", "").lower():
        u: dict = {"preset": "raw01"}
        try:
            if "imgsz" in lower:
                u["size"] = _validate(
                    "size", parse_literal(lower["imgsz"], "metadata imgsz", PreprocessError), "metadata imgsz", None
                )
            if "names" in lower:
                names = parse_literal(lower["names"], "metadata names", PreprocessError)
                if isinstance(names, dict):
                    names = [str(names[i]) for i in sorted(names)]
                u["labels"] = _validate("labels", names, "metadata names", None)
            # Ultralytics' ClassificationPredictor resizes the shorter side and centre-crops (crop_pct 1); every
            # other predictor (detect, segment, pose, obb) letterboxes, LetterBox(center=True, padding_value=114)
            u["resize"] = "crop" if lower.get("task", "").strip().lower() == "classify" else "letterbox"
        except (ValueError, TypeError, KeyError, PreprocessError) as e:
            warnings.warn(f"ignoring unreadable Ultralytics metadata: {e}", stacklevel=3)
        levels.append(("metadata (Ultralytics)", u))

    std: dict = {}
    rng = lower.get("image.nominalpixelrange")
    if rng is not None:
        if rng.strip().lower() in _PIXEL_RANGES:
            std.update(_PIXEL_RANGES[rng.strip().lower()])
        else:
            warnings.warn(f"ignoring unknown Image.NominalPixelRange {rng!r}", stacklevel=3)
    fmt = lower.get("image.bitmappixelformat")
    if fmt is not None:
        if fmt.strip().lower() in _PIXEL_FORMATS:
            bgr = _PIXEL_FORMATS[fmt.strip().lower()]
            if bgr is not None:
                std["bgr"] = bgr
        else:
            warnings.warn(f"ignoring unknown Image.BitmapPixelFormat {fmt!r}", stacklevel=3)
    if std:
        levels.append(("metadata (Image.*)", std))

    labels = _metadata_labels(props)
    if labels:
        levels.append(labels)

    if METADATA_KEY in props:
        where = f"metadata {METADATA_KEY}"
        try:
            levels.append(
                (where, _validate_table(parse_json(props[METADATA_KEY], where, PreprocessError), where, base_dir))
            )
        except PreprocessError as e:
            warnings.warn(f"ignoring {where}: {e}", stacklevel=3)
    return levels


def _metadata_labels(props: dict[str, str]) -> tuple[str, dict] | None:
    """Class names some exporters store: ``onnxcam.labels`` (JSON list), Paddle's ``character`` (one per line)."""
    if LABELS_KEY in props:
        try:
            where = f"metadata {LABELS_KEY}"
            return where, {
                "labels": _validate(
                    "labels", parse_json(props[LABELS_KEY], where, PreprocessError), where, None, trusted=False
                )
            }
        except PreprocessError as e:
            warnings.warn(f"ignoring metadata {LABELS_KEY}: {e}", stacklevel=4)
    if "character" in props:
        try:
            text = check_line_count(props["character"], "metadata character", PreprocessError)
            names = tuple(line for line in text.splitlines() if line.strip())
            if names:
                return "metadata character", {"labels": check_labels(names, "metadata character", PreprocessError)}
        except PreprocessError as e:
            warnings.warn(f"ignoring metadata character: {e}", stacklevel=4)
    return None


# -- field validation ----------------------------------------------------------------------------

_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool):
        raise PreprocessError(f"{what} must be a number, not {v!r}")
    if isinstance(v, str):
        m = _FRACTION.match(v)
        try:
            v = float(m.group(1)) / float(m.group(2)) if m else float(v)
        except (ValueError, ZeroDivisionError):
            raise PreprocessError(f"{what} must be a number, not {v!r}") from None
    try:
        number = float(v) if isinstance(v, (int, float)) else math.nan
    except OverflowError:  # an int of hundreds of digits
        number = math.inf
    if not math.isfinite(number):
        raise PreprocessError(f"{what} must be a finite number, not {_short(v)}")
    return number


def _short(v: Any) -> str:
    """``repr(v)`` cut to a readable length: values from untrusted files may be megabytes long."""
    text = repr(v)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _validate(key: str, v: Any, where: str, base_dir: Path | None, trusted: bool = False) -> Any:
    """One field, checked and normalised; ``trusted`` (the user's own options) lets a labels path leave ``base_dir``."""
    what = f"{key} (from {where})"
    if key == "preset":
        return get_preset(v).name
    if key == "size":
        if isinstance(v, str) and re.fullmatch(r"[\d x,]{1,40}", v):
            v = [int(p) for p in re.split(r"[x, ]+", v.strip()) if p]
        if isinstance(v, int) and not isinstance(v, bool):
            v = (v, v)
        if (
            not isinstance(v, (list, tuple))
            or len(v) not in (1, 2)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v)
        ):
            raise PreprocessError(f"{what} must be a positive int or [height, width], not {_short(v)}")
        return (v[0], v[-1])
    if key in ("mean", "std"):
        vals = v if isinstance(v, (list, tuple)) else [v]
        if len(vals) not in (1, 3):
            raise PreprocessError(f"{what} must have 1 or 3 values, not {len(vals)}")
        out = tuple(_number(x, what) for x in vals)
        if key == "std" and any(x == 0 for x in out):
            raise PreprocessError(f"{what} must not contain 0")
        return out
    if key == "scale":
        s = _number(v, what)
        if s <= 0:
            raise PreprocessError(f"{what} must be positive, not {s}")
        return s
    if key == "bgr":
        if not isinstance(v, bool):
            raise PreprocessError(f"{what} must be true or false, not {v!r}")
        return v
    if key == "layout":
        if not isinstance(v, str) or v.strip().upper() not in ("NCHW", "NHWC"):
            raise PreprocessError(f"{what} must be NCHW or NHWC, not {v!r}")
        return v.strip().upper()
    if key == "resize":
        if not isinstance(v, str) or v.strip().lower() not in RESIZE_MODES:
            raise PreprocessError(f"{what} must be one of {', '.join(RESIZE_MODES)}, not {_short(v)}")
        return v.strip().lower()
    if key == "crop_pct":
        return check_crop_pct(_number(v, what), what)
    if key == "pad_value":
        return check_pad_value(_number(v, what), what)
    if key == "labels":
        return load_labels(v, base_dir, where, trusted=trusted)
    raise PreprocessError(f"unknown field {key!r}")


def load_labels(
    value: Any, base_dir: Path | None = None, where: str = "option", trusted: bool = True
) -> tuple[str, ...]:
    """Class names from a list, or from a ``.txt`` (one a line) / ``.json`` (list or {id: name}) file.

    ``trusted=False`` (a path from a settings file or model metadata) confines
    the file to ``base_dir``, the folder of the file that named it; with no
    ``base_dir`` such a path is refused. Every labels file is read bounded
    (:data:`onnxcam.trust.MAX_LABELS_BYTES`), whoever named it.
    """
    return _labels_and_file(value, base_dir, where, trusted)[0]


def _labels_and_file(
    value: Any, base_dir: Path | None, where: str, trusted: bool
) -> tuple[tuple[str, ...], Path | None]:
    """:func:`load_labels`, and the file the names were read from (None for a list)."""
    if isinstance(value, (list, tuple)):
        return check_labels(tuple(str(x) for x in value), f"labels (from {where})", PreprocessError), None
    if not isinstance(value, (str, os.PathLike)):
        raise PreprocessError(f"labels (from {where}) must be a list of names or a file path, not {value!r}")
    what = f"labels file (from {where})"
    if trusted:
        p = Path(file_name(value, what, PreprocessError))
        p = base_dir / p if not p.is_absolute() and base_dir is not None else p
    elif base_dir is None:
        raise PreprocessError(
            f"{what} names the file {os.fspath(value)!r}, but the model was given without its "
            "folder; pass labels yourself"
        )
    else:
        p = confined_file(value, base_dir, what, PreprocessError)
    return _read_labels_file(p, what), p


def _read_labels_file(p: Path, what: str) -> tuple[str, ...]:
    try:
        text = read_bounded(p, MAX_LABELS_BYTES, what, PreprocessError).decode("utf-8")
    except UnicodeDecodeError as e:
        raise PreprocessError(f"{what} {p} is not UTF-8 text: {e}") from None
    if p.suffix.lower() == ".json":
        data = parse_json(text, f"{what} {p}", PreprocessError)
        if isinstance(data, dict):
            try:
                data = [data[k] for k in sorted(data, key=int)]
            except ValueError:
                raise PreprocessError(f"labels file {p}: object keys must be class ids") from None
        if not isinstance(data, list):
            raise PreprocessError(f"labels file {p} must hold a list or an object of names")
        return check_labels(tuple(str(x) for x in data), f"{what} {p}", PreprocessError)
    lines = check_line_count(text, f"{what} {p}", PreprocessError).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return check_labels(tuple(line.strip() for line in lines), f"{what} {p}", PreprocessError)


def with_options(spec: PreprocessSpec, **changes: Any) -> PreprocessSpec:
    """A copy of ``spec`` with validated field changes (no model needed)."""
    vals = _user_options(changes)
    if "preset" in vals:
        p = get_preset(vals.pop("preset"))
        base = {k: getattr(p, k) for k in _NORM}
        base.update({k: vals.pop(k) for k in _NORM if k in vals})
        vals.update(base, preset=p.name if all(base[k] == getattr(p, k) for k in _NORM) else "custom")
    elif any(k in vals for k in _NORM):
        vals["preset"] = "custom"
    settled = _settled_modes(spec, vals)
    changed = [k for k in vals if k != "labels_file"] + [k for k in settled if settled[k] != getattr(spec, k)]
    return replace(spec, **{**vals, **settled}, sources={**spec.sources, **dict.fromkeys(changed, "user")})


def _settled_modes(spec: PreprocessSpec, changes: dict[str, Any]) -> dict[str, Any]:
    """``resize``, ``crop_pct`` and ``pad_value`` after ``changes`` (stronger) over ``spec`` (weaker)."""
    defaults = {"crop_pct": DEFAULT_CROP_PCT, "pad_value": DEFAULT_PAD_VALUE}
    merged: dict[str, Any] = {"resize": spec.resize}
    merged.update({k: getattr(spec, k) for k in MODE_FIELDS if getattr(spec, k) != defaults[k]})
    sources = dict.fromkeys(merged, "the spec")
    for k in ("resize", *MODE_FIELDS):
        if k in changes:
            merged[k], sources[k] = changes[k], "user"
    _settle_resize(merged, sources, ["the spec", "user"])
    return {"resize": merged["resize"], **{k: merged.get(k, d) for k, d in defaults.items()}}

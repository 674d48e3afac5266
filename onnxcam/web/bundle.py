"""``onnxcam export --web DIR``: a static page that explains images in the browser, with nothing uploaded.

The folder holds everything the page loads, so it needs no network once written:

``index.html``, ``client.js``
    the page and its logic (pick a photo, run, show the overlay and the top predictions);
``resample.js``, ``preprocess.js``
    onnxcam's preprocessing and heatmap mapping in JavaScript (Pillow's resize ported exactly, see their headers);
``overlay.js``, ``page.css``
    colouring and blending, and the look: the same files the server's page inlines;
``explainer.onnx``
    the standalone explainer (:meth:`onnxcam.Explainer.export`, ``target_class`` mode: -1 explains the top class);
``onnxcam-web.json``
    the preprocessing, labels, colormap tables, input and output names and the page's limits;
``ort/``
    ONNX Runtime Web's WebAssembly build (:mod:`onnxcam.web.ort_web`).

The page must be served over http (``onnxcam serve --client-side``, or ``python -m http.server -d DIR``): browsers
refuse to ``fetch`` the model and the WebAssembly from ``file://``.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

import onnx
import PIL

from onnxcam.errors import OnnxcamError
from onnxcam.explainer import Explainer
from onnxcam.preprocess import PreprocessSpec
from onnxcam.render import COLORMAPS, DEFAULT_COLORMAP, colormap_lut
from onnxcam.web.ort_web import ORT_FILES, find_ort_web, ort_web_version

#: The page's own files, copied from ``onnxcam/web/static``.
PAGE_FILES = ("index.html", "page.css", "client.js", "resample.js", "preprocess.js", "overlay.js")
CONFIG_NAME = "onnxcam-web.json"
MODEL_NAME = "explainer.onnx"
#: What the page accepts by default: photos of at most 25 megapixels and 50 MB (the JS pipeline holds a few float
#: copies of the photo; the browser's own decoder has its limits too).
DEFAULT_MAX_PIXELS = 25_000_000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
#: onnxruntime-web's WebAssembly heap is 32-bit: 4 GiB in all, model included; refuse explainers that cannot fit.
MAX_MODEL_BYTES = 2 * 1024**3
_DTYPES = ("float32", "uint8", "int8")


def pillow_vertical_first() -> bool:
    """Whether the installed Pillow runs a resize's vertical pass first when the height shrinks much more than the
    width (Pillow 13's rule, python-pillow/Pillow#9549); the page's resize follows the Python side's."""
    try:
        return int(PIL.__version__.split(".")[0]) >= 13
    except ValueError:
        return True


def check_page_explainer(ex: Explainer, spec: PreprocessSpec) -> None:
    """Refuse, with what to do instead, what the page cannot run: host-side methods, non-classifier outputs,
    several layers, inputs besides the image, and input types the page does not build."""
    if ex.spec.kind not in ("gradient", "attention"):
        raise OnnxcamError(
            f"method {ex.method!r} runs partly outside the graph, so the browser page cannot run it; "
            "choose a method computed in the graph (gradcam, gradcam++, layercam, ...: see onnxcam export --help)"
        )
    if ex.aug_smooth or ex.eigen_smooth:
        raise OnnxcamError("aug_smooth and eigen_smooth run outside the graph; the browser page cannot run them")
    if not isinstance(ex.layer, str):
        raise OnnxcamError("the browser page explains one layer; pass a single --layer")
    if ex.num_classes is None:
        raise OnnxcamError(
            "the browser page explains classifiers (an output of shape (batch, classes)); "
            f"{ex.score_spec.output!r} is not one: use onnxcam explain or serve for this model"
        )
    if spec.dtype.name not in _DTYPES:
        raise OnnxcamError(f"the browser page builds {', '.join(_DTYPES)} inputs, not {spec.dtype.name}")


def write_web_page(
    ex: Explainer,
    spec: PreprocessSpec,
    out_dir: str | os.PathLike[str],
    *,
    ort_web: str | os.PathLike[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    portable: bool = False,
) -> Path:
    """Write the client-side page for ``ex`` (method and layer fixed) with ``spec``'s preprocessing into ``out_dir``.

    ``out_dir`` is created; an existing folder must be empty or an earlier page (it holds ``onnxcam-web.json``),
    whose files are replaced. Returns the folder. ``ort_web``: see :func:`onnxcam.web.ort_web.find_ort_web`.
    ``portable``: write the portable explainer (``Explainer.export(portable=True)``); the default graph already
    runs in ONNX Runtime Web's WebAssembly backend.
    """
    check_page_explainer(ex, spec)
    if max_pixels <= 0 or max_bytes <= 0:
        raise OnnxcamError("the page's limits (max_pixels, max_bytes) must be positive")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OnnxcamError(f"{out} is a file; --web needs a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / CONFIG_NAME).is_file():
        raise OnnxcamError(f"{out} is not empty and holds no onnxcam page; choose a new or empty folder")
    dist = find_ort_web(ort_web)  # before writing anything: a missing runtime leaves no half-written folder
    try:
        (out / "ort").mkdir(parents=True, exist_ok=True)
        model_path = out / MODEL_NAME
        ex.export(model_path, mode="class", portable=portable)
        written = (model_path, model_path.with_name(MODEL_NAME + ".data"))  # save_model's weights file near 2 GiB
        size = sum(f.stat().st_size for f in written if f.is_file())
        # the page fetches one file (no .data beside it), and it must fit the WebAssembly heap
        if _has_external_data(model_path) or size > MAX_MODEL_BYTES:
            for f in written:
                f.unlink(missing_ok=True)
            raise OnnxcamError(
                f"the explainer is {size / 1024**3:.2f} GiB, near or over the {MAX_MODEL_BYTES >> 30} GiB a "
                "browser's WebAssembly memory holds (and too large for one .onnx file); explain this model on a "
                "server (onnxcam serve)"
            )
        config = page_config(ex, spec, model_path, max_pixels, max_bytes, ort_web_version(dist))
        for name in ORT_FILES:
            shutil.copyfile(dist / name, out / "ort" / name)
        static = resources.files("onnxcam.web").joinpath("static")
        for name in PAGE_FILES:
            (out / name).write_bytes(static.joinpath(name).read_bytes())
        (out / CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise OnnxcamError(f"cannot write the page into {out}: {e.strerror or e}") from None
    return out


def _has_external_data(model_path: Path) -> bool:
    """Whether the written explainer keeps weights in another file (``save_model`` does so near 2 GiB)."""
    model = onnx.load(str(model_path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.external_data_helper._get_all_tensors(model))


def page_config(
    ex: Explainer, spec: PreprocessSpec, model_path: Path, max_pixels: int, max_bytes: int, ort_version: str | None
) -> dict:
    """``onnxcam-web.json``: what the page needs to know, names checked against the written explainer."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = {o.name for o in graph.output}
    image, target = spec.input_name, "target_class"
    if image is None:
        raise OnnxcamError("the preprocessing names no image input; derive it from the model (derive_spec)")
    if sorted(inputs) != sorted([image, target]):
        others = ", ".join(n for n in inputs if n not in (image, target))
        raise OnnxcamError(
            f"the browser page feeds the image and the class only; this model also needs {others or 'other inputs'}: "
            "use onnxcam explain --input or onnxcam serve"
        )
    scores = ex.score_spec.output
    missing = {"cam", "target", scores} - outputs
    if missing:
        raise OnnxcamError(f"the explainer lacks the outputs {sorted(missing)} the page reads")
    return {
        "format": 1,
        "model": MODEL_NAME,
        "source_model": Path(ex.source).name if ex.source is not None else "model.onnx",
        "method": ex.method,
        "layer": ex.layer,
        "num_classes": ex.num_classes,
        "labels": list(spec.labels) if spec.labels else None,
        "inputs": {"image": image, "target": target},
        "outputs": {"cam": "cam", "target": "target", "scores": scores},
        "preprocess": {
            "size": list(spec.size),
            "layout": spec.layout,
            "channels": spec.channels,
            "dtype": spec.dtype.name,
            "scale": float(spec.scale),
            "mean": [float(v) for v in spec.mean],
            "std": [float(v) for v in spec.std],
            "bgr": bool(spec.bgr),
            "resize": spec.resize,
            "crop_pct": float(spec.crop_pct),
            "pad_value": int(spec.pad_value),
            "preset": spec.preset or "custom",
            "describe": spec.describe(),
        },
        "pillow_vertical_first": pillow_vertical_first(),
        "colormaps": {name: colormap_lut(name).tobytes().hex() for name in COLORMAPS},
        "default_colormap": DEFAULT_COLORMAP,
        "limits": {"max_pixels": int(max_pixels), "max_bytes": int(max_bytes)},
        "ort_web": ort_version,
    }

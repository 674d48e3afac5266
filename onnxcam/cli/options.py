"""Command-line options shared by several commands, and the helpers that turn them into onnxcam's objects.

Each ``add_*`` function adds a group of flags to a subcommand's parser; its
partner (:func:`preprocess_spec`, :func:`render_options`, ...) reads them back
from the parsed arguments. They live here, below every command module, so that
imports point one way: ``main`` -> ``commands`` -> ``*_command`` -> ``options``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from onnxcam.cli.explain_files import RenderOptions
from onnxcam.cli.pass_progress import PassProgress
from onnxcam.errors import LayerError, OnnxcamError
from onnxcam.explainer import Explainer
from onnxcam.graph.layers import image_input
from onnxcam.methods import method_spec
from onnxcam.methods.perturbation import DEFAULT_BATCH
from onnxcam.preprocess import DEFAULT_MAX_PIXELS, PRESETS, PreprocessSpec, derive_spec
from onnxcam.preprocess.geometry import DEFAULT_PAD_VALUE, RESIZE_MODES
from onnxcam.preprocess.presets import ALIASES as PRESET_ALIASES
from onnxcam.render import COLORMAPS, DEFAULT_COLORMAP

#: How every command ends; shown under ``onnxcam --help`` and the help of the commands that write results.
EXIT_STATUS_HELP = (
    "exit status: 0 done; 1 failed, or some images (or data set entries) were skipped, each "
    "listed; 2 bad usage; 130 interrupted by Ctrl-C, SIGTERM or SIGHUP, after writing the results "
    'of the work done (summary.json, compare.json, metrics.json) marked "interrupted": true'
)


def parse_list(text: str) -> list[float]:
    """``--mean 0.5,0.5,0.5`` (commas or spaces) as numbers; argparse turns the error into a usage error."""
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_render_options(p) -> None:
    g = p.add_argument_group("rendering")
    g.add_argument(
        "--colormap",
        default=DEFAULT_COLORMAP,
        choices=list(COLORMAPS),
        help=f"heatmap colours (default {DEFAULT_COLORMAP}: colour-blind safe, readable in greyscale; "
        "jet matches other tools)",
    )
    g.add_argument("--alpha", type=float, default=0.5, help="overlay opacity, 0..1 (default 0.5)")
    g.add_argument("--contour", action="store_true", help="outline the region above 15%% of the map's maximum")
    g.add_argument("--box", action="store_true", help="box the largest region above 15%% of the maximum")


def render_options(args) -> RenderOptions:
    """The rendering flags added by :func:`add_render_options`."""
    return RenderOptions(args.colormap, args.alpha, args.contour, args.box)


def add_model_output_option(p) -> None:
    p.add_argument(
        "--model-output",
        metavar="NAME|INDEX",
        default="0",
        help="which model output to explain: its name or position (default 0, the first); e.g. a face "
        "detector's probability output rather than its boxes",
    )


def model_output(args) -> str | int:
    """``--model-output`` as Explainer's ``output``: a position when it is a number, else a name."""
    text = args.model_output
    return int(text) if text.lstrip("-").isdigit() else text


def add_preprocess_options(p) -> None:
    pre = p.add_argument_group("preprocessing")
    pre.add_argument(
        "--preprocess",
        choices=sorted([*PRESETS, *PRESET_ALIASES]),
        help="preset (default: from settings/metadata, else imagenet)",
    )
    pre.add_argument("--size", type=int, nargs="+", metavar="N", help="H W (or one N) for dynamic-size models")
    pre.add_argument("--mean", type=parse_list, help="per-channel mean after scaling, e.g. 0.5,0.5,0.5")
    pre.add_argument("--std", type=parse_list, help="per-channel std, e.g. 0.5,0.5,0.5")
    pre.add_argument("--scale", type=float, help="multiply 0..255 pixels by this first (e.g. 0.00392157)")
    pre.add_argument("--bgr", action="store_true", default=None, help="feed channels in B, G, R order")
    pre.add_argument("--layout", choices=["NCHW", "NHWC"], help="only where the graph does not pin it down")
    pre.add_argument(
        "--resize",
        choices=list(RESIZE_MODES),
        help="squash to the input size (default); crop: resize the shorter side to size / crop-pct and "
        "centre-crop (torchvision, timm); letterbox: fit the longer side and pad (Ultralytics YOLO)",
    )
    pre.add_argument(
        "--crop-pct",
        metavar="F",
        help="with --resize crop (implied): the crop's share of the resized image, in (0, 1]; default 1, "
        "0.875 for torchvision's resize 256 / crop 224, timm's crop_pct for timm models",
    )
    pre.add_argument(
        "--pad-value",
        metavar="N",
        help=f"with --resize letterbox (implied): the padding's grey level 0..255 (default {DEFAULT_PAD_VALUE})",
    )
    p.add_argument("--labels", help="class names: a .txt file (one per line) or .json list")


def preprocess_spec(ex: Explainer, model, args) -> PreprocessSpec:
    """The :class:`PreprocessSpec` from the flags of :func:`add_preprocess_options` (settings, metadata below them).

    The image input is the one the Explainer's layer is computed from (see
    :func:`onnxcam.graph.layers.image_input`), so the pictures are sized and
    fed for the input the heatmap covers, not for some other 4-D input.
    Where a part of it is only onnxcam's default, one line on stderr says so
    (:func:`preprocessing_notice`), held back until the run has done its work
    (:func:`flush_notices`).
    """
    size = size_option(args.size)
    spec = derive_spec(
        ex.index,
        model_path=model,
        input_name=explained_image_input(ex),
        preset=args.preprocess,
        size=size,
        mean=args.mean,
        std=args.std,
        scale=args.scale,
        bgr=args.bgr,
        layout=args.layout,
        resize=args.resize,
        crop_pct=getattr(args, "crop_pct", None),
        pad_value=getattr(args, "pad_value", None),
        labels=args.labels,
        max_pixels=getattr(args, "max_pixels", DEFAULT_MAX_PIXELS),
    )
    notice = preprocessing_notice(spec, model)
    if notice and notice not in _NOTICES:
        _NOTICES.append(notice)
    return spec


#: Notices held back by :func:`preprocess_spec` until :func:`flush_notices`.
_NOTICES: list[str] = []


def flush_notices(show: bool = True) -> None:
    """Print the held-back notices once each (``show=False``: drop them), then forget them.

    A run that fails up front must end in its one error line alone, so a notice is not printed the moment the
    spec is derived: ``onnxcam.cli.main`` shows it once the command has done its work (or was interrupted),
    ``serve`` once it listens, and drops it when the command fails.
    """
    notices = list(_NOTICES)
    _NOTICES.clear()
    for notice in notices if show else ():
        print(notice, file=sys.stderr)


#: How to set each part of the preprocessing that :meth:`PreprocessSpec.assumed` can report.
_HOW_TO_SET = {
    "normalization": "--preprocess (or --mean/--std/--scale/--bgr)",
    "resize": "--resize squash|crop|letterbox (with --crop-pct or --pad-value)",
    "size": "--size",
}


def preprocessing_notice(spec: PreprocessSpec, model: str | os.PathLike[str]) -> str | None:
    """One line naming the preprocessing onnxcam fell back to, and the flags that set it; None if none was assumed.

    A wrong guess still runs and gives a plausible-looking but wrong map, so a guess is never silent.
    """
    assumed = spec.assumed()
    if not assumed:
        return None
    h, w = spec.size
    values = {"normalization": f"preset {spec.preset}", "resize": spec.describe_resize(), "size": f"size {h}x{w}"}
    path = Path(model)
    return (
        f"onnxcam: note: no flag, settings file or metadata gives {path.name}'s {', '.join(assumed)}; "
        f"assumed {', '.join(values[a] for a in assumed)}; set {', '.join(_HOW_TO_SET[a] for a in assumed)}, "
        f"or write them in {path.stem}.onnxcam.toml beside the model"
    )


def explained_image_input(ex: Explainer) -> str:
    """The model input the Explainer's heatmap covers: the one its layer(s) are computed from."""
    layers = [ex.layer] if isinstance(ex.layer, str) else list(ex.layer)
    return image_input(ex.index, layers)


def add_method_options(p) -> None:
    g = p.add_argument_group("method options")
    g.add_argument(
        "--aug-smooth",
        action="store_true",
        help="average the maps of flipped and shifted copies of each image (6 passes)",
    )
    g.add_argument(
        "--eigen-smooth",
        action="store_true",
        help="first principal component of the per-channel contributions instead of their sum",
    )
    g.add_argument(
        "--perturbation-batch",
        type=int,
        default=DEFAULT_BATCH,
        metavar="N",
        help=f"masked or ablated copies per ONNX Runtime call for scorecam and ablationcam (default {DEFAULT_BATCH})",
    )


def method_options(args) -> dict:
    """Explainer keyword arguments from :func:`add_method_options` (a passes bar for perturbation methods)."""
    if args.perturbation_batch < 1:
        raise OnnxcamError("--perturbation-batch must be at least 1")
    progress = PassProgress(args.method) if method_spec(args.method).kind == "perturbation" else None
    return {
        "aug_smooth": args.aug_smooth,
        "eigen_smooth": args.eigen_smooth,
        "perturbation_batch": args.perturbation_batch,
        "progress": progress,
    }


def add_run_options(p) -> None:
    p.add_argument("-o", "--output", default="onnxcam-out", help="output folder (default ./onnxcam-out)")
    p.add_argument("--batch-size", type=int, default=8, help="images per ONNX Runtime call (default 8)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS}, "
        "a guard against decompression bombs)",
    )


def size_option(size: list[int] | None) -> tuple[int, int] | None:
    """``--size``'s values as (H, W): one number is a square."""
    if not size:
        return None
    if len(size) not in (1, 2):
        raise OnnxcamError("--size takes one number or two (H W)")
    return (size[0], size[-1])


def parse_grid(text: str) -> tuple[int, int]:
    """``--token-grid 14x14`` as (14, 14); argparse turns the error into a usage error."""
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HxW with two positive whole numbers, e.g. 14x14; got {text!r}")
    return int(parts[0]), int(parts[1])


def add_token_options(p, side: str = "") -> None:
    """``--token-grid`` and ``--prefix-tokens``; ``side="a"`` makes ``--token-grid-a`` (compare's two models)."""
    suffix = f"-{side}" if side else ""
    of_model = f" of model {side.upper()}" if side else ""
    g = p.add_argument_group(f"token layers{of_model} (vision transformers)")
    g.add_argument(
        f"--token-grid{suffix}",
        type=parse_grid,
        metavar="HxW",
        help="patch grid of a (batch, tokens, channels) layer, e.g. 14x14 (default: read from the graph)",
    )
    g.add_argument(
        f"--prefix-tokens{suffix}",
        type=int,
        metavar="P",
        help="tokens before the patch tokens: class, distillation and register tokens (default: from the graph)",
    )


def token_options(args, side: str = "") -> dict:
    """Explainer keyword arguments from :func:`add_token_options` (of one ``side`` of compare)."""
    suffix = f"_{side}" if side else ""
    return {
        "token_grid": getattr(args, f"token_grid{suffix}"),
        "prefix_tokens": getattr(args, f"prefix_tokens{suffix}"),
    }


def explainer_and_spec(model, args, *, model_path: str | None = None, **kwargs) -> tuple[Explainer, PreprocessSpec]:
    """The Explainer and the preprocessing its images get; a dynamic image size is pinned to the preprocessing's.

    A transformer exported with a dynamic height and width has no known token
    grid until its size is fixed. The command resizes every image to one size,
    so the Explainer is built again for that size (``input_size``). A token
    layer named by the user may only exist then, so when the first build
    cannot find it, the size comes from a build at the automatic layer. ``model_path`` is the user's file
    when ``model`` is a graph built from it (its settings file and name are looked up there).
    """
    try:
        ex = Explainer(model, **kwargs)
    except LayerError as error:
        auto = Explainer(model, **{k: v for k, v in kwargs.items() if k not in _LAYER_OPTIONS})
        if not auto.dynamic_input_size:
            raise error from None
        ex = auto
    spec = preprocess_spec(ex, model if model_path is None else model_path, args)
    if ex.dynamic_input_size:
        ex = Explainer(model, **kwargs, input_size=spec.size)
    return ex, spec


#: Explainer options that name or shape the layer: left out of the build that only finds the input size.
_LAYER_OPTIONS = ("layer", "token_grid", "prefix_tokens")

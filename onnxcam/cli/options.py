"""Command-line options shared by several commands, and the helpers that turn them into onnxcam's objects.

Each ``add_*`` function adds a group of flags to a subcommand's parser; its
partner (:func:`preprocess_spec`, :func:`render_options`, ...) reads them back
from the parsed arguments. They live here, below every command module, so that
imports point one way: ``main`` -> ``commands`` -> ``*_command`` -> ``options``.
"""

from __future__ import annotations

import argparse

from onnxcam.cli.explain_files import RenderOptions
from onnxcam.cli.pass_progress import PassProgress
from onnxcam.errors import OnnxcamError
from onnxcam.explainer import Explainer
from onnxcam.graph.layers import image_input
from onnxcam.methods import method_spec
from onnxcam.methods.perturbation import DEFAULT_BATCH
from onnxcam.preprocess import DEFAULT_MAX_PIXELS, PRESETS, PreprocessSpec, derive_spec
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
        choices=["squash", "crop"],
        help="squash to the input size, or resize the shorter side and centre-crop",
    )
    p.add_argument("--labels", help="class names: a .txt file (one per line) or .json list")


def preprocess_spec(ex: Explainer, model, args) -> PreprocessSpec:
    """The :class:`PreprocessSpec` from the flags of :func:`add_preprocess_options` (settings, metadata below them).

    The image input is the one the Explainer's layer is computed from (see
    :func:`onnxcam.graph.layers.image_input`), so the pictures are sized and
    fed for the input the heatmap covers, not for some other 4-D input.
    """
    size = None
    if args.size:
        if len(args.size) not in (1, 2):
            raise OnnxcamError("--size takes one number or two (H W)")
        size = args.size * 2 if len(args.size) == 1 else args.size
    return derive_spec(
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
        labels=args.labels,
        max_pixels=getattr(args, "max_pixels", DEFAULT_MAX_PIXELS),
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

"""One small class per subcommand: its arguments and what it runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onnxcam.cli.compare_command import CompareCommand
from onnxcam.cli.explain_files import (PANEL_SUFFIX, RenderOptions, check_labels, collect_images, explain_files,
                                       load_extra_inputs, output_folder, protected_paths)
from onnxcam.cli.eval_command import EvalCommand
from onnxcam.cli.pass_progress import PassProgress
from onnxcam.cli.serve_command import ServeCommand
from onnxcam.errors import OnnxcamError
from onnxcam.explainer import ALL_METHODS, Explainer
from onnxcam.methods import CAM_METHODS
from onnxcam.methods.perturbation import DEFAULT_BATCH, PERTURBATION_METHODS
from onnxcam.preprocess import DEFAULT_MAX_PIXELS, PRESETS, derive_spec
from onnxcam.preprocess.presets import ALIASES as PRESET_ALIASES
from onnxcam.render import COLORMAPS, DEFAULT_COLORMAP

#: How every command ends; shown under ``onnxcam --help`` and the help of the commands that write image results.
EXIT_STATUS_HELP = ("exit status: 0 done; 1 failed, or some images were skipped (each is listed); 2 bad usage; "
                    "130 interrupted by Ctrl-C, SIGTERM or SIGHUP, after writing the results of the work done "
                    '(summary.json, compare.json, metrics.json) marked "interrupted": true')


class LayersCommand:
    name = "layers"

    def register(self, sub, common) -> None:
        p = sub.add_parser(self.name, parents=[common], help="list the spatial feature maps a CAM can use",
                           description="List the candidate layers of MODEL (4-D feature maps with height and width "
                                       "above 1, in graph order) and mark the one layer='auto' picks.")
        p.add_argument("model", help="path to the .onnx file")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        add_model_output_option(p)
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        ex = Explainer(args.model, output=model_output(args))
        rows = [{"name": c.name, "op": c.op_type, "shape": [d if isinstance(d, int) else str(d) for d in c.shape],
                 "channel_axis": c.channel_axis, "auto": c.name == ex.layer} for c in ex.candidates]
        if args.json:
            print(json.dumps({"layers": rows, "auto": ex.layer, "reason": ex.layer_reason}, indent=2))
            return 0
        shape = [("x".join(str(d) for d in r["shape"])) for r in rows]
        width = max([len(r["name"]) for r in rows] + [4])
        op_w = max([len(r["op"]) for r in rows] + [2])
        sh_w = max([len(s) for s in shape] + [5])
        print(f"  {'name':<{width}}  {'op':<{op_w}}  {'shape':<{sh_w}}  channel axis")
        for r, s in zip(rows, shape):
            mark = "*" if r["auto"] else " "
            print(f"{mark} {r['name']:<{width}}  {r['op']:<{op_w}}  {s:<{sh_w}}  {r['channel_axis']}")
        print(f"\n* {ex.layer_reason}")
        return 0


class ExportCommand:
    name = "export"

    def register(self, sub, common) -> None:
        p = sub.add_parser(self.name, parents=[common], help="write the standalone explainer .onnx",
                           description="Write one ONNX file computing the model's outputs plus the heatmap "
                                       "(inputs: the model's inputs and target_class; outputs: the model's "
                                       "outputs, cam, cam_lowres, target). Any ONNX runtime can serve it.")
        p.add_argument("model", help="path to the .onnx file (never modified)")
        p.add_argument("-o", "--output", help="where to write the explainer .onnx")
        p.add_argument("--triton", metavar="REPO_DIR", help="also (or instead) write a Triton model repository: "
                                                            "REPO_DIR/<name>/1/model.onnx and config.pbtxt")
        p.add_argument("--triton-name", help="the model's name in the repository (default: <model stem>_explainer)")
        p.add_argument("--triton-max-batch", type=int, default=16,
                       help="Triton's max_batch_size (default 16; 0 disables Triton's dynamic batching)")
        p.add_argument("--layer", default="auto", help="tensor or node name (default: auto)")
        p.add_argument("--method", default="gradcam", choices=sorted(CAM_METHODS), help="CAM method")
        p.add_argument("--score", default="logit", choices=["logit", "probability"],
                       help="explain the logit before a final Softmax/Sigmoid (default, as in the paper) "
                            "or the probability")
        add_model_output_option(p)
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        if not args.output and not args.triton:  # a usage error (exit 2), as argparse's own
            print("onnxcam export: error: where to? pass -o FILE.onnx, --triton REPO_DIR, or both", file=sys.stderr)
            return 2
        ex = Explainer(args.model, layer=args.layer, method=args.method, score=args.score, output=model_output(args))
        if args.output:
            out = Path(args.output)
            if out.exists() and out.is_dir():
                out = out / (Path(args.model).stem + ".explainer.onnx")
            ex.export(out)
            print(f"wrote {out} (layer {ex.layer})", file=sys.stderr)
        if args.triton:
            from onnxcam.server.triton import write_triton_repository

            folder = write_triton_repository(ex, args.triton, args.triton_name, args.triton_max_batch)
            print(f"wrote Triton model {folder.name!r}: {folder / 'config.pbtxt'} and {folder / '1' / 'model.onnx'}",
                  file=sys.stderr)
        return 0


def add_render_options(p) -> None:
    g = p.add_argument_group("rendering")
    g.add_argument("--colormap", default=DEFAULT_COLORMAP, choices=list(COLORMAPS),
                   help=f"heatmap colours (default {DEFAULT_COLORMAP}: colour-blind safe, readable in greyscale; "
                        "jet matches other tools)")
    g.add_argument("--alpha", type=float, default=0.5, help="overlay opacity, 0..1 (default 0.5)")
    g.add_argument("--contour", action="store_true", help="outline the region above 15%% of the map's maximum")
    g.add_argument("--box", action="store_true", help="box the largest region above 15%% of the maximum")


def render_options(args) -> RenderOptions:
    """The rendering flags added by :func:`add_render_options`."""
    return RenderOptions(args.colormap, args.alpha, args.contour, args.box)


def add_model_output_option(p) -> None:
    p.add_argument("--model-output", metavar="NAME|INDEX", default="0",
                   help="which model output to explain: its name or position (default 0, the first); e.g. a face "
                        "detector's probability output rather than its boxes")


def model_output(args) -> str | int:
    """``--model-output`` as Explainer's ``output``: a position when it is a number, else a name."""
    text = args.model_output
    return int(text) if text.lstrip("-").isdigit() else text


def add_preprocess_options(p) -> None:
    pre = p.add_argument_group("preprocessing")
    pre.add_argument("--preprocess", choices=sorted([*PRESETS, *PRESET_ALIASES]), help="preset (default: from settings/metadata, "
                                                                   "else imagenet)")
    pre.add_argument("--size", type=int, nargs="+", metavar="N", help="H W (or one N) for dynamic-size models")
    pre.add_argument("--mean", type=parse_list, help="per-channel mean after scaling, e.g. 0.5,0.5,0.5")
    pre.add_argument("--std", type=parse_list, help="per-channel std, e.g. 0.5,0.5,0.5")
    pre.add_argument("--scale", type=float, help="multiply 0..255 pixels by this first (e.g. 0.00392157)")
    pre.add_argument("--bgr", action="store_true", default=None, help="feed channels in B, G, R order")
    pre.add_argument("--layout", choices=["NCHW", "NHWC"], help="only where the graph does not pin it down")
    pre.add_argument("--resize", choices=["squash", "crop"], help="squash to the input size, or resize the "
                                                                 "shorter side and centre-crop")
    p.add_argument("--labels", help="class names: a .txt file (one per line) or .json list")


def preprocess_spec(ex: Explainer, model, args):
    """The :class:`PreprocessSpec` from the flags of :func:`add_preprocess_options` (settings file and metadata below them)."""
    size = None
    if args.size:
        if len(args.size) not in (1, 2):
            raise OnnxcamError("--size takes one number or two (H W)")
        size = args.size * 2 if len(args.size) == 1 else args.size
    return derive_spec(ex.index, model_path=model, preset=args.preprocess, size=size, mean=args.mean,
                       std=args.std, scale=args.scale, bgr=args.bgr, layout=args.layout, resize=args.resize,
                       labels=args.labels, max_pixels=getattr(args, "max_pixels", DEFAULT_MAX_PIXELS))


def add_method_options(p) -> None:
    g = p.add_argument_group("method options")
    g.add_argument("--aug-smooth", action="store_true",
                   help="average the maps of flipped and shifted copies of each image (6 passes)")
    g.add_argument("--eigen-smooth", action="store_true",
                   help="first principal component of the per-channel contributions instead of their sum")
    g.add_argument("--perturbation-batch", type=int, default=DEFAULT_BATCH, metavar="N",
                   help=f"masked or ablated copies per ONNX Runtime call for scorecam and ablationcam "
                        f"(default {DEFAULT_BATCH})")


def method_options(args) -> dict:
    """Explainer keyword arguments from :func:`add_method_options` (a passes bar for perturbation methods)."""
    if args.perturbation_batch < 1:
        raise OnnxcamError("--perturbation-batch must be at least 1")
    progress = PassProgress(args.method) if args.method in PERTURBATION_METHODS else None
    return {"aug_smooth": args.aug_smooth, "eigen_smooth": args.eigen_smooth,
            "perturbation_batch": args.perturbation_batch, "progress": progress}


def add_run_options(p) -> None:
    p.add_argument("-o", "--output", default="onnxcam-out", help="output folder (default ./onnxcam-out)")
    p.add_argument("--batch-size", type=int, default=8, help="images per ONNX Runtime call (default 8)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS}, "
                        "a guard against decompression bombs)")


def finish_run(report, out: Path) -> int:
    for failure in report.failures:
        print(f"onnxcam: skipped {failure['image']}: {failure['error']}", file=sys.stderr)
    panels = sum(1 for p in report.written if p.name.endswith(PANEL_SUFFIX))
    print(f"wrote {panels} panel(s) and {out / 'summary.json'}", file=sys.stderr)
    return 1 if report.failures else 0


class ExplainCommand:
    name = "explain"

    def register(self, sub, common) -> None:
        p = sub.add_parser(self.name, parents=[common], help="explain images: PNG panels + JSON summary",
                           description="Explain each image (folders are walked recursively) with Grad-CAM and "
                                       "write one PNG panel per image (original, heatmap, overlay) plus "
                                       "summary.json. Preprocessing comes from the options below, else a settings "
                                       "file beside the model (<stem>.onnxcam.toml/.json), else the model's "
                                       "metadata, else the imagenet preset.",
                           epilog=EXIT_STATUS_HELP)
        p.add_argument("model", help="path to the .onnx file")
        p.add_argument("images", nargs="+", metavar="IMAGE|DIR", help="image files or folders")
        p.add_argument("--layer", nargs="+", default=["auto"],
                       help="tensor or node name (default: auto; see `onnxcam layers`); several names give a "
                            "layer-wise panel, shallow to deep")
        p.add_argument("--method", default="gradcam", choices=sorted(ALL_METHODS),
                       help="CAM method (see the README's table); guided methods add the guided pictures to the panel")
        add_method_options(p)
        which = p.add_mutually_exclusive_group()
        which.add_argument("--target", type=int, nargs="+", metavar="K", help="class id(s) to explain")
        which.add_argument("--top", type=int, default=1, metavar="K",
                           help="explain each image's top K classes (in one batched run)")
        which.add_argument("--multilabel", type=float, nargs="?", const=0.5, metavar="THRESHOLD",
                           help="multi-label (sigmoid) outputs: explain every class whose probability is at least "
                                "THRESHOLD (default 0.5)")
        add_model_output_option(p)
        p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                       help="a value for a model input besides the image (metadata, a mask...): one row, saved "
                            "with numpy.save, fed with every image; repeat for several inputs")
        add_preprocess_options(p)
        add_render_options(p)
        add_run_options(p)
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        if args.top < 1:
            raise OnnxcamError("--top must be at least 1")
        layers = args.layer[0] if len(args.layer) == 1 else args.layer
        several = args.top > 1 or args.multilabel is not None or (args.target and len(args.target) > 1)
        if not isinstance(layers, str) and several:
            raise OnnxcamError("several layers and several classes at once: pass one class (--target K) or one layer")
        ex = Explainer(args.model, layer=layers, method=args.method, output=model_output(args), **method_options(args))
        spec = preprocess_spec(ex, args.model, args)
        check_labels(spec.labels, ex)
        extra_inputs = load_extra_inputs(ex, spec.input_name, args.input)
        images = collect_images(args.images)
        if not images:
            raise OnnxcamError("no images found in " + ", ".join(args.images))
        out = Path(args.output)
        with output_folder(out):
            report = explain_files(ex, spec, images, out, targets=args.target, top=args.top,
                                   render=render_options(args), multilabel=args.multilabel,
                                   batch_size=max(1, args.batch_size), max_pixels=args.max_pixels,
                                   extra_inputs=extra_inputs, protected=protected_paths(ex, images, args.labels))
        return finish_run(report, out)


class DemoCommand:
    name = "demo"

    def register(self, sub, common) -> None:
        p = sub.add_parser(self.name, parents=[common], help="explain the bundled demo images (no arguments)",
                           description="Run Grad-CAM with the small model shipped inside onnxcam on its sample "
                                       "images of shapes on cluttered backgrounds, and write the panels.",
                           epilog=EXIT_STATUS_HELP)
        add_render_options(p)
        p.add_argument("-o", "--output", default="onnxcam-demo", help="output folder (default ./onnxcam-demo)")
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        from onnxcam import demo

        ex = Explainer(demo.DEMO_MODEL)
        spec = derive_spec(ex.index, model_path=demo.DEMO_MODEL)
        out = Path(args.output)
        images = [(p, Path(p.name)) for p in demo.DEMO_IMAGES]
        with output_folder(out):
            report = explain_files(ex, spec, images, out, render=render_options(args))
        return finish_run(report, out)


COMMANDS = [LayersCommand(), ExplainCommand(), ExportCommand(), DemoCommand(), ServeCommand(), EvalCommand(), CompareCommand()]


def parse_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None

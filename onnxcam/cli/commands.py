"""One small class per subcommand: its arguments and what it runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Protocol

from onnxcam.cli.batch_command import BatchCommand
from onnxcam.cli.compare_command import CompareCommand
from onnxcam.cli.detect_files import add_detection_options, run_detections
from onnxcam.cli.ep_options import add_ep_options, check_requested, portable_requested, run_check
from onnxcam.cli.eval_command import EvalCommand
from onnxcam.cli.explain_files import (
    PANEL_SUFFIX,
    check_labels,
    collect_images,
    explain_files,
    load_extra_inputs,
    output_folder,
)
from onnxcam.cli.options import (
    EXIT_STATUS_HELP,
    add_method_options,
    add_model_output_option,
    add_preprocess_options,
    add_render_options,
    add_run_options,
    add_token_options,
    explainer_and_spec,
    method_options,
    model_output,
    preprocess_spec,
    render_options,
    size_option,
    token_options,
)
from onnxcam.cli.serve_command import ServeCommand
from onnxcam.errors import OnnxcamError
from onnxcam.explainer import ALL_METHODS, Explainer
from onnxcam.methods import method_names
from onnxcam.preprocess import derive_spec


class Command(Protocol):
    """A subcommand: ``register`` adds its parser to ``sub`` (with ``run`` as its default), ``run`` does the work."""

    name: str

    def register(self, sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class LayersCommand:
    name = "layers"

    def register(self, sub, common) -> None:
        p = sub.add_parser(
            self.name,
            parents=[common],
            help="list the feature maps and token layers a CAM can use",
            description="List the candidate layers of MODEL in graph order: 4-D feature maps with height and "
            "width above 1, and vision transformers' token layers (batch, tokens, channels) with their patch grid "
            "and prefix tokens; mark the one layer='auto' picks.",
        )
        p.add_argument("model", help="path to the .onnx file")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        add_model_output_option(p)
        add_token_options(p)
        p.add_argument(
            "--size",
            type=int,
            nargs="+",
            metavar="N",
            help="H W (or one N): the image size of a model whose height and width are dynamic (a transformer's "
            "token layers exist only at a fixed size)",
        )
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        ex = Explainer(args.model, output=model_output(args), input_size=size_option(args.size), **token_options(args))
        if ex.sizes_explained_apart:
            print(
                "onnxcam: this transformer's image size is dynamic: its token layers are listed for a size given "
                "with --size H W (explain uses the size it resizes images to)",
                file=sys.stderr,
            )
        rows: list[dict[str, Any]] = [{**c.row(), "auto": c.name == ex.layer} for c in ex.candidates]
        if args.json:
            print(json.dumps({"layers": rows, "auto": ex.layer, "reason": ex.layer_reason}, indent=2))
            return 0
        table = [
            (r["name"], r["op"], "x".join(str(d) for d in r["shape"]), _layout_column(r), "*" if r["auto"] else " ")
            for r in rows
        ]
        widths = [max([len(t[i]) for t in table] + [len(h)]) for i, h in enumerate(("name", "op", "shape"))]
        print(f"  {'name':<{widths[0]}}  {'op':<{widths[1]}}  {'shape':<{widths[2]}}  layout")
        for name, op, shape, layout, mark in table:
            print(f"{mark} {name:<{widths[0]}}  {op:<{widths[1]}}  {shape:<{widths[2]}}  {layout}")
        print(f"\n* {ex.layer_reason}")
        return 0


def _layout_column(row: dict[str, Any]) -> str:
    """NCHW / NHWC, or a token layer's layout with its prefix count and patch grid ("NTC 1+14x14")."""
    if "token_grid" not in row:
        return str(row["layout"])
    h, w = row["token_grid"]
    prefix = f"{row['prefix_tokens']}+" if row["prefix_tokens"] else ""
    return f"{row['layout']} {prefix}{h}x{w}"


class ExportCommand:
    name = "export"

    def register(self, sub, common) -> None:
        p = sub.add_parser(
            self.name,
            parents=[common],
            help="write the standalone explainer .onnx",
            description="Write one ONNX file computing the model's outputs plus the heatmap "
            "(inputs: the model's inputs and target_class; outputs: the model's "
            "outputs, cam, cam_lowres, target). Any ONNX runtime can serve it.",
        )
        p.add_argument("model", help="path to the .onnx file (never modified)")
        p.add_argument("-o", "--output", help="where to write the explainer .onnx")
        p.add_argument(
            "--triton",
            metavar="REPO_DIR",
            help="also (or instead) write a Triton model repository: REPO_DIR/<name>/1/model.onnx and config.pbtxt",
        )
        p.add_argument("--triton-name", help="the model's name in the repository (default: <model stem>_explainer)")
        p.add_argument(
            "--triton-max-batch",
            type=int,
            default=16,
            help="Triton's max_batch_size (default 16; 0 disables Triton's dynamic batching)",
        )
        p.add_argument("--layer", default="auto", help="tensor or node name (default: auto)")
        p.add_argument(
            "--method",
            default="gradcam",
            choices=method_names("gradient", "attention"),
            help="CAM method (the ones computed in the graph)",
        )
        p.add_argument(
            "--score",
            default="logit",
            choices=["logit", "probability"],
            help="explain the logit before a final Softmax/Sigmoid (default, as in the paper) or the probability",
        )
        add_model_output_option(p)
        add_token_options(p)
        add_preprocess_options(p)  # for --web's page; --size also pins a dynamic image size for every output
        add_web_options(p)
        add_ep_options(p)
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        check, portable = check_requested(args), portable_requested(args)
        if not args.output and not args.triton and not args.web and not check:  # a usage error (exit 2)
            print(
                "onnxcam export: error: where to? pass -o FILE.onnx, --triton REPO_DIR, --web DIR, or several",
                file=sys.stderr,
            )
            return 2
        ex = Explainer(
            args.model,
            layer=args.layer,
            method=args.method,
            score=args.score,
            output=model_output(args),
            input_size=size_option(args.size),  # a transformer's token layers exist only at a fixed size
            **token_options(args),
        )
        written = None  # the file --check checks: the -o file, else the Triton model, else a temporary export
        if args.output:
            out = Path(args.output)
            if out.exists() and out.is_dir():
                out = out / (Path(args.model).stem + ".explainer.onnx")
            ex.export(out, portable=portable)
            written = out
            print(f"wrote {out} (layer {ex.layer}{', portable' if portable else ''})", file=sys.stderr)
        if args.triton:
            from onnxcam.server.triton import MODEL_FILE, VERSION, write_triton_repository

            folder = write_triton_repository(
                ex, args.triton, args.triton_name, args.triton_max_batch, portable=portable
            )
            written = written or folder / VERSION / MODEL_FILE
            print(
                f"wrote Triton model {folder.name!r}: {folder / 'config.pbtxt'} and {folder / VERSION / MODEL_FILE}"
                + (" (portable)" if portable else ""),
                file=sys.stderr,
            )
        if args.web:
            write_web(ex, args)
        return run_check(ex, written, check, portable)


def add_web_options(p: argparse.ArgumentParser) -> None:
    """``--web DIR`` and ``--ort-web DIR`` (the page bakes in the preprocessing flags' choices)."""
    web = p.add_argument_group("browser page")
    web.add_argument(
        "--web",
        metavar="DIR",
        help="also (or instead) write a static page that explains images in the browser (ONNX Runtime Web), "
        "the image never uploaded; serve DIR over http (docs/browser.md)",
    )
    web.add_argument(
        "--ort-web",
        metavar="DIR",
        help="onnxruntime-web's files for --web (node_modules/onnxruntime-web/dist); default: the pinned "
        "version, installed with npm into a cache on first use",
    )


def write_web(ex: Explainer, args: argparse.Namespace) -> None:
    """``onnxcam export --web DIR``: the page, with the preprocessing the flags, settings file and metadata give."""
    from onnxcam.web import write_web_page

    spec = preprocess_spec(ex, args.model, args)
    check_labels(spec.labels, ex)
    folder = write_web_page(ex, spec, args.web, ort_web=args.ort_web, portable=portable_requested(args))
    print(
        f"wrote the browser page {folder / 'index.html'} (layer {ex.layer}); serve it over http, e.g. "
        f"python -m http.server -d {folder}, and open http://127.0.0.1:8000/",
        file=sys.stderr,
    )


def finish_run(report, out: Path) -> int:
    for failure in report.failures:
        print(f"onnxcam: skipped {failure['image']}: {failure['error']}", file=sys.stderr)
    panels = sum(1 for p in report.written if p.name.endswith(PANEL_SUFFIX))
    print(f"wrote {panels} panel(s) and {out / 'summary.json'}", file=sys.stderr)
    return 1 if report.failures else 0


class ExplainCommand:
    name = "explain"

    def register(self, sub, common) -> None:
        p = sub.add_parser(
            self.name,
            parents=[common],
            help="explain images: PNG panels + JSON summary",
            description="Explain each image (folders are walked recursively) with Grad-CAM and "
            "write one PNG panel per image (original, heatmap, overlay) plus "
            "summary.json. Preprocessing comes from the options below, else a settings "
            "file beside the model (<stem>.onnxcam.toml/.json), else the model's "
            "metadata, else the imagenet preset.",
            epilog=EXIT_STATUS_HELP,
        )
        p.add_argument("model", help="path to the .onnx file")
        p.add_argument("images", nargs="+", metavar="IMAGE|DIR", help="image files or folders")
        p.add_argument(
            "--layer",
            nargs="+",
            default=["auto"],
            help="tensor or node name (default: auto; see `onnxcam layers`); several names give a "
            "layer-wise panel, shallow to deep",
        )
        p.add_argument(
            "--method",
            default="gradcam",
            choices=ALL_METHODS,
            help="CAM method (see the README's table); guided methods add the guided pictures to the panel",
        )
        add_method_options(p)
        add_token_options(p)
        which = p.add_mutually_exclusive_group()
        which.add_argument("--target", type=int, nargs="+", metavar="K", help="class id(s) to explain")
        which.add_argument(
            "--top", type=int, default=1, metavar="K", help="explain each image's top K classes (in one batched run)"
        )
        which.add_argument(
            "--multilabel",
            type=float,
            nargs="?",
            const=0.5,
            metavar="THRESHOLD",
            help="multi-label (sigmoid) outputs: explain every class whose probability is at least "
            "THRESHOLD (default 0.5)",
        )
        add_model_output_option(p)
        p.add_argument(
            "--input",
            action="append",
            default=[],
            metavar="NAME=FILE.npy",
            help="a value for a model input besides the image (metadata, a mask...): one row, saved "
            "with numpy.save, fed with every image; repeat for several inputs",
        )
        add_preprocess_options(p)
        add_render_options(p)
        add_run_options(p)
        add_detection_options(p)
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        if args.detections:
            return run_detections(args, finish_run)
        if args.top < 1:
            raise OnnxcamError("--top must be at least 1")
        layers = args.layer[0] if len(args.layer) == 1 else args.layer
        several = args.top > 1 or args.multilabel is not None or (args.target and len(args.target) > 1)
        if not isinstance(layers, str) and several:
            raise OnnxcamError("several layers and several classes at once: pass one class (--target K) or one layer")
        images = collect_images(args.images)  # before the model loads: a mistyped path is the cheapest error
        ex, spec = explainer_and_spec(
            args.model,
            args,
            layer=layers,
            method=args.method,
            output=model_output(args),
            **method_options(args),
            **token_options(args),
        )
        check_labels(spec.labels, ex)
        extra_inputs = load_extra_inputs(ex, spec.input_name, args.input)
        if not images:
            raise OnnxcamError("no images found in " + ", ".join(args.images))
        out = Path(args.output)
        with output_folder(out):
            report = explain_files(
                ex,
                spec,
                images,
                out,
                targets=args.target,
                top=args.top,
                render=render_options(args),
                multilabel=args.multilabel,
                batch_size=max(1, args.batch_size),
                max_pixels=args.max_pixels,
                extra_inputs=extra_inputs,
            )
        return finish_run(report, out)


class DemoCommand:
    name = "demo"

    def register(self, sub, common) -> None:
        p = sub.add_parser(
            self.name,
            parents=[common],
            help="explain the bundled demo images (no arguments)",
            description="Run Grad-CAM with the small model shipped inside onnxcam on its sample "
            "images of shapes on cluttered backgrounds, and write the panels.",
            epilog=EXIT_STATUS_HELP,
        )
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


COMMANDS: list[Command] = [
    LayersCommand(),
    ExplainCommand(),
    ExportCommand(),
    DemoCommand(),
    ServeCommand(),
    EvalCommand(),
    CompareCommand(),
    BatchCommand(),
]

"""``onnxcam compare``: two models, the same photos, how far their heatmaps agree.

The work is in :mod:`onnxcam.compare`; this module turns flags into two
:class:`~onnxcam.compare.ModelSide` objects, draws the panels, writes the
tables and prints the summary. Each model takes its own preprocessing flags
(``--size-a``, ``--preprocess-b``, ...) over its own settings file, because
the typical pairs (a PyTorch and a Keras export, a 224 and a 160 version)
differ exactly there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onnxcam.cli.explain_files import (
    COMPARE_SUFFIX,
    PanelNames,
    ProtectedPaths,
    check_labels,
    collect_images,
    output_folder,
    protected_paths,
    replacing,
    save_panel,
)
from onnxcam.cli.options import (
    EXIT_STATUS_HELP,
    add_render_options,
    add_run_options,
    add_token_options,
    explainer_and_spec,
    parse_list,
    render_options,
    token_options,
)
from onnxcam.cli.progress import Progress
from onnxcam.compare import (
    ImageFailure,
    ModelSide,
    compare_images,
    record,
    render_comparison,
    summary_lines,
    write_csv,
    write_json,
)
from onnxcam.errors import OnnxcamError
from onnxcam.explainer import ALL_METHODS
from onnxcam.preprocess import PRESETS
from onnxcam.preprocess.geometry import RESIZE_MODES
from onnxcam.preprocess.presets import ALIASES as PRESET_ALIASES

#: The preprocessing fields a flag can set per model, as ``onnxcam explain`` names them.
_SIDE_FIELDS = ("preprocess", "size", "mean", "std", "scale", "bgr", "layout", "resize", "crop_pct", "pad_value")
RESULT_FILES = ("compare.json", "compare.csv")


class CompareCommand:
    name = "compare"

    def register(self, sub, common) -> None:
        p = sub.add_parser(
            self.name,
            parents=[common],
            help="compare two models' heatmaps on the same images",
            description="Explain each image with MODEL_A and MODEL_B (each with its own "
            "preprocessing) for the same class, map both heatmaps onto the image, and "
            "report their agreement: Spearman rank correlation, IoU of the top-15% "
            "regions, distance between the peaks in pixels. Writes one side-by-side "
            "panel per image, compare.csv and compare.json.",
            epilog=EXIT_STATUS_HELP,
        )
        p.add_argument("model_a", metavar="MODEL_A", help="the reference .onnx file")
        p.add_argument("model_b", metavar="MODEL_B", help="the .onnx file compared with it")
        p.add_argument("images", nargs="+", metavar="IMAGE|DIR", help="image files or folders")
        p.add_argument("--layer-a", default="auto", help="layer of model A (default: auto)")
        p.add_argument("--layer-b", default="auto", help="layer of model B (default: auto)")
        p.add_argument("--method", default="gradcam", choices=ALL_METHODS, help="CAM method, the same for both")
        p.add_argument(
            "--target",
            type=int,
            metavar="K",
            help="class to explain in both models (default: model A's top-1 for each image)",
        )
        p.add_argument(
            "--labels",
            help="class names for both models: a .txt file (one per line) or .json list "
            "(default: from each model's settings file or metadata)",
        )
        for side in ("a", "b"):
            _add_side_preprocessing(p, side)
            add_token_options(p, side)
        add_render_options(p)
        add_run_options(p)
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        images = collect_images(args.images)  # before the models load: a mistyped path is the cheapest error
        sides = [_side(args, "a"), _side(args, "b")]
        for side in sides:
            check_labels(side.spec.labels, side.explainer)
        _warn_if_classes_differ(*sides)
        if not images:
            raise OnnxcamError("no images found in " + ", ".join(args.images))
        out = Path(args.output)
        protected = protected_paths(
            [side.explainer for side in sides], images, [side.spec.labels_file for side in sides]
        )
        for name in RESULT_FILES:  # before any work: without its tables the run is not worth doing
            protected.check(out / name)
        with output_folder(out):
            records: list[dict] = []
            failures: list[ImageFailure] = []
            try:
                self._compare(args, sides, images, out, protected, records, failures)
            except KeyboardInterrupt:
                _write_results(out, _header(args, sides, interrupted=True), records, failures)
                raise KeyboardInterrupt(
                    f"{out / 'compare.json'} holds the {len(records) + len(failures)} of "
                    f"{len(images)} image(s) done before it"
                ) from None
            _write_results(out, _header(args, sides, interrupted=False), records, failures)
        print(f"A: {sides[0].name} (layer {sides[0].explainer.layer})")
        print(f"B: {sides[1].name} (layer {sides[1].explainer.layer})")
        explained = f"class {args.target}" if args.target is not None else "model A's top-1 class"
        print(f"both explain {explained} ({args.method}); probabilities are of that class")
        print("\n".join(summary_lines(records, failures)))
        for failure in failures:
            print(f"onnxcam: skipped {failure.image}: {failure.error}", file=sys.stderr)
        print(f"wrote {len(records)} panel(s), {out / 'compare.csv'} and {out / 'compare.json'}", file=sys.stderr)
        return 1 if failures else 0

    @staticmethod
    def _compare(
        args,
        sides: list[ModelSide],
        images,
        out: Path,
        protected: ProtectedPaths,
        records: list[dict],
        failures: list[ImageFailure],
    ) -> None:
        """Compare every image, drawing its panel; append to ``records`` and ``failures`` as each one is done."""
        style = render_options(args)
        names = PanelNames(COMPARE_SUFFIX)
        with Progress(len(images), "comparing") as bar:
            for item in compare_images(
                sides[0],
                sides[1],
                images,
                target=args.target,
                batch_size=max(1, args.batch_size),
                max_pixels=args.max_pixels,
            ):
                if isinstance(item, ImageFailure):
                    failures.append(item)
                    bar.advance()
                    continue
                panel = out / names.claim(item.relative)
                error = protected.refusal(panel) or save_panel(
                    panel,
                    render_comparison(
                        item,
                        sides[0].name,
                        sides[1].name,
                        style.colormap,
                        style.alpha,
                        contour=style.contour,
                        box=style.box,
                    ),
                )
                if error is None:
                    records.append(record(item, panel))
                else:
                    failures.append(ImageFailure(item.image, error))
                bar.advance()


def _header(args, sides: list[ModelSide], interrupted: bool) -> dict:
    return {
        "model_a": {"path": args.model_a, "layer": sides[0].explainer.layer, "preprocess": sides[0].spec.describe()},
        "model_b": {"path": args.model_b, "layer": sides[1].explainer.layer, "preprocess": sides[1].spec.describe()},
        "method": args.method,
        "target": args.target if args.target is not None else "model A's top-1",
        "interrupted": interrupted,
    }


def _write_results(out: Path, header: dict, records: list[dict], failures: list[ImageFailure]) -> None:
    """compare.json and compare.csv, each written whole or not at all (see :func:`replacing`)."""
    try:
        with replacing(out / "compare.json") as temporary:
            write_json(temporary, header, records, failures)
        with replacing(out / "compare.csv") as temporary:
            write_csv(temporary, records)
    except OSError as e:
        raise OnnxcamError(f"cannot write results to {out}: {e.strerror or e}; choose another -o") from None


def _add_side_preprocessing(p: argparse.ArgumentParser, side: str) -> None:
    g = p.add_argument_group(
        f"preprocessing of model {side.upper()}",
        "as `onnxcam explain`'s flags; unset fields come from the model's settings file "
        "(<stem>.onnxcam.toml/.json), then its metadata, then the imagenet preset",
    )
    g.add_argument(
        f"--preprocess-{side}",
        choices=sorted([*PRESETS, *PRESET_ALIASES]),
        metavar="PRESET",
        help="imagenet, inception/tf, caffe, raw01, raw255",
    )
    g.add_argument(f"--size-{side}", type=int, nargs="+", metavar="N", help="H W (or one N)")
    g.add_argument(f"--mean-{side}", type=parse_list, metavar="M", help="e.g. 0.5,0.5,0.5")
    g.add_argument(f"--std-{side}", type=parse_list, metavar="S", help="e.g. 0.5,0.5,0.5")
    g.add_argument(f"--scale-{side}", type=float, metavar="X", help="pixel multiplier, e.g. 0.00392157")
    g.add_argument(f"--bgr-{side}", action="store_true", default=None, help="B, G, R channel order")
    g.add_argument(f"--layout-{side}", choices=["NCHW", "NHWC"], help="where the graph does not fix it")
    g.add_argument(f"--resize-{side}", choices=list(RESIZE_MODES), help="squash, crop or letterbox")
    g.add_argument(f"--crop-pct-{side}", metavar="F", help="crop's share of the resized image, e.g. 0.875")
    g.add_argument(f"--pad-value-{side}", metavar="N", help="letterbox padding grey level (default 114)")


def _side(args, side: str) -> ModelSide:
    """Explainer and preprocessing of one model, from its ``-a``/``-b`` flags."""
    model = getattr(args, f"model_{side}")
    flags = argparse.Namespace(labels=args.labels, **{f: getattr(args, f"{f}_{side}") for f in _SIDE_FIELDS})
    ex, spec = explainer_and_spec(
        model, flags, layer=getattr(args, f"layer_{side}"), method=args.method, **token_options(args, side)
    )
    return ModelSide(ex, spec, _display_name(args.model_a, args.model_b, side))


def _display_name(model_a: str, model_b: str, side: str) -> str:
    """The file name, with its folder when both models share a file name (v1/model.onnx vs v2/model.onnx)."""
    a, b = Path(model_a), Path(model_b)
    mine = a if side == "a" else b
    if a.name != b.name or a.parent.name == b.parent.name:
        return mine.name
    return f"{mine.parent.name}/{mine.name}"


def _warn_if_classes_differ(a: ModelSide, b: ModelSide) -> None:
    ka, kb = a.explainer.num_classes, b.explainer.num_classes
    if ka is not None and kb is not None and ka != kb:
        print(
            f"onnxcam: warning: model A has {ka} classes and model B {kb}; the same class id may not mean "
            "the same thing in both",
            file=sys.stderr,
        )

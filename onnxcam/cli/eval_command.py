"""``onnxcam eval``: explanation-quality metrics of several CAM methods on images with ground-truth boxes.

Prints one table per method as it finishes and a comparison table at the
end, and writes ``metrics.csv`` (one row per method), ``samples.csv`` (one row
per sample and method) and ``metrics.json`` (everything, the sanity check's
steps and the skipped entries included) into the output folder. A bad entry
(missing image, bad box, unknown class) is reported and skipped; the run then
exits 1 after writing the results of the others.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import textwrap
from pathlib import Path

from onnxcam.cli.explain_files import (
    ProtectedPaths,
    check_labels,
    output_folder,
    protected_paths,
    replacing,
)
from onnxcam.cli.options import (
    EXIT_STATUS_HELP,
    add_preprocess_options,
    add_token_options,
    explainer_and_spec,
    token_options,
)
from onnxcam.cli.progress import Progress
from onnxcam.data import load_samples, read_dataset
from onnxcam.strict_json import finite_json
from onnxcam.errors import OnnxcamError
from onnxcam.explainer import ALL_METHODS, Explainer
from onnxcam.metrics.baselines import BASELINES
from onnxcam.metrics.evaluate import (
    COLUMNS,
    DEFAULT_METRICS,
    METRICS,
    EvalData,
    EvalSettings,
    Evaluation,
    MethodResult,
    check_methods,
)
from onnxcam.preprocess import DEFAULT_MAX_PIXELS

DEFAULT_METHODS = ("gradcam", "random", "center")
RESULT_FILES = ("metrics.csv", "samples.csv", "metrics.json")
DATA_HELP = """\
DATA is an annotation file or a folder holding one:
  annotations.json  {"images": [{"file": "a.jpg", "objects": [{"box": [x0, y0, x1, y1], "label": "cat"}]}]}
  annotations.csv   header file,x0,y0,x1,y1,label; one row per object
  Pascal VOC        *.xml files, or a folder with Annotations/ and JPEGImages/
Boxes are original-image pixels, 0-based, end-exclusive (VOC's 1-based inclusive boxes are converted).
Labels are class ids or class names (from --labels or the model); without a label the top-1 class is judged.

metrics (lower/higher is better):
  pointing      share of maps whose maximum lies within --tolerance px of a box (higher)
  localization  loc_accuracy: box of the largest region >= --threshold of the max has IoU >= 0.5 (higher);
                loc_error: top-1 localisation error, wrong class or IoU < 0.5 (lower); mean_iou
  deletion      RISE deletion AUC of the class probability (lower)
  insertion     RISE insertion AUC, from a blurred image (higher)
  drop          Grad-CAM++ average drop % (lower) and average increase % (higher)
  road          ROAD with noisy linear imputation: MoRF (lower) and LeRF (higher) mean probability
  faithfulness  Spearman correlation with an occlusion map (higher)
  sanity        cascading weight randomisation: Spearman with the original maps after the top layer and
                after all layers (lower: the maps depend on the weights)

""" + textwrap.fill(EXIT_STATUS_HELP, 110, break_on_hyphens=False)


class EvalCommand:
    name = "eval"

    def register(self, sub, common) -> None:
        p = sub.add_parser(
            self.name,
            parents=[common],
            help="score CAM methods on images with ground-truth boxes",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=DATA_HELP,
            description="Measure how well each method's heatmaps localise and explain: pointing "
            "game, localisation, deletion/insertion, average drop, ROAD, faithfulness "
            "and the randomisation sanity check.",
        )
        p.add_argument("model", help="path to the .onnx file (never modified)")
        p.add_argument("data", help="annotation file (.json, .csv, VOC .xml) or a folder holding one")
        p.add_argument(
            "--method",
            nargs="+",
            default=list(DEFAULT_METHODS),
            metavar="M",
            help=f"methods to compare (default: {' '.join(DEFAULT_METHODS)}); any of "
            f"{', '.join([*ALL_METHODS, *BASELINES])}",
        )
        p.add_argument("--layer", default="auto", help="tensor or node name (default: auto)")
        p.add_argument(
            "--metric",
            nargs="+",
            default=list(DEFAULT_METRICS),
            choices=[*METRICS, "all"],
            metavar="METRIC",
            help=f"metrics (default: {' '.join(DEFAULT_METRICS)}); 'all' adds road, "
            "faithfulness and sanity, which cost many more forward passes",
        )
        p.add_argument("-o", "--output", default="onnxcam-eval", help="output folder (default ./onnxcam-eval)")
        p.add_argument(
            "--batch-size",
            type=int,
            default=64,
            help="images per ONNX Runtime call, perturbed copies included (default 64)",
        )
        k = p.add_argument_group("metric settings")
        k.add_argument(
            "--tolerance",
            type=float,
            default=15.0,
            help="pointing-game tolerance in input pixels (default 15, Zhang et al.)",
        )
        k.add_argument(
            "--threshold",
            type=float,
            default=0.15,
            help="localisation keeps the map above this fraction of its maximum (default 0.15, as in "
            "the Grad-CAM paper)",
        )
        k.add_argument("--steps", type=int, default=32, help="deletion/insertion steps (default 32)")
        k.add_argument(
            "--deletion-baseline",
            choices=["zeros", "blur"],
            default="zeros",
            help="what deleted pixels become (default zeros, in the model's input space)",
        )
        k.add_argument(
            "--sanity-images", type=int, default=16, help="images re-explained per randomisation step (default 16)"
        )
        k.add_argument("--seed", type=int, default=0, help="seed of the random baseline and ROAD's noise")
        p.add_argument(
            "--max-pixels",
            type=int,
            default=DEFAULT_MAX_PIXELS,
            help=f"refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS})",
        )
        add_preprocess_options(p)
        add_token_options(p)
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        methods = check_methods(args.method)
        metrics = list(METRICS) if "all" in args.metric else list(dict.fromkeys(args.metric))
        settings = EvalSettings(
            metrics=metrics,
            batch_size=args.batch_size,
            pointing_tolerance=args.tolerance,
            threshold=args.threshold,
            steps=args.steps,
            deletion_baseline=args.deletion_baseline,
            sanity_images=args.sanity_images,
            seed=args.seed,
        )
        ex, spec = explainer_and_spec(args.model, args, layer=args.layer, **token_options(args))
        check_labels(spec.labels, ex)
        dataset = read_dataset(args.data)
        samples, issues = load_samples(dataset, spec, spec.labels, ex.num_classes, args.max_pixels)
        for issue in issues:
            print(f"onnxcam: skipped {issue.where}: {issue.error}", file=sys.stderr)
        if not samples:
            raise OnnxcamError(f"no usable entries in {args.data} ({len(issues)} skipped)")
        out = Path(args.output)
        protected = _protected_paths(ex, dataset, spec.labels_file)
        for name in RESULT_FILES:  # before any work: without its tables the run is not worth doing
            protected.check(out / name)
        with output_folder(out):
            evaluation = Evaluation(
                args.model,
                EvalData.from_samples(samples),
                layer=ex.layer,
                settings=settings,
                layout=spec.layout,
                explainer_options={**token_options(args), "input_size": ex.input_size},
            )
            del ex
            print(f"{len(samples)} sample(s) from {dataset.source} ({dataset.format}), layer {evaluation.layer}")
            results = []
            try:
                for method in methods:
                    with Progress(evaluation.work_units(method), method) as bar:
                        result = evaluation.run(method, progress=bar.advance)
                    results.append(result)
                    print(method_table(result))
            except KeyboardInterrupt:
                write_results(out, results, evaluation, issues, args, interrupted=True)
                raise KeyboardInterrupt(
                    f"{out / 'metrics.json'} holds the {len(results)} of {len(methods)} method(s) done before it"
                ) from None
            if len(results) > 1:
                print(comparison_table(results))
            write_results(out, results, evaluation, issues, args)
        print(f"wrote {out / 'metrics.csv'}, {out / 'samples.csv'} and {out / 'metrics.json'}", file=sys.stderr)
        return 1 if issues else 0


def _protected_paths(explainer: Explainer, dataset, labels_file: Path | None) -> ProtectedPaths:
    """The model's files, the annotation file and its images: ``-o`` may well be the data set's own folder."""
    protected = protected_paths(explainer, [(entry.image, entry.image) for entry in dataset.images], [labels_file])
    if Path(dataset.source).is_file():
        protected.add([dataset.source], "it is the annotation file")
    return protected


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _columns(results: list[MethodResult]) -> list[str]:
    present = {k for r in results for k in r.summary}
    return [c for c in COLUMNS if c in present]


def method_table(result: MethodResult) -> str:
    """One method's metrics, one per line, with the direction that is better."""
    lines = [f"\n{result.method} ({result.seconds:.1f} s)"]
    for col in _columns([result]):
        lines.append(f"  {col:<18} {_fmt(result.summary[col]):>8}   ({COLUMNS[col][1]} is better)")
    return "\n".join(lines)


def comparison_table(results: list[MethodResult]) -> str:
    """Methods as rows, metrics as columns (a Markdown table, so it pastes into a README)."""
    cols = _columns(results)
    head = "| method | " + " | ".join(cols) + " |"
    rule = "|---|" + "---|" * len(cols)
    rows = [
        "| " + r.method + " | " + " | ".join(_fmt(r.summary.get(c, math.nan)) for c in cols) + " |" for r in results
    ]
    return "\n".join(["", head, rule, *rows])


def write_results(
    out: Path, results: list[MethodResult], evaluation: Evaluation, issues, args, interrupted: bool = False
) -> None:
    """metrics.csv, samples.csv and metrics.json, each written whole or not at all (see :func:`replacing`)."""
    cols = _columns(results)
    try:
        with replacing(out / "metrics.csv") as temporary, open(temporary, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["method", "layer", "samples", *cols, "seconds"])
            for r in results:
                w.writerow(
                    [
                        r.method,
                        evaluation.layer if r.method not in BASELINES else "",
                        len(r.per_sample),
                        *[r.summary.get(c, "") for c in cols],
                        round(r.seconds, 2),
                    ]
                )
        keys = list(dict.fromkeys(k for r in results for row in r.per_sample for k in row))
        with replacing(out / "samples.csv") as temporary, open(temporary, "w", newline="") as fh:
            dw = csv.DictWriter(fh, fieldnames=["method", *keys])
            dw.writeheader()
            for r in results:
                for row in r.per_sample:
                    dw.writerow({"method": r.method, **row})
        doc = {
            "model": str(args.model),
            "data": str(args.data),
            "layer": evaluation.layer,
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(evaluation.settings).items()},
            "interrupted": interrupted,
            "methods": [
                {
                    "method": r.method,
                    "summary": r.summary,
                    "seconds": r.seconds,
                    "sanity": None
                    if r.sanity is None
                    else [{"randomized": s.layers, "mean_spearman": s.mean_correlation} for s in r.sanity.steps],
                    "samples": r.per_sample,
                }
                for r in results
            ],
            "skipped": [{"entry": i.where, "error": i.error} for i in issues],
        }
        with replacing(out / "metrics.json") as temporary:
            temporary.write_text(json.dumps(finite_json(doc), indent=1, allow_nan=False) + "\n")
    except OSError as e:
        raise OnnxcamError(f"cannot write results to {out}: {e.strerror or e}; choose another -o") from None

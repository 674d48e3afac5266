"""Localisation benchmark of onnxcam's CAM methods on the embedded demo model's held-out images.

Writes a held-out set (``model_zoo/demo_boxes.py``: seed 31337 by default,
never used for training or the other tests) as PNGs plus ``annotations.json``,
reads it back through the same path as ``onnxcam eval`` (annotation reader,
preprocessing from the model's metadata, box mapping) and runs the metrics for
gradcam, gradcam++, layercam, scorecam (when installed), eigencam and the
random and centre baselines. Prints a Markdown table and writes JSON.

    python tools/localization_benchmark.py [--n 200] [--seed 31337] [--json bench-loc.json]

The same numbers, one table per method, come from the command line with
``python -m model_zoo.demo_boxes DIR && onnxcam eval onnxcam/demo/model.onnx DIR --method ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import onnxcam  # noqa: E402
from model_zoo.demo_boxes import BENCHMARK_SEED, write_annotated_set  # noqa: E402
from onnxcam import demo  # noqa: E402
from onnxcam.data import load_samples, read_dataset  # noqa: E402
from onnxcam.metrics.evaluate import EvalData, EvalSettings, Evaluation  # noqa: E402
from onnxcam.metrics.localization import IOU_CORRECT, localization_iou  # noqa: E402
from onnxcam.preprocess import derive_spec  # noqa: E402

METHODS = ["gradcam", "gradcam++", "layercam", "scorecam", "eigencam", "random", "center"]
METRICS = ("pointing", "localization", "deletion", "insertion", "drop")
TABLE = [  # (header, summary key or derived, format)
    ("pointing (15 px)", "pointing", "{:.3f}"),
    ("pointing (0 px)", "pointing_0px", "{:.3f}"),
    ("loc. accuracy (IoU>=0.5)", "loc_accuracy", "{:.3f}"),
    ("top-1 loc. error", "loc_error", "{:.3f}"),
    ("loc. accuracy, 50 % threshold", "loc_accuracy_50", "{:.3f}"),
    ("mean IoU", "mean_iou", "{:.3f}"),
    ("deletion AUC (lower)", "deletion_auc", "{:.3f}"),
    ("insertion AUC", "insertion_auc", "{:.3f}"),
    ("average drop % (lower)", "average_drop", "{:.1f}"),
    ("average increase %", "average_increase", "{:.1f}"),
]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="held-out images (default 200)")
    ap.add_argument("--seed", type=int, default=BENCHMARK_SEED, help=f"generator seed (default {BENCHMARK_SEED})")
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--data-dir", type=Path, help="keep the generated set here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="write the table and settings here")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods if m in onnxcam.ALL_METHODS or m in ("random", "center")]
    missing = sorted(set(args.methods) - set(methods))
    if missing:
        print(f"not available in this onnxcam, skipped: {', '.join(missing)}", file=sys.stderr)

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="onnxcam-locbench-") as tmp:
        folder = args.data_dir or Path(tmp)
        write_annotated_set(folder, args.n, args.seed, "json")
        spec = derive_spec(demo.DEMO_MODEL, model_path=demo.DEMO_MODEL)
        samples, issues = load_samples(read_dataset(folder), spec, spec.labels, len(demo.DEMO_LABELS))
    if issues:
        raise SystemExit(f"unexpected bad entries in the generated set: {issues[:3]}")
    t_data = time.monotonic() - t0
    evaluation = Evaluation(
        demo.DEMO_MODEL,
        EvalData.from_samples(samples),
        settings=EvalSettings(metrics=METRICS, batch_size=args.batch_size),
    )
    accuracy = float(np.mean(evaluation.predicted == np.array([s.label for s in samples])))
    rows = {}
    for method in methods:
        res = evaluation.run(method, keep_maps=True)
        summary = dict(res.summary)
        summary["loc_accuracy_50"] = float(
            np.mean([localization_iou(c, b, 0.5) >= IOU_CORRECT for c, b in zip(res.maps, evaluation.data.boxes)])
        )
        summary["pointing_0px"] = float(np.mean([r["peak_box_distance"] <= 0 for r in res.per_sample]))
        summary["seconds"] = res.seconds
        rows[method] = summary
        print(f"{method}: {res.seconds:.1f} s", file=sys.stderr)
    total = time.monotonic() - t0

    print(
        f"\n{len(samples)} held-out images (seed {args.seed}), model accuracy {accuracy:.3f}, "
        f"layer {evaluation.layer}; {evaluation.scorer.images_scored} forward passes, {total:.0f} s in all "
        f"({t_data:.0f} s writing and reading the set)\n"
    )
    print("| method | " + " | ".join(h for h, _, _ in TABLE) + " | seconds |")
    print("|---|" + "---|" * (len(TABLE) + 1))
    for method, summary in rows.items():
        cells = [
            fmt.format(summary[key]) if not math.isnan(summary.get(key, math.nan)) else "n/a" for _, key, fmt in TABLE
        ]
        print(f"| {method} | " + " | ".join(cells) + f" | {summary['seconds']:.0f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "n": len(samples),
                    "seed": args.seed,
                    "accuracy": accuracy,
                    "layer": evaluation.layer,
                    "seconds": total,
                    "methods": rows,
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()

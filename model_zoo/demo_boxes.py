"""Held-out demo images with ground-truth boxes, written in the formats ``onnxcam eval`` reads.

The generator (``model_zoo/demo_data.py``) knows each object's pixel mask, so
every image comes with the tight box of its object and its class. Seeds here
are disjoint from everything the demo model saw or was checked on:
``model_zoo/train_demo.py`` trains on seed 1, validates on 2, samples 3;
``tests/test_demo_model.py`` uses 20240.

    python -m model_zoo.demo_boxes OUT_DIR [--n 200] [--seed 31337] [--format json|csv|voc]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from model_zoo.demo_data import CLASSES, generate

BENCHMARK_SEED = 31337  # tools/localization_benchmark.py
TEST_SEED = 4242  # tests/test_metrics_demo.py, tests/test_eval_cli.py
FORMATS = ("json", "csv", "voc")


def write_annotated_set(out: Path, n: int, seed: int, fmt: str = "json") -> tuple[np.ndarray, np.ndarray]:
    """Write ``n`` PNGs and their annotations under ``out``; return (labels, boxes) for checking.

    json: ``annotations.json`` beside ``images/``; csv: ``annotations.csv``;
    voc: ``Annotations/*.xml`` and ``JPEGImages/*.png`` (1-based inclusive boxes).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    images, labels, boxes = generate(n, seed)
    img_dir = out / ("JPEGImages" if fmt == "voc" else "images")
    img_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (im, lab) in enumerate(zip(images, labels)):
        name = f"{i:04d}_{CLASSES[lab]}.png"
        Image.fromarray(im).save(img_dir / name)
        names.append(name)
    if fmt == "json":
        doc = {
            "seed": seed,
            "box_format": "x0, y0, x1, y1 in pixels; x0 <= x < x1, y0 <= y < y1",
            "images": [
                {"file": f"images/{name}", "objects": [{"box": [int(v) for v in box], "label": CLASSES[lab]}]}
                for name, lab, box in zip(names, labels, boxes)
            ],
        }
        (out / "annotations.json").write_text(json.dumps(doc, indent=1) + "\n")
    elif fmt == "csv":
        with open(out / "annotations.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "x0", "y0", "x1", "y1", "label"])
            for name, lab, box in zip(names, labels, boxes):
                w.writerow([f"images/{name}", *[int(v) for v in box], int(lab)])
    else:
        ann = out / "Annotations"
        ann.mkdir(exist_ok=True)
        for name, lab, (x0, y0, x1, y1) in zip(names, labels, boxes):
            (ann / (Path(name).stem + ".xml")).write_text(
                voc_xml(name, CLASSES[lab], (x0, y0, x1, y1), images.shape[2], images.shape[1])
            )
    return labels, boxes


def voc_xml(filename: str, name: str, box, width: int, height: int) -> str:
    """A minimal Pascal VOC annotation; VOC boxes are 1-based and inclusive."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return (
        f"<annotation><folder>JPEGImages</folder><filename>{filename}</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object></annotation>\n"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=BENCHMARK_SEED)
    ap.add_argument("--format", choices=FORMATS, default="json")
    args = ap.parse_args(argv)
    write_annotated_set(args.out, args.n, args.seed, args.format)
    print(f"wrote {args.n} images with boxes to {args.out} ({args.format})")


if __name__ == "__main__":
    main()

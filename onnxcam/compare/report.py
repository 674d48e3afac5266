"""The comparison's tables: one row per photo, then the mean and median over the photos.

An undefined number (a flat map has no ranking, region or peak) is written
as an empty CSV cell and JSON ``null`` and left out of the aggregates, which
count it as ``undefined``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from onnxcam.compare.run import ImageComparison, ImageFailure
from onnxcam.strict_json import finite_json

METRICS = ("spearman", "top15_iou", "peak_distance_px")
CSV_COLUMNS = (
    "image",
    "target",
    "target_label",
    "a_class",
    "a_label",
    "a_probability",
    "a_target_probability",
    "b_class",
    "b_label",
    "b_probability",
    "b_target_probability",
    *METRICS,
    "a_peak_x",
    "a_peak_y",
    "b_peak_x",
    "b_peak_y",
    "note",
    "panel",
)


def record(item: ImageComparison, panel: Path | None) -> dict:
    """The JSON record of one photo (numbers as plain floats; NaN as None)."""

    def side(s):
        return {
            "class": s.top_class,
            "label": s.top_label,
            "probability": s.top_probability,
            "target_probability": s.target_probability,
            "peak": {"x": s.peak[0], "y": s.peak[1]} if s.peak else None,
        }

    return {
        "image": str(item.image),
        "target": item.target,
        "target_label": item.target_label,
        "target_source": item.target_source,
        "a": side(item.a),
        "b": side(item.b),
        "spearman": _num(item.spearman),
        "top15_iou": _num(item.top_iou),
        "peak_distance_px": _num(item.peak_distance),
        "note": item.note,
        "panel": str(panel) if panel else None,
    }


def aggregate(records: list[dict]) -> dict:
    """Mean and median of each metric, the share of photos whose top-1 classes agree, and the counts."""
    out: dict = {"images": len(records)}
    for m in METRICS:
        values = np.array([r[m] for r in records if r[m] is not None], dtype=np.float64)
        out[m] = {
            "mean": float(values.mean()) if values.size else None,
            "median": float(np.median(values)) if values.size else None,
            "undefined": len(records) - int(values.size),
        }
    same = [r["a"]["class"] == r["b"]["class"] for r in records]
    out["top1_agreement"] = float(np.mean(same)) if same else None
    return out


def write_json(path: Path, header: dict, records: list[dict], failures: list[ImageFailure]) -> None:
    doc = {
        **header,
        "aggregate": aggregate(records),
        "images": records,
        "failures": [{"image": str(f.image), "error": f.error} for f in failures],
    }
    path.write_text(json.dumps(finite_json(doc), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path, records: list[dict]) -> None:
    """One row per photo, then rows ``(mean)`` and ``(median)`` holding the metric columns only."""
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in records:
            row = {
                "image": r["image"],
                "target": r["target"],
                "target_label": r["target_label"],
                "note": r["note"],
                "panel": r["panel"],
                **{m: r[m] for m in METRICS},
            }
            for k in ("a", "b"):
                s = r[k]
                row.update(
                    {
                        f"{k}_class": s["class"],
                        f"{k}_label": s["label"],
                        f"{k}_probability": s["probability"],
                        f"{k}_target_probability": s["target_probability"],
                        f"{k}_peak_x": (s["peak"] or {}).get("x"),
                        f"{k}_peak_y": (s["peak"] or {}).get("y"),
                    }
                )
            w.writerow(row)
        agg = aggregate(records)
        for stat in ("mean", "median"):
            w.writerow({"image": f"({stat})", **{m: agg[m][stat] for m in METRICS}})


def summary_lines(records: list[dict], failures: list[ImageFailure], limit: int = 20) -> list[str]:
    """A short table for the terminal: the first ``limit`` photos, then the aggregate."""
    name_w = min(max([len(Path(r["image"]).name) for r in records] + [5]), 32)
    head = (
        f"{'image':<{name_w}}  {'class':>5}  {'A p':>5}  {'B p':>5}  {'B top-1':>7}  {'Spearman':>8}  "
        f"{'IoU15':>5}  {'peak px':>7}"
    )
    lines = [head]
    for r in records[:limit]:
        lines.append(
            f"{Path(r['image']).name[:name_w]:<{name_w}}  {r['target']:>5}  "
            f"{r['a']['target_probability']:>5.2f}  {r['b']['target_probability']:>5.2f}  "
            f"{r['b']['class']:>7}  "
            f"{_cell(r['spearman'], 3):>8}  {_cell(r['top15_iou'], 2):>5}  "
            f"{_cell(r['peak_distance_px'], 1):>7}"
        )
    if len(records) > limit:
        lines.append(f"... and {len(records) - limit} more (see compare.csv)")
    if records:
        agg = aggregate(records)
        for stat in ("mean", "median"):
            lines.append(
                f"{stat:<{name_w}}  {'':>5}  {'':>5}  {'':>5}  {'':>7}  {_cell(agg['spearman'][stat], 3):>8}  "
                f"{_cell(agg['top15_iou'][stat], 2):>5}  {_cell(agg['peak_distance_px'][stat], 1):>7}"
            )
        lines.append(f"top-1 classes agree on {agg['top1_agreement']:.0%} of {len(records)} image(s)")
        if agg["spearman"]["undefined"]:
            lines.append(
                f"{agg['spearman']['undefined']} image(s) with a flat map (no ranking) are left out "
                "of the mean and median"
            )
    if failures:
        lines.append(f"{len(failures)} image(s) failed")
    return lines


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _cell(v, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"

"""How far the float16 and int8 copies' heatmaps stray from the float32 model's, on demo images.

::

    python -m model_zoo.precision_report [--cache DIR] [--images 60] [--seed 20240]

For every zoo entry with a ``base`` (a reduced-precision copy), both models
explain the same held-out demo images (``model_zoo.demo_data``, a seed that
neither training nor int8 calibration used) at the same layer, each image at
the float32 model's top-1 class, and the heatmaps are compared with
``onnxcam.metrics.agreement``: Spearman rank correlation, IoU of the top-15 %
regions, and the distance between the peaks in pixels; also how often the
top-1 class agrees and the relative L2 distance of ``cam_lowres``. Prints a
Markdown table (medians over images, 5th percentile for Spearman and IoU)
that the README quotes.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HELD_OUT_SEED = 20240


@dataclasses.dataclass
class Agreement:
    """Per-image agreement of one reduced-precision model with its float32 base at one layer."""

    model: str
    layer: str
    spearman: np.ndarray
    iou: np.ndarray
    peak_px: np.ndarray
    same_top1: float
    lowres_rel_l2: np.ndarray

    def row(self) -> str:
        return (
            f"| {self.model} | {self.layer} | {np.median(self.spearman):.3f} "
            f"({np.percentile(self.spearman, 5):.3f}) | {np.median(self.iou):.3f} "
            f"({np.percentile(self.iou, 5):.3f}) | {np.median(self.peak_px):.1f} | "
            f"{self.same_top1 * 100:.0f} % | {np.median(self.lowres_rel_l2):.1e} |"
        )


HEADER = (
    "| model | layer | Spearman median (5th pct) | top-15 % IoU median (5th pct) | peak distance px, median "
    "| same top-1 | cam_lowres rel L2, median |\n|---|---|---|---|---|---|---|"
)


def counterpart(layer: str, names: Sequence[str]) -> str:
    """The copy's tensor for the base model's ``layer``: its DequantizeLinear output (QDQ), else the same name.

    In a QDQ model the tensor with the float model's name is the producer's
    raw output, before the QuantizeLinear that may have absorbed a ReLU; the
    DequantizeLinear output is the value the float model has under that name.
    """
    for cand in (f"{layer}_DequantizeLinear_Output", layer):
        if cand in names:
            return cand
    raise KeyError(f"no counterpart of {layer!r} in the reduced-precision model")


def measure(
    base_path: Path, copy_path: Path, layer: str, images: np.ndarray, name: str, label: str, batch: int = 16
) -> Agreement:
    """Explain ``images`` (uint8 NHWC) with both models at ``layer`` and compare the heatmaps."""
    import onnxcam  # noqa: PLC0415
    from onnxcam.metrics.agreement import peak_distance, spearman, top_region_iou  # noqa: PLC0415
    from onnxcam.preprocess import derive_spec, preprocess_batch  # noqa: PLC0415

    x = preprocess_batch(list(images), derive_spec(str(base_path)))[0]
    cpu = ["CPUExecutionProvider"]
    base = onnxcam.Explainer(str(base_path), layer=layer, providers=cpu)
    copy = onnxcam.Explainer(str(copy_path), providers=cpu)
    copy = onnxcam.Explainer(
        str(copy_path), layer=counterpart(base.layer, [c.name for c in copy.candidates]), providers=cpu
    )
    rows = {k: [] for k in ("rho", "iou", "peak", "same", "l2")}
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        a = base.explain(xb)
        b = copy.explain(xb, target=[int(t) for t in a.targets])
        top1 = copy.predict(xb).scores.reshape(len(xb), -1).argmax(axis=1)
        for j in range(len(xb)):
            rows["rho"].append(spearman(a.cam[j], b.cam[j]))
            rows["iou"].append(top_region_iou(a.cam[j], b.cam[j]))
            rows["peak"].append(peak_distance(a.cam[j], b.cam[j]))
            rows["same"].append(top1[j] == a.targets[j])
            den = np.linalg.norm(a.cam_lowres[j])
            rows["l2"].append(np.linalg.norm(b.cam_lowres[j] - a.cam_lowres[j]) / den if den > 0 else np.nan)
    arr = {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}
    return Agreement(name, label, arr["rho"], arr["iou"], arr["peak"], float(arr["same"].mean()), arr["l2"])


def report(cache: Path, n_images: int = 60, seed: int = HELD_OUT_SEED) -> list[Agreement]:
    """Agreement of every reduced-precision copy in ``cache``'s manifest at its auto and earlier layers."""
    from model_zoo.demo_data import generate  # noqa: PLC0415
    from model_zoo.zoo import load_manifest  # noqa: PLC0415

    entries = load_manifest(cache)
    images = generate(n_images, seed)[0]
    out = []
    for e in entries.values():
        if not (e.ok and e.base and e.base in entries):
            continue
        base = entries[e.base]
        for label, layer in (("auto", base.suggested_layer), ("earlier", base.earlier_layer)):
            out.append(measure(cache / base.file, cache / e.file, layer, images, e.name, f"{label}: `{layer}`"))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    from model_zoo.zoo import default_cache  # noqa: PLC0415

    ap = argparse.ArgumentParser(prog="python -m model_zoo.precision_report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    args = ap.parse_args(argv)
    rows = report(args.cache or default_cache(), args.images, args.seed)
    print(HEADER)
    for r in rows:
        print(r.row())


if __name__ == "__main__":
    main()

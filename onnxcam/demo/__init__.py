"""A tiny trained model shipped with onnxcam, to try Grad-CAM without downloading anything.

The model classifies one synthetic shape per 96x96 RGB image (circle, square,
triangle, star, cross, ring) on a cluttered background; it was trained by
``model_zoo/train_demo.py``. Preprocessing is ``raw01``: RGB, resized (squash)
to 96x96, scaled to [0, 1] with no mean/std, NCHW float32::

    import onnxcam
    from onnxcam import demo

    x = demo.load_image(demo.DEMO_IMAGES[0])          # (1, 3, 96, 96) float32
    res = onnxcam.Explainer(demo.DEMO_MODEL).explain(x)
    print(demo.DEMO_LABELS[res.targets[0]], res.cam.shape)

``DEMO_SAMPLES`` gives each sample image's true class and object box
(x0, y0, x1, y1; pixels, end-exclusive).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent

DEMO_MODEL: Path = _HERE / "model.onnx"
DEMO_LABELS: list[str] = (_HERE / "labels.txt").read_text().split()
DEMO_SAMPLES: list[dict] = [
    {**s, "path": _HERE / s["file"]} for s in json.loads((_HERE / "samples.json").read_text())["samples"]
]
DEMO_IMAGES: list[Path] = [s["path"] for s in DEMO_SAMPLES]

INPUT_NAME = "image"
INPUT_SIZE = (96, 96)  # (height, width)
PREPROCESS = {"preset": "raw01", "size": list(INPUT_SIZE), "layout": "NCHW", "resize": "squash"}

__all__ = [
    "DEMO_MODEL",
    "DEMO_IMAGES",
    "DEMO_LABELS",
    "DEMO_SAMPLES",
    "INPUT_NAME",
    "INPUT_SIZE",
    "PREPROCESS",
    "preprocess",
    "load_image",
]


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 RGB image(s), (H, W, 3) or (N, H, W, 3), already 96x96 -> float32 (N, 3, 96, 96) in [0, 1]."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) or (N, H, W, 3) RGB, got shape {a.shape}")
    if a.shape[1:3] != INPUT_SIZE:
        raise ValueError(
            f"expected {INPUT_SIZE[0]}x{INPUT_SIZE[1]} images, got {a.shape[1]}x{a.shape[2]}; "
            "use load_image() to resize"
        )
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file, convert to RGB, squash-resize to 96x96, return (1, 3, 96, 96) float32 in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (INPUT_SIZE[1], INPUT_SIZE[0]):
            im = im.resize((INPUT_SIZE[1], INPUT_SIZE[0]), Image.Resampling.BILINEAR)
        return preprocess(np.asarray(im, dtype=np.uint8))

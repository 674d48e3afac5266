"""Maps that know nothing about the model, to tell what the metrics give for free.

``random``: uniform noise on a coarse grid (an eighth of the input side, the
resolution of a typical CAM layer) upsampled bilinearly, so it is as smooth as
a CAM but carries no information. ``center``: a Gaussian centred on the image
(sigma a quarter of the shorter side): photographers and dataset builders put
objects in the middle, and a metric a centre prior wins is not measuring the
model.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BASELINES = ("random", "center")


def random_maps(n: int, size: tuple[int, int], seed: int = 0, grid_divisor: int = 8) -> np.ndarray:
    """(n, H, W) float32 in [0, 1]: smooth random maps, image ``i`` seeded by ``(seed, i)``."""
    h, w = size
    gh, gw = max(2, h // grid_divisor), max(2, w // grid_divisor)
    out = np.empty((n, h, w), dtype=np.float32)
    for i in range(n):
        coarse = np.random.default_rng([seed, i]).random((gh, gw)).astype(np.float32)
        up = np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.Resampling.BILINEAR))
        span = float(up.max() - up.min())
        out[i] = (up - up.min()) / span if span > 0 else 0.0
    return out


def center_maps(n: int, size: tuple[int, int]) -> np.ndarray:
    """(n, H, W) float32: a Gaussian with its peak at the image centre, 1 there."""
    h, w = size
    sigma = min(h, w) / 4.0
    y = np.arange(h) + 0.5 - h / 2.0
    x = np.arange(w) + 0.5 - w / 2.0
    g = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma * sigma)).astype(np.float32)
    g /= g.max()
    return np.broadcast_to(g, (n, h, w)).copy()


def baseline_maps(name: str, n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The maps of pseudo-method ``name`` (one of :data:`BASELINES`)."""
    if name == "random":
        return random_maps(n, size, seed)
    if name == "center":
        return center_maps(n, size)
    raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")

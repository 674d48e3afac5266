"""Fusing maps: several layers, or several augmented copies, into one heatmap.

Each map is first brought to the input's size and min-max normalised on its
own, so a layer with large raw values does not drown the others; the mean is
normalised again so the fused ``cam`` keeps the [0, 1] contract. The in-graph
head fuses several layers with the same steps (``Mean`` of the normalised
maps, then normalise), so host-side and in-graph methods agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxcam.methods.upsampling import resize_half_pixel


def normalise(maps: np.ndarray) -> np.ndarray:
    """Per-image min-max to [0, 1], as the in-graph head does (an all-zero map stays zero)."""
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = np.maximum(maps.max(axis=(1, 2), keepdims=True) - lo, 1e-7)
    normalised: np.ndarray = ((maps - lo) / span).astype(np.float32)
    return normalised


def mean_of_normalised(maps: Sequence[np.ndarray]) -> np.ndarray:
    """(N, H, W) maps, each already in [0, 1] -> their mean, min-max normalised per image."""
    return maps[0] if len(maps) == 1 else normalise(np.mean(np.stack(maps), axis=0))


def fuse_layers(lows: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Raw (N, h_i, w_i) maps of each layer -> the fused (N, H, W) ``cam``: resize, normalise, mean, normalise."""
    return mean_of_normalised([normalise(resize_half_pixel(low, size)) for low in lows])

"""Drawing aids for thresholded regions: boundary pixels and dilation.

The thresholding, component labelling and box themselves live in
:mod:`onnxcam.metrics.regions` (the localisation metric uses them too) and are
re-exported here for the renderer.
"""

from __future__ import annotations

import numpy as np

from onnxcam.errors import InputError
from onnxcam.metrics.regions import (  # noqa: F401  (re-exported)
    PAPER_THRESHOLD,
    label_components,
    largest_component,
    threshold_box,
    threshold_mask,
)


def boundary(mask) -> np.ndarray:
    """Boolean (H, W): pixels of ``mask`` with a 4-neighbour outside it (the image edge counts as outside)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise InputError(f"mask must be 2-D, got shape {m.shape}")
    p = np.pad(m, 1, constant_values=False)
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~interior


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with a (2r+1) x (2r+1) square (separable; works only around the set pixels)."""
    m = np.asarray(mask, dtype=bool)
    r = max(0, int(radius))
    ys = np.flatnonzero(m.any(axis=1))
    if r == 0 or len(ys) == 0:
        return m.copy()
    xs = np.flatnonzero(m.any(axis=0))
    h, w = m.shape
    y0, y1 = max(ys[0] - r, 0), min(ys[-1] + r + 1, h)
    x0, x1 = max(xs[0] - r, 0), min(xs[-1] + r + 1, w)
    crop = np.pad(m[y0:y1, x0:x1], r, constant_values=False)
    ch, cw = y1 - y0, x1 - x0
    rows = np.zeros((ch + 2 * r, cw), dtype=bool)
    for d in range(2 * r + 1):
        rows |= crop[:, d : d + cw]
    out = np.zeros((ch, cw), dtype=bool)
    for d in range(2 * r + 1):
        out |= rows[d : d + ch]
    full = np.zeros_like(m)
    full[y0:y1, x0:x1] = out
    return full

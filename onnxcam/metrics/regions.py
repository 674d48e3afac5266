"""Thresholded regions of a map: the connected components and bounding box behind weakly-supervised localisation.

Grad-CAM's weakly-supervised localisation (Selvaraju et al., Sec. 4.1) keeps the
pixels above 15% of the map's maximum and boxes the largest connected component.
The localisation metric and the renderer's ``--box``/``--contour`` both need it,
so it lives here, below ``render``.
Labelling here is run-based union-find in numpy + a little Python (no scipy):
each row's runs of foreground pixels are found with numpy, then runs that touch
a run in the row above are merged. Cost grows with the number of runs, which is
small for the smooth maps Grad-CAM produces.
"""

from __future__ import annotations

import numpy as np

from onnxcam.errors import InputError, OnnxcamError

PAPER_THRESHOLD = 0.15


def _as_map(cam) -> np.ndarray:
    arr = np.asarray(cam)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"cam must be a non-empty 2-D (H, W) array, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError("cam contains NaN or inf")
    return arr


def threshold_mask(cam, fraction: float = PAPER_THRESHOLD) -> np.ndarray:
    """Boolean (H, W): pixels with ``cam >= fraction * cam.max()``; all False if the max is <= 0."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise OnnxcamError(f"fraction must be in [0, 1], got {fraction!r}")
    arr = _as_map(cam)
    peak = float(arr.max())
    if peak <= 0.0:
        return np.zeros(arr.shape, dtype=bool)
    return arr >= float(fraction) * peak


def _runs(mask: np.ndarray):
    """(row, start, stop) of every horizontal run of True, row-major; stop is exclusive."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rs, starts = np.nonzero(d == 1)
    _, stops = np.nonzero(d == -1)  # same row-major order, so pairs line up
    return rs, starts, stops


def label_components(mask, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label connected components of a boolean mask.

    Returns ``(labels, n)``: int32 (H, W) with 0 for background and 1..n for the
    components, numbered in row-major order of their first pixel.
    ``connectivity`` is 4 (edge neighbours) or 8 (edge and corner neighbours).
    """
    if connectivity not in (4, 8):
        raise OnnxcamError(f"connectivity must be 4 or 8, got {connectivity!r}")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise InputError(f"mask must be 2-D, got shape {mask.shape}")
    rs, starts, stops = _runs(mask)
    n_runs = len(rs)
    labels = np.zeros(mask.shape, dtype=np.int32)
    if n_runs == 0:
        return labels, 0
    parent = list(range(n_runs))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Runs of each row as a contiguous slice of the run arrays.
    row_first = np.searchsorted(rs, np.arange(mask.shape[0] + 1))
    slack = 1 if connectivity == 8 else 0  # 8-connectivity: diagonal touch counts
    r_list, s_list, e_list = rs.tolist(), starts.tolist(), stops.tolist()
    for r in range(1, mask.shape[0]):
        a, a_end = int(row_first[r - 1]), int(row_first[r])  # runs of the row above
        b, b_end = a_end, int(row_first[r + 1])  # runs of this row
        while a < a_end and b < b_end:  # two-pointer sweep, both sorted by start
            if s_list[a] < e_list[b] + slack and s_list[b] < e_list[a] + slack:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if e_list[a] < e_list[b]:
                a += 1
            else:
                b += 1
    roots = [find(i) for i in range(n_runs)]
    # Number roots in order of first appearance (roots are the smallest run index).
    ids: dict[int, int] = {}
    run_label = np.empty(n_runs, dtype=np.int32)
    for i, root in enumerate(roots):
        run_label[i] = ids.setdefault(root, len(ids) + 1)
    for i in range(n_runs):
        labels[r_list[i], s_list[i] : e_list[i]] = run_label[i]
    return labels, len(ids)


def largest_component(mask, connectivity: int = 8) -> np.ndarray:
    """Boolean mask of the largest connected component (ties: the first in row-major order)."""
    labels, n = label_components(mask, connectivity)
    if n == 0:
        return np.zeros(labels.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def threshold_box(cam, fraction: float = PAPER_THRESHOLD, connectivity: int = 8):
    """Bounding box of the largest connected region with ``cam >= fraction * max(cam)``.

    Returns ``(x0, y0, x1, y1)`` in pixels of ``cam`` with exclusive ends, like
    ``PIL.Image.crop`` and numpy slicing (``cam[y0:y1, x0:x1]``); the last pixel
    inside the box is ``(x1 - 1, y1 - 1)``. Returns None when the map is all <= 0.
    """
    comp = largest_component(threshold_mask(cam, fraction), connectivity)
    ys = np.flatnonzero(comp.any(axis=1))
    xs = np.flatnonzero(comp.any(axis=0))
    if len(ys) == 0:
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1

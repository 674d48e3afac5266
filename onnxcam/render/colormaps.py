"""Colormaps: a Grad-CAM map in [0, 1] -> uint8 RGB, via embedded 256-entry LUTs.

Four maps are offered. ``viridis`` (the default) and ``cividis`` are perceptually
uniform, keep their order when printed in greyscale and stay readable with the
common colour-vision deficiencies. ``turbo`` and ``jet`` are rainbow maps, here
so that pictures can be compared with other Grad-CAM tools (most draw with
OpenCV's ``COLORMAP_JET``); they exaggerate some differences and hide others.

``jet`` is matplotlib's definition (piecewise-linear ramps from dark blue
(0, 0, 128) through cyan, yellow to dark red (128, 0, 0)). OpenCV's
``COLORMAP_JET`` is the same ramp sampled slightly differently, so expect
differences of a few levels, not a different picture. ``turbo`` is Google's
published 256-entry table.

Index rule (matplotlib's): value v picks entry ``min(floor(v * 256), 255)``, so
v = 0 gives the first colour and v = 1 the last.
"""

from __future__ import annotations

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.render._luts import LUT_HEX
from onnxcam.render._validate import as_cam

DEFAULT_COLORMAP = "viridis"
COLORMAPS: tuple[str, ...] = ("viridis", "cividis", "turbo", "jet")

_LUTS: dict[str, np.ndarray] = {}


def _lut(name: str) -> np.ndarray:
    if not isinstance(name, str) or name.lower() not in COLORMAPS:
        raise OnnxcamError(
            f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)} (default {DEFAULT_COLORMAP!r})"
        )
    key = name.lower()
    if key not in _LUTS:
        table = np.frombuffer(bytes.fromhex("".join(LUT_HEX[key])), dtype=np.uint8).reshape(256, 3)
        table.setflags(write=False)
        _LUTS[key] = table
    return _LUTS[key]


def colormap_lut(name: str = DEFAULT_COLORMAP) -> np.ndarray:
    """The (256, 3) uint8 RGB table of colormap ``name`` (a copy)."""
    return _lut(name).copy()


def cam_to_index(cam: np.ndarray) -> np.ndarray:
    """LUT indices (uint8) for a map already validated to lie in [0, 1]."""
    return np.minimum(np.floor(cam * 256.0), 255.0).astype(np.uint8)


def apply_colormap(cam: np.ndarray, name: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Colour a (H, W) map with values in [0, 1]; returns (H, W, 3) uint8 RGB.

    Values may overshoot [0, 1] by a little (resampling ringing) and are clipped;
    NaN/inf or a map that is clearly not normalised raise ``InputError``.
    """
    lut = _lut(name)
    return lut[cam_to_index(as_cam(cam))]

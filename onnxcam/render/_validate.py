"""Input coercion shared by the render modules: images, maps, alpha."""

from __future__ import annotations

import numpy as np
from PIL import Image

from onnxcam.errors import InputError, OnnxcamError

# A map may overshoot [0, 1] by this much (bicubic resizing rings) and is clipped;
# beyond it the caller almost certainly passed an unnormalised map.
CAM_TOLERANCE = 0.05


def as_cam(cam) -> np.ndarray:
    """A (H, W) float32 map clipped to [0, 1]; raises InputError on anything else."""
    arr = np.asarray(cam)
    if arr.ndim != 2:
        hint = " (for an ExplainResult pass one map, e.g. res.cam[0])" if arr.ndim == 3 else ""
        raise InputError(f"cam must be a 2-D (H, W) array, got shape {arr.shape}{hint}")
    if arr.size == 0:
        raise InputError(f"cam is empty (shape {arr.shape})")
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"cam must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError("cam contains NaN or inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -CAM_TOLERANCE or hi > 1.0 + CAM_TOLERANCE:
        raise InputError(
            f"cam values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; normalise it first (e.g. cam / cam.max())"
        )
    return np.clip(arr, 0.0, 1.0)


def as_rgb(image) -> np.ndarray:
    """A (H, W, 3) uint8 RGB array from a PIL image or a uint8 array (H, W), (H, W, 3) or (H, W, 4)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputError(
            f"image array must be uint8 (0..255), got {arr.dtype}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8) or pass a PIL image"
        )
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, :3]
    else:
        channels_first = arr.ndim == 3 and arr.shape[0] in (1, 3, 4)
        hint = " (looks channels-first: use arr.transpose(1, 2, 0))" if channels_first else ""
        raise InputError(f"image array must be (H, W, 3) RGB, got shape {arr.shape}{hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr)


def check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise OnnxcamError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
    if not 0.0 <= a <= 1.0:  # also rejects NaN
        raise OnnxcamError(f"alpha must be in [0, 1] (0 = image only, 1 = heatmap only), got {alpha!r}")
    return a


def check_same_size(rgb: np.ndarray, cam: np.ndarray) -> None:
    if rgb.shape[:2] != cam.shape:
        raise InputError(
            f"cam is {cam.shape[1]}x{cam.shape[0]} (WxH) but the image is "
            f"{rgb.shape[1]}x{rgb.shape[0]}; resize the cam to the image first "
            "(onnxcam.render.resize_cam(cam, image.size))"
        )

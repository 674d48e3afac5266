"""Resize modes, and the exact way back from the model input's pixels to the photo's.

Two resize modes bring a photo of ``orig_h x orig_w`` to the model input's
``H x W``, both with Pillow's ``BILINEAR`` filter:

``squash``
    resize to exactly ``H x W`` (the aspect ratio changes).
``crop``
    resize so the image covers ``H x W`` keeping its aspect ratio (for a
    square target: the shorter side becomes the target, as torchvision's
    ``Resize(size)``; the longer side is ``int(size * long / short)``), then
    cut the centre ``H x W`` (offsets ``int(round((resized - target) / 2))``,
    as torchvision's ``CenterCrop``).

Each image gets a :class:`Geometry` record. Coordinates follow Pillow's
convention: pixel ``i`` covers the interval ``[i, i+1)`` and its centre is
``i + 0.5``; an original coordinate ``u`` lands at ``u * scale - crop_offset``
in the model input, per axis.

:func:`cam_to_image` resamples a CAM (``H x W``) onto the original pixels with
a float bilinear resize (Pillow mode ``F``). Original pixels whose centre lies
outside the crop window (the parts of the photo the model never saw in
``crop`` mode) are set to **0**. :func:`point_to_image` maps one model-input
pixel (e.g. the CAM's peak) to original pixel coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from onnxcam.errors import InputError, PreprocessError

RESIZE_MODES = ("squash", "crop")


@dataclass(frozen=True)
class Geometry:
    """How one photo became one model input (sizes in pixels)."""

    orig_h: int
    orig_w: int
    input_h: int
    input_w: int
    mode: str  # "squash" or "crop"
    resized_h: int  # size after resizing, before the centre crop
    resized_w: int
    crop_top: int = 0  # offset of the crop window inside the resized image
    crop_left: int = 0

    @property
    def scale_y(self) -> float:
        """Resized pixels per original pixel, vertically."""
        return self.resized_h / self.orig_h

    @property
    def scale_x(self) -> float:
        return self.resized_w / self.orig_w

    @property
    def orig_size(self) -> tuple[int, int]:
        return (self.orig_h, self.orig_w)

    def crop_box(self) -> tuple[float, float, float, float]:
        """The window the model saw, in original coordinates: (top, left, bottom, right)."""
        return (
            self.crop_top / self.scale_y,
            self.crop_left / self.scale_x,
            (self.crop_top + self.input_h) / self.scale_y,
            (self.crop_left + self.input_w) / self.scale_x,
        )


def plan_geometry(orig_size: tuple[int, int], target: tuple[int, int], mode: str = "squash") -> Geometry:
    """The :class:`Geometry` for an image of ``orig_size`` = (h, w) brought to ``target`` = (H, W)."""
    oh, ow = (int(v) for v in orig_size)
    th, tw = (int(v) for v in target)
    if min(oh, ow, th, tw) <= 0:
        raise InputError(f"image size {orig_size} and target size {target} must be positive")
    if mode == "squash":
        return Geometry(oh, ow, th, tw, "squash", th, tw)
    if mode != "crop":
        raise PreprocessError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    if th * ow >= tw * oh:  # height is the binding side
        rh, rw = th, max(tw, th * ow // oh)
    else:
        rh, rw = max(th, tw * oh // ow), tw
    top = int(round((rh - th) / 2.0))
    left = int(round((rw - tw) / 2.0))
    return Geometry(oh, ow, th, tw, "crop", rh, rw, top, left)


def apply_geometry(img: Image.Image, geometry: Geometry) -> Image.Image:
    """Resize (and crop) ``img`` as ``geometry`` says, with Pillow's BILINEAR filter."""
    if (img.height, img.width) != geometry.orig_size:
        raise InputError(
            f"image is {img.height}x{img.width} but the geometry was planned for {geometry.orig_h}x{geometry.orig_w}"
        )
    g = geometry
    out = img
    if (g.resized_h, g.resized_w) != (g.orig_h, g.orig_w):
        out = img.resize((g.resized_w, g.resized_h), Image.Resampling.BILINEAR)
    if (g.resized_h, g.resized_w) != (g.input_h, g.input_w):
        out = out.crop((g.crop_left, g.crop_top, g.crop_left + g.input_w, g.crop_top + g.input_h))
    return out


def resize_image(img: Image.Image, size: tuple[int, int], mode: str = "squash") -> tuple[Image.Image, Geometry]:
    """Bring ``img`` to ``size`` = (H, W) with ``mode``; return the image and its :class:`Geometry`."""
    g = plan_geometry((img.height, img.width), size, mode)
    return apply_geometry(img, g), g


def _inside(n_orig: int, scale: float, offset: int, n_in: int) -> tuple[int, int]:
    """First and last original pixel whose centre maps into [0, n_in] of the model input."""
    lo = math.ceil(offset / scale - 0.5 - 1e-9)
    hi = math.floor((offset + n_in) / scale - 0.5 + 1e-9)
    return max(lo, 0), min(hi, n_orig - 1)


def cam_to_image(cam: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Resample a CAM on the model input (``H x W``) onto the original photo: ``(orig_h, orig_w)`` float32.

    Float bilinear (Pillow ``F``, ``BILINEAR``) following the same pixel-centre
    mapping as the forward resize. Pixels outside the crop window are 0.
    """
    g = geometry
    cam = np.asarray(cam)
    if cam.shape != (g.input_h, g.input_w):
        raise InputError(
            f"CAM has shape {cam.shape}; this geometry expects ({g.input_h}, {g.input_w}), "
            f"the model input's spatial size"
        )
    out = np.zeros((g.orig_h, g.orig_w), np.float32)
    sy, sx = g.scale_y, g.scale_x
    y0, y1 = _inside(g.orig_h, sy, g.crop_top, g.input_h)
    x0, x1 = _inside(g.orig_w, sx, g.crop_left, g.input_w)
    if y1 < y0 or x1 < x0:
        return out
    # Edge-replicate the CAM so the source box of the covered pixels (which may
    # reach half an original pixel beyond the window) stays inside the image.
    pad = int(math.ceil(max(sy, sx))) + 2
    src = np.pad(cam.astype(np.float32), pad, mode="edge")
    box = (
        x0 * sx - g.crop_left + pad,
        y0 * sy - g.crop_top + pad,
        (x1 + 1) * sx - g.crop_left + pad,
        (y1 + 1) * sy - g.crop_top + pad,
    )
    region = Image.fromarray(src, mode="F").resize((x1 - x0 + 1, y1 - y0 + 1), Image.Resampling.BILINEAR, box=box)
    out[y0 : y1 + 1, x0 : x1 + 1] = np.asarray(region, dtype=np.float32)
    return out


def point_to_image(point: tuple[float, float], geometry: Geometry) -> tuple[float, float]:
    """Model-input pixel ``(y, x)`` -> original pixel ``(y, x)`` (floats; round for an index).

    Pixel centres map to pixel centres; the result is clipped to the image.
    """
    g = geometry
    y, x = float(point[0]), float(point[1])
    oy = (y + 0.5 + g.crop_top) / g.scale_y - 0.5
    ox = (x + 0.5 + g.crop_left) / g.scale_x - 0.5
    return (min(max(oy, 0.0), g.orig_h - 1.0), min(max(ox, 0.0), g.orig_w - 1.0))


def point_to_input(point: tuple[float, float], geometry: Geometry) -> tuple[float, float]:
    """Original pixel ``(y, x)`` -> model-input pixel ``(y, x)`` (floats; may fall outside a crop)."""
    g = geometry
    y, x = float(point[0]), float(point[1])
    return ((y + 0.5) * g.scale_y - g.crop_top - 0.5, (x + 0.5) * g.scale_x - g.crop_left - 0.5)

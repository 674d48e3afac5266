"""Resize modes, and the exact way back from the model input's pixels to the photo's.

Three resize modes bring a photo of ``orig_h x orig_w`` to the model input's
``H x W``, all with Pillow's ``BILINEAR`` filter:

``squash``
    resize to exactly ``H x W`` (the aspect ratio changes).
``crop``
    resize so the image covers ``H x W / crop_pct`` keeping its aspect ratio,
    then cut the centre ``H x W`` (offsets ``int(round((resized - target) /
    2))``, as torchvision's ``CenterCrop``). For a square target the shorter
    side becomes ``floor(size / crop_pct)`` (timm's ``scale_size``) and the
    longer side ``int(short * long / short_orig)``, as torchvision's
    ``Resize(size)``. ``crop_pct = 1`` (the default) resizes the shorter side
    straight to the target (Ultralytics' classification transform);
    ``crop_pct = 0.875`` is torchvision's classification preset (resize 256,
    crop 224) and timm's default.
``letterbox``
    resize so the image fits inside ``H x W`` keeping its aspect ratio, then
    pad the rest with ``pad_value`` (default 114 grey), the image centred, with
    the arithmetic of Ultralytics' ``LetterBox(center=True)``: ``r = min(H / h,
    W / w)``, resized ``max(round(w * r), 1) x max(round(h * r), 1)``, the
    smaller half of an odd padding before the image.

Each image gets a :class:`Geometry` record: the resized size, then the window
of the model input inside the resized image. The window's offset is positive
for a crop and negative for padding (the image then starts ``-offset`` pixels
into the model input). Coordinates follow Pillow's convention: pixel ``i``
covers the interval ``[i, i+1)`` and its centre is ``i + 0.5``; an original
coordinate ``u`` lands at ``u * scale - crop_offset`` in the model input, per
axis, whatever the mode.

:func:`cam_to_image` resamples a CAM (``H x W``) onto the original pixels with
a float bilinear resize (Pillow mode ``F``), reading only the part of the CAM
that shows the photo (letterbox padding is dropped). Original pixels whose
centre lies outside the crop window (the parts of the photo the model never
saw in ``crop`` mode) are set to **0**. :func:`point_to_image` maps one
model-input pixel (e.g. the CAM's peak) to original pixel coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from onnxcam.errors import InputError, PreprocessError

RESIZE_MODES = ("squash", "crop", "letterbox")
#: ``crop``'s default: resize the shorter side straight to the target (no margin cut away).
DEFAULT_CROP_PCT = 1.0
#: ``letterbox``'s default padding: the grey of Ultralytics' ``LetterBox(padding_value=114)``.
DEFAULT_PAD_VALUE = 114


def check_crop_pct(value: float, what: str = "crop_pct") -> float:
    """``value`` if it is a fraction in (0, 1]: the target's share of the resized image, as timm's ``crop_pct``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise PreprocessError(
            f"{what} must be a number in (0, 1], the crop's share of the resized image "
            f"(0.875: resize 256, crop 224), not {value!r}"
        )
    return float(value)


def check_pad_value(value: float, what: str = "pad_value") -> int:
    """``value`` if it is a whole grey level 0..255: letterbox padding is one 8-bit value on every channel."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 255 or value % 1:
        raise PreprocessError(f"{what} must be a whole grey level from 0 to 255 (Ultralytics uses 114), not {value!r}")
    return int(value)


@dataclass(frozen=True)
class Geometry:
    """How one photo became one model input (sizes in pixels)."""

    orig_h: int
    orig_w: int
    input_h: int
    input_w: int
    mode: str  # "squash", "crop" or "letterbox"
    resized_h: int  # size after resizing, before the centre crop or the padding
    resized_w: int
    crop_top: int = 0  # offset of the model input's window inside the resized image; negative: padding
    crop_left: int = 0
    pad_value: int = DEFAULT_PAD_VALUE  # the grey level of the padding, where the window reaches past the image

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

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """Letterbox padding in model-input pixels: (top, left, bottom, right); all 0 for squash and crop."""
        top, left, bottom, right = self.content()
        return (top, left, self.input_h - bottom, self.input_w - right)

    def content(self) -> tuple[int, int, int, int]:
        """The model-input pixels that show the photo: (top, left, bottom, right), end-exclusive.

        The whole input for squash and crop; the part inside the padding for letterbox.
        """
        return (
            max(0, -self.crop_top),
            max(0, -self.crop_left),
            min(self.input_h, self.resized_h - self.crop_top),
            min(self.input_w, self.resized_w - self.crop_left),
        )

    def crop_box(self) -> tuple[float, float, float, float]:
        """The window the model saw, in original coordinates: (top, left, bottom, right)."""
        return (
            self.crop_top / self.scale_y,
            self.crop_left / self.scale_x,
            (self.crop_top + self.input_h) / self.scale_y,
            (self.crop_left + self.input_w) / self.scale_x,
        )


def plan_geometry(
    orig_size: tuple[int, int],
    target: tuple[int, int],
    mode: str = "squash",
    *,
    crop_pct: float = DEFAULT_CROP_PCT,
    pad_value: int = DEFAULT_PAD_VALUE,
) -> Geometry:
    """The :class:`Geometry` for an image of ``orig_size`` = (h, w) brought to ``target`` = (H, W).

    ``crop_pct`` is ``crop``'s margin (1: none), ``pad_value`` ``letterbox``'s padding; each belongs to its mode
    alone, so giving it to another mode is an error rather than a silent no-op.
    """
    oh, ow = (int(v) for v in orig_size)
    th, tw = (int(v) for v in target)
    if min(oh, ow, th, tw) <= 0:
        raise InputError(f"image size {orig_size} and target size {target} must be positive")
    if mode not in RESIZE_MODES:
        raise PreprocessError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    crop_pct, pad_value = check_crop_pct(crop_pct), check_pad_value(pad_value)
    if crop_pct != DEFAULT_CROP_PCT and mode != "crop":
        raise PreprocessError(f"crop_pct belongs to resize mode crop, not {mode}")
    if mode == "squash":
        return Geometry(oh, ow, th, tw, "squash", th, tw, pad_value=pad_value)
    if mode == "letterbox":
        rh, rw = _fit_size((oh, ow), (th, tw))
        # Ultralytics: top = round(dh / 2 - 0.1) with dh = H - resized_h, i.e. the smaller half of an odd padding
        return Geometry(oh, ow, th, tw, "letterbox", rh, rw, -((th - rh) // 2), -((tw - rw) // 2), pad_value)
    sh, sw = (math.floor(t / crop_pct) for t in (th, tw))  # timm's scale_size; (th, tw) when crop_pct is 1
    rh, rw = _cover_size((oh, ow), (sh, sw))
    return Geometry(oh, ow, th, tw, "crop", rh, rw, _centred(rh, th), _centred(rw, tw), pad_value)


def _cover_size(orig: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The size that keeps ``orig``'s aspect ratio and just covers ``box`` (torchvision's ``Resize(short)``)."""
    (oh, ow), (bh, bw) = orig, box
    if bh * ow >= bw * oh:  # height is the binding side
        return bh, max(bw, bh * ow // oh)
    return max(bh, bw * oh // ow), bw


def _fit_size(orig: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The size that keeps ``orig``'s aspect ratio and just fits in ``box``, rounded as Ultralytics' ``LetterBox``."""
    (oh, ow), (bh, bw) = orig, box
    r = min(bh / oh, bw / ow)
    return min(bh, max(round(oh * r), 1)), min(bw, max(round(ow * r), 1))


def _centred(resized: int, target: int) -> int:
    """Offset of a centred ``target``-long window in ``resized`` pixels, rounded as torchvision's ``CenterCrop``."""
    return int(round((resized - target) / 2.0))


def apply_geometry(img: Image.Image, geometry: Geometry) -> Image.Image:
    """Resize (and crop or pad) ``img`` as ``geometry`` says, with Pillow's BILINEAR filter."""
    if (img.height, img.width) != geometry.orig_size:
        raise InputError(
            f"image is {img.height}x{img.width} but the geometry was planned for {geometry.orig_h}x{geometry.orig_w}"
        )
    g = geometry
    out = img
    if (g.resized_h, g.resized_w) != (g.orig_h, g.orig_w):
        out = img.resize((g.resized_w, g.resized_h), Image.Resampling.BILINEAR)
    if g.content() != (0, 0, g.input_h, g.input_w):  # the window reaches past the image: pad around it
        canvas = Image.new(out.mode, (g.input_w, g.input_h), (g.pad_value,) * len(out.getbands()))
        canvas.paste(out, (-g.crop_left, -g.crop_top))
        return canvas
    if (g.resized_h, g.resized_w) != (g.input_h, g.input_w):
        out = out.crop((g.crop_left, g.crop_top, g.crop_left + g.input_w, g.crop_top + g.input_h))
    return out


def resize_image(
    img: Image.Image,
    size: tuple[int, int],
    mode: str = "squash",
    *,
    crop_pct: float = DEFAULT_CROP_PCT,
    pad_value: int = DEFAULT_PAD_VALUE,
) -> tuple[Image.Image, Geometry]:
    """Bring ``img`` to ``size`` = (H, W) with ``mode``; return the image and its :class:`Geometry`."""
    g = plan_geometry((img.height, img.width), size, mode, crop_pct=crop_pct, pad_value=pad_value)
    return apply_geometry(img, g), g


def _inside(n_orig: int, scale: float, offset: int, n_in: int) -> tuple[int, int]:
    """First and last original pixel whose centre maps into [0, n_in] of the model input."""
    lo = math.ceil(offset / scale - 0.5 - 1e-9)
    hi = math.floor((offset + n_in) / scale - 0.5 + 1e-9)
    return max(lo, 0), min(hi, n_orig - 1)


def cam_to_image(cam: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Resample a CAM on the model input (``H x W``) onto the original photo: ``(orig_h, orig_w)`` float32.

    Float bilinear (Pillow ``F``, ``BILINEAR``) following the same pixel-centre
    mapping as the forward resize. Only the CAM's pixels that show the photo
    are read: letterbox padding is cut away first, so a map that lights up the
    grey border does not bleed onto the photo's edge. Pixels outside the crop
    window are 0.
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
    # Edge-replicate the CAM's photo part so the source box of the covered pixels
    # (which may reach half an original pixel beyond the window) stays inside it.
    top, left, bottom, right = g.content()
    pad = int(math.ceil(max(sy, sx))) + 2
    src = np.pad(cam[top:bottom, left:right].astype(np.float32), pad, mode="edge")
    box = (
        x0 * sx - g.crop_left - left + pad,
        y0 * sy - g.crop_top - top + pad,
        (x1 + 1) * sx - g.crop_left - left + pad,
        (y1 + 1) * sy - g.crop_top - top + pad,
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

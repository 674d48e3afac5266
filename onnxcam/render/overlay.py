"""Heatmap over image: alpha blending, optional threshold contour and box."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from onnxcam.errors import OnnxcamError
from onnxcam.render.colormaps import DEFAULT_COLORMAP, apply_colormap
from onnxcam.render.regions import PAPER_THRESHOLD, boundary, dilate, threshold_box, threshold_mask
from onnxcam.render._validate import as_cam, as_rgb, check_alpha, check_same_size

LINE_COLOR = (255, 255, 255)  # contour and box: white core ...
OUTLINE_COLOR = (0, 0, 0)  # ... with a dark edge, visible on any colormap and photo


def resize_cam(cam, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a (h, w) map to ``size = (width, height)`` (PIL's order); float32, still in [0, 1]."""
    arr = as_cam(cam)
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise OnnxcamError(f"size must be positive (width, height), got {size!r}")
    if (height, width) == arr.shape:
        return arr.copy()
    out = Image.fromarray(arr).resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def blend(rgb: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """``round((1 - alpha) * rgb + alpha * colours)`` as uint8."""
    mixed = rgb.astype(np.float32)
    mixed *= np.float32(1.0 - alpha)
    mixed += np.float32(alpha) * colours.astype(np.float32)
    np.rint(mixed, out=mixed)
    np.clip(mixed, 0, 255, out=mixed)
    return mixed.astype(np.uint8)


def line_width(height: int, width: int) -> int:
    """Contour/box core width: 1 px up to ~500 px images, thicker on large ones."""
    return max(1, round(max(height, width) / 500))


def draw_contour(
    rgb: np.ndarray, cam: np.ndarray, fraction: float = PAPER_THRESHOLD, width: int | None = None
) -> np.ndarray:
    """Paint the boundary of ``cam >= fraction * max`` (all components) onto ``rgb`` in place."""
    w = line_width(*rgb.shape[:2]) if width is None else int(width)
    edge = boundary(threshold_mask(cam, fraction))
    core = dilate(edge, w - 1)
    rgb[dilate(core, 1) & ~core] = OUTLINE_COLOR
    rgb[core] = LINE_COLOR
    return rgb


def draw_box(img: Image.Image, box, width: int | None = None) -> Image.Image:
    """Draw an exclusive-end ``(x0, y0, x1, y1)`` box onto ``img`` in place: white with dark edges."""
    if box is None:
        return img
    w = line_width(img.height, img.width) if width is None else int(width)
    x0, y0, x1, y1 = box
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)  # a box thinner than a pixel (a tiny detection) is still drawn
    draw = ImageDraw.Draw(img)
    draw.rectangle((x0 - 1, y0 - 1, x1, y1), outline=OUTLINE_COLOR, width=w + 2)
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=LINE_COLOR, width=w)
    return img


def render_overlay(
    image,
    cam,
    colormap: str = DEFAULT_COLORMAP,
    alpha: float = 0.5,
    *,
    contour: bool = False,
    box: bool = False,
    fraction: float = PAPER_THRESHOLD,
    connectivity: int = 8,
) -> Image.Image:
    """Blend the coloured map over the image; returns a new RGB ``PIL.Image``.

    ``image`` is a PIL image or a uint8 (H, W, 3) array; ``cam`` is (H, W) in
    [0, 1] at the image's resolution (see :func:`resize_cam`). Every pixel is
    ``(1 - alpha) * image + alpha * colour``, so ``alpha=0`` shows the image and
    ``alpha=1`` the heatmap alone. ``contour`` outlines all pixels at or above
    ``fraction`` of the map's maximum (the paper's 15%); ``box`` draws the
    bounding box of the largest connected component of that region
    (:func:`threshold_box`).
    """
    a = check_alpha(alpha)
    rgb = as_rgb(image)
    m = as_cam(cam)
    check_same_size(rgb, m)
    out = blend(rgb, apply_colormap(m, colormap), a)
    if contour:
        draw_contour(out, m, fraction)
    img = Image.fromarray(out)
    if box:
        draw_box(img, threshold_box(m, fraction, connectivity))
    return img

"""The side-by-side picture of one comparison: photo, overlay A, overlay B, and where they differ."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from onnxcam.compare.run import ImageComparison, SideResult
from onnxcam.render import DEFAULT_COLORMAP, render_overlay, resize_cam
from onnxcam.render.layout import compose, fit_size, font_size_for

TILE_SIZE = 384
#: Orange where A's map is higher, purple where B's is: the ends of ColorBrewer's PuOr, a diverging
#: pair that stays distinct with the common colour-vision deficiencies (unlike red/green).
A_HIGHER = np.array([230, 97, 1], np.float32)
B_HIGHER = np.array([94, 60, 153], np.float32)


def render_difference(photo: Image.Image, cam_a: np.ndarray, cam_b: np.ndarray) -> Image.Image:
    """``A - B`` over a faded greyscale photo: orange where A is higher, purple where B is, grey where they agree.

    The colour's opacity is ``|A - B|`` (both maps are in [0, 1]), so a
    difference of 1 paints the pixel fully and agreement leaves the photo.
    """
    grey = np.asarray(photo.convert("L"), np.float32)[..., None]
    base = 0.5 * grey + 0.5 * 255.0  # faded, so the colours read as the foreground
    diff = (cam_a - cam_b)[..., None]
    colour = np.where(diff > 0, A_HIGHER, B_HIGHER)
    weight = np.minimum(np.abs(diff), 1.0)
    out = (1.0 - weight) * base + weight * colour
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def render_comparison(
    item: ImageComparison,
    name_a: str,
    name_b: str,
    colormap: str = DEFAULT_COLORMAP,
    alpha: float = 0.5,
    contour: bool = False,
    box: bool = False,
    tile_size: int = TILE_SIZE,
) -> Image.Image:
    """Four tiles under a caption with the agreement numbers, each overlay labelled with its model's prediction."""
    photo = item.photo.convert("RGB")
    w, h = fit_size(photo.width, photo.height, tile_size)
    if (w, h) != photo.size:
        photo = photo.resize((w, h), Image.Resampling.LANCZOS if w < photo.width else Image.Resampling.BICUBIC)
    cam_a, cam_b = resize_cam(item.a.cam, (w, h)), resize_cam(item.b.cam, (w, h))
    tiles = [
        photo,
        render_overlay(photo, cam_a, colormap, alpha, contour=contour, box=box),
        render_overlay(photo, cam_b, colormap, alpha, contour=contour, box=box),
        render_difference(photo, cam_a, cam_b),
    ]
    labels = [
        item.image.name,
        f"A: {name_a}\n{_prediction(item.a)}",
        f"B: {name_b}\n{_prediction(item.b)}",
        f"A - B (largest gap {np.abs(item.a.cam - item.b.cam).max():.2f}): orange where A is higher, purple where B is",
    ]
    target = f"{item.target_label} ({item.target})" if item.target_label else f"class {item.target}"
    caption = (
        f"explaining {target}, {item.target_source}  |  Spearman {_fmt(item.spearman, 3)}  |  "
        f"top-15% IoU {_fmt(item.top_iou, 2)}  |  peak distance {_fmt(item.peak_distance, 1)} px"
    )
    if item.note:
        caption += f"\n{item.note}"
    return compose(tiles, labels, caption=caption, colormap=colormap, columns=4, size=font_size_for(max(w, h)))


def _prediction(side: SideResult) -> str:
    name = f"{side.top_label} ({side.top_class})" if side.top_label else f"class {side.top_class}"
    return f"top-1 {name} p={side.top_probability:.3f}"


def _fmt(value: float, digits: int) -> str:
    return "undefined" if value is None or math.isnan(value) else f"{value:.{digits}f}"

"""Guided backpropagation maps as pictures, and the panel that shows them beside the heatmap.

A guided gradient is an input-shaped tensor of signed values with no natural
scale. It is shown the way pytorch-grad-cam (and the Keras Grad-CAM code it
follows) shows it: centred on its mean, divided by its standard deviation,
scaled by 0.1 around mid-grey and clipped, so zero gradient is grey and the
edges the network relies on stand out in colour.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from onnxcam.errors import OnnxcamError
from onnxcam.render.colormaps import DEFAULT_COLORMAP, apply_colormap
from onnxcam.render.layout import compose, font_size_for
from onnxcam.render.overlay import render_overlay
from onnxcam.render.panels import DEFAULT_TILE_SIZE, _scaled
from onnxcam.render.regions import PAPER_THRESHOLD
from onnxcam.render._validate import check_alpha


def guided_to_unit(gradient: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """A (C, H, W) or (H, W, C) gradient -> (H, W, C) float32 in [0, 1]:
    ``clip((g - mean) / (std + 1e-5) * 0.1 + 0.5, 0, 1)``.

    The statistics are over the whole tensor, as in pytorch-grad-cam's
    ``deprocess_image``, so the channels keep their relative colours.
    """
    g = np.asarray(gradient, dtype=np.float64)
    if g.ndim != 3 or channel_axis not in (0, 2, -1):
        raise OnnxcamError(
            f"a guided map is (C, H, W) or (H, W, C); got shape {g.shape} with channel axis {channel_axis}"
        )
    if channel_axis == 0:
        g = g.transpose(1, 2, 0)
    g = g - g.mean()
    g = g / (g.std() + 1e-5)
    return np.clip(g * 0.1 + 0.5, 0, 1).astype(np.float32)


def guided_to_rgb(gradient: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """The picture of a guided gradient: (H, W, 3) uint8 (a 1-channel gradient is shown in grey)."""
    return unit_to_rgb(guided_to_unit(gradient, channel_axis))


def unit_to_rgb(unit: np.ndarray) -> np.ndarray:
    """(H, W, C) values in [0, 1] -> (H, W, 3) uint8; one channel is shown in grey, other counts are refused."""
    unit = np.clip(np.asarray(unit, dtype=np.float32), 0, 1)
    if unit.shape[2] == 1:
        unit = np.repeat(unit, 3, axis=2)
    if unit.shape[2] != 3:
        raise OnnxcamError(f"a guided map needs 1 or 3 channels to be shown, not {unit.shape[2]}")
    return np.uint8(unit * 255)


def render_guided_panel(
    image,
    cam,
    guided: np.ndarray,
    guided_gradcam: np.ndarray,
    caption: str = "",
    colormap: str = DEFAULT_COLORMAP,
    alpha: float = 0.5,
    *,
    contour: bool = False,
    box: bool = False,
    fraction: float = PAPER_THRESHOLD,
    tile_size: int = DEFAULT_TILE_SIZE,
) -> Image.Image:
    """Four tiles: the image, the Grad-CAM overlay, guided backprop and Guided Grad-CAM.

    ``guided`` and ``guided_gradcam`` are (H, W, 3) uint8 pictures at the
    image's size (see :func:`guided_to_rgb`).
    """
    a = check_alpha(alpha)
    apply_colormap(np.zeros((1, 1), np.float32), colormap)
    img, (m,) = _scaled(image, [cam], tile_size)
    pictures = []
    for pic in (guided, guided_gradcam):
        pic = np.asarray(pic)
        if pic.dtype != np.uint8 or pic.ndim != 3 or pic.shape[2] != 3:
            raise OnnxcamError(f"guided pictures must be (H, W, 3) uint8, got {pic.dtype} {pic.shape}")
        if pic.shape[:2] != (img.size[1], img.size[0]):
            pic = np.asarray(Image.fromarray(pic).resize(img.size, Image.Resampling.BILINEAR))
        pictures.append(Image.fromarray(pic))
    tiles = [img, render_overlay(img, m, colormap, a, contour=contour, box=box, fraction=fraction), *pictures]
    return compose(
        tiles,
        ["image", "Grad-CAM overlay", "guided backprop", "Guided Grad-CAM"],
        caption=caption or None,
        colormap=colormap,
        size=font_size_for(max(img.size)),
    )

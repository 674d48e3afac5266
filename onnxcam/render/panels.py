"""Ready-made figures: one class, several classes, several layers.

Every function returns a new RGB ``PIL.Image`` (nothing is written to disk).
Maps are given at the image's resolution, like :func:`render_overlay`; the
image and maps are then scaled together so each tile's long side is at most
``tile_size`` px (small inputs are enlarged to 192 px so text stays legible).
``info["onnxcam_tiles"]`` on the result holds each tile's (x0, y0, x1, y1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from onnxcam.errors import OnnxcamError
from onnxcam.render.colormaps import DEFAULT_COLORMAP, apply_colormap
from onnxcam.render.layout import compose, fit_size, font_size_for
from onnxcam.render.overlay import render_overlay, resize_cam
from onnxcam.render.regions import PAPER_THRESHOLD
from onnxcam.render._validate import as_cam, as_rgb, check_alpha, check_same_size

DEFAULT_TILE_SIZE = 384


def format_caption(
    label: str | None = None, score: float | None = None, layer: str | None = None, class_id: int | None = None
) -> str:
    """``"tabby (281) | score 9.871 | layer /layer4/Relu"`` from whichever parts are given."""
    parts = []
    if label is not None or class_id is not None:
        name = str(label) if label is not None else f"class {class_id}"
        parts.append(f"{name} ({class_id})" if label is not None and class_id is not None else name)
    if score is not None:
        parts.append(f"score {float(score):.4g}")
    if layer:
        parts.append(f"layer {layer}")
    return " | ".join(parts)


def _scaled(image, cams: Sequence, tile_size: int) -> tuple[Image.Image, list[np.ndarray]]:
    """The image as an RGB tile and every map resized to it, after checking sizes."""
    if int(tile_size) < 16:
        raise OnnxcamError(f"tile_size must be at least 16 px, got {tile_size!r}")
    rgb = as_rgb(image)
    maps = [as_cam(c) for c in cams]
    for m in maps:
        check_same_size(rgb, m)
    h, w = rgb.shape[:2]
    tw, th = fit_size(w, h, int(tile_size))
    img = Image.fromarray(rgb)
    if (tw, th) != (w, h):
        resample = Image.Resampling.LANCZOS if tw < w else Image.Resampling.BICUBIC
        img = img.resize((tw, th), resample)
    return img, [resize_cam(m, (tw, th)) for m in maps]


def render_panel(
    image,
    cam,
    caption: str = "",
    colormap: str = DEFAULT_COLORMAP,
    alpha: float = 0.5,
    *,
    contour: bool = False,
    box: bool = False,
    fraction: float = PAPER_THRESHOLD,
    tile_size: int = DEFAULT_TILE_SIZE,
    colorbar: bool = True,
    titles: Sequence[str] = ("image", "heatmap", "overlay"),
) -> Image.Image:
    """Three tiles side by side -- original, heatmap, overlay -- under a caption strip
    (see :func:`format_caption`), with a 0 -> 1 colour bar underneath."""
    a = check_alpha(alpha)
    apply_colormap(np.zeros((1, 1), np.float32), colormap)  # bad name fails before any work
    img, (m,) = _scaled(image, [cam], tile_size)
    tiles = [
        img,
        Image.fromarray(apply_colormap(m, colormap)),
        render_overlay(img, m, colormap, a, contour=contour, box=box, fraction=fraction),
    ]
    shown: list[str | None] = [*titles, None, None, None]
    return compose(
        tiles,
        shown[:3],
        caption=caption or None,
        colormap=colormap if colorbar else None,
        size=font_size_for(max(img.size)),
    )


def _overlay_grid(
    image,
    cams: Sequence,
    labels: Sequence[str],
    caption,
    colormap,
    alpha,
    contour,
    box,
    fraction,
    tile_size,
    colorbar,
    columns,
    show_image,
    image_title,
) -> Image.Image:
    a = check_alpha(alpha)
    apply_colormap(np.zeros((1, 1), np.float32), colormap)
    if len(cams) == 0:
        raise OnnxcamError("no maps to render")
    img, maps = _scaled(image, cams, tile_size)
    tiles = [render_overlay(img, m, colormap, a, contour=contour, box=box, fraction=fraction) for m in maps]
    labels = [str(lab) if lab is not None else None for lab in labels]
    if show_image:
        tiles.insert(0, img)
        labels.insert(0, image_title)
    return compose(
        tiles,
        labels,
        caption=caption or None,
        colormap=colormap if colorbar else None,
        columns=columns,
        size=font_size_for(max(img.size)),
    )


def render_class_panels(
    image,
    cams: Sequence,
    captions: Sequence[str],
    colormap: str = DEFAULT_COLORMAP,
    alpha: float = 0.5,
    *,
    caption: str | None = None,
    contour: bool = False,
    box: bool = False,
    fraction: float = PAPER_THRESHOLD,
    tile_size: int = DEFAULT_TILE_SIZE,
    colorbar: bool = True,
    columns: int | None = None,
    show_image: bool = True,
) -> Image.Image:
    """Several classes of one image side by side: the original, then one overlay per map,
    each labelled with its entry of ``captions`` (e.g. from :func:`format_caption`).

    ``cams`` is a list of (H, W) maps or an (N, H, W) array such as ``res.cam``
    from one image explained for N classes. ``columns`` wraps the tiles into rows.
    """
    cams = list(cams)
    captions = list(captions)
    if len(captions) != len(cams):
        raise OnnxcamError(f"got {len(cams)} maps but {len(captions)} captions; give one caption per map")
    return _overlay_grid(
        image,
        cams,
        captions,
        caption,
        colormap,
        alpha,
        contour,
        box,
        fraction,
        tile_size,
        colorbar,
        columns,
        show_image,
        "image",
    )


def render_layer_panel(
    image,
    cams_by_layer: Sequence[tuple[str, np.ndarray]],
    colormap: str = DEFAULT_COLORMAP,
    alpha: float = 0.5,
    *,
    caption: str | None = None,
    contour: bool = False,
    box: bool = False,
    fraction: float = PAPER_THRESHOLD,
    tile_size: int = DEFAULT_TILE_SIZE,
    colorbar: bool = True,
    columns: int | None = None,
    show_image: bool = True,
) -> Image.Image:
    """One overlay per layer, labelled with the layer name, in the order given (pass
    shallow to deep). ``alpha=1`` shows the bare heatmaps."""
    pairs = list(cams_by_layer)
    for p in pairs:
        if not (isinstance(p, (tuple, list)) and len(p) == 2):
            raise OnnxcamError("cams_by_layer must be a list of (layer_name, cam) pairs")
    return _overlay_grid(
        image,
        [c for _, c in pairs],
        [str(n) for n, _ in pairs],
        caption,
        colormap,
        alpha,
        contour,
        box,
        fraction,
        tile_size,
        colorbar,
        columns,
        show_image,
        "image",
    )

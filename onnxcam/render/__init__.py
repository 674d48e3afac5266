"""Rendering: colormaps, overlays and panels for Grad-CAM maps (Pillow + numpy only).

Everything here is pure: functions take arrays/PIL images and return new ones;
nothing is read from or written to disk. Typical use::

    from onnxcam.render import render_panel, format_caption
    res = ex.explain(x)
    fig = render_panel(photo_resized_to_model_input, res.cam[0],
                       format_caption("tabby", score, ex.layer))
    fig.save("cam.png")
"""

from onnxcam.render.colormaps import COLORMAPS, DEFAULT_COLORMAP, apply_colormap, colormap_lut
from onnxcam.render.guided import guided_to_rgb, guided_to_unit, render_guided_panel, unit_to_rgb
from onnxcam.render.layout import TILE_BOXES_KEY
from onnxcam.render.overlay import render_overlay, resize_cam
from onnxcam.render.panels import format_caption, render_class_panels, render_layer_panel, render_panel
from onnxcam.render.regions import (
    PAPER_THRESHOLD,
    boundary,
    label_components,
    largest_component,
    threshold_box,
    threshold_mask,
)

__all__ = [
    "COLORMAPS",
    "DEFAULT_COLORMAP",
    "apply_colormap",
    "colormap_lut",
    "render_overlay",
    "resize_cam",
    "guided_to_rgb",
    "guided_to_unit",
    "render_guided_panel",
    "unit_to_rgb",
    "render_panel",
    "render_class_panels",
    "render_layer_panel",
    "format_caption",
    "TILE_BOXES_KEY",
    "PAPER_THRESHOLD",
    "threshold_box",
    "threshold_mask",
    "label_components",
    "largest_component",
    "boundary",
]

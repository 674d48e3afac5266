"""One image's explanation as the client sees it: scores, peaks, heatmap and overlay PNGs on the photo's pixels.

The heatmap PNG is 8-bit grayscale at the uploaded image's size, each pixel
``min(floor(cam * 256), 255)``: exactly the colormap index onnxcam's renderer
uses, so a client that colours it with the table from ``GET /info`` and blends
``round((1 - alpha) * photo + alpha * colour)`` redraws the server's overlay
for any colormap and opacity without another request (the web page does).
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from onnxcam.metrics.agreement import peak
from onnxcam.preprocess import Geometry, cam_to_image, point_to_image
from onnxcam.render import render_overlay
from onnxcam.render.colormaps import cam_to_index
from onnxcam.server.explain_batch import ImageExplanation

#: Predictions listed per answer, at least (more when more classes were explained).
PREDICTIONS_SHOWN = 5
_PNG_LEVEL = 1  # fast: an overlay of a large photo is several megapixels


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=_PNG_LEVEL)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def label_of(labels: tuple[str, ...] | None, class_id: int) -> str | None:
    return labels[class_id] if labels and 0 <= class_id < len(labels) else None


def on_photo(cam: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The model-input CAM on the photo's pixels, clipped to [0, 1]."""
    return np.clip(cam_to_image(cam, geometry), 0.0, 1.0)


def overlay_png(photo: Image.Image, cam: np.ndarray, geometry: Geometry, colormap: str, alpha: float) -> bytes:
    return png_bytes(render_overlay(photo, on_photo(cam, geometry), colormap, alpha))


def describe(result: ImageExplanation, photo: Image.Image, geometry: Geometry, labels: tuple[str, ...] | None,
             colormap: str, alpha: float) -> dict:
    """The JSON body of one answer (without the request-level fields)."""
    order = np.argsort(-result.scores, kind="stable")[:max(PREDICTIONS_SHOWN, len(result.cams))]
    predictions = [{"class": int(c), "label": label_of(labels, int(c)), "score": float(result.scores[c])}
                   for c in order]
    explained = []
    for class_id, cam in result.cams:
        mapped = on_photo(cam, geometry)
        py, px = point_to_image(peak(cam), geometry)
        explained.append({
            "class": class_id, "label": label_of(labels, class_id), "score": float(result.scores[class_id]),
            "peak": {"x": int(round(px)), "y": int(round(py))},
            "heatmap_png": _b64(png_bytes(Image.fromarray(cam_to_index(mapped), "L"))),
            "overlay_png": _b64(png_bytes(render_overlay(photo, mapped, colormap, alpha))),
        })
    return {"image": {"width": photo.width, "height": photo.height}, "predictions": predictions,
            "explanations": explained}

"""One image's explanation as the client sees it: scores, peaks, heatmap and overlay PNGs on the photo's pixels.

The heatmap PNG is 8-bit grayscale at the uploaded image's size, each pixel
``min(floor(cam * 256), 255)``: exactly the colormap index onnxcam's renderer
uses, so a client that colours it with the table from ``GET /info`` and blends
``round((1 - alpha) * photo + alpha * colour)`` redraws the server's overlay
for any colormap and opacity without another request (the web page does).

The overlay is drawn in horizontal bands of :data:`BAND_PIXELS` pixels (the
blend is per pixel, so the result is the same): measured on a 25-megapixel
photo, drawing it whole took 4.8 s and 1.2 GB of temporary arrays, which went
on after the request had timed out. Between bands, and between classes,
``check`` is called: a cancellation checkpoint that raises when the request
gave up (:class:`onnxcam.server.workers.CancelToken`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

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
#: Pixels per band of the overlay: small enough to bound memory and the work after a cancel, large enough
#: that numpy's per-call overhead does not show.
BAND_PIXELS = 1 << 20


def _never() -> None:
    """The checkpoint of a caller that cannot give up."""


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
    mapped = cam_to_image(cam, geometry)  # a new float32 array: clipped in place, no second copy
    return np.clip(mapped, 0.0, 1.0, out=mapped)


def overlay(
    photo: Image.Image, mapped: np.ndarray, colormap: str, alpha: float, check: Callable[[], None] = _never
) -> Image.Image:
    """``render_overlay`` of the whole photo, drawn band by band with ``check()`` between bands."""
    rows = max(1, BAND_PIXELS // max(1, photo.width))
    if rows >= photo.height:
        return render_overlay(photo, mapped, colormap, alpha)
    out = Image.new("RGB", photo.size)
    for top in range(0, photo.height, rows):
        check()
        bottom = min(photo.height, top + rows)
        band = render_overlay(photo.crop((0, top, photo.width, bottom)), mapped[top:bottom], colormap, alpha)
        out.paste(band, (0, top))
    return out


def overlay_png(
    photo: Image.Image,
    cam: np.ndarray,
    geometry: Geometry,
    colormap: str,
    alpha: float,
    check: Callable[[], None] = _never,
) -> bytes:
    mapped = on_photo(cam, geometry)
    check()
    return png_bytes(overlay(photo, mapped, colormap, alpha, check))


def describe(
    result: ImageExplanation,
    photo: Image.Image,
    geometry: Geometry,
    labels: tuple[str, ...] | None,
    colormap: str,
    alpha: float,
    check: Callable[[], None] = _never,
) -> dict:
    """The JSON body of one answer (without the request-level fields)."""
    order = np.argsort(-result.scores, kind="stable")[: max(PREDICTIONS_SHOWN, len(result.cams))]
    predictions = [
        {"class": int(c), "label": label_of(labels, int(c)), "score": float(result.scores[c])} for c in order
    ]
    explained = []
    for class_id, cam in result.cams:
        check()
        mapped = on_photo(cam, geometry)
        py, px = point_to_image(peak(cam), geometry)
        heatmap = _b64(png_bytes(Image.fromarray(cam_to_index(mapped), "L")))
        check()
        explained.append(
            {
                "class": class_id,
                "label": label_of(labels, class_id),
                "score": float(result.scores[class_id]),
                "peak": {"x": int(round(px)), "y": int(round(py))},
                "heatmap_png": heatmap,
                "overlay_png": _b64(png_bytes(overlay(photo, mapped, colormap, alpha, check))),
            }
        )
    return {
        "image": {"width": photo.width, "height": photo.height},
        "predictions": predictions,
        "explanations": explained,
    }

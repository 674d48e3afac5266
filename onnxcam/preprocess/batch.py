"""Photos -> one model-ready batch, plus the geometry to map each CAM back."""

from __future__ import annotations

import os
from typing import Iterable, Union

import numpy as np
from PIL import Image

from onnxcam.errors import InputError
from onnxcam.preprocess.geometry import Geometry, apply_geometry, plan_geometry
from onnxcam.preprocess.images import DEFAULT_MAX_PIXELS, load_image, to_rgb_or_l
from onnxcam.preprocess.spec import PreprocessSpec

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def as_image(item: ImageLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A path (read with :func:`load_image`), a PIL image, or a uint8 HxW / HxWx3 / HxWx4 array -> RGB or L."""
    if isinstance(item, (str, os.PathLike)):
        return load_image(item, max_pixels=max_pixels)[0]
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (1, 3, 4)):
            raise InputError(
                f"an image array must be uint8 HxW, HxWx3 or HxWx4 (RGB order), got {item.dtype} {item.shape}"
            )
        if item.ndim == 3 and item.shape[2] == 1:
            item = item[:, :, 0]
        item = Image.fromarray(np.ascontiguousarray(item))
    if not isinstance(item, Image.Image):
        raise InputError(f"expected an image path, PIL image or uint8 array, got {type(item).__name__}")
    return to_rgb_or_l(item)[0]


def normalize(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """An ``H x W`` image -> one ``(C, H, W)`` or ``(H, W, C)`` array in ``spec.dtype``."""
    img = img.convert(spec.image_mode) if img.mode != spec.image_mode else img
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if spec.bgr and a.shape[2] == 3:
        a = a[:, :, ::-1]
    a = (a * spec.scale - np.asarray(spec.mean)) / np.asarray(spec.std)
    if spec.layout == "NCHW":
        a = a.transpose(2, 0, 1)
    if spec.dtype.kind in "iub":
        info = np.iinfo(spec.dtype)
        a = np.clip(np.rint(a), info.min, info.max)
    return np.ascontiguousarray(a.astype(spec.dtype))


def preprocess_image(
    item: ImageLike, spec: PreprocessSpec, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, Geometry]:
    """One photo -> ``(array without batch axis, Geometry)``."""
    img = as_image(item, max_pixels)
    g = plan_geometry((img.height, img.width), spec.size, spec.resize, crop_pct=spec.crop_pct, pad_value=spec.pad_value)
    return normalize(apply_geometry(img, g), spec), g


def preprocess_batch(
    images: Iterable[ImageLike] | ImageLike, spec: PreprocessSpec, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, list[Geometry]]:
    """Photos -> ``(batch in the model's layout and dtype, one Geometry per photo)``.

    ``images``: paths, PIL images or uint8 arrays (a single one is accepted too).
    """
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    arrays, geoms = [], []
    for item in images:
        a, g = preprocess_image(item, spec, max_pixels)
        arrays.append(a)
        geoms.append(g)
    if not arrays:
        raise InputError("no images to preprocess; pass at least one")
    return np.stack(arrays), geoms

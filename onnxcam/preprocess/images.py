"""Read a user's photo safely and bring it to 8-bit RGB or L.

:func:`load_image` is the trust boundary for image files, as
:func:`onnxcam.graph.load.load_model` is for models. It opens the file
read-only (the file is never written), and every failure becomes an
:class:`~onnxcam.errors.ImageError` that names the file:

* a missing file, a folder, a file that is not an image (a text file renamed
  ``.png``), a truncated or corrupt JPEG/PNG;
* a file in a format outside :data:`IMAGE_FORMATS` (PNG, JPEG, BMP, GIF,
  TIFF, WebP, PPM/PGM): Pillow's other plugins, EPS's Ghostscript among them,
  are never run on user files;
* a *decompression bomb*: an image whose declared width x height exceeds
  ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, 64 megapixels). The
  size is checked from the header, before any pixel is decoded. Pillow's own
  ``DecompressionBombError``/``DecompressionBombWarning`` are turned into the
  same error; its global ``Image.MAX_IMAGE_PIXELS`` is set to our cap only for
  the duration of the read (under a lock) and restored afterwards. Pass a
  larger ``max_pixels`` (or ``None`` for no cap) to read bigger photos.

Modes are normalised by :func:`to_rgb_or_l` (also applied by
:func:`onnxcam.preprocess.preprocess_batch` to in-memory images):

* ``RGB`` and ``L`` are kept; ``1`` becomes ``L``;
* transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, palette images with a
  transparent index) is **composited onto a white background** (a transparent
  pixel becomes white, a half-transparent one is blended), giving ``RGB``, or
  ``L`` for ``LA``/``La``;
* ``P`` (palette) becomes ``RGB``;
* ``CMYK``, ``YCbCr``, ``HSV``, ``RGBX`` become ``RGB`` with Pillow's
  conversion (embedded ICC profiles are not applied);
* 16-bit grayscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) and 32-bit
  integer ``I`` are read as 0..65535 and scaled to 0..255 (``v / 257``,
  rounded; ``I`` values are clipped to 0..65535 first); float ``F`` images are
  taken as 0..1 when their maximum is at most 1, else as 0..255 (clipped);
* JPEG/TIFF EXIF orientation is applied (``ImageOps.exif_transpose``), so the
  returned image is upright as a viewer shows it, and the CAM is mapped onto
  that upright image.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from onnxcam.errors import ImageError

#: Default cap on width x height of an image file (64 megapixels).
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
#: Pillow formats decoded, photos' formats only (JPEG includes phones' multi-picture MPO files, PPM also reads
#: PGM and PBM). Other Pillow plugins are never tried: EPS would run Ghostscript, rare decoders are attack surface.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")

_PILLOW_GLOBALS = threading.Lock()
_ORIENTATION = 0x0112


@dataclass
class ImageInfo:
    """What :func:`load_image` found and did."""

    path: str | None
    format: str | None  # Pillow's format name, e.g. "JPEG", "PNG"
    mode: str  # mode as stored in the file, before conversion
    stored_size: tuple[int, int]  # (width, height) as stored, before EXIF rotation
    size: tuple[int, int]  # (width, height) of the returned, upright image
    orientation: int | None = None  # EXIF orientation tag (1..8) if present
    notes: list[str] = field(default_factory=list)  # conversions applied, in order


def load_image(
    path: str | os.PathLike[str] | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str = "upload"
) -> tuple[Image.Image, ImageInfo]:
    """Read ``path`` into an upright 8-bit ``RGB`` or ``L`` image, without modifying the file.

    ``path`` may also be the file's bytes (an HTTP upload): they are decoded in
    memory, so nothing touches the disk, and errors name them ``name``.
    Raises :class:`~onnxcam.errors.ImageError` for anything that is not a
    readable image of at most ``max_pixels`` pixels (``None``: no cap).
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        return read_header(path, max_pixels, name).decode()
    _check_cap(max_pixels)
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image not found: {p}")
    if p.is_dir():
        raise ImageError(f"{p} is a folder, not an image file")
    try:
        fh = open(p, "rb")
    except OSError as e:
        raise ImageError(f"cannot open image {p}: {e.strerror or e}") from None
    with fh:
        return ImageHeader(fh, p, max_pixels, path=str(p)).decode()


def read_header(
    data: bytes | bytearray | memoryview, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str = "upload"
) -> ImageHeader:
    """The header of the image file in ``data`` (an HTTP upload), checked; no pixel is decoded yet.

    Refuses, with :func:`load_image`'s errors, what is empty, no image of an accepted format, or larger than
    ``max_pixels``; :meth:`ImageHeader.decode` then gives what ``load_image(data)`` gives, without reading the
    header again. The server charges its pixel budget from the header before decoding.
    """
    _check_cap(max_pixels)
    if not len(data):
        raise ImageError(f"{name} is empty (0 bytes); send the image file's contents")
    return ImageHeader(io.BytesIO(data), name, max_pixels)


class ImageHeader:
    """An image file opened and checked from its header (format, width x height), its pixels not decoded yet."""

    def __init__(self, fh, where, max_pixels: int | None, path: str | None = None):
        self._where, self._max_pixels, self._path = where, max_pixels, path
        with _pillow_guard(where, max_pixels):
            self._image = Image.open(fh, formats=IMAGE_FORMATS)
            w, h = self._image.size
            if max_pixels is not None and w * h > max_pixels:
                raise _TooLarge(w, h)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as stored, before EXIF rotation."""
        return self._image.size

    @property
    def pixels(self) -> int:
        w, h = self.size
        return w * h

    def decode(self) -> tuple[Image.Image, ImageInfo]:
        """Decode the pixels once (ImageError if they are corrupt or cut short): what :func:`load_image` returns."""
        img = self._image
        fmt, mode, stored = img.format, img.mode, img.size
        with _pillow_guard(self._where, self._max_pixels):
            img.load()
        info = ImageInfo(path=self._path, format=fmt, mode=mode, stored_size=stored, size=stored)
        return _upright(img, info, self._where)


def _check_cap(max_pixels) -> None:
    if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels <= 0):
        raise ImageError(f"max_pixels must be a positive int or None, got {max_pixels!r}")


def _upright(img: Image.Image, info: ImageInfo, p) -> tuple[Image.Image, ImageInfo]:
    """Apply the EXIF orientation and bring the mode to RGB or L."""
    try:
        orientation = img.getexif().get(_ORIENTATION)
    except Exception:  # a broken EXIF block must not make the photo unreadable
        orientation = None
        info.notes.append("EXIF block unreadable; orientation ignored")
    if orientation is not None:
        info.orientation = int(orientation)
        if orientation not in (1,):
            try:
                img = ImageOps.exif_transpose(img)
            except Exception as e:
                raise ImageError(f"cannot apply the EXIF orientation of {p}: {e}") from None
            info.notes.append(f"EXIF orientation {orientation} applied")
    img, notes = to_rgb_or_l(img)
    info.notes.extend(notes)
    info.size = img.size
    return img, info


@contextlib.contextmanager
def _pillow_guard(p, max_pixels: int | None) -> Iterator[None]:
    """Pillow's work on a file (opening it, decoding it) under a temporarily set pixel cap, its errors ImageError."""
    with _PILLOW_GLOBALS, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        old_cap, old_trunc = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS = max_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut file is an error, never half a photo
        try:
            yield
        except (_TooLarge, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            if isinstance(e, _TooLarge):
                size = f"{e.w}x{e.h} ({e.w * e.h} pixels)"
            else:  # Pillow's message reads "Image size (N pixels) exceeds limit ..."
                m = re.search(r"\((\d+) pixels\)", str(e))
                size = f"{m.group(1)} pixels" if m else "its declared size"
            raise ImageError(
                f"image {p} is too large: {size} exceeds the cap of {max_pixels} pixels; "
                f"this protects against decompression bombs. If the file is trusted, raise max_pixels"
            ) from None
        except UnidentifiedImageError:
            raise ImageError(
                f"{p} is not an image onnxcam reads: not a {', '.join(IMAGE_FORMATS[:-1])} or "
                f"{IMAGE_FORMATS[-1]} file; convert it to PNG or JPEG"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as e:
            raise ImageError(f"image {p} is corrupt or truncated: {e}") from None
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_cap, old_trunc


class _TooLarge(Exception):
    def __init__(self, w: int, h: int):
        super().__init__(w, h)
        self.w, self.h = w, h


_TO_RGB = {"CMYK", "YCbCr", "HSV", "RGBX", "LAB"}
_ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN = {"I;16", "I;16L", "I;16B", "I;16N"}


def to_rgb_or_l(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """Convert any Pillow mode to 8-bit ``RGB`` or ``L`` (rules in the module docstring)."""
    mode = img.mode
    if mode in ("RGB", "L"):
        return img, []
    if mode == "1":
        return img.convert("L"), ["1-bit converted to L"]
    if mode == "P":
        if "transparency" in img.info:
            return _composite_white(img.convert("RGBA")), ["palette with transparency composited on white"]
        return img.convert("RGB"), ["palette converted to RGB"]
    if mode in _ALPHA:
        return _composite_white(img), [f"{mode} composited on white"]
    if mode in _SIXTEEN or mode == "I":
        a = np.asarray(img).astype(np.float64)
        a = np.clip(a, 0, 65535) / 257.0
        return Image.fromarray(np.rint(a).astype(np.uint8), "L"), [f"{mode} scaled from 0..65535 to 0..255"]
    if mode == "F":
        a = np.asarray(img).astype(np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(a, 0, 255)
        return Image.fromarray(np.rint(a).astype(np.uint8), "L"), ["float image scaled to 0..255"]
    if mode in _TO_RGB:
        try:
            return img.convert("RGB"), [f"{mode} converted to RGB"]
        except ValueError:
            pass
    raise ImageError(f"images of mode {mode!r} are not supported; convert the file to RGB or grayscale first")


def _composite_white(img: Image.Image) -> Image.Image:
    gray = img.mode in ("LA", "La")
    if img.mode in ("RGBa", "La"):  # premultiplied alpha: undo before compositing
        img = img.convert("RGBA")
    rgba = img.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    out = Image.alpha_composite(bg, rgba).convert("RGB")
    return out.convert("L") if gray else out

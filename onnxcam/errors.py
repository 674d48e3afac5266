"""One exception family for everything a user can get wrong.

Every error that reaches a user is an :class:`OnnxcamError` whose message says
what went wrong *and what to do about it*. Lower layers translate protobuf,
ONNX checker and ONNX Runtime failures into these classes, so callers (the CLI,
the server) can print one line instead of a foreign traceback.
"""

from __future__ import annotations


class OnnxcamError(Exception):
    """Base class of every error onnxcam raises on purpose."""


class ModelLoadError(OnnxcamError):
    """The model file cannot be read, parsed, or trusted (bad external data)."""


class UnsupportedModelError(OnnxcamError):
    """The model is valid ONNX but uses something onnxcam cannot explain."""


class LayerError(OnnxcamError):
    """The requested target layer does not exist or is not a spatial feature map."""


class UnsupportedOpError(UnsupportedModelError):
    """An op on the path from the layer to the score has no gradient rule."""


class InputError(OnnxcamError):
    """An input array has the wrong rank, dtype, size, or is empty."""


class TargetError(OnnxcamError):
    """A requested target (class id or output element) is out of range."""


class RuntimeNotInstalledError(OnnxcamError):
    """No ONNX Runtime package is installed in this environment."""


class RuntimeFailure(OnnxcamError):
    """ONNX Runtime refused to load or run a graph onnxcam built."""


class ImageError(OnnxcamError):
    """An image file cannot be read safely: missing, not an image, truncated, or too large."""


class PreprocessError(OnnxcamError):
    """Preprocessing options, a settings file, or a model's input do not describe a usable image pipeline."""


def first_line(e: BaseException) -> str:
    """The first line of a foreign exception's message (ONNX Runtime's run to dozens), or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

"""Read a user's model safely, without ever writing to it.

The loader is the trust boundary: a file from a user's disk may be anything
(a JPEG renamed to ``.onnx``, a half-copied download, a model whose external
data points at ``/etc/passwd``). Every such case becomes a
:class:`~onnxcam.errors.ModelLoadError` that says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from onnxcam.errors import ModelLoadError, UnsupportedModelError

#: IR versions we accept on input. IR 3 still appears in Caffe2-era graphs
#: (the ``light_*`` models in the onnx wheel); 14 is what onnx>=1.23 writes.
MIN_IR_VERSION = 3
MAX_IR_VERSION = 14
#: Default-domain opsets we accept on input.
MIN_OPSET = 9



def load_model(source: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    """Return a fully materialised copy of ``source`` (path or ``ModelProto``).

    External data files must sit inside the model's folder. A ``ModelProto``
    is deep-copied, so later graph surgery never mutates the caller's object.
    The ONNX checker runs later, on the weight-detached copy
    (:meth:`onnxcam.graph.weights.WeightFolder.check`), which also catches
    files cut at a protobuf field boundary: they parse but are incomplete.
    """
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        if any(uses_external_data(t) for t in _all_tensors(model)):
            raise ModelLoadError(
                "the ModelProto refers to external data files, but was passed without a path; "
                "pass the path of the .onnx file instead so onnxcam can find the data beside it"
            )
    elif isinstance(source, (str, os.PathLike)):
        model = _load_path(Path(source))
    else:
        raise ModelLoadError(
            f"expected a path to an .onnx file or an onnx.ModelProto, got {type(source).__name__}"
        )
    _check_versions(model)
    return model


def _load_path(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; pass the .onnx file inside it")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from None
    if not data:
        raise ModelLoadError(f"{path} is empty; re-export or re-download the model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelLoadError(
            f"{path} is not a readable ONNX model (the protobuf does not parse); "
            "the file may be truncated or not an .onnx file at all: re-export or re-download it"
        ) from None
    if not model.HasField("graph") or not model.graph.node:
        raise ModelLoadError(
            f"{path} holds no ONNX graph (no nodes); it may be truncated or not an .onnx file"
        )
    tensors = [t for t in _all_tensors(model) if uses_external_data(t)]
    if tensors:
        base = path.parent.resolve()
        for t in tensors:
            location = next((e.value for e in t.external_data if e.key == "location"), "")
            target = (base / location).resolve()
            if os.path.isabs(location) or not target.is_relative_to(base):
                raise ModelLoadError(
                    f"{path}: initializer {t.name!r} points at external data {location!r}, "
                    "outside the model's folder; refusing to read it. Keep the data files beside the model"
                )
            if not target.is_file():
                raise ModelLoadError(
                    f"{path}: external data file {location!r} for initializer {t.name!r} is missing; "
                    "copy it next to the model"
                )
        try:
            load_external_data_for_model(model, str(base))
        except (OSError, ValueError, onnx.checker.ValidationError) as e:
            raise ModelLoadError(f"{path}: cannot read external data: {e}") from None
    return model


def _all_tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise UnsupportedModelError("the model imports no default ONNX opset; it cannot be an image model onnxcam knows")


def _check_versions(model: onnx.ModelProto) -> None:
    if not MIN_IR_VERSION <= model.ir_version <= MAX_IR_VERSION:
        raise UnsupportedModelError(
            f"the model has ONNX IR version {model.ir_version}; onnxcam reads IR {MIN_IR_VERSION} to "
            f"{MAX_IR_VERSION}. Re-export it with a current exporter"
        )
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise UnsupportedModelError(
            f"the model uses ONNX opset {opset}; onnxcam needs opset {MIN_OPSET} or later. "
            "Upgrade it with onnx.version_converter.convert_version(model, 17)"
        )

"""Read a user's model safely, without ever writing to it.

The loader is the trust boundary: a file from a user's disk may be anything
(a JPEG renamed to ``.onnx``, a half-copied download, a model whose external
data points at ``/etc/passwd``). Every such case becomes a
:class:`~onnxcam.errors.ModelLoadError` that says what to do. External data
is read only from regular files inside the model's folder
(:func:`onnxcam.trust.confined_file`), for every tensor that can hold it:
initializers, sparse initializers, node attributes and subgraphs alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from onnxcam.errors import ModelLoadError, UnsupportedModelError
from onnxcam.trust import confined_file

#: IR versions we accept on input. IR 3 still appears in Caffe2-era graphs
#: (the ``light_*`` models in the onnx wheel); 14 is what onnx>=1.23 writes.
MIN_IR_VERSION = 3
MAX_IR_VERSION = 14
#: Default-domain opsets we accept on input.
MIN_OPSET = 9


def load_model(source: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    """Return a fully materialised copy of ``source`` (path or ``ModelProto``); see :func:`read_model`."""
    return read_model(source)[0]


def read_model(source: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[Path, ...]]:
    """A fully materialised copy of ``source`` (path or ``ModelProto``), and the files it was read from.

    The files (resolved: the model file, then each external-data file) are what
    onnxcam must never write over; a ``ModelProto`` reads none.

    External data files must sit inside the model's folder. A ``ModelProto``
    is deep-copied, so later graph surgery never mutates the caller's object.
    The ONNX checker runs later, on the weight-detached copy
    (:meth:`onnxcam.graph.weights.WeightFolder.check`), which also catches
    files cut at a protobuf field boundary: they parse but are incomplete.
    """
    files: tuple[Path, ...] = ()
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        if any(uses_external_data(t) for t in _all_tensors(model.graph)):
            raise ModelLoadError(
                "the ModelProto refers to external data files, but was passed without a path; "
                "pass the path of the .onnx file instead so onnxcam can find the data beside it"
            )
    elif isinstance(source, (str, os.PathLike)):
        model, files = _load_path(Path(source))
    else:
        raise ModelLoadError(f"expected a path to an .onnx file or an onnx.ModelProto, got {type(source).__name__}")
    _check_versions(model)
    return model, files


def _load_path(path: Path) -> tuple[onnx.ModelProto, tuple[Path, ...]]:
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
        raise ModelLoadError(f"{path} holds no ONNX graph (no nodes); it may be truncated or not an .onnx file")
    files = [path.resolve()]
    for tensor in _all_tensors(model.graph):
        if uses_external_data(tensor):
            data_file = _load_external(tensor, path)
            if data_file not in files:
                files.append(data_file)
    return model, tuple(files)


def _load_external(tensor: onnx.TensorProto, path: Path) -> Path:
    """Read one tensor's external data into it, from a file confined to the model's folder; return that file."""
    what = f"{path}: external data of {tensor.name!r}"
    try:
        info = ExternalDataInfo(tensor)
    except (ValueError, TypeError) as e:  # offset/length not a whole number, or negative
        raise ModelLoadError(f"{what} is malformed ({e}); re-export the model") from None
    data_file = confined_file(info.location, path.parent, what, ModelLoadError)
    size = data_file.stat().st_size
    offset = info.offset or 0
    length = size - offset if info.length is None else info.length
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelLoadError(
            f"{what} asks for bytes {offset}..{offset + length} of {info.location!r}, which has "
            f"{size}; the data file is truncated or belongs to another model"
        )
    expected = _raw_bytes(tensor)
    if expected is not None and length != expected:  # a hostile length reads a whole file into a small tensor
        raise ModelLoadError(
            f"{what} asks for {length} bytes, but its shape {list(tensor.dims)} holds {expected}; "
            "the model and its data file do not match: re-export the model"
        )
    with open(data_file, "rb") as f:
        f.seek(offset)
        tensor.raw_data = f.read(length)
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]
    return data_file


def _raw_bytes(tensor: onnx.TensorProto) -> int | None:
    """The bytes of ``tensor``'s raw data as its type and shape say, or None where that is not fixed-size."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    count = 1
    for d in tensor.dims:
        count *= d
    if tensor.data_type == onnx.TensorProto.STRING:
        return None
    return (count + 1) // 2 if tensor.data_type in _FOUR_BIT else count * itemsize


#: Types packed two to a byte in raw data.
_FOUR_BIT = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, n)}


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of ``graph`` that can hold weights: initializers, sparse ones, node attributes, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            yield from _attribute_tensors(attr)


def _attribute_tensors(attr: onnx.AttributeProto) -> Iterator[onnx.TensorProto]:
    if attr.HasField("t"):
        yield attr.t
    yield from attr.tensors
    for sparse in [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []:
        yield sparse.values
        yield sparse.indices
    for sparse in attr.sparse_tensors:
        yield sparse.values
        yield sparse.indices
    for sub in [attr.g] if attr.HasField("g") else []:
        yield from _all_tensors(sub)
    for sub in attr.graphs:
        yield from _all_tensors(sub)


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

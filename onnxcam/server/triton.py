"""A Triton Inference Server model repository for the explainer graph: ``model.onnx`` + ``config.pbtxt``.

Layout (Triton's model repository convention)::

    REPO_DIR/<name>/config.pbtxt
    REPO_DIR/<name>/1/model.onnx

The config is derived from the written ONNX file itself, so names, data types
and shapes cannot drift from the model. With a dynamic batch axis on every
input and output, Triton batches requests (``max_batch_size`` > 0 and
``dynamic_batching``); ``dims`` then leave the batch axis out, and the
per-image scalars ``target_class`` and ``target`` (shape ``[batch]`` in the
graph) are declared as ``dims: [ 1 ]`` with ``reshape: { shape: [ ] }``, the
documented way to give Triton a tensor that has nothing but the batch axis:
clients send ``[N, 1]``. A model whose batch size is fixed is declared with
``max_batch_size: 0`` and its full shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import onnx

from onnxcam.errors import OnnxcamError
from onnxcam.explainer import Explainer

DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_QUEUE_DELAY_US = 5000
MODEL_FILE = "model.onnx"
VERSION = "1"

#: ONNX element type -> Triton data type.
TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.STRING: "TYPE_STRING",
}


@dataclass(frozen=True)
class TensorConfig:
    name: str
    data_type: str
    dims: tuple[int, ...]  # -1 for a dynamic axis; without the batch axis when batching
    reshape: tuple[int, ...] | None = None  # the shape the model sees, when it differs from dims


@dataclass(frozen=True)
class TritonConfig:
    name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US

    def to_pbtxt(self) -> str:
        lines = [
            "# Written by `onnxcam export --triton`. Send target_class -1 to explain each image's top-1 class.",
            f"name: {_quote(self.name)}",
            'backend: "onnxruntime"',
            f"max_batch_size: {self.max_batch_size}",
        ]
        for field, tensors in (("input", self.inputs), ("output", self.outputs)):
            blocks = []
            for t in tensors:
                block = [f"    name: {_quote(t.name)}", f"    data_type: {t.data_type}", f"    dims: {_list(t.dims)}"]
                if t.reshape is not None:
                    block.append(f"    reshape: {{ shape: {_list(t.reshape)} }}")
                blocks.append("  {\n" + "\n".join(block) + "\n  }")
            lines.append(f"{field} [\n" + ",\n".join(blocks) + "\n]")
        if self.max_batch_size > 0:
            lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {self.queue_delay_us}\n}}")
        return "\n".join(lines) + "\n"


def triton_config(
    model: onnx.ModelProto,
    name: str,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
) -> TritonConfig:
    """The Triton config of ``model``: batching when every input and output has a dynamic first axis."""
    if max_batch_size < 0:
        raise OnnxcamError(f"the Triton max batch size must be 0 or more, got {max_batch_size}")
    weights = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    tensors = [*inputs, *model.graph.output]
    shapes = {v.name: _shape(v) for v in tensors}
    batching = max_batch_size > 0 and all(len(s) >= 1 and s[0] == -1 for s in shapes.values())

    def entry(v: onnx.ValueInfoProto) -> TensorConfig:
        elem = v.type.tensor_type.elem_type
        if elem not in TRITON_TYPES:
            raise OnnxcamError(
                f"tensor {v.name!r} has ONNX type {onnx.TensorProto.DataType.Name(elem)}, "
                "which Triton has no data type for"
            )
        shape = shapes[v.name]
        if not batching:
            return TensorConfig(v.name, TRITON_TYPES[elem], shape)
        if len(shape) == 1:  # batch axis only: Triton needs at least one dim
            return TensorConfig(v.name, TRITON_TYPES[elem], (1,), reshape=())
        return TensorConfig(v.name, TRITON_TYPES[elem], shape[1:])

    return TritonConfig(
        name,
        max_batch_size if batching else 0,
        tuple(entry(v) for v in inputs),
        tuple(entry(v) for v in model.graph.output),
        queue_delay_us,
    )


def write_triton_repository(
    explainer: Explainer,
    repo_dir: str | Path,
    name: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    portable: bool = False,
) -> Path:
    """Write ``repo_dir/<name>/1/model.onnx`` and ``repo_dir/<name>/config.pbtxt``; returns the model folder.

    ``portable`` writes the model with ops every execution provider takes (see :meth:`Explainer.export`).
    """
    name = name or _default_name(explainer)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise OnnxcamError(f"Triton model name {name!r} must be letters, digits, '_', '.' or '-' (it is a folder name)")
    folder = Path(repo_dir) / name
    try:
        (folder / VERSION).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OnnxcamError(f"cannot create {folder / VERSION}: {e.strerror or e}") from None
    model_path = folder / VERSION / MODEL_FILE
    explainer.export(model_path, portable=portable)
    written = onnx.load(str(model_path), load_external_data=False)
    config = triton_config(written, name, max_batch_size)
    try:
        (folder / "config.pbtxt").write_text(config.to_pbtxt())
    except OSError as e:
        raise OnnxcamError(f"cannot write {folder / 'config.pbtxt'}: {e.strerror or e}") from None
    return folder


def _default_name(explainer: Explainer) -> str:
    stem = explainer.source.stem if explainer.source is not None else "model"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + "_explainer"


def _shape(v: onnx.ValueInfoProto) -> tuple[int, ...]:
    t = v.type.tensor_type
    if not t.HasField("shape"):
        raise OnnxcamError(
            f"tensor {v.name!r} has no known rank; Triton needs its dims. Re-export the model with "
            "shapes, or run onnx.shape_inference on it first"
        )
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _list(values: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]" if values else "[ ]"

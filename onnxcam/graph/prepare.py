"""Bring a loaded model into the one form the rest of onnxcam works on.

Gradient rules emit ops whose modern forms we rely on (``ScatterElements``
with ``reduction="add"`` needs opset 16, ``LayerNormalization`` 17), and an
ONNX graph has exactly one version per domain, so old models are upgraded once
here instead of every rule knowing every opset. Shape inference runs once too,
so rules and the layer picker can read static shapes.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import shape_inference, version_converter

from onnxcam.errors import OnnxcamError, UnsupportedModelError, first_line
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.layers import image_axes, image_input
from onnxcam.graph.load import default_opset, read_model
from onnxcam.graph.shapes import fill_unknown_shapes
from onnxcam.graph.weights import WeightFolder

#: Opset every explainer graph is built at (or the model's own, if newer).
WORKING_OPSET = 17
#: onnxruntime 1.31 refuses IR > 13; onnx >= 1.23 writes 14 by default.
MAX_EMITTED_IR = 13
#: Smallest IR version whose spec covers each opset we may emit.
_IR_FOR_OPSET = {17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11, 24: 11, 25: 12, 26: 13}


def emitted_ir_version(opset: int, current: int) -> int:
    """IR version for an emitted model: new enough for ``opset``, old enough for onnxruntime."""
    needed = _IR_FOR_OPSET.get(opset, MAX_EMITTED_IR)
    return min(max(current, needed, 4), MAX_EMITTED_IR)


def prepare_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Upgrade to :data:`WORKING_OPSET`, drop initializers from the inputs, infer shapes.

    The caller's proto is not changed. Initializers listed as graph inputs
    (IR 3, or ``keep_initializers_as_inputs=True`` exports) would stop
    onnxruntime from constant-folding them and would look like extra inputs a
    user must feed, so they are removed from the input list.
    """
    opset = default_opset(model)
    if opset < WORKING_OPSET:
        try:
            model = version_converter.convert_version(model, WORKING_OPSET)
        except Exception as e:  # the converter raises bare RuntimeError/ValueError
            raise UnsupportedModelError(
                f"cannot upgrade the model from opset {opset} to {WORKING_OPSET} ({first_line(e)}); "
                f"re-export it at opset {WORKING_OPSET} or later"
            ) from None
    else:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names]
    del graph.input[:]
    graph.input.extend(real_inputs)
    model.ir_version = emitted_ir_version(max(opset, WORKING_OPSET), model.ir_version)
    try:
        model = shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:  # inference is a help, not a requirement
        raise UnsupportedModelError(f"ONNX shape inference failed on the model: {first_line(e)}") from None
    return model


def prepared_index(
    source: str | os.PathLike[str] | onnx.ModelProto, input_size: tuple[int, int] | None = None
) -> tuple[GraphIndex, tuple[Path, ...]]:
    """The model at ``source``, its large weights moved to a private folder, prepared and indexed.

    Also returns the files it was read from (the model, its external data):
    what onnxcam must never write over. The caller's ``ModelProto`` is not changed.
    ``input_size``: (height, width) the image input is pinned to where its
    size is dynamic (see :func:`pin_image_size`).
    """
    loaded, files = read_model(source)
    weights = WeightFolder()
    weights.detach(loaded)
    weights.check(loaded, "model.onnx")
    model = prepare_model(loaded)
    if input_size is not None:
        model = pin_image_size(model, input_size)
    return GraphIndex(fill_unknown_shapes(model, weights), weights), files


def pin_image_size(model: onnx.ModelProto, size: tuple[int, int]) -> onnx.ModelProto:
    """``model`` with its image input's dynamic height and width set to ``size``; the batch stays dynamic.

    A transformer exported with a dynamic image size computes its token count
    from it, so nothing about its tokens is known until the size is: pinned,
    shape inference and the probe (:mod:`onnxcam.graph.shapes`) size every
    tensor. The explainer graph then takes images of that size only. A static
    size that differs from ``size`` is an error.
    """
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(type(d) is int and d > 0 for d in size)):
        raise OnnxcamError(f"input_size must be two positive ints (height, width); got {size!r}")
    index = GraphIndex(model)
    image = image_input(index)
    height_axis, width_axis = image_axes(index, image)
    dims = index.known_type(image).dims
    current = (dims[height_axis], dims[width_axis])
    if all(isinstance(d, int) and d > 0 for d in current):
        if tuple(current) != tuple(size):
            raise OnnxcamError(
                f"the model's image input {image!r} is fixed at {current[0]}x{current[1]}; "
                f"input_size={size[0]}x{size[1]} does not match it"
            )
        return model
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    value = next(v for v in pinned.graph.input if v.name == image)
    for axis, length in zip((height_axis, width_axis), size):
        value.type.tensor_type.shape.dim[axis].dim_value = int(length)
    del pinned.graph.value_info[:]  # inferred for the dynamic size: infer them again
    try:
        return shape_inference.infer_shapes(pinned, data_prop=True)
    except Exception as e:  # inference raises bare exceptions
        raise UnsupportedModelError(f"ONNX shape inference failed at input size {size}: {first_line(e)}") from None

"""The shape probe (onnxcam/graph/shapes.py): what it fills in, and what it must leave unknown."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcam.graph.prepare import prepared_index


def _value_sized_model() -> onnx.ModelProto:
    """y = Range(0, max(x)) per image: its length follows the pixel values, not the image size."""
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=0),
        helper.make_node("Abs", ["peak"], ["magnitude"]),
        helper.make_node("Add", ["magnitude", "three"], ["limit"]),
        helper.make_node("Cast", ["limit"], ["count"], to=TensorProto.INT64),
        helper.make_node("Range", ["zero", "count", "one"], ["r"]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(3.0, np.float32), "three"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"),
    ]
    graph = helper.make_graph(
        nodes,
        "value_sized",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [
            helper.make_tensor_value_info("r", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("flat", TensorProto.FLOAT, [None, None]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_size_that_follows_the_pixel_values_stays_unknown():
    index, _ = prepared_index(_value_sized_model())
    # on zero images Range has length 3 in both probe runs; a random image changes it, so it is not static
    assert index.shape("r") == (None,)
    # a size that follows only the image size is filled in, and the batch axis is the input's
    assert index.shape("flat") == ("N", 48)

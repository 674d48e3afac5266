"""Candidate layers, their layouts, and the automatic choice, on graphs built to trap naive rules."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnxcam
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.layers import candidate_layers
from onnxcam.graph.prepare import prepare_model
from tests.tiny_models import tiny_cnn

rng = np.random.default_rng(0)


def _w(name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)


def _model(nodes, inits, x_shape, out_name, out_shape):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_auto_picks_last_map_of_the_tiny_cnn():
    ex = onnxcam.Explainer(tiny_cnn())
    assert ex.layer == "features"
    assert "last spatial feature map" in ex.layer_reason and "every path" in ex.layer_reason
    assert [c.name for c in ex.candidates] == ["c1", "r1", "c2", "features"]
    assert all(c.channel_axis == 1 for c in ex.candidates)


def test_conv_after_global_pooling_is_not_picked():
    """PP-LCNet / mini-Xception heads: the last Conv runs on a 1x1 map."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["fmap"]),
        helper.make_node("GlobalAveragePool", ["fmap"], ["gap"]),
        helper.make_node("Conv", ["gap", "w2"], ["head"]),  # 1x1 conv on a 1x1 map
        helper.make_node("Flatten", ["head"], ["logits"]),
    ]
    m = _model(nodes, [_w("w1", 4, 3, 3, 3), _w("w2", 6, 4, 1, 1)], ["N", 3, 12, 12], "logits", ["N", 6])
    ex = onnxcam.Explainer(m)
    assert ex.layer == "fmap"
    assert "head" not in [c.name for c in ex.candidates]


def test_a_map_on_every_path_beats_a_later_side_branch():
    """The last 4-D tensor is a side branch; the score also reaches the input around it."""
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "wb"], ["b"], kernel_shape=[1, 1]),
        helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "ws"], ["side_conv"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["side_conv"], ["side"]),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap_cat"]),
        helper.make_node("GlobalAveragePool", ["side"], ["gap_side"]),
        helper.make_node("Add", ["gap_cat", "gap_side"], ["gsum"]),
        helper.make_node("Flatten", ["gsum"], ["logits"]),
    ]
    inits = [_w("wa", 3, 3, 3, 3), _w("wb", 2, 3, 1, 1), _w("ws", 5, 5, 1, 1)]
    m = _model(nodes, inits, ["N", 3, 10, 10], "logits", ["N", 5])
    ex = onnxcam.Explainer(m)
    assert ex.candidates[-1].name == "side"
    assert ex.layer == "cat", ex.layer_reason
    assert "every path" in ex.layer_reason


def test_channels_last_maps_from_tf2onnx_style_transposes():
    """x is NHWC; a Transpose feeds the Conv; the map is transposed back to NHWC before ReduceMean."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x_nchw", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["c1"], ["c1_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["c1_nhwc"], ["fmap_nhwc"]),
        helper.make_node("ReduceMean", ["fmap_nhwc"], ["pooled"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["pooled", "wf"], ["logits"]),
    ]
    m = _model(nodes, [_w("w1", 6, 3, 3, 3), _w("wf", 6, 4)], ["N", 9, 11, 3], "logits", ["N", 4])
    m.opset_import[0].version = 17
    index = GraphIndex(prepare_model(m))
    axes = {c.name: c.channel_axis for c in candidate_layers(index)}
    assert axes == {"c1": 1, "c1_nhwc": 3, "fmap_nhwc": 3}
    ex = onnxcam.Explainer(m)
    assert ex.layer == "fmap_nhwc"
    res = ex.explain(rng.standard_normal((2, 9, 11, 3)).astype(np.float32))
    assert res.cam.shape == (2, 9, 11) and res.cam_lowres.shape == (2, 9, 11)


def test_single_channel_input_swapped_by_reshape():
    """tf2onnx turns NHWC->NCHW into a Reshape when there is one channel."""
    shape = numpy_helper.from_array(np.array([-1, 1, 8, 8], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["x_nchw"]),
        helper.make_node("Conv", ["x_nchw", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["fmap"]),
        helper.make_node("GlobalAveragePool", ["fmap"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["logits"]),
    ]
    m = _model(nodes, [shape, _w("w1", 3, 1, 3, 3)], ["N", 8, 8, 1], "logits", ["N", 3])
    index = GraphIndex(prepare_model(m))
    from onnxcam.graph.layers import input_spatial_axes, infer_channel_axes

    assert infer_channel_axes(index)["x"] == 3
    assert input_spatial_axes(index, "x") == (1, 2)
    res = onnxcam.Explainer(m).explain(np.ones((1, 8, 8, 1), np.float32))
    assert res.cam.shape == (1, 8, 8)


def test_explicit_layer_by_node_name_and_list():
    ex = onnxcam.Explainer(tiny_cnn(), layer="conv2")
    assert ex.layer == "c2"
    ex2 = onnxcam.Explainer(tiny_cnn(), layer=["r1", "features"])
    assert ex2.layer == ["r1", "features"]
    res = ex2.explain(np.ones((1, 3, 16, 16), np.float32))
    assert isinstance(res.cam_lowres, list) and [c.shape for c in res.cam_lowres] == [(1, 16, 16), (1, 8, 8)]


def test_channel_shuffle_output_is_a_candidate():
    """ShuffleNet: Reshape -> Transpose -> Reshape, then Split into two Conv branches."""
    s5 = numpy_helper.from_array(np.array([0, 2, 2, 6, 6], np.int64), "s5")
    s4 = numpy_helper.from_array(np.array([0, 4, 6, 6], np.int64), "s4")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c1", "s5"], ["grouped"]),
        helper.make_node("Transpose", ["grouped"], ["swapped"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["swapped", "s4"], ["shuffled"]),
        helper.make_node("Split", ["shuffled", "halves"], ["left", "right"], axis=1),
        helper.make_node("Conv", ["right", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["left", "c2"], ["joined"], axis=1),
        helper.make_node("GlobalAveragePool", ["joined"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["logits"]),
    ]
    halves = numpy_helper.from_array(np.array([2, 2], np.int64), "halves")
    inits = [s5, s4, halves, _w("w1", 4, 3, 3, 3), _w("w2", 2, 2, 3, 3)]
    m = _model(nodes, inits, ["N", 3, 6, 6], "logits", ["N", 4])
    names = [c.name for c in onnxcam.Explainer(m).candidates]
    assert {"shuffled", "left", "right", "joined"} <= set(names)


def test_a_layernorm_over_the_width_of_an_nchw_map_stays_nchw():
    """A LayerNorm over the last axis is a channels-last hint (Swin, ConvNeXt) only where no Conv says otherwise."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("LayerNormalization", ["c1", "ln_scale", "ln_bias"], ["ln"], axis=-1),
        helper.make_node("Conv", ["ln", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["c2"], ["score"], axes=[1, 2, 3], keepdims=0),
    ]
    inits = [_w("w1", 8, 3, 3, 3), _w("w2", 4, 8, 3, 3), _w("ln_scale", 16), _w("ln_bias", 16)]
    model = _model(nodes, inits, ["N", 3, 8, 16], "score", ["N"])
    axes = {c.name: c.channel_axis for c in candidate_layers(GraphIndex(prepare_model(model)))}
    assert axes == {"c1": 1, "ln": 1, "c2": 1}

"""The engine itself: fan-in, rule overrides, missing rules, and that the rule checks can fail."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper

import onnxcam
from onnxcam.autodiff import active_nodes
from onnxcam.errors import UnsupportedOpError
from tests.vjp_check import check_vjp

rng = np.random.default_rng(0)


def test_a_wrong_rule_is_caught_by_the_rule_checks():
    """Guard against a harness that cannot fail: an identity 'Relu' rule must be rejected."""
    x = rng.standard_normal((2, 3, 4))

    def wrong_relu(ctx):
        return [ctx.grad_out]

    with pytest.raises(AssertionError, match="finite differences"):
        check_vjp("Relu", {"x": x}, ["x"], rules={"Relu": wrong_relu}, ort=False)
    with pytest.raises(AssertionError, match="torch autograd"):
        check_vjp(
            "Relu", {"x": x}, ["x"], rules={"Relu": wrong_relu}, fd=False, ort=False, torch_fn=lambda x: torch.relu(x)
        )


def _model(nodes, inits, x_shape, out, out_shape):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


def test_fan_in_gradients_are_summed():
    """y = relu(a) * a + a: the gradient of `a` arrives along three edges."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Mul", ["r", "x"], ["m"]),
        helper.make_node("Add", ["m", "x"], ["y"]),
    ]
    x = rng.standard_normal((2, 3))
    from tests.vjp_check import gradient_model, ort_session

    m = _model(nodes, [], [2, 3], "y", [2, 3])
    gm, seeds, grads = gradient_model(m, ["x"], ["y"])
    seed = rng.standard_normal((2, 3)).astype(np.float32)
    g = ort_session(gm).run(None, {"x": x.astype(np.float32), seeds["y"]: seed})[1]
    expected = seed * (2 * np.maximum(x, 0) + 1)
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)


def test_only_the_tail_is_differentiated():
    ex = onnxcam.Explainer(_tiny_with_unknown_head())
    index = ex.index
    names = [n.op_type for n in active_nodes(index, ["features"], ["logits"])]
    assert names == ["GlobalAveragePool", "Flatten", "Gemm"]  # nothing upstream of the layer


def _tiny_with_unknown_head(op="Gemm"):
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["features"], name="relu"),
        helper.make_node("GlobalAveragePool", ["features"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
    ]
    if op == "Gemm":
        nodes.append(helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="fc"))
    else:
        nodes.append(helper.make_node("MatMul", ["flat", "fc"], ["mm"], name="fc"))
        nodes.append(helper.make_node(op, ["mm"], ["logits"], name="mystery"))
    return _model(nodes, [w, fc], ["N", 3, 8, 8], "logits", ["N", 5])


def test_missing_rule_names_op_node_and_path():
    with pytest.raises(UnsupportedOpError) as info:
        onnxcam.Explainer(_tiny_with_unknown_head("Hardmax"))
    msg = str(info.value)
    assert "Hardmax" in msg and "'mystery'" in msg
    assert "GlobalAveragePool -> Flatten -> MatMul -> Hardmax" in msg
    assert "choose a layer after" in msg

"""Band cotangents (onnxcam.autodiff.bands): a class token's gradient carried on its rows only, checked to torch.

A transformer-like block in plain ONNX: a token mix (attention-like, every token
reads every other), a residual, LayerNorm, a token-wise MLP with a bias, a second
residual, then one token read out by a Gather or a Slice, as exporters write
``x[:, 0]``. The engine's gradient with respect to the block's input must equal
torch float64 autograd of the same function, and the MLP's backward must run on
the read token's row alone.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")

from tests.vjp_check import gradient_model, ort_session  # noqa: E402

T, C, H, K = 5, 4, 6, 3
rng = np.random.default_rng(7)
WEIGHTS = {
    "ln_scale": 1 + 0.1 * rng.standard_normal(C),
    "ln_bias": 0.1 * rng.standard_normal(C),
    "w1": rng.standard_normal((C, H)) * 0.5,
    "b1": rng.standard_normal(H) * 0.1,
    "w2": rng.standard_normal((H, C)) * 0.5,
    "w_head": rng.standard_normal((C, K)) * 0.5,
}


def _block(read_out: str, token: int) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in WEIGHTS.items()]
    inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("tok", token), ("axis1", [1]))]
    inits += [numpy_helper.from_array(np.array([token], np.int64), "start")]
    inits += [numpy_helper.from_array(np.array([token + 1], np.int64), "end")]
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "x_t"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "x"], ["mixed"]),
        helper.make_node("Add", ["x", "mixed"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "ln_scale", "ln_bias"], ["ln"], axis=-1),
        helper.make_node("MatMul", ["ln", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Tanh", ["hb"], ["act"]),
        helper.make_node("MatMul", ["act", "w2"], ["mlp"]),
        helper.make_node("Add", ["r", "mlp"], ["y"]),
    ]
    if read_out == "gather":
        nodes.append(helper.make_node("Gather", ["y", "tok"], ["cls"], axis=1))
    else:  # Hugging Face style: y[:, 0:1] then a squeeze
        nodes.append(helper.make_node("Slice", ["y", "start", "end", "axis1"], ["cls_1"]))
        nodes.append(helper.make_node("Squeeze", ["cls_1", "axis1"], ["cls"]))
    nodes.append(helper.make_node("MatMul", ["cls", "w_head"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, C])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", K])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _torch_gradient(x: np.ndarray, seed: np.ndarray, token: int) -> np.ndarray:
    w = {k: torch.tensor(v, dtype=torch.float64) for k, v in WEIGHTS.items()}
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    probs = torch.softmax(xt @ xt.transpose(1, 2), dim=-1)
    r = xt + probs @ xt
    ln = torch.nn.functional.layer_norm(r, (C,), w["ln_scale"], w["ln_bias"])
    y = r + torch.tanh(ln @ w["w1"] + w["b1"]) @ w["w2"]
    logits = y[:, token] @ w["w_head"]
    (logits * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    return xt.grad.numpy()


@pytest.mark.parametrize("read_out, token", [("gather", 0), ("gather", -1), ("slice", 2)])
def test_a_read_out_tokens_gradient_equals_torch_and_the_mlp_runs_on_its_row(read_out, token):
    model = _block(read_out, token)
    gm, seeds, (grad,) = gradient_model(model, ["x"], ["logits"])
    x = rng.standard_normal((2, T, C)).astype(np.float32)
    seed = rng.standard_normal((2, K)).astype(np.float32)
    got = ort_session(gm).run([grad], {"x": x, seeds["logits"]: seed})[0]
    want = _torch_gradient(x, seed, token)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    # the MLP's backward multiplies the read token's row by the weights, not all T rows
    emitted = gm.graph.node[len(model.graph.node) :]
    assert any(n.op_type == "Slice" and "rows" in n.output[0] for n in emitted), "no band: written back into zeros"
    assert not any(n.op_type.startswith("Scatter") for n in emitted)
    shapes = {v.name: v.type.tensor_type.shape for v in onnx.shape_inference.infer_shapes(gm).graph.value_info}
    weights_t = {n.output[0] for n in emitted if n.op_type == "Transpose" and n.input[0] in ("w1", "w2")}
    by_weights = [n.output[0] for n in emitted if n.op_type == "MatMul" and weights_t & set(n.input)]
    assert len(by_weights) == 2 and all(shapes[name].dim[1].dim_value == 1 for name in by_weights)


def _mean_then_read_out(order: str) -> onnx.ModelProto:
    """a = Relu(x); z = mean of a over the tokens; a token read out before or after adding z to every token.

    The read token's band and the mean's gradient share a name in the rules (an Add hands both inputs its g, a
    broadcast operand of one row gets g unchanged): the band must belong to the gradient of one tensor only.
    """
    ints = (("start", [1]), ("end", [2]), ("axis1", [1]), ("tok", 1))
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints]
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("ReduceMean", ["a"], ["z"], axes=[1], keepdims=1),
    ]
    if order == "slice, then add":
        nodes += [
            helper.make_node("Slice", ["a", "start", "end", "axis1"], ["y"]),
            helper.make_node("Add", ["y", "z"], ["o"]),
            helper.make_node("Flatten", ["o"], ["logits"]),
        ]
    else:
        read = (
            helper.make_node("Gather", ["o", "tok"], ["logits"], axis=1)
            if order == "add, then gather"
            else helper.make_node("Slice", ["o", "start", "end", "axis1"], ["o1"])
        )
        nodes += [helper.make_node("Add", ["a", "z"], ["o"]), read]
        if order == "add, then slice":
            nodes.append(helper.make_node("Flatten", ["o1"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "mean_read_out",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, C])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", C])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("order", ["slice, then add", "add, then gather", "add, then slice"])
def test_a_band_is_the_gradient_of_one_tensor_not_of_every_tensor_sharing_its_name(order):
    gm, seeds, (grad,) = gradient_model(_mean_then_read_out(order), ["x"], ["logits"])
    x = rng.standard_normal((2, T, C)).astype(np.float32)
    seed = rng.standard_normal((2, C)).astype(np.float32)
    got = ort_session(gm).run([grad], {"x": x, seeds["logits"]: seed})[0]
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    a = torch.relu(xt)
    ((a[:, 1] + a.mean(1)) * torch.tensor(seed, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-5, atol=1e-6)

"""Small hand-built ONNX models for tests that need a model but not a framework."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_cnn(classes: int = 5, size: int = 16, batch="N", opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """x (N,3,size,size) -> Conv -> Relu -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax."""
    rng = np.random.default_rng(seed)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)

    inits = [
        init("w1", 8, 3, 3, 3),
        init("b1", 8),
        init("w2", 8, 8, 3, 3),
        init("b2", 8),
        init("wf", classes, 8),
        init("bf", classes),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["features"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tiny_vit(
    classes: int = 5, grid: tuple[int, int] = (2, 3), channels: int = 8, seed: int = 0, dynamic_size: bool = False
) -> onnx.ModelProto:
    """A class-token transformer in a few nodes, with run-time shapes like exporters write them.

    x (N, 3, 4h, 4w) -> Conv (patch embedding, stride 4) -> Reshape (N, C, h*w) with its shape computed by
    ``Shape -> Slice -> Concat`` -> Transpose -> Concat with a class token -> ``embedded`` (N, 1 + h*w, C) ->
    LayerNormalization -> ``normed`` -> one attention-like token mix ``softmax(T T^T) T`` -> ``mixed`` -> a
    token-wise MatMul + Relu -> ``tokens_out``
    -> Gather token 0 -> Gemm -> logits. The patch tokens of ``embedded`` and ``normed`` reach the score; those
    of ``mixed`` and later do not (only the class token is read after the mix). ``dynamic_size``: the input's
    height and width are symbols, as exporters write them with dynamic axes.
    """
    rng = np.random.default_rng(seed)
    h, w = grid
    c = channels

    def init(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    inits = [
        init("w_patch", rng.standard_normal((c, 3, 4, 4)).astype(np.float32) * 0.3),
        init("cls", rng.standard_normal((1, 1, c)).astype(np.float32)),
        init("w_mlp", rng.standard_normal((c, c)).astype(np.float32) * 0.5),
        init("ln_scale", 1 + 0.1 * rng.standard_normal(c).astype(np.float32)),
        init("ln_bias", 0.1 * rng.standard_normal(c).astype(np.float32)),
        init("w_head", rng.standard_normal((classes, c)).astype(np.float32) * 0.5),
        init("zero", np.array([0], np.int64)),
        init("one", np.array([1], np.int64)),
        init("minus_one", np.array([-1], np.int64)),
        init("c_dim", np.array([c], np.int64)),
        init("token0", np.array(0, np.int64)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_patch"], ["patches"], name="patch_embed", strides=[4, 4]),
        helper.make_node("Shape", ["patches"], ["patch_shape"]),
        helper.make_node("Slice", ["patch_shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "c_dim", "minus_one"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["patches", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Transpose", ["flat"], ["patch_tokens"], name="to_tokens", perm=[0, 2, 1]),
        helper.make_node("Concat", ["batch", "one", "c_dim"], ["cls_shape"], axis=0),
        helper.make_node("Expand", ["cls", "cls_shape"], ["cls_tokens"]),
        helper.make_node("Concat", ["cls_tokens", "patch_tokens"], ["embedded"], name="add_cls", axis=1),
        helper.make_node("LayerNormalization", ["embedded", "ln_scale", "ln_bias"], ["normed"], name="norm", axis=-1),
        helper.make_node("Transpose", ["normed"], ["normed_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["normed", "normed_t"], ["logits_tt"], name="scores"),
        helper.make_node("Softmax", ["logits_tt"], ["attention"], name="softmax_attention", axis=-1),
        helper.make_node("MatMul", ["attention", "normed"], ["mixed"], name="mix"),
        helper.make_node("MatMul", ["mixed", "w_mlp"], ["mlp"], name="mlp"),
        helper.make_node("Relu", ["mlp"], ["tokens_out"], name="mlp_relu"),
        helper.make_node("Gather", ["tokens_out", "token0"], ["cls_out"], name="take_cls", axis=1),
        helper.make_node("Gemm", ["cls_out", "w_head"], ["logits"], name="head", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_vit",
        [
            helper.make_tensor_value_info(
                "x", TensorProto.FLOAT, ["N", 3, *(("H", "W") if dynamic_size else (4 * h, 4 * w))]
            )
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model

"""The gradient-oracle tools: finite differences on the tail, and onnxruntime-training's autodiff.

Each tool must pass on correct gradients and fail when a VJP rule is made
wrong, so that a passing run means something.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcam import demo
from onnxcam.autodiff.registry import VJP_RULES
from tests.gradcheck import one_sided_derivatives, subgradient_errors
from onnxcam.graph.tail import tail_model
from tests.tiny_models import tiny_cnn

TOOLS = Path(__file__).resolve().parents[1] / "tools"
DEMO = str(demo.DEMO_MODEL)
CROSS = str(demo.DEMO_IMAGES[1])


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def identity_relu(ctx):
    """A wrong Relu rule: passes every gradient through, as if the Relu were not there."""
    return [ctx.grad_out]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("oracle_tools") / "tiny_cnn.onnx"
    onnx.save(tiny_cnn(), str(path))
    return str(path)


def test_fd_tool_passes_on_the_demo_model_from_the_command_line():
    done = subprocess.run(
        [
            sys.executable,
            str(TOOLS / "fd_tail_oracle.py"),
            DEMO,
            "--image",
            CROSS,
            "--layer",
            "/0/0.6/MaxPool_output_0",
            "--directions",
            "8",
            "--elements",
            "16",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["max_error"] < 1e-5
    assert report["directions"]["count"] == 8 and report["elements"]["count"] == 16
    assert report["elements"]["nonzero_gradient"] > 0


@pytest.mark.parametrize("layer", ["features", "r1"])
def test_fd_tool_passes_on_tiny_cnn_and_catches_a_wrong_rule(tiny_path, layer, monkeypatch):
    fd = load_tool("fd_tail_oracle")
    good = fd.check(tiny_path, layer=layer, directions=8, elements=16)
    assert good["max_error"] < 1e-5
    monkeypatch.setitem(VJP_RULES, "Relu", identity_relu)
    bad = fd.check(tiny_path, layer=layer, directions=8, elements=16)
    if layer == "r1":  # a Relu lies between r1 and the score
        assert bad["max_error"] > 1e-2
    else:  # nothing between 'features' and the score uses the rule
        assert bad["max_error"] == pytest.approx(good["max_error"])


def residual_cnn() -> onnx.ModelProto:
    """x -> conv1 -> relu -> r1; conv2(r1) -> Relu -> inner; r1 + inner -> pool -> Gemm: a skip passes 'inner' by."""
    rng = np.random.default_rng(1)
    h = onnx.helper

    def init(name, *shape):
        return onnx.numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c2"], ["inner"]),
        h.make_node("Add", ["r1", "inner"], ["sum"]),
        h.make_node("GlobalAveragePool", ["sum"], ["pooled"]),
        h.make_node("Flatten", ["pooled"], ["flat"]),
        h.make_node("Gemm", ["flat", "wf"], ["logits"], transB=1),
    ]
    graph = h.make_graph(
        nodes,
        "residual",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 12, 12])],
        [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 4])],
        [init("w1", 6, 3, 3, 3), init("w2", 6, 6, 3, 3), init("wf", 4, 6)],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_fd_tool_feeds_the_model_input_to_a_tail_that_skips_the_layer(tmp_path):
    path = tmp_path / "residual.onnx"
    onnx.save(residual_cnn(), str(path))
    inferred = onnx.shape_inference.infer_shapes(residual_cnn())
    assert [i.name for i in tail_model(inferred, "inner", "logits").graph.input] == ["inner", "x"]
    report = load_tool("fd_tail_oracle").check(str(path), layer="inner", directions=8, elements=16)
    assert report["max_error"] < 1e-5 and report["elements"]["nonzero_gradient"] > 0


def test_kinks_are_judged_by_the_one_sided_differences():
    """At a ReLU input of exactly 0 either one-sided derivative (or anything between) is a valid subgradient."""
    x = onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, 3])
    y = onnx.helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["a"], ["s"])], "relu", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    a = np.array([[0.0, 2.0, -1.0]])
    directions = np.eye(3).reshape(3, 1, 3)
    forward, backward = one_sided_derivatives(tail_model(model, "a", "s"), "a", a, np.ones((1, 3)), directions)
    np.testing.assert_allclose(forward, [1, 1, 0], atol=1e-9)
    np.testing.assert_allclose(backward, [0, 1, 0], atol=1e-9)
    errors, kinks = subgradient_errors(np.array([0.5, 1.0, 0.0]), forward, backward, np.ones(3))
    assert kinks.tolist() == [True, False, False] and errors.max() < 1e-9
    errors, _ = subgradient_errors(np.array([1.5, 1.0, 0.0]), forward, backward, np.ones(3))
    assert errors[0] == pytest.approx(0.5)


def _ort_training_ready() -> str | None:
    """Why the onnxruntime-training check is skipped, or None when it can run."""
    tool = load_tool("ort_training_oracle")
    if os.environ.get("ONNXCAM_ORT_TRAINING") == "1" or tool.venv_python(tool.venv_path()).exists():
        return None
    return (
        f"onnxruntime-training's venv is not at {tool.venv_path()}; set ONNXCAM_ORT_TRAINING=1 to create it "
        "(python tools/ort_training_oracle.py --setup)"
    )


@pytest.mark.skipif(_ort_training_ready() is not None, reason=str(_ort_training_ready()))
def test_ort_training_gradient_matches_and_catches_a_wrong_rule(tiny_path, tmp_path, monkeypatch):
    tool = load_tool("ort_training_oracle")
    residual = tmp_path / "residual.onnx"
    onnx.save(residual_cnn(), str(residual))
    cases = [(DEMO, "/0/0.6/MaxPool_output_0", CROSS), (tiny_path, "r1", None), (str(residual), "inner", None)]
    for model, layer, image in cases:
        report = tool.check(model, layer=layer, image=image)
        assert report["max_rel_error"] < 1e-5, report
        assert any(op.startswith("com.microsoft.") for op in report["gradient_ops"])  # its own *Grad kernels
    monkeypatch.setitem(VJP_RULES, "Relu", identity_relu)
    assert tool.check(tiny_path, layer="r1")["max_rel_error"] > 1e-2

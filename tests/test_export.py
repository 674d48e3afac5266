"""The exported explainer file is standalone: a bare onnxruntime session reproduces ``explain``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

import onnxcam
from tests.tiny_models import tiny_cnn

BARE_RUNNER = r"""
import json, sys
import numpy as np
import onnxruntime as ort
assert "onnxcam" not in sys.modules
path, x_path = sys.argv[1], sys.argv[2]
sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
x = np.load(x_path)
names = [o.name for o in sess.get_outputs()]
inputs = {i.name: i for i in sess.get_inputs()}
feeds = {"x": x, "target_class": np.array([-1, 2], dtype=np.int64)}
out = dict(zip(names, sess.run(None, feeds)))
np.save(x_path + ".cam.npy", out["cam"])
print(json.dumps({"outputs": names, "inputs": sorted(inputs), "target": out["target"].tolist()}))
"""


def test_exported_file_runs_without_onnxcam(tmp_path):
    ex = onnxcam.Explainer(tiny_cnn())
    path = tmp_path / "explainer.onnx"
    ex.export(path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 13
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node), "only standard ONNX ops"

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [sys.executable, "-c", BARE_RUNNER, str(path), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(proc.stdout)
    assert info["inputs"] == ["target_class", "x"]
    assert {"probs", "cam", "cam_lowres", "target"} <= set(info["outputs"])

    top1 = ex.explain(x[:1]).targets[0]
    res = ex.explain(x, target=[int(top1), 2])
    assert info["target"] == [int(top1), 2]
    np.testing.assert_allclose(np.load(tmp_path / "x.npy.cam.npy"), res.cam, rtol=1e-6, atol=1e-6)


def test_batch_dimension_is_dynamic(tmp_path):
    ex = onnxcam.Explainer(tiny_cnn())
    x = np.random.default_rng(2).standard_normal((5, 3, 16, 16)).astype(np.float32)
    batched = ex.explain(x)
    singles = [ex.explain(x[i : i + 1]) for i in range(5)]
    np.testing.assert_allclose(batched.cam, np.concatenate([s.cam for s in singles]), rtol=1e-5, atol=1e-6)
    assert batched.targets.tolist() == [int(s.targets[0]) for s in singles]
    live = batched.cam_lowres.max(axis=(1, 2)) > 0
    assert live.any() and batched.cam.min() >= 0
    np.testing.assert_allclose(batched.cam[live].max(axis=(1, 2)), 1, rtol=1e-6)


def test_providers_are_read_back_from_the_session():
    ex = onnxcam.Explainer(tiny_cnn())
    assert ex.providers_in_use[-1] == "CPUExecutionProvider"
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return  # a real GPU build: nothing to fall back from here
    asked = onnxcam.Explainer(tiny_cnn(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.warns(RuntimeWarning, match="not available in this onnxruntime build"):
        assert asked.providers_in_use == ["CPUExecutionProvider"]


@pytest.mark.parametrize("opset", [9, 11, 13, 15, 17, 18, 19, 21, 23, 25])
def test_opsets_from_9_to_what_onnxruntime_runs(opset):
    import onnxruntime as ort

    model = tiny_cnn(opset=opset)
    model.ir_version = 4 if opset < 11 else 7 if opset < 15 else 8 if opset < 19 else 10 if opset < 23 else 12
    ex = onnxcam.Explainer(model)
    res = ex.explain(np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32))
    emitted = ex.explainer_model
    assert emitted.ir_version <= 13 and emitted.opset_import[0].version == max(opset, 17)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probs = reference.run(None, {"x": np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)})
    np.testing.assert_allclose(res.outputs["probs"], probs[0], rtol=1e-5, atol=1e-6)


def test_an_opset_newer_than_onnxruntime_gets_a_clear_error():
    model = tiny_cnn(opset=onnx.defs.onnx_opset_version() + 1)  # newer than any onnxruntime built on this onnx
    model.ir_version = 13
    supported = r"does not support the model's opset \(it supports ai.onnx up to opset \d+\)"
    with pytest.raises(onnxcam.RuntimeFailure, match=supported):
        onnxcam.Explainer(model).explain(np.ones((1, 3, 16, 16), np.float32))

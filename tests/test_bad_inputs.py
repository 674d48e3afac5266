"""Every bad input gets an OnnxcamError that says what to do, and the user's files are never touched."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx.external_data_helper import convert_model_to_external_data

import onnxcam
from onnxcam.errors import InputError, LayerError, ModelLoadError, OnnxcamError, TargetError
from tests.tiny_models import tiny_cnn


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), path)
    return path


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_not_onnx(tmp_path):
    path = tmp_path / "photo.onnx"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is a JPEG, not a model" * 10)
    with pytest.raises(ModelLoadError, match="not a readable ONNX model|not a valid ONNX model|holds no ONNX graph"):
        onnxcam.Explainer(path)


def test_truncated_file(tmp_path, model_path):
    data = model_path.read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 7):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError, match="truncated"):
            onnxcam.Explainer(path)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        onnxcam.Explainer(empty)
    with pytest.raises(ModelLoadError, match="not found"):
        onnxcam.Explainer(tmp_path / "nope.onnx")
    with pytest.raises(ModelLoadError, match="folder"):
        onnxcam.Explainer(tmp_path)


def test_external_data_outside_model_folder(tmp_path):
    model = tiny_cnn()
    inside = tmp_path / "models"
    inside.mkdir()
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save(model, inside / "m.onnx")
    # Point every initializer at a file outside the model's folder.
    m = onnx.load(inside / "m.onnx", load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    (tmp_path / "secret.bin").write_bytes((inside / "weights.bin").read_bytes())
    onnx.save(m, inside / "escape.onnx")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        onnxcam.Explainer(inside / "escape.onnx")


def test_external_data_beside_model_loads(tmp_path):
    model = tiny_cnn()
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save(model, tmp_path / "m.onnx")
    ex = onnxcam.Explainer(tmp_path / "m.onnx")
    res = ex.explain(np.ones((1, 3, 16, 16), np.float32))
    assert res.cam.shape == (1, 16, 16)


@pytest.mark.parametrize("after_good_call", [False, True], ids=["fresh", "after-a-good-call"])
def test_wrong_rank_dtype_size_and_empty_batch(model_path, after_good_call):
    ex = onnxcam.Explainer(model_path)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    if after_good_call:  # explain() remembers the last accepted dtype and shape: it must still check the rest
        good = ex.explain(x).cam
        strided = np.asfortranarray(x)  # not C-contiguous: converted, not passed on as is
        np.testing.assert_array_equal(ex.explain(strided).cam, good)
        np.testing.assert_allclose(ex.explain(x[:1]).cam, good[:1], rtol=1e-6, atol=1e-7)
    with pytest.raises(InputError, match="rank 3.*x\\[None\\]"):
        ex.explain(np.zeros((3, 16, 16), np.float32))
    with pytest.raises(InputError, match="axis 2 must be 16"):
        ex.explain(np.zeros((1, 3, 20, 16), np.float32))
    with pytest.raises(InputError, match="floating-point"):
        ex.explain(np.zeros((1, 3, 16, 16), np.int32))
    with pytest.raises(InputError, match="numeric"):
        ex.explain(np.array([["a"]]))
    with pytest.raises(InputError, match="empty batch"):
        ex.explain(np.zeros((0, 3, 16, 16), np.float32))
    with pytest.raises(InputError, match="do not match the model inputs"):
        ex.explain({"image": np.zeros((1, 3, 16, 16), np.float32)})


def test_target_out_of_range(model_path):
    ex = onnxcam.Explainer(model_path)
    x = np.zeros((2, 3, 16, 16), np.float32)
    with pytest.raises(TargetError, match="out of range.*5 classes"):
        ex.explain(x, target=5)
    with pytest.raises(TargetError, match="out of range"):
        ex.explain(x, target=-1)
    with pytest.raises(TargetError, match="2 images"):
        ex.explain(x, target=[1, 2, 3])
    with pytest.raises(TargetError, match="out of range"):
        ex.explain(x, target=onnxcam.OutputTarget("probs", (7,)))


def test_layer_missing_or_not_spatial(model_path):
    with pytest.raises(LayerError, match="neither a tensor nor a node"):
        onnxcam.Explainer(model_path, layer="no_such_layer")
    with pytest.raises(LayerError, match="not a spatial feature map"):
        onnxcam.Explainer(model_path, layer="pooled")
    with pytest.raises(LayerError, match="not a spatial feature map"):
        onnxcam.Explainer(model_path, layer="fc")  # a node name whose output is 2-D


def test_unknown_method_and_score(model_path):
    with pytest.raises(OnnxcamError, match="unknown method"):
        onnxcam.Explainer(model_path, method="nonsense")
    with pytest.raises(OnnxcamError, match="score must be"):
        onnxcam.Explainer(model_path, score="softmax")


def test_user_model_file_never_modified(model_path, tmp_path):
    before = _digest(model_path)
    ex = onnxcam.Explainer(model_path)
    ex.explain(np.ones((2, 3, 16, 16), np.float32))
    ex.export(tmp_path / "explainer.onnx")
    assert _digest(model_path) == before


def test_modelproto_argument_not_mutated():
    model = tiny_cnn()
    before = model.SerializeToString()
    onnxcam.Explainer(model).explain(np.ones((1, 3, 16, 16), np.float32))
    assert model.SerializeToString() == before


def test_missing_onnxruntime_names_the_extra(model_path):
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "import onnxcam\n"
        "try:\n"
        f"    onnxcam.Explainer({str(model_path)!r})\n"
        "except onnxcam.RuntimeNotInstalledError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ERR" in out and "onnxcam[cpu]" in out and "onnxcam[gpu]" in out

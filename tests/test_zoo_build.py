"""``python -m model_zoo.build``: the manifest it writes, and what happens when a framework is missing."""

from __future__ import annotations

import importlib.util
import json

import pytest

from model_zoo import build as zoo_build
from model_zoo.zoo import MANIFEST_NAME, load_manifest


def test_missing_framework_is_recorded_as_skipped_with_the_reason(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    lines = []
    entries = zoo_build.build(tmp_path, only=["tflite_shapes"], log=lines.append)
    # tflite_shapes reads keras_shapes' .keras file, so both are attempted, in that order
    assert [e.name for e in entries.values()] == ["keras_shapes", "tflite_shapes"]
    # tensorflow is missing; in a lean environment tf2onnx is too ("tensorflow, tf2onnx not installed")
    for e in entries.values():
        assert e.status == "skipped" and e.reason.startswith("tensorflow") and not e.file
        assert e.reason.endswith(" not installed")
    assert f"skipped: {entries['tflite_shapes'].reason}" in lines[-1]
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["models"][0]["status"] == "skipped"


def test_manifest_entry_and_settings_file_of_a_built_model(tmp_path):
    entries = zoo_build.build(tmp_path, only=["demo_fp32"], log=lambda line: None)
    e = load_manifest(tmp_path)["demo_fp32"]
    assert entries["demo_fp32"] == e
    assert (e.status, e.framework, e.opset, e.layout, e.input_name) == ("ok", "pytorch", 17, "NCHW", "image")
    assert e.input_shape == [None, 3, 96, 96] and e.outputs == ["logits"]
    assert e.suggested_layer and e.earlier_layer and e.earlier_layer != e.suggested_layer
    assert json.loads((tmp_path / "demo_fp32.onnxcam.json").read_text()) == e.preprocessing
    # a second build keeps the cached model
    lines = []
    zoo_build.build(tmp_path, only=["demo_fp32"], log=lines.append)
    assert lines == ["[1/1] demo_fp32                          cached"]


def test_unknown_name_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown zoo model.*nope.*known: tv_resnet18"):
        zoo_build.build(tmp_path, only=["nope"])
    with pytest.raises(SystemExit) as exit_:
        zoo_build.main(["--cache", str(tmp_path), "--only", "nope"])
    assert exit_.value.code == 2

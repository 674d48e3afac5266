"""The real ``onnxcam`` entry point, run in a subprocess as a user would."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxcam
from tests.tiny_models import tiny_cnn


def _entry_point() -> list[str]:
    """The installed ``onnxcam`` console script beside this Python, else ``python -m onnxcam``."""
    script = Path(sys.executable).parent / "onnxcam"
    return [str(script)] if script.exists() else [sys.executable, "-m", "onnxcam"]


def run_cli(*args, check_exit=None):
    proc = subprocess.run([*_entry_point(), *map(str, args)], capture_output=True, text=True)
    if check_exit is not None:
        assert proc.returncode == check_exit, proc.stderr
    return proc


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), path)
    return path


def test_help_on_every_command():
    assert "layers" in run_cli("--help", check_exit=0).stdout
    for command in ("layers", "export"):
        out = run_cli(command, "--help", check_exit=0).stdout
        assert f"usage: onnxcam {command}" in out


def test_layers_table_and_json(model_path):
    table = run_cli("layers", model_path, check_exit=0).stdout
    lines = [line for line in table.splitlines() if line.startswith("*")]
    assert lines[0].split()[1] == "features" and "auto:" in lines[1]
    data = json.loads(run_cli("layers", model_path, "--json", check_exit=0).stdout)
    assert data["auto"] == "features"
    assert [r["name"] for r in data["layers"]] == ["c1", "r1", "c2", "features"]
    assert data["layers"][-1] == {"name": "features", "op": "Relu", "shape": ["N", 8, 8, 8], "channel_axis": 1,
                                  "auto": True}


def test_export_matches_the_api(model_path, tmp_path):
    out = tmp_path / "explainer.onnx"
    run_cli("export", model_path, "-o", out, "--layer", "c2", check_exit=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    cam = sess.run(["cam"], {"x": x, "target_class": np.array([-1, 3], np.int64)})[0]
    expected = onnxcam.Explainer(model_path, layer="c2").explain(x, target=[int(np.argmax(
        onnxcam.Explainer(model_path).explain(x[:1]).outputs["probs"][0])), 3]).cam
    np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-6)


def test_errors_are_one_line_with_exit_1(tmp_path, model_path):
    proc = run_cli("layers", tmp_path / "missing.onnx", check_exit=1)
    assert proc.stderr.strip() == f"onnxcam: error: model file not found: {tmp_path / 'missing.onnx'}"
    proc = run_cli("export", model_path, "-o", tmp_path / "e.onnx", "--layer", "nope", check_exit=1)
    assert proc.stderr.count("\n") == 1 and "neither a tensor nor a node" in proc.stderr
    debug = run_cli("export", model_path, "-o", tmp_path / "e.onnx", "--layer", "nope", "--debug", check_exit=1)
    assert "Traceback" in debug.stderr and "LayerError" in debug.stderr


def test_usage_errors_exit_2(model_path):
    run_cli("frobnicate", check_exit=2)
    run_cli("export", model_path, check_exit=2)  # -o is required
    run_cli("export", model_path, "-o", "x.onnx", "--method", "nonsense", check_exit=2)


def test_export_never_overwrites_the_model(model_path):
    before = hashlib.sha256(model_path.read_bytes()).hexdigest()
    proc = run_cli("export", model_path, "-o", model_path, check_exit=1)
    assert "refusing to overwrite" in proc.stderr
    assert hashlib.sha256(model_path.read_bytes()).hexdigest() == before

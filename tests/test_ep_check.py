"""``onnxcam export --check EP``: node-by-node reports of what an execution provider does not take.

Expected verdicts come from the EPs' documentation, not from the checker:
TensorRT's onnx-tensorrt matrix says "MaxPool: `Indices` output tensor
unsupported", CoreML's ML Program list has no ScatterElements, the default
explainer of the demo model at its first layer recomputes two MaxPools with
``Indices`` and scatter-adds into them, and the portable one has neither.
The OpenVINO EP itself is run where an onnxruntime-openvino environment exists
(``tools/make_openvino_venv.sh``; ``ONNXCAM_OPENVINO_PYTHON`` names its Python).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxcam
from onnxcam.demo import DEMO_MODEL
from onnxcam.errors import OnnxcamError
from onnxcam.runtime.ep_check import check_ep, ep_tables, parse_placements, resolve_provider, table_check

REPO = Path(__file__).resolve().parents[1]
OPENVINO_PYTHON = Path(os.environ.get("ONNXCAM_OPENVINO_PYTHON", "/tmp/ovenv/bin/python"))
EARLY = "/0/0.2/Relu_output_0"  # the demo model's first block: two MaxPools lie between it and the score


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """(default, portable) explainers of the demo model at its first layer."""
    folder = tmp_path_factory.mktemp("ep_check")
    ex = onnxcam.Explainer(DEMO_MODEL, layer=EARLY)
    files = folder / "default.onnx", folder / "portable.onnx"
    ex.export(files[0])
    ex.export(files[1], portable=True)
    return files


def _emitted(path: Path, op_type: str) -> list[str]:
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == op_type and n.name.startswith("onnxcam/")]


def test_tensorrt_table_flags_the_recomputed_maxpools(demo_files):
    default, portable = demo_files
    report = check_ep(default, "tensorrt")
    assert report.how == "table" and not report.ok
    flagged = {i.name for i in report.issues if "Indices" in i.reason}
    assert flagged == set(_emitted(default, "MaxPool")) and len(flagged) == 2
    clean = check_ep(portable, "TensorRTExecutionProvider")
    assert clean.ok and clean.issues == []
    assert "all" in clean.lines()[1] and "onnx-tensorrt" in clean.lines()[0]


def test_coreml_and_webnn_tables(demo_files):
    default, portable = demo_files
    coreml = check_ep(default, "coreml")
    assert {i.name for i in coreml.issues if i.op_type == "ScatterElements"} == set(
        _emitted(default, "ScatterElements")
    )
    assert not [i for i in check_ep(portable, "coreml").issues if i.op_type in ("ScatterElements", "MaxPool")]
    webnn = check_ep(default, "webnn")  # WebNN: MaxPool with one output only, Reshape/Expand shapes constant
    assert {i.name for i in webnn.issues if i.op_type == "MaxPool"} == set(_emitted(default, "MaxPool"))
    assert not [i for i in check_ep(portable, "webnn").issues if i.op_type == "MaxPool"]


def test_table_constraints_on_a_hand_built_graph():
    """Each documented restriction kind, on nodes built to break or keep it."""
    from onnx import helper

    nodes = [
        helper.make_node("MaxPool", ["x"], ["y", "i"], name="two_outputs", kernel_shape=[2, 2]),
        helper.make_node("Reshape", ["y", "runtime_shape"], ["r"], name="runtime_shape"),
        helper.make_node("Reshape", ["y", "const_shape"], ["r2"], name="const_shape"),
        helper.make_node("OneHot", ["a", "b", "c"], ["o"], name="onehot"),
        helper.make_node("Relu", ["x"], ["z"], name="custom", domain="com.example"),
    ]
    graph = helper.make_graph(nodes, "g", [], [], [onnx.numpy_helper.from_array(np.array([1, -1]), "const_shape")])
    model = helper.make_model(graph)
    webnn = table_check(model, "WebNNExecutionProvider", ep_tables()["WebNNExecutionProvider"])
    assert {i.name for i in webnn.issues} == {"two_outputs", "runtime_shape", "onehot", "custom"}
    xnnpack = table_check(model, "XnnpackExecutionProvider", ep_tables()["XnnpackExecutionProvider"])
    assert {i.name for i in xnnpack.issues} == {"two_outputs", "custom"}  # the CPU EP takes the rest, by design
    assert "by design" in xnnpack.note


def test_every_table_names_its_source():
    for provider, table in ep_tables().items():
        assert provider.endswith("ExecutionProvider")
        assert table["source"] and len(table["source_commit"]) == 40 and table["retrieved"].count("-") == 2
        assert table.get("supported") or table.get("unsupported")
        assert resolve_provider(table["aliases"][0]) == provider


def test_provider_names():
    assert resolve_provider("OpenVINO") == "OpenVINOExecutionProvider"
    assert resolve_provider("webgpu") == "WebGpuExecutionProvider"
    assert resolve_provider("cpuexecutionprovider") == "CPUExecutionProvider"
    with pytest.raises(OnnxcamError, match="unknown execution provider"):
        resolve_provider("quantum")


def test_parse_placements():
    """onnxruntime's verbose placement log, as 1.24 prints it (copied from a real OpenVINO EP session)."""
    log = """\
2026-12-07 07:44:18.8979 [V:onnxruntime:, session_state.cc:1307 VerifyEachNodeIsAssignedToAnEp] Node placements
2026-12-07 07:44:18.8979 [V:onnxruntime:, session_state.cc:1313 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on \
[OpenVINOExecutionProvider]. Number of nodes: 2
2026-12-07 07:44:18.89 [V:onnxruntime:, session_state.cc:1315 VerifyEachNodeIsAssignedToAnEp]   OpenVINO-EP-subgraph_1 \
(OpenVINOExecutionProvider_OpenVINO-EP-subgraph_1_0)
2026-12-07 07:44:18.89 [V:onnxruntime:, session_state.cc:1315 VerifyEachNodeIsAssignedToAnEp]   OpenVINO-EP-subgraph_2 \
(OpenVINOExecutionProvider_OpenVINO-EP-subgraph_2_1)
2026-12-07 07:44:18.8979 [V:onnxruntime:, session_state.cc:1313 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on \
[CPUExecutionProvider]. Number of nodes: 2
2026-12-07 07:44:18.8979 [V:onnxruntime:, session_state.cc:1315 VerifyEachNodeIsAssignedToAnEp]   Size (onnxcam/Size_41)
2026-12-07 07:44:18.8979 [V:onnxruntime:, session_state.cc:1315 VerifyEachNodeIsAssignedToAnEp]   Size (odd (name))
2026-12-07 07:44:18.8979 [W:onnxruntime:, session_state.cc:1327 VerifyEachNodeIsAssignedToAnEp] Some nodes were not \
assigned to the preferred execution providers
"""
    placed = parse_placements(log)
    assert placed["CPUExecutionProvider"] == [("Size", "onnxcam/Size_41"), ("Size", "odd (name)")]
    assert len(placed["OpenVINOExecutionProvider"]) == 2


def test_cpu_ep_is_checked_by_running_it(demo_files):
    report = check_ep(demo_files[1], "cpu")
    assert report.how == "runtime" and report.ok and report.nodes == len(onnx.load(str(demo_files[1])).graph.node)


def test_cli_export_check_and_ep(tmp_path, capsys):
    from onnxcam.cli.main import main

    out = tmp_path / "e.onnx"
    assert main(["export", str(DEMO_MODEL), "--layer", EARLY, "-o", str(out), "--ep", "tensorrt"]) == 0
    assert "all" in capsys.readouterr().out and not _emitted(out, "ScatterElements")
    assert main(["export", str(DEMO_MODEL), "--layer", EARLY, "--check", "trt"]) == 1  # default file, not written
    report = capsys.readouterr().out
    assert report.count("`Indices` output tensor unsupported") == 2 and "not written" in report
    assert main(["export", str(DEMO_MODEL), "--check", "quantum"]) == 1
    assert "unknown execution provider 'quantum'" in capsys.readouterr().err


def _maxpool_indices(path: Path) -> list[str]:
    """MaxPool nodes with an ``Indices`` output (TensorRT refuses them)."""
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MaxPool" and any(n.output[1:])]


def test_cli_triton_export_is_portable_and_checked_as_written(tmp_path, capsys):
    """``--triton DIR --portable`` (or ``--ep``) writes the portable model, and ``--check`` checks that very file."""
    from onnxcam.cli.main import main

    repo = tmp_path / "repo"
    assert (
        main(["export", str(DEMO_MODEL), "--layer", EARLY, "--triton", str(repo), "--triton-name", "p", "--portable"])
        == 0
    )
    model = repo / "p" / "1" / "model.onnx"
    assert not _emitted(model, "ScatterElements") and not _maxpool_indices(model)
    capsys.readouterr()
    assert (
        main(["export", str(DEMO_MODEL), "--layer", EARLY, "--triton", str(repo), "--triton-name", "e", "--ep", "trt"])
        == 0
    )
    report = capsys.readouterr().out
    model = repo / "e" / "1" / "model.onnx"
    assert report.startswith(f"{model} on ") and not _emitted(model, "ScatterElements") and not _maxpool_indices(model)
    assert (
        main(
            ["export", str(DEMO_MODEL), "--layer", EARLY, "--triton", str(repo), "--triton-name", "d", "--check", "trt"]
        )
        == 1
    )
    report = capsys.readouterr().out  # not portable: the file written has the recomputed MaxPools' Indices
    assert (
        report.startswith(str(repo / "d" / "1" / "model.onnx"))
        and len(_maxpool_indices(repo / "d" / "1" / "model.onnx")) == 2
    )


def _openvino(*args: str) -> subprocess.CompletedProcess:
    if not OPENVINO_PYTHON.exists():
        pytest.skip(f"no onnxruntime-openvino environment at {OPENVINO_PYTHON} (tools/make_openvino_venv.sh)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([str(OPENVINO_PYTHON), *args], capture_output=True, text=True, timeout=600, env=env)


def test_openvino_ep_check_and_numbers(demo_files, tmp_path):
    """The real OpenVINO EP: the default explainer falls back to the CPU EP, the portable one does not and
    computes what the CPU EP computes (as does the OpenVINO runtime reading the file)."""
    default, portable = demo_files
    verdicts = {}
    for path in demo_files:
        done = _openvino("-m", "onnxcam.runtime.ep_check", str(path), "openvino", "--json")
        verdicts[path] = json.loads(done.stdout)
        assert verdicts[path]["how"] == "runtime", done.stderr
    assert not verdicts[default]["ok"] and verdicts[default]["loads_without_fallback"] is False
    assert verdicts[default]["issues"]  # named node by node
    assert verdicts[portable]["ok"] and verdicts[portable]["loads_without_fallback"] is True
    (tmp_path / "portable.onnx").write_bytes(portable.read_bytes())
    image = np.random.default_rng(4).standard_normal((2, 3, 96, 96)).astype(np.float32)
    np.savez(tmp_path / "portable.npz", image=image, target_class=np.array([-1, 3], np.int64))
    done = _openvino(str(REPO / "tools" / "openvino_compare.py"), str(tmp_path), "--json")
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["loads_without_fallback"], done.stderr
    for other in ("openvino_ep", "openvino_runtime"):
        assert row[f"{other}_ints_equal"]
        assert max(row[f"{other}_max_rel_diff"].values()) < 1e-4, row

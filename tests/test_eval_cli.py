"""``onnxcam eval`` end to end, as a user runs it: JSON, CSV and VOC data, a bad entry, outputs, exit codes."""

from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("onnxruntime")

from model_zoo.demo_boxes import TEST_SEED, voc_xml, write_annotated_set  # noqa: E402
from onnxcam import demo  # noqa: E402
from tests.test_cli import run_cli  # noqa: E402

N = 6
FAST = ["--steps", "8", "--method", "gradcam", "random", "center"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The same six held-out demo images annotated in each format; the JSON one has a bad entry."""
    out = {}
    for fmt in ("json", "csv", "voc"):
        folder = tmp_path_factory.mktemp(fmt)
        write_annotated_set(folder, N, TEST_SEED, fmt)
        out[fmt] = folder
    doc = json.loads((out["json"] / "annotations.json").read_text())
    doc["images"].insert(2, {"file": "images/missing.png", "objects": [{"box": [0, 0, 5, 5], "label": "ring"}]})
    doc["images"].append({"file": "images/0000_square.png", "objects": [{"box": [9, 9, 3, 3], "label": 1}]})
    (out["json"] / "annotations.json").write_text(json.dumps(doc))
    return out


def read_metrics(folder):
    with open(folder / "metrics.csv", newline="") as fh:
        return {row["method"]: row for row in csv.DictReader(fh)}


def test_eval_json_with_bad_entries_writes_results_and_exits_1(datasets, tmp_path):
    out = tmp_path / "res"
    proc = run_cli("eval", demo.DEMO_MODEL, datasets["json"], "-o", out, *FAST, check_exit=1)
    assert "skipped annotations.json entry 2" in proc.stderr and "image not found" in proc.stderr
    assert "skipped annotations.json entry 7" in proc.stderr and "empty or negative" in proc.stderr
    assert f"{N} sample(s)" in proc.stdout
    for method in ("gradcam", "random", "center"):
        assert f"\n{method} (" in proc.stdout  # one table per method
    assert "| method | pointing |" in proc.stdout  # and the comparison table
    metrics = read_metrics(out)
    assert list(metrics) == ["gradcam", "random", "center"]
    assert float(metrics["gradcam"]["pointing"]) >= float(metrics["random"]["pointing"])
    with open(out / "samples.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * N and {r["method"] for r in rows} == {"gradcam", "random", "center"}
    doc = json.loads((out / "metrics.json").read_text())
    assert len(doc["skipped"]) == 2 and doc["layer"] == metrics["gradcam"]["layer"]
    assert [m["method"] for m in doc["methods"]] == ["gradcam", "random", "center"]
    assert len(doc["methods"][0]["samples"]) == N


def test_json_csv_and_voc_give_the_same_numbers(datasets, tmp_path):
    """CSV has class ids, JSON class names, VOC 1-based inclusive boxes: all must land on the same boxes."""
    results = {}
    for fmt in ("json", "csv", "voc"):
        out = tmp_path / fmt
        run_cli(
            "eval",
            demo.DEMO_MODEL,
            datasets[fmt],
            "-o",
            out,
            "--metric",
            "pointing",
            "localization",
            "--method",
            "gradcam",
            "--tolerance",
            "0",
            check_exit=1 if fmt == "json" else 0,
        )
        results[fmt] = read_metrics(out)["gradcam"]
    keys = ("samples", "pointing", "loc_accuracy", "loc_error", "mean_iou")
    assert [results["csv"][k] for k in keys] == [results["json"][k] for k in keys] == [results["voc"][k] for k in keys]
    assert int(results["csv"]["samples"]) == N


def test_road_faithfulness_and_sanity_metrics(datasets, tmp_path):
    pytest.importorskip("scipy")  # ROAD's sparse solve (onnxcam[metrics])
    out = tmp_path / "sanity"
    two = datasets["csv"] / "first_two.csv"  # the expensive metrics on two images
    two.write_text("".join((datasets["csv"] / "annotations.csv").read_text().splitlines(keepends=True)[:3]))
    before = demo.DEMO_MODEL.read_bytes()
    run_cli(
        "eval",
        demo.DEMO_MODEL,
        two,
        "-o",
        out,
        "--metric",
        "road",
        "faithfulness",
        "sanity",
        "--method",
        "gradcam",
        "random",
        check_exit=0,
    )
    metrics = read_metrics(out)
    for key in ("road_morf", "road_lerf", "faithfulness"):
        assert float(metrics["gradcam"][key]) == float(metrics["gradcam"][key])  # defined (not NaN)
    assert float(metrics["gradcam"]["road_morf"]) < float(metrics["gradcam"]["road_lerf"])
    doc = json.loads((out / "metrics.json").read_text())
    steps = doc["methods"][0]["sanity"]
    assert len(steps) == 6 and steps[0]["randomized"] == ["/3/Gemm"] and len(steps[-1]["randomized"]) == 6
    assert doc["methods"][1]["sanity"] is None  # a baseline has no weights to randomise
    assert "sanity_all" in read_metrics(out)["gradcam"]
    assert demo.DEMO_MODEL.read_bytes() == before  # randomisation works on copies


def test_single_voc_file_and_usage_errors(datasets, tmp_path):
    xml = tmp_path / "one.xml"
    image = sorted((datasets["voc"] / "JPEGImages").glob("*.png"))[0]
    xml.write_text(
        voc_xml(str(image), "cross", (0, 0, 10, 10), 96, 96).replace(
            "<name>cross</name>", f"<name>{image.stem.split('_')[1]}</name>"
        )
    )
    run_cli(
        "eval", demo.DEMO_MODEL, xml, "-o", tmp_path / "one", "--metric", "pointing", "--method", "center", check_exit=0
    )
    proc = run_cli("eval", demo.DEMO_MODEL, tmp_path / "nothing.json", "-o", tmp_path / "x", check_exit=1)
    assert proc.stderr.startswith("onnxcam: error: data not found") and "Traceback" not in proc.stderr
    proc = run_cli(
        "eval", demo.DEMO_MODEL, datasets["csv"], "--method", "nosuchcam", "-o", tmp_path / "y", check_exit=1
    )
    assert "unknown method 'nosuchcam'" in proc.stderr
    run_cli("eval", demo.DEMO_MODEL, datasets["csv"], "--metric", "accuracy", check_exit=2)
    assert "usage: onnxcam eval" in run_cli("eval", "--help", check_exit=0).stdout

"""``onnxcam compare``: agreement of two models' heatmaps on the same photos.

Pairs with a known answer: the same weights exported by both torch exporters
(agreement ~1), the demo model behind an NHWC Transpose (identical maps), the
demo model at twice the input size behind a 2x2 average pool (the maps must
land on the same photo pixels), and the demo model against a copy whose
convolution weights are shuffled (clearly lower agreement).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxcam import demo
from onnxcam.cli.main import main
from onnxcam.compare import ImageComparison, ModelSide, compare_images
from onnxcam.explainer import Explainer
from onnxcam.preprocess import derive_spec

DEMO = str(demo.DEMO_MODEL)


def nhwc_copy(scale: int = 1) -> onnx.ModelProto:
    """The demo model reading (N, 96*scale, 96*scale, 3): Transpose, then a scale x scale average pool if scale > 1."""
    m = onnx.load(DEMO)
    g = m.graph
    inner = g.input[0].name
    side = 96 * scale
    g.input[0].CopyFrom(helper.make_tensor_value_info("photo_nhwc", TensorProto.FLOAT, ["batch", side, side, 3]))
    nodes = [helper.make_node("Transpose", ["photo_nhwc"], ["nchw" if scale > 1 else inner], perm=[0, 3, 1, 2])]
    if scale > 1:
        nodes.append(
            helper.make_node("AveragePool", ["nchw"], [inner], kernel_shape=[scale, scale], strides=[scale, scale])
        )
    for node in reversed(nodes):
        g.node.insert(0, node)
    del g.value_info[:]
    for p in m.metadata_props:  # the shipped metadata pins 96x96; this copy's size comes from its input
        if p.key == "onnxcam.preprocess":
            p.value = json.dumps({"preset": "raw01"})
    onnx.checker.check_model(m)
    return m


def shuffled_conv_weights(seed: int = 0) -> onnx.ModelProto:
    """The demo model with every Conv weight tensor's values permuted: same statistics, no learned structure."""
    m = onnx.load(DEMO)
    rng = np.random.default_rng(seed)
    weights = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
    for i, t in enumerate(m.graph.initializer):
        if t.name in weights:
            a = numpy_helper.to_array(t)
            m.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(rng.permutation(a.ravel()).reshape(a.shape), t.name)
            )
    return m


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("compare_models")
    paths = {}
    for name, model in [("nhwc", nhwc_copy()), ("nhwc192", nhwc_copy(2)), ("shuffled", shuffled_conv_weights())]:
        paths[name] = str(d / f"{name}.onnx")
        onnx.save(model, paths[name])
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("compare_images")
    for p in demo.DEMO_IMAGES:
        shutil.copy(p, d / p.name)
    return d


def run_compare(model_a: str, model_b: str, sources: list, out: Path, *extra: str) -> tuple[int, dict, list[dict]]:
    rc = main(["compare", model_a, model_b, *map(str, sources), "-o", str(out), *extra])
    doc = json.loads((out / "compare.json").read_text())
    with (out / "compare.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rc, doc, rows


def spearman_values(doc: dict) -> np.ndarray:
    return np.array([r["spearman"] for r in doc["images"] if r["spearman"] is not None])


def test_identical_weights_exported_by_both_torch_exporters_agree(tmp_path, images):
    pytest.importorskip("torch")
    from model_zoo.torchvision_models import build_model, example_input, export_onnx

    net = build_model("resnet18")
    a = export_onnx(net, tmp_path / "resnet18.torchscript.onnx", "torchscript", example_input(1, 128))
    b = export_onnx(net, tmp_path / "resnet18.dynamo.onnx", "dynamo", example_input(1, 128))
    rc, doc, _ = run_compare(str(a), str(b), [images], tmp_path / "out")
    assert rc == 0
    assert doc["model_a"]["layer"] != doc["model_b"]["layer"], "two different graphs (their tensor names differ)"
    agg = doc["aggregate"]
    assert agg["images"] == len(demo.DEMO_IMAGES) and agg["top1_agreement"] == 1.0
    assert agg["spearman"]["mean"] > 0.99 and agg["spearman"]["undefined"] == 0
    assert agg["top15_iou"]["mean"] > 0.9
    for r in doc["images"]:
        assert r["a"]["target_probability"] == pytest.approx(r["b"]["target_probability"], abs=1e-4)


def test_nhwc_rewrap_is_identical_and_a_resized_copy_lands_on_the_same_pixels(tmp_path, models, images):
    rc, doc, _ = run_compare(DEMO, models["nhwc"], [images], tmp_path / "same")
    assert rc == 0
    assert spearman_values(doc).min() > 0.999
    assert all(r["peak_distance_px"] == 0 for r in doc["images"])
    assert "NHWC" in doc["model_b"]["preprocess"]

    # Model B sees the photo at 192x192; its map is mapped back onto the 96x96 photo before comparing.
    rc, doc, _ = run_compare(DEMO, models["nhwc192"], [images], tmp_path / "big")
    assert rc == 0
    assert "192x192" in doc["model_b"]["preprocess"]
    assert doc["aggregate"]["spearman"]["mean"] > 0.9
    assert max(r["peak_distance_px"] for r in doc["images"]) <= 2.0


def test_shuffled_conv_weights_disagree(tmp_path, models, images):
    _, same, _ = run_compare(DEMO, models["nhwc"], [images], tmp_path / "same")
    rc, doc, _ = run_compare(DEMO, models["shuffled"], [images], tmp_path / "shuffled")
    assert rc == 0
    shuffled = spearman_values(doc)
    assert shuffled.size == 0 or shuffled.mean() < spearman_values(same).mean() - 0.5
    assert doc["aggregate"]["top15_iou"]["mean"] is None or doc["aggregate"]["top15_iou"]["mean"] < 0.5
    assert doc["aggregate"]["top1_agreement"] < 1.0
    flat = [r for r in doc["images"] if r["spearman"] is None]
    assert all(r["note"] and r["b"]["peak"] is None for r in flat)


def test_csv_json_panels_and_a_bad_image(tmp_path, models, images):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    out = tmp_path / "out"
    rc, doc, rows = run_compare(DEMO, models["nhwc192"], [images, bad], out)
    assert rc == 1, "a skipped image makes the run exit 1"
    assert [f["image"] for f in doc["failures"]] == [str(bad)] and "bad.png" in doc["failures"][0]["error"]

    n = len(demo.DEMO_IMAGES)
    assert len(doc["images"]) == n and [r["image"] for r in rows[-2:]] == ["(mean)", "(median)"]
    per_image = rows[:n]
    for row, rec in zip(per_image, doc["images"]):
        assert row["image"] == rec["image"] and int(row["target"]) == rec["target"]
        assert float(row["spearman"]) == pytest.approx(rec["spearman"])
        assert float(row["peak_distance_px"]) == pytest.approx(rec["peak_distance_px"])
        with Image.open(rec["panel"]) as panel:
            assert panel.format == "PNG" and panel.width > 4 * 96

        # Model A's prediction, recomputed with plain onnxruntime and the demo's own preprocessing.
        logits = ort.InferenceSession(DEMO).run(None, {demo.INPUT_NAME: demo.load_image(rec["image"])})[0][0]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert rec["target"] == rec["a"]["class"] == int(np.argmax(logits))
        assert rec["a"]["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert rec["target_label"] == demo.DEMO_LABELS[rec["target"]] and rec["target_source"] == "model A's top-1"
    for metric in ("spearman", "top15_iou", "peak_distance_px"):
        values = [float(r[metric]) for r in per_image]
        assert float(rows[-2][metric]) == pytest.approx(np.mean(values))
        assert float(rows[-1][metric]) == pytest.approx(np.median(values))
        assert doc["aggregate"][metric]["mean"] == pytest.approx(np.mean(values))


def test_maps_are_compared_on_the_photo_pixels(models):
    sides = []
    for name, path in (("A", DEMO), ("B", models["nhwc192"])):
        ex = Explainer(path)
        sides.append(ModelSide(ex, derive_spec(ex.index, model_path=path), name))
    photo = demo.DEMO_IMAGES[1]
    (item,) = compare_images(*sides, [(photo, Path(photo.name))])
    assert isinstance(item, ImageComparison)
    assert item.a.cam.shape == item.b.cam.shape == (96, 96)
    direct = Explainer(DEMO).explain(demo.load_image(photo)).cam[0]  # 96x96 photo: the input's own pixels
    np.testing.assert_allclose(item.a.cam, direct, atol=1e-6)
    spearmanr = pytest.importorskip("scipy.stats").spearmanr  # the reference; onnxcam itself needs no scipy
    assert item.spearman == pytest.approx(spearmanr(item.a.cam.ravel(), item.b.cam.ravel())[0], abs=1e-9)


def test_a_large_wide_photo_with_a_centre_crop_on_one_side(tmp_path, models):
    """Maps live on the photo's pixels: B crops the centre square, so its map is 0 on the sides it never saw."""
    photo = tmp_path / "wide.png"
    with Image.open(demo.DEMO_IMAGES[5]) as im:
        im.convert("RGB").resize((1100, 700), Image.Resampling.BICUBIC).save(photo)
    ex_a, ex_b = Explainer(DEMO), Explainer(models["nhwc"])
    a = ModelSide(ex_a, derive_spec(ex_a.index, model_path=DEMO), "A")
    b = ModelSide(ex_b, derive_spec(ex_b.index, model_path=models["nhwc"], resize="crop"), "B")
    (item,) = compare_images(a, b, [(photo, Path(photo.name))])
    assert item.a.cam.shape == item.b.cam.shape == (700, 1100)
    assert item.b.cam[:, :190].max() == 0 and item.b.cam[:, 910:].max() == 0  # the crop is columns ~198..902
    assert item.b.cam[:, 210:890].max() > 0.99
    assert item.a.cam[:, :190].max() > 0  # A squashes the whole photo
    assert -1 <= item.spearman <= 1 and 0 <= item.top_iou <= 1


def test_explicit_target_is_explained_in_both(tmp_path, models, images):
    rc, doc, _ = run_compare(DEMO, models["nhwc"], [images / "0_ring.png"], tmp_path, "--target", "2")
    assert rc == 0
    (rec,) = doc["images"]
    assert rec["target"] == 2 and rec["target_source"] == "--target" and rec["target_label"] == "triangle"
    assert rec["a"]["class"] == 5  # the top-1 is still reported
    assert doc["target"] == 2


def test_only_bad_images_still_writes_the_tables(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    rc, doc, rows = run_compare(DEMO, DEMO, [bad], tmp_path / "out")
    assert rc == 1 and doc["images"] == [] and len(doc["failures"]) == 1
    assert doc["aggregate"]["spearman"]["mean"] is None and [r["image"] for r in rows] == ["(mean)", "(median)"]


def test_help_and_usage_errors():
    script = [sys.executable, "-m", "onnxcam"]
    done = subprocess.run([*script, "compare", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--size-b" in done.stdout and "MODEL_A" in done.stdout
    done = subprocess.run([*script, "compare", DEMO], capture_output=True, text=True)
    assert done.returncode == 2

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
    for command in ("layers", "explain", "export", "demo"):
        out = run_cli(command, "--help", check_exit=0).stdout
        assert f"usage: onnxcam {command}" in out


def test_layers_table_and_json(model_path):
    table = run_cli("layers", model_path, check_exit=0).stdout
    lines = [line for line in table.splitlines() if line.startswith("*")]
    assert lines[0].split()[1] == "features" and "auto:" in lines[1]
    data = json.loads(run_cli("layers", model_path, "--json", check_exit=0).stdout)
    assert data["auto"] == "features"
    assert [r["name"] for r in data["layers"]] == ["c1", "r1", "c2", "features"]
    assert data["layers"][-1] == {
        "name": "features",
        "op": "Relu",
        "shape": ["N", 8, 8, 8],
        "layout": "NCHW",
        "channel_axis": 1,
        "auto": True,
    }


def test_export_matches_the_api(model_path, tmp_path):
    out = tmp_path / "explainer.onnx"
    run_cli("export", model_path, "-o", out, "--layer", "c2", check_exit=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    cam = sess.run(["cam"], {"x": x, "target_class": np.array([-1, 3], np.int64)})[0]
    expected = (
        onnxcam.Explainer(model_path, layer="c2")
        .explain(x, target=[int(np.argmax(onnxcam.Explainer(model_path).explain(x[:1]).outputs["probs"][0])), 3])
        .cam
    )
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


# --- explain: the whole pipeline on a model whose CAM is the image's brightness ----------------------------------


def brightness_model(size: int = 32, nhwc: bool = False) -> onnx.ModelProto:
    """A 1x1 Conv averaging RGB, ReLU, GAP and a 2-class head: the class-0 CAM peaks where the image is brightest."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 3, np.float32), "w")
    fc = numpy_helper.from_array(np.array([[1.0, -1.0]], np.float32), "fc")
    nodes = []
    x = "x"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        x = "x_nchw"
    nodes += [
        helper.make_node("Conv", [x, "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    shape = ["N", size, size, 3] if nhwc else ["N", 3, size, size]
    g = helper.make_graph(
        nodes,
        "bright",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [w, fc],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def blob_image(path, width, height, cx, cy, radius=3):
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width]
    img = np.full((height, width, 3), 20, np.uint8)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 255
    Image.fromarray(img).save(path)


@pytest.mark.parametrize("resize", ["squash", "crop"])
@pytest.mark.parametrize("nhwc", [False, True], ids=["NCHW", "NHWC"])
def test_peak_maps_back_onto_original_pixels(tmp_path, resize, nhwc):
    model = tmp_path / "bright.onnx"
    onnx.save(brightness_model(nhwc=nhwc), model)
    images = tmp_path / "photos"
    (images / "nested").mkdir(parents=True)
    # Non-square photos; for crop the blob must sit inside the centre square that survives.
    blob_image(images / "wide.png", 120, 60, cx=70, cy=20)
    blob_image(images / "nested" / "tall.png", 50, 100, cx=12, cy=55)
    out = tmp_path / "out"
    run_cli(
        "explain", model, images, "--target", "0", "--resize", resize, "--preprocess", "raw01", "-o", out, check_exit=0
    )
    summary = json.loads((out / "summary.json").read_text())
    peaks = {Path(r["image"]).name: (r["peak"]["x"], r["peak"]["y"]) for r in summary["results"]}
    assert set(peaks) == {"wide.png", "tall.png"}
    assert abs(peaks["wide.png"][0] - 70) <= 2 and abs(peaks["wide.png"][1] - 20) <= 2, peaks
    assert abs(peaks["tall.png"][0] - 12) <= 2 and abs(peaks["tall.png"][1] - 55) <= 2, peaks
    assert (out / "wide.png.cam.png").is_file() and (out / "nested" / "tall.png.cam.png").is_file()
    assert summary["results"][0]["layer"] == "features" and summary["results"][0]["target"] == 0
    assert ("NHWC" if nhwc else "NCHW") in summary["preprocess"] and f"resize={resize}" in summary["preprocess"]


@pytest.mark.parametrize("preset", ["imagenet", "inception", "tf", "caffe", "raw01", "raw255"])
def test_every_preset_runs(tmp_path, preset):
    model = tmp_path / "bright.onnx"
    onnx.save(brightness_model(), model)
    blob_image(tmp_path / "a.png", 40, 40, 10, 30)
    run_cli("explain", model, tmp_path / "a.png", "--preprocess", preset, "-o", tmp_path / "out", check_exit=0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    expected = {"tf": "inception"}.get(preset, preset)
    assert summary["preprocess"].startswith(expected + ":")


def test_one_bad_image_loses_nothing_else(tmp_path):
    model = tmp_path / "bright.onnx"
    onnx.save(brightness_model(), model)
    blob_image(tmp_path / "good1.png", 40, 40, 10, 10)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    blob_image(tmp_path / "good2.png", 40, 40, 30, 30)
    proc = run_cli("explain", model, tmp_path, "-o", tmp_path / "out", check_exit=1)
    assert "broken.png" in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted(Path(r["image"]).name for r in summary["results"]) == ["good1.png", "good2.png"]
    assert [Path(f["image"]).name for f in summary["failures"]] == ["broken.png"]


def test_labels_count_and_unwritable_output(tmp_path):
    model = tmp_path / "bright.onnx"
    onnx.save(brightness_model(), model)
    blob_image(tmp_path / "a.png", 40, 40, 10, 10)
    (tmp_path / "labels.txt").write_text("bright\ndark\nextra\n")
    proc = run_cli(
        "explain", model, tmp_path / "a.png", "--labels", tmp_path / "labels.txt", "-o", tmp_path / "o", check_exit=1
    )
    assert "3 names but the model has 2 classes" in proc.stderr
    (tmp_path / "labels.txt").write_text("bright\ndark\n")
    run_cli(
        "explain", model, tmp_path / "a.png", "--labels", tmp_path / "labels.txt", "-o", tmp_path / "o", check_exit=0
    )
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["results"][0]["class_name"] == "bright"
    (tmp_path / "afile").write_text("x")
    proc = run_cli("explain", model, tmp_path / "a.png", "-o", tmp_path / "afile" / "sub", check_exit=1)
    assert "cannot write to output folder" in proc.stderr


def test_top_k_explains_k_classes_per_image(tmp_path):
    model = tmp_path / "bright.onnx"
    onnx.save(brightness_model(), model)
    blob_image(tmp_path / "a.png", 40, 40, 10, 10)
    run_cli("explain", model, tmp_path / "a.png", "--top", "2", "-o", tmp_path / "o", check_exit=0)
    results = json.loads((tmp_path / "o" / "summary.json").read_text())["results"]
    assert [r["target"] for r in results] == [0, 1] and results[0]["score"] >= results[1]["score"]


def test_demo_needs_no_arguments_and_points_at_the_objects(tmp_path):
    from onnxcam import demo

    out = tmp_path / "demo"
    run_cli("demo", "-o", out, check_exit=0)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["results"]) == len(demo.DEMO_IMAGES) == len(list(out.glob("*.cam.png")))
    assert summary["preprocess"].startswith("raw01:")  # read from the model's metadata
    for record, sample in zip(summary["results"], demo.DEMO_SAMPLES):
        assert record["class_name"] == demo.DEMO_LABELS[sample["label"]]
        x0, y0, x1, y1 = sample["box"]
        assert x0 <= record["peak"]["x"] < x1 and y0 <= record["peak"]["y"] < y1, (record, sample)


def test_layerwise_panel_orders_layers_shallow_to_deep(tmp_path):
    from PIL import Image

    from onnxcam import demo
    from onnxcam.cli.explain_files import _layer_cams
    from onnxcam.preprocess import derive_spec, load_image, preprocess_image

    probe = onnxcam.Explainer(demo.DEMO_MODEL)
    deep, shallow = probe.candidates[-1].name, probe.candidates[len(probe.candidates) // 2].name
    ex = onnxcam.Explainer(demo.DEMO_MODEL, layer=[deep, shallow])
    img, _ = load_image(demo.DEMO_IMAGES[0])
    x, geometry = preprocess_image(img, derive_spec(ex.index, model_path=demo.DEMO_MODEL))
    pairs = _layer_cams(ex, ex.explain(x[None]), 0, geometry)
    assert [name for name, _ in pairs] == [shallow, deep]
    assert all(cam.shape == (img.height, img.width) and np.isclose(cam.max(), 1, atol=0.02) for _, cam in pairs)

    out = tmp_path / "lw"
    run_cli("explain", demo.DEMO_MODEL, demo.DEMO_IMAGES[0], "--layer", deep, shallow, "-o", out, check_exit=0)
    panel = Image.open(out / f"{demo.DEMO_IMAGES[0].name}.cam.png")
    assert panel.width >= 3 * 192  # the photo plus one tile per layer
    assert json.loads((out / "summary.json").read_text())["results"][0]["layer"] == [deep, shallow]
    proc = run_cli(
        "explain", demo.DEMO_MODEL, demo.DEMO_IMAGES[0], "--layer", deep, shallow, "--top", "2", "-o", out, check_exit=1
    )
    assert "several layers and several classes" in proc.stderr


def test_odd_images_are_read_and_bombs_refused(tmp_path):
    from PIL import Image

    model = tmp_path / "bright.onnx"
    onnx.save(brightness_model(), model)
    photos = tmp_path / "odd"
    photos.mkdir()
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[5:10, 40:45] = 255
    Image.fromarray(rgb).convert("RGBA").save(photos / "rgba.png")
    Image.fromarray(rgb).convert("P").save(photos / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(photos / "cmyk.jpg")
    Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(photos / "sixteen.png")
    out = tmp_path / "out"
    run_cli("explain", model, photos, "--target", "0", "-o", out, check_exit=0)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["results"]) == 4 and not summary["failures"]
    for r in summary["results"]:
        assert 38 <= r["peak"]["x"] <= 46 and 3 <= r["peak"]["y"] <= 11, r
    proc = run_cli("explain", model, photos / "rgba.png", "--max-pixels", "1000", "-o", out, check_exit=1)
    assert "rgba.png" in proc.stderr and "pixels" in proc.stderr


def test_folder_walk_skips_the_panels_onnxcam_wrote(tmp_path):
    """An output folder inside the input folder must not feed earlier panels back in as photos."""
    from onnxcam.cli.explain_files import collect_images

    for name in ("photo.png", "photo.png.cam.png", "photo.png.compare.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [rel.name for _, rel in collect_images([str(tmp_path)])] == ["photo.png"]


def test_model_output_picks_the_explained_output(tmp_path):
    """--model-output names the output to explain (here a second head, -logits); a wrong name is one error line."""
    from onnx import helper

    model = tiny_cnn()
    model.graph.node.append(helper.make_node("Neg", ["logits"], ["second"]))
    model.graph.output.append(helper.make_tensor_value_info("second", onnx.TensorProto.FLOAT, ["N", 5]))
    path = tmp_path / "two_heads.onnx"
    onnx.save(model, path)
    out = tmp_path / "second.explainer.onnx"
    run_cli("export", path, "-o", out, "--model-output", "second", check_exit=0)
    x = np.random.default_rng(5).random((2, 3, 16, 16), dtype=np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x, "target_class": np.array([-1, 3])})))
    want = onnxcam.Explainer(path, output="second").explain(x, target=[int(got["target"][0]), 3])
    first = onnxcam.Explainer(path).explain(x, target=[int(got["target"][0]), 3])
    np.testing.assert_allclose(got["cam"], want.cam, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got["cam_lowres"], first.cam_lowres)  # the -logits head ranks classes the other way
    bad = run_cli("export", path, "-o", tmp_path / "bad.onnx", "--model-output", "third", check_exit=1)
    assert bad.stderr.count("\n") == 1 and "no output 'third'" in bad.stderr


def gated_model(size: int = 32) -> onnx.ModelProto:
    """Two inputs: ``meta`` (N, 2) weights a brightness map and a darkness map; class 0 is their gated sum."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([[1 / 3] * 3, [-1 / 3] * 3], np.float32).reshape(2, 3, 1, 1), "w")
    bias = numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "bias")
    fc = numpy_helper.from_array(np.array([[1.0, 0.0], [1.0, 0.0]], np.float32), "fc")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [
        helper.make_node("Conv", ["image", "w", "bias"], ["c"]),
        helper.make_node("Relu", ["c"], ["maps"]),
        helper.make_node("Unsqueeze", ["meta", "axes"], ["meta4"]),
        helper.make_node("Mul", ["maps", "meta4"], ["gated"]),
        helper.make_node("GlobalAveragePool", ["gated"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    g = helper.make_graph(
        nodes,
        "gated",
        [
            helper.make_tensor_value_info("meta", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [w, bias, fc, axes],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_other_model_inputs_come_from_npy_files(tmp_path):
    model = tmp_path / "gated.onnx"
    onnx.save(gated_model(), model)
    blob_image(tmp_path / "a.png", 64, 64, cx=45, cy=15, radius=5)
    common = ("explain", model, tmp_path / "a.png", "--preprocess", "raw01", "--target", "0")

    missing = run_cli(*common, "-o", tmp_path / "o0", check_exit=1)
    assert "--input NAME=FILE.npy" in missing.stderr and "'meta'" in missing.stderr
    assert not (tmp_path / "o0" / "a.png.cam.png").exists()

    peaks = {}
    for name, value in {"bright": np.array([1.0, 0.0]), "dark": np.array([[0.0, 1.0]])}.items():
        np.save(tmp_path / f"{name}.npy", value.astype(np.float32))
        out = tmp_path / name
        run_cli(*common, "--input", f"meta={tmp_path / f'{name}.npy'}", "-o", out, check_exit=0)
        result = json.loads((out / "summary.json").read_text())["results"][0]
        peaks[name] = (result["peak"]["x"], result["peak"]["y"])
    # Gated to brightness the map peaks on the blob; gated to darkness anywhere but on it.
    assert abs(peaks["bright"][0] - 45) <= 3 and abs(peaks["bright"][1] - 15) <= 3, peaks
    assert np.hypot(peaks["dark"][0] - 45, peaks["dark"][1] - 15) > 10, peaks

    np.save(tmp_path / "three.npy", np.zeros(3, np.float32))
    np.save(tmp_path / "ints.npy", np.zeros(2, np.int64))
    for bad, message in [
        ("nope=x.npy", "has no input 'nope'"),
        ("image=x.npy", "the image input"),
        (f"meta={tmp_path / 'three.npy'}", "has shape (1, 3)"),
        (f"meta={tmp_path / 'ints.npy'}", "holds int64 values"),
        (f"meta={tmp_path / 'absent.npy'}", "cannot read"),
        ("meta", "NAME=FILE.npy"),
    ]:
        err = run_cli(*common, "--input", bad, "-o", tmp_path / "bad", check_exit=1).stderr
        assert message in err and "Traceback" not in err, (bad, err)

"""``onnxcam explain --top K`` and ``--multilabel [THRESHOLD]`` against the Python API on the same pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

import onnxcam
from onnxcam.preprocess import derive_spec, load_image, preprocess_image
from tests.test_cli import blob_image, run_cli
from tests.test_targets_batched import _with_head
from tests.tiny_models import tiny_cnn


def _images(folder, count: int = 3):
    paths = []
    for i in range(count):
        paths.append(folder / f"img{i}.png")
        blob_image(paths[-1], 24, 24, 5 + 6 * i, 8 + 4 * i, radius=4)
    return paths


def _api_batch(ex, model_path, paths) -> np.ndarray:
    spec = derive_spec(ex.index, model_path=model_path)
    return np.stack([preprocess_image(load_image(p)[0], spec)[0] for p in paths])


def _summary(out):
    return json.loads((out / "summary.json").read_text())["results"]


def test_top_k_rows_match_the_api(tmp_path):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(classes=5, seed=8), model)
    paths = _images(tmp_path)
    run_cli("explain", model, *paths, "--top", "3", "-o", tmp_path / "o", check_exit=0)
    ex = onnxcam.Explainer(model)
    res = ex.explain(_api_batch(ex, model, paths), target=onnxcam.TopK(3))
    records = _summary(tmp_path / "o")
    assert [r["target"] for r in records] == res.targets.tolist()
    scores = ex.class_scores(res)
    np.testing.assert_allclose([r["score"] for r in records], scores[np.arange(9), res.targets], rtol=1e-5)
    assert all((tmp_path / "o" / f"{p.name}.cam.png").exists() for p in paths)


def test_multilabel_rows_match_the_api_and_an_image_with_none_gets_a_note(tmp_path):
    model = tmp_path / "multilabel.onnx"
    proto = _with_head(tiny_cnn(classes=5, seed=9), "Sigmoid")
    for init in proto.graph.initializer:  # moderate logits, so probabilities do not all round to 1
        if init.name == "wf":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 0.05, "wf"))
    onnx.save(proto, model)
    paths = _images(tmp_path)
    ex = onnxcam.Explainer(model)
    x = _api_batch(ex, model, paths)
    probs = ex.predict(x).outputs["probs"]
    weakest, next_weakest = np.sort(probs.max(axis=1))[:2]
    threshold = float(weakest + next_weakest) / 2  # the weakest image has no class this high, the others do
    run_cli("explain", model, *paths, "--multilabel", threshold, "-o", tmp_path / "o", check_exit=0)
    res = ex.explain(x, target=onnxcam.MultiLabelTarget(threshold))
    records = _summary(tmp_path / "o")
    empty = int(np.argmin(probs.max(axis=1)))
    assert [r for r in records if r["target"] is None] == [
        {"image": str(paths[empty]), "target": None, "note": f"no class with probability >= {threshold}"}
    ]
    got = [(r["image"], r["target"]) for r in records if r["target"] is not None]
    assert got == [(str(paths[i]), int(c)) for i, c in zip(res.image_index, res.targets)] and got
    assert not (tmp_path / "o" / f"{paths[empty].name}.cam.png").exists()


def test_multilabel_on_a_softmax_model_is_one_clear_error(tmp_path):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), model)
    proc = run_cli("explain", model, *_images(tmp_path, 1), "--multilabel", "-o", tmp_path / "o", check_exit=1)
    assert "use onnxcam.TopK" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_several_target_ids_in_one_run_match_the_api_per_class(tmp_path):
    """--target 2 0 4 explains each image for each class, in one batch, as separate API calls would."""
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(classes=5, seed=8), model)
    paths = _images(tmp_path)
    run_cli("explain", model, *paths, "--target", "2", "0", "4", "-o", tmp_path / "o", check_exit=0)
    ex = onnxcam.Explainer(model)
    x = _api_batch(ex, model, paths)
    records = _summary(tmp_path / "o")
    assert [r["target"] for r in records] == [2, 0, 4] * len(paths)
    for j, cls in enumerate((2, 0, 4)):
        res = ex.explain(x, target=cls)
        rows = records[j::3]
        np.testing.assert_allclose([r["score"] for r in rows], ex.class_scores(res)[:, cls], rtol=1e-5)
        assert [Path(r["image"]).name for r in rows] == [p.name for p in paths]

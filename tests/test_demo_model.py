"""The embedded demo model (``onnxcam.demo``): it classifies, and onnxcam's Grad-CAM localises.

Localisation is the pointing game (Zhang et al., "Top-down neural attention by
excitation backprop", 2016): a hit when the CAM's maximum falls inside the
object's ground-truth box. Zhang et al. allow 15 px of tolerance on ~224 px
images; on these 96 px images that would be a sixth of the image, so the
tolerance here is ``POINTING_TOL_PX`` (see below). The baseline is the
center point (always pointing at the image center), scored on the same images.

The target explained is the *true* class, as in the pointing game (it asks
whether the evidence for the object's class lies on the object); on the few
misclassified images the top-1 class would be explaining a wrong answer.

The held-out set comes from a seed (``HELD_OUT_SEED``) that
``model_zoo/train_demo.py`` never uses (training 1, validation 2, samples 3).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime")

import onnxcam  # noqa: E402
from onnxcam import demo  # noqa: E402
from model_zoo.demo_data import CLASSES, SIZE, generate  # noqa: E402

HELD_OUT_SEED = 20240
N_HELD_OUT = 200
POINTING_TOL_PX = 0  # the peak pixel itself must lie in the tight box
MIN_ACCURACY = 0.90
MIN_POINTING = 0.90
MIN_MARGIN_OVER_CENTER = 0.30


@pytest.fixture(scope="module")
def held_out():
    images, labels, boxes = generate(N_HELD_OUT, HELD_OUT_SEED)
    return demo.preprocess(images), labels, boxes


@pytest.fixture(scope="module")
def explained(held_out):
    x, labels, _ = held_out
    ex = onnxcam.Explainer(demo.DEMO_MODEL, layer="auto")
    return ex, ex.explain(x, target=labels)


def pointing_hits(py: np.ndarray, px: np.ndarray, boxes: np.ndarray, tol: float = POINTING_TOL_PX) -> np.ndarray:
    """Boxes are (x0, y0, x1, y1), end-exclusive; a point (py, px) hits when x0 - tol <= px < x1 + tol, same in y."""
    return (px >= boxes[:, 0] - tol) & (px < boxes[:, 2] + tol) & (py >= boxes[:, 1] - tol) & (py < boxes[:, 3] + tol)


def test_files_and_metadata():
    assert demo.DEMO_MODEL.is_file() and demo.DEMO_MODEL.stat().st_size <= 2 * 1024 * 1024
    assert demo.DEMO_LABELS == list(CLASSES)
    m = onnx.load(str(demo.DEMO_MODEL))
    assert m.ir_version <= 10
    assert [i.name for i in m.graph.input] == ["image"] and [o.name for o in m.graph.output] == ["logits"]
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["onnxcam.labels"]) == demo.DEMO_LABELS
    pre = json.loads(meta["onnxcam.preprocess"])
    assert pre["preset"] == "raw01" and pre["size"] == [SIZE, SIZE] and pre["layout"] == "NCHW"
    assert len(demo.DEMO_IMAGES) >= 6 and all(p.is_file() for p in demo.DEMO_IMAGES)


def test_generator_is_deterministic_and_prefix_stable():
    a = generate(8, 99)
    b = generate(8, 99)
    c = generate(4, 99)
    for u, v, w in zip(a, b, c):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(u[:4], w)
    assert not np.array_equal(a[0], generate(8, 98)[0])


def test_sample_images_match_their_records():
    """The shipped PNGs are the generator's images, and the model classifies and localises them."""
    samples = json.loads((demo.DEMO_MODEL.parent / "samples.json").read_text())
    images, labels, boxes = generate(len(samples["samples"]), samples["seed"])
    x = np.concatenate([demo.load_image(p) for p in demo.DEMO_IMAGES])
    np.testing.assert_array_equal(x, demo.preprocess(images))
    assert [s["label"] for s in demo.DEMO_SAMPLES] == labels.tolist()
    assert [s["box"] for s in demo.DEMO_SAMPLES] == boxes.tolist()
    res = onnxcam.Explainer(demo.DEMO_MODEL).explain(x)  # top-1, as a user would call it
    assert res.targets.tolist() == labels.tolist()
    py, px = np.divmod(res.cam.reshape(len(x), -1).argmax(1), res.cam.shape[2])
    assert pointing_hits(py, px, boxes).all()


def test_held_out_accuracy(held_out, explained):
    _, labels, _ = held_out
    _, res = explained
    acc = float((res.outputs["logits"].argmax(1) == labels).mean())
    assert acc >= MIN_ACCURACY, f"held-out accuracy {acc:.3f}"


def test_pointing_game_beats_center_baseline(held_out, explained):
    x, labels, boxes = held_out
    ex, res = explained
    assert res.cam.shape == (N_HELD_OUT, SIZE, SIZE)
    lowres = res.cam_lowres
    assert lowres.shape[1] >= 6 and lowres.shape[2] >= 6, f"layer {ex.layer} is only {lowres.shape[1:]}"
    np.testing.assert_array_equal(res.targets, labels)
    py, px = np.divmod(res.cam.reshape(N_HELD_OUT, -1).argmax(1), SIZE)
    rate = float(pointing_hits(py, px, boxes).mean())
    c = (SIZE - 1) / 2  # the center of a 96 px image falls between pixels 47 and 48
    center = float(pointing_hits(np.full(N_HELD_OUT, c), np.full(N_HELD_OUT, c), boxes).mean())
    assert rate >= MIN_POINTING, f"pointing game {rate:.3f} (center baseline {center:.3f})"
    assert rate >= center + MIN_MARGIN_OVER_CENTER, f"pointing game {rate:.3f} vs center baseline {center:.3f}"

"""Explanation-quality metrics on hand-built cases whose answers are known.

The model-based cases use a linear ONNX model built with onnx.helper: a 1x1
identity Conv (the spatial layer an Explainer needs), Flatten, MatMul, Add.
Its class-0 logit is ``sum(w * x) + b0`` and class 1's is a constant, so the
class-0 probability after any perturbation is a sigmoid of a sum we can write
down, and every forward pass still goes through ``Explainer.predict``.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")

import onnxcam  # noqa: E402
from onnxcam.errors import OnnxcamError  # noqa: E402
from onnxcam.metrics import (  # noqa: E402
    ClassScorer,
    box_iou,
    center_maps,
    confidence_change,
    curve_auc,
    deletion,
    faithfulness,
    gaussian_blur,
    insertion,
    localization_error,
    localization_iou,
    noisy_linear_impute,
    occlusion_maps,
    peak_box_distance,
    pointing_hit,
    random_maps,
    randomized_copy,
    road,
    softmax_probabilities,
    weight_layers,
)
from onnxcam.metrics.faithfulness import patch_starts  # noqa: E402
from onnxcam.metrics.localization import distance_to_box  # noqa: E402


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-np.asarray(v, dtype=np.float64)))


def linear_model(w0: np.ndarray, c: float) -> onnx.ModelProto:
    """logits = [sum(w0 * x), c] for x of shape (N, 1, H, W)."""
    h, w = w0.shape
    weight = np.stack([w0.ravel(), np.zeros(h * w)], axis=1).astype(np.float32)  # (H*W, 2)
    inits = [
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "conv_w"),
        numpy_helper.from_array(weight, "fc_w"),
        numpy_helper.from_array(np.array([0.0, c], np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["feat"], name="conv"),
        helper.make_node("Flatten", ["feat"], ["flat"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fc_b"], ["logits"], name="bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def scorer_for(w0, c, batch_size=7):
    ex = onnxcam.Explainer(linear_model(w0, c))
    return ClassScorer.from_explainer(ex, batch_size=batch_size)


# ------------------------------------------------------------------ pointing game and localisation

BOX = (10, 20, 30, 40)  # x0, y0, x1, y1: columns 10..29, rows 20..39


def box_map(box=BOX, size=(64, 64)) -> np.ndarray:
    cam = np.zeros(size, np.float32)
    x0, y0, x1, y1 = box
    cam[y0:y1, x0:x1] = 1.0
    return cam


def test_distance_to_box():
    assert distance_to_box(25, 15, BOX) == 0.0  # inside
    assert distance_to_box(25, 34.5, BOX) == 5.0  # pixel centre 35.0, box edge 30
    assert distance_to_box(44.5, 34.5, BOX) == pytest.approx(math.hypot(5, 5))  # beyond a corner


def test_pointing_map_covering_the_box_hits_and_a_map_elsewhere_misses():
    cam = box_map()
    assert pointing_hit(cam, [BOX]) and peak_box_distance(cam, [BOX]) == 0.0
    far = np.zeros((64, 64), np.float32)
    far[60, 60] = 1.0  # centre (60.5, 60.5): 20.5 px right of and below the box corner
    assert peak_box_distance(far, [BOX]) == pytest.approx(math.hypot(30.5, 20.5))
    assert not pointing_hit(far, [BOX])
    near = np.zeros((64, 64), np.float32)
    near[25, 44] = 1.0  # centre 44.5: 14.5 px right of the box -> within Zhang et al.'s 15 px
    assert pointing_hit(near, [BOX]) and not pointing_hit(near, [BOX], tolerance=14)
    assert pointing_hit(far, [BOX, (55, 55, 64, 64)])  # any of several boxes counts


def test_constant_map_points_at_its_first_pixel():
    flat = np.full((64, 64), 0.5, np.float32)
    assert not pointing_hit(flat, [BOX])  # peak (0, 0): 20 px above, 10 px left
    assert pointing_hit(flat, [(0, 0, 5, 5)])


def test_box_iou_known_values():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0


def test_localization_exact_cover_miss_constant_and_zero_maps():
    assert localization_iou(box_map(), [BOX]) == 1.0
    # the largest region above 15% is the box even with a weaker, smaller blob elsewhere
    cam = box_map() + 0.5 * box_map((50, 2, 54, 6))
    assert localization_iou(cam, [BOX]) == 1.0
    assert localization_iou(box_map((40, 0, 60, 10)), [BOX]) == 0.0  # misses it
    # a constant map's region is the whole image: IoU = box area / image area
    assert localization_iou(np.ones((64, 64)), [BOX]) == pytest.approx(400 / 4096)
    assert localization_iou(np.zeros((64, 64)), [BOX]) == 0.0  # no region at all
    # 15% threshold: a halo at 10% of the max is ignored, at 20% it widens the box
    halo = box_map((5, 15, 35, 45)) * 0.10
    assert localization_iou(np.maximum(box_map(), halo), [BOX]) == 1.0
    assert localization_iou(np.maximum(box_map(), 2 * halo), [BOX]) == pytest.approx(400 / 900)


def test_top1_localization_error_counts_wrong_class_or_bad_box():
    assert localization_error(1.0, predicted_class=3, true_class=3) == 0.0
    assert localization_error(1.0, predicted_class=2, true_class=3) == 1.0  # wrong class, perfect box
    assert localization_error(0.49, predicted_class=3, true_class=3) == 1.0
    assert localization_error(0.5, predicted_class=3, true_class=3) == 0.0
    assert localization_error(0.9, predicted_class=3, true_class=None) is None


# ------------------------------------------------------------------ deletion / insertion

A, C = 2.0, 3.0  # weight on the relevant pixels and the constant logit of class 1
W0 = np.zeros((4, 4))
W0[0, :] = A  # the first raster row carries all the evidence


def test_deletion_curve_and_auc_are_known_for_a_linear_model():
    scorer = scorer_for(W0, C)
    x = np.ones((1, 1, 4, 4), np.float32)
    k = np.arange(17)  # 16 pixels, 16 steps: one pixel per step
    expected_good = sigmoid(A * np.maximum(4 - k, 0) - C)  # the 4 evidence pixels go first
    expected_bad = sigmoid(A * np.minimum(4, 16 - k) - C)  # they go last
    good = deletion(scorer, x, W0[None], [0], steps=16)
    bad = deletion(scorer, x, (1 - W0 / A)[None], [0], steps=16)
    flat = deletion(scorer, x, np.ones((1, 4, 4)), [0], steps=16)  # constant map: raster order = row 0 first
    np.testing.assert_allclose(good.curves[0], expected_good, rtol=1e-6)
    np.testing.assert_allclose(bad.curves[0], expected_bad, rtol=1e-6)
    np.testing.assert_allclose(flat.curves[0], expected_good, rtol=1e-6)
    auc = (expected_good.sum() - (expected_good[0] + expected_good[-1]) / 2) / 16
    assert good.auc[0] == pytest.approx(auc, rel=1e-6)
    assert good.auc[0] < bad.auc[0]


def test_deletion_steps_group_pixels():
    scorer = scorer_for(W0, C)
    x = np.ones((2, 1, 4, 4), np.float32)  # two images in one call
    res = deletion(scorer, x, np.stack([W0, W0]), [0, 0], steps=4)  # 4 pixels per step
    np.testing.assert_allclose(res.curves, np.tile(sigmoid([4 * A - C, -C, -C, -C, -C]), (2, 1)), rtol=1e-6)
    assert scorer.images_scored == 10


def test_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).random((2, 3, 14, 12)).astype(np.float32)
    # numpy's "reflect" (no edge repeat) is scipy's "mirror"; radius 5 = 11 taps with truncate 1
    ref = ndimage.gaussian_filter(x.astype(np.float64), sigma=(0, 0, 5, 5), mode="mirror", truncate=1.0)
    np.testing.assert_allclose(gaussian_blur(x), ref, atol=1e-5)


def test_insertion_curve_is_known_for_a_linear_model():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    w0 = rng.normal(0, 0.3, (12, 12))
    x = rng.random((1, 1, 12, 12)).astype(np.float32)
    cam = w0 * x[0, 0]
    blurred = ndimage.gaussian_filter(x[0, 0].astype(np.float64), sigma=5, mode="mirror", truncate=1.0)
    order = sorted(range(144), key=lambda i: -cam.ravel()[i])
    expected, values = [], blurred.ravel().copy()
    for k in range(145):  # one pixel per step
        if k:
            values[order[k - 1]] = x.ravel()[order[k - 1]]
        expected.append(sigmoid(float((w0.ravel() * values).sum()) - 0.5))
    res = insertion(scorer_for(w0, 0.5), x, cam[None], [0], steps=144)
    np.testing.assert_allclose(res.curves[0], expected, rtol=1e-4)
    assert res.curves[0, -1] == pytest.approx(sigmoid((w0 * x[0, 0]).sum() - 0.5), rel=1e-5)


def test_curve_auc_trapezoid():
    assert curve_auc(np.array([1.0, 0.0])) == 0.5
    assert curve_auc(np.array([1.0, 1.0, 1.0])) == 1.0
    with pytest.raises(OnnxcamError):
        curve_auc(np.array([1.0]))


# ------------------------------------------------------------------ average drop / increase


def test_average_drop_known_values():
    scorer = scorer_for(W0, C)
    x = np.ones((3, 1, 4, 4), np.float32)
    keep = (W0 > 0).astype(np.float32)
    maps = np.stack([keep, 1 - keep, np.full((4, 4), 0.5, np.float32)])  # covers, misses, constant
    res = confidence_change(scorer, x, maps, [0, 0, 0])
    y = sigmoid(4 * A - C)
    np.testing.assert_allclose(res.full, y, rtol=1e-6)
    np.testing.assert_allclose(res.masked, sigmoid([4 * A - C, -C, 2 * A - C]), rtol=1e-6)
    expected_drop = [0.0, (y - sigmoid(-C)) / y, (y - sigmoid(2 * A - C)) / y]
    np.testing.assert_allclose(res.drop, expected_drop, rtol=1e-5, atol=1e-7)
    assert res.average_drop == pytest.approx(100 * np.mean(expected_drop), rel=1e-5)
    assert res.increase_in_confidence == 0.0


def test_increase_in_confidence_when_masking_removes_counter_evidence():
    w0 = W0.copy()
    w0[3, :] = -1.0  # the last row argues against class 0
    keep = (W0 > 0).astype(np.float32)  # the map keeps only the evidence for it
    res = confidence_change(scorer_for(w0, C), np.ones((1, 1, 4, 4), np.float32), keep[None], [0])
    assert res.masked[0] == pytest.approx(sigmoid(4 * A - C)) and res.full[0] == pytest.approx(sigmoid(4 * A - 4 - C))
    assert res.increase_in_confidence == 100.0 and res.average_drop == 0.0


# ------------------------------------------------------------------ ROAD


def test_noisy_linear_imputation_reproduces_a_linear_ramp_inside():
    pytest.importorskip("scipy")  # ROAD's sparse solve (onnxcam[metrics])
    yy, xx = np.mgrid[0:12, 0:14].astype(np.float64)
    image = np.stack([2 + 0.5 * yy - 0.25 * xx, -1 + 0.1 * xx, 0.3 * yy])
    hole = np.zeros((12, 14), bool)
    hole[3:9, 4:11] = True  # interior: every removed pixel has all 8 neighbours inside the image
    hole[5, 2] = True
    out = noisy_linear_impute(image, hole, noise=0.0)
    np.testing.assert_allclose(out, image, atol=1e-5)
    noisy = noisy_linear_impute(image, hole, noise=0.2, rng=np.random.default_rng(0))
    assert np.std(noisy[:, hole] - image[:, hole]) == pytest.approx(0.2, rel=0.2)
    np.testing.assert_array_equal(noisy[:, ~hole], image[:, ~hole].astype(np.float32))


def test_noisy_linear_imputation_matches_jacobi_fixed_point_at_borders():
    pytest.importorskip("scipy")  # ROAD's sparse solve (onnxcam[metrics])
    """Each filled pixel is the weighted mean of its in-image neighbours (1/6 edge, 1/12 corner)."""
    rng = np.random.default_rng(2)
    image = rng.random((2, 7, 8))
    hole = rng.random((7, 8)) < 0.5
    hole[0, :3] = True  # touch the border and a corner
    out = noisy_linear_impute(image, hole, noise=0.0).astype(np.float64)
    ref = image.copy()
    ref[:, hole] = 0.0
    nbrs = [
        (dy, dx, 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
    ]
    for _ in range(3000):  # plain Jacobi iteration of the same equations
        new = ref.copy()
        for y, x in zip(*np.nonzero(hole)):
            num, den = 0.0, 0.0
            for dy, dx, wgt in nbrs:
                if 0 <= y + dy < 7 and 0 <= x + dx < 8:
                    num, den = num + wgt * ref[:, y + dy, x + dx], den + wgt
            new[:, y, x] = num / den
        ref = new
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_road_on_a_constant_image_changes_nothing():
    pytest.importorskip("scipy")  # ROAD's sparse solve (onnxcam[metrics])
    scorer = scorer_for(W0, C)
    x = np.ones((1, 1, 4, 4), np.float32)
    res = road(scorer, x, W0[None], [0], percentages=(25, 50, 75), noise=0.0)
    np.testing.assert_allclose(res.morf, sigmoid(4 * A - C), rtol=1e-5)
    np.testing.assert_allclose(res.lerf, sigmoid(4 * A - C), rtol=1e-5)


def test_road_morf_removes_the_evidence_first():
    pytest.importorskip("scipy")  # ROAD's sparse solve (onnxcam[metrics])
    rng = np.random.default_rng(3)
    x = (0.2 + 0.05 * rng.random((1, 1, 8, 8))).astype(np.float32)
    w0 = np.zeros((8, 8))
    w0[2:4, 2:4] = 3.0
    x[0, 0, 2:4, 2:4] = 1.0  # a bright, decisive patch
    res = road(scorer_for(w0, 4.0), x, (w0 * x[0, 0])[None], [0], percentages=(10, 50), noise=0.0)
    assert (res.morf < res.lerf).all()
    # MoRF at 10% removes the 4 patch pixels (6 of 64): they are filled with neighbour means, near 0.2
    assert res.morf[0, 0] < sigmoid(4 * 3 * 0.6 - 4.0)
    assert res.lerf[0, 0] == pytest.approx(sigmoid(12.0 - 4.0), rel=1e-5)  # untouched evidence


# ------------------------------------------------------------------ faithfulness


def test_occlusion_maps_of_a_linear_model():
    rng = np.random.default_rng(4)
    w0 = rng.normal(0, 1, (4, 4))
    x = rng.random((1, 1, 4, 4)).astype(np.float32)
    scorer = scorer_for(w0, 0.0)
    single = occlusion_maps(scorer, x, [0], patch=1, stride=1)
    np.testing.assert_allclose(single[0], w0 * x[0, 0], rtol=1e-5, atol=1e-6)  # the logit falls by w * x
    blocks = occlusion_maps(scorer, x, [0], patch=2, stride=2)
    contrib = (w0 * x[0, 0]).reshape(2, 2, 2, 2).sum(axis=(1, 3))  # per 2x2 block
    np.testing.assert_allclose(blocks[0], np.kron(contrib, np.ones((2, 2))), rtol=1e-5, atol=1e-6)
    assert faithfulness((w0 * x[0, 0])[None], single)[0] == pytest.approx(1.0)
    assert faithfulness((-w0 * x[0, 0])[None], single)[0] == pytest.approx(-1.0)
    assert math.isnan(faithfulness(np.ones((1, 4, 4)), single)[0])  # a constant map ranks nothing


def test_patch_starts_reach_the_far_edge():
    assert patch_starts(10, 4, 3) == [0, 3, 6]
    assert patch_starts(11, 4, 3) == [0, 3, 6, 7]
    assert patch_starts(3, 5, 2) == [0]


# ------------------------------------------------------------------ sanity check helpers


def test_weight_layers_top_down_and_randomized_copy_leaves_the_original():
    model = linear_model(W0, C)
    before = model.SerializeToString()
    assert weight_layers(model) == [("bias", ["fc_b"]), ("fc", ["fc_w"]), ("conv", ["conv_w"])]
    copy = randomized_copy(model, ["fc_w"], seed=1)
    assert model.SerializeToString() == before
    arrays = {t.name: numpy_helper.to_array(t) for t in copy.graph.initializer}
    orig = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert not np.array_equal(arrays["fc_w"], orig["fc_w"]) and arrays["fc_w"].dtype == np.float32
    np.testing.assert_array_equal(arrays["fc_b"], orig["fc_b"])
    np.testing.assert_array_equal(arrays["conv_w"], orig["conv_w"])


# ------------------------------------------------------------------ scoring and baselines


def test_softmax_and_sigmoid_probabilities():
    np.testing.assert_allclose(softmax_probabilities(np.array([[0.0, math.log(3)]])), [[0.25, 0.75]])
    np.testing.assert_allclose(softmax_probabilities(np.array([[0.0], [2.0]])), [[0.5], [sigmoid(2.0)]])


def test_scorer_batches_by_batch_size():
    calls = []

    def fake(x):
        calls.append(len(x))
        return x.reshape(len(x), -1)[:, :2]

    s = ClassScorer(fake, batch_size=3)
    s.scores(np.zeros((7, 1, 2, 2), np.float32))
    assert calls == [3, 3, 1] and s.images_scored == 7
    seen = []
    nhwc = ClassScorer(lambda x: seen.append(x.shape) or x.reshape(len(x), -1), channels_last=True, dtype=np.uint8)
    out = nhwc.scores(np.full((2, 3, 4, 5), 7.6, np.float32))  # metrics work channels-first; the model is NHWC
    assert seen == [(2, 4, 5, 3)] and (out == 8).all()  # rounded to the model's integer input type
    with pytest.raises(OnnxcamError):
        ClassScorer(fake, batch_size=0)


def test_baseline_maps():
    c = center_maps(2, (9, 11))
    assert c.shape == (2, 9, 11) and c[0, 4, 5] == c.max() == 1.0
    r1, r2 = random_maps(3, (32, 40), seed=5), random_maps(3, (32, 40), seed=5)
    np.testing.assert_array_equal(r1, r2)
    assert r1.min() == 0.0 and r1.max() == 1.0 and not np.array_equal(r1[0], r1[1])


def test_scorer_probabilities_follow_the_final_squashing_op():
    """A multi-label Sigmoid head's probabilities are per-class sigmoids, not a softmax across classes."""
    from onnxcam.metrics.scoring import ClassScorer

    logits = np.array([[2.0, -1.0, 0.5]])
    sig = ClassScorer(lambda x: logits, squash="Sigmoid").probabilities(logits)
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-logits)))
    soft = ClassScorer(lambda x: logits, squash="Softmax").probabilities(logits)
    np.testing.assert_allclose(soft, np.exp(logits) / np.exp(logits).sum())

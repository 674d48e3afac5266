"""Top-k and multi-label targets (one batched run), seed validation, and which input a heatmap covers.

References: top-k and multi-label rows must equal explaining each (image,
class) pair on its own with an explicit class, which ``tests/test_targets.py``
checks against torch autograd; the class sets are recomputed here from the
model's own scores with numpy. Seeds are compared with arrays built by hand.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxcam
from onnxcam.errors import TargetError
from tests.tiny_models import tiny_cnn


def _with_head(model: onnx.ModelProto, op: str | None) -> onnx.ModelProto:
    """The tiny CNN with its final Softmax replaced by ``op`` (a Sigmoid), or removed (the logits are the output)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    last = m.graph.node[-1]
    assert last.op_type == "Softmax"
    if op is None:
        m.graph.node.remove(last)
        m.graph.output[0].name = "logits"
    else:
        m.graph.node.remove(last)
        m.graph.node.append(helper.make_node(op, ["logits"], ["probs"], name="head"))
    onnx.checker.check_model(m)
    return m


def _batch(n: int = 4, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


class _CountRuns:
    """Wraps a session's ``run`` to count calls."""

    def __init__(self, session):
        self.calls, self._run = 0, session.run
        session.run = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._run(*args, **kwargs)


def test_top_k_is_one_run_and_equals_each_rank_explained_alone():
    ex = onnxcam.Explainer(tiny_cnn(classes=6, seed=2))
    x = _batch()
    order = np.argsort(-ex.predict(x).scores, axis=1, kind="stable")[:, :3]
    runs = _CountRuns(ex._graphs.ready("rank", ex.score_spec)[1])  # the session a TopK run must use once
    res = ex.explain(x, target=onnxcam.TopK(3))
    assert runs.calls == 1
    assert res.targets.tolist() == order.ravel().tolist()
    assert res.image_index.tolist() == np.repeat(np.arange(4), 3).tolist()
    assert res.cam.shape == (12, 16, 16) and res.outputs["probs"].shape == (12, 6)
    for rank in range(3):
        alone = ex.explain(x, target=order[:, rank].tolist())
        np.testing.assert_allclose(res.cam_lowres[rank::3], alone.cam_lowres, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.cam[rank::3], alone.cam, rtol=1e-5, atol=1e-6)


def test_rank_export_explains_the_rank_r_class_in_a_bare_session(tmp_path):
    """mode="rank" files take -r for the rank-r class; the default class file reads any negative id as top-1."""
    import onnxruntime as ort

    ex = onnxcam.Explainer(tiny_cnn(classes=6, seed=2))
    x = _batch()
    order = np.argsort(-ex.predict(x).scores, axis=1, kind="stable")
    ex.export(tmp_path / "rank.onnx", mode="rank")
    ex.export(tmp_path / "class.onnx")
    for name, expected in (("rank.onnx", order[:, 1]), ("class.onnx", order[:, 0])):
        sess = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        got = dict(
            zip(
                [o.name for o in sess.get_outputs()],
                sess.run(None, {"x": x, "target_class": np.full(len(x), -2, np.int64)}),
            )
        )
        assert got["target"].tolist() == expected.tolist()
        np.testing.assert_allclose(got["cam"], ex.explain(x, target=expected.tolist()).cam, rtol=1e-5, atol=1e-6)


def test_top_k_breaks_ties_like_argmax():
    """Equal scores rank the lower class id first, so rank 1 is exactly what target=None explains."""
    model = tiny_cnn(classes=4, seed=1)
    for init in model.graph.initializer:
        if init.name in ("wf", "bf"):
            init.CopyFrom(numpy_helper.from_array(np.zeros(numpy_helper.to_array(init).shape, np.float32), init.name))
    ex = onnxcam.Explainer(model)
    res = ex.explain(_batch(2), target=onnxcam.TopK(4))
    assert res.targets.tolist() == [0, 1, 2, 3] * 2
    assert ex.explain(_batch(2)).targets.tolist() == [0, 0]


@pytest.mark.parametrize("k", [0, 7, True, 2.0])
def test_top_k_rejects_bad_k(k):
    ex = onnxcam.Explainer(tiny_cnn(classes=6))
    with pytest.raises(TargetError, match="TopK k"):
        ex.explain(_batch(1), target=onnxcam.TopK(k))


@pytest.mark.parametrize("head", ["Sigmoid", None], ids=["sigmoid-output", "raw-logits"])
def test_multilabel_explains_every_class_above_the_threshold(head):
    ex = onnxcam.Explainer(_with_head(tiny_cnn(classes=5, seed=6), head))
    x = _batch(4)
    logits = ex.predict(x).scores.astype(np.float64)
    probabilities = 1 / (1 + np.exp(-logits))
    threshold = float(np.median(probabilities))
    want = np.argwhere(probabilities >= threshold)
    res = ex.explain(x, target=onnxcam.MultiLabelTarget(threshold))
    assert res.image_index.tolist() == want[:, 0].tolist() and res.targets.tolist() == want[:, 1].tolist()
    alone = ex.explain(x[want[:, 0]], target=want[:, 1].tolist())
    np.testing.assert_allclose(res.cam_lowres, alone.cam_lowres, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.cam, alone.cam, rtol=1e-5, atol=1e-6)


def test_multilabel_with_no_class_above_the_threshold_is_empty_not_an_error():
    ex = onnxcam.Explainer(_with_head(tiny_cnn(classes=5), "Sigmoid"))
    res = ex.explain(_batch(3), target=onnxcam.MultiLabelTarget(1.0))
    assert res.cam.shape == (0, 16, 16) and res.cam_lowres.shape == (0, 8, 8)
    assert res.targets.shape == (0,) and res.image_index.shape == (0,) and res.outputs["probs"].shape == (0, 5)


def test_multilabel_refuses_softmax_outputs_and_bad_thresholds():
    with pytest.raises(TargetError, match="Softmax.*TopK"):
        onnxcam.Explainer(tiny_cnn()).explain(_batch(1), target=onnxcam.MultiLabelTarget())
    with pytest.raises(TargetError, match="threshold"):
        onnxcam.Explainer(_with_head(tiny_cnn(), "Sigmoid")).explain(_batch(1), target=onnxcam.MultiLabelTarget(1.5))


# ------------------------------------------------------------------ seeds (no model needed)


def test_region_seed_with_a_category_is_the_mask_on_that_class():
    mask = np.zeros((6, 7), bool)
    mask[1:3, 2:5] = True
    seed = onnxcam.RegionTarget("out", mask, category=2).seed((2, 4, 6, 7), np.float32)
    want = np.zeros((2, 4, 6, 7), np.float32)
    want[:, 2, 1:3, 2:5] = 1
    np.testing.assert_array_equal(seed, want)


def test_region_seed_takes_dynamic_sizes_from_the_mask_and_keeps_per_image_weights():
    weights = np.random.default_rng(0).random((3, 5, 9)).astype(np.float32)
    seed = onnxcam.RegionTarget("out", weights, category=0).seed((3, 2, None, None), np.float64)
    assert seed.shape == (3, 2, 5, 9) and seed.dtype == np.float64
    np.testing.assert_array_equal(seed[:, 0], weights)
    assert not seed[:, 1].any()


@pytest.mark.parametrize(
    "mask, category, match",
    [
        (np.ones((5, 5)), 1, r"expected \(6, 7\)"),
        (np.ones((3, 6, 7)), 1, "3 entries on its batch axis for a batch of 2"),
        (np.ones((6, 7)), 4, "category 4 is out of range"),
        (np.zeros((6, 7)), 1, "selects nothing"),
        (np.full((6, 7), np.nan), 1, "finite"),
        (np.ones((6, 7)), None, r"expected \(4, 6, 7\)"),
    ],
)
def test_region_seed_errors(mask, category, match):
    with pytest.raises(TargetError, match=match):
        onnxcam.RegionTarget("out", mask, category=category).seed((2, 4, 6, 7), np.float32)


def test_similarity_seed_is_the_reference_shared_or_per_image():
    ref = np.arange(1, 5, dtype=np.float32)
    np.testing.assert_array_equal(onnxcam.SimilarityTarget("e", ref).seed((3, 4), np.float32), np.tile(ref, (3, 1)))
    per = np.stack([ref, -ref])
    np.testing.assert_array_equal(onnxcam.SimilarityTarget("e", per).seed((2, 4), np.float32), per)
    with pytest.raises(TargetError, match="all zeros"):
        onnxcam.SimilarityTarget("e", np.zeros(4)).seed((2, 4), np.float32)
    with pytest.raises(TargetError, match=r"expected \(4\)"):
        onnxcam.SimilarityTarget("e", np.ones(5)).seed((2, 4), np.float32)


def test_output_target_needs_static_sizes():
    with pytest.raises(TargetError, match="dynamic shape"):
        onnxcam.OutputTarget("out", (0, 1)).seed((2, None, 3), np.float32)


def test_seed_targets_on_another_output_share_one_explainer():
    """An Explainer made for ``probs`` explains a region of its classes through a seed on the logits too."""
    ex = onnxcam.Explainer(tiny_cnn(classes=5, seed=3))
    x = _batch(2)
    by_seed = ex.explain(x, target=onnxcam.SimilarityTarget("probs", np.eye(5, dtype=np.float32)[3]))
    np.testing.assert_allclose(by_seed.cam, ex.explain(x, target=3).cam, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ which input the heatmap covers


def _two_images(b_size: int) -> onnx.ModelProto:
    """Inputs ``a`` (N,3,16,16) and ``b`` (N,3,b,b): each through a Conv, b's upsampled to 16x16, summed."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)

    scale = numpy_helper.from_array(np.array([1, 1, 16 / b_size, 16 / b_size], np.float32), "scale")
    nodes = [
        helper.make_node("Conv", ["a", "wa"], ["ca"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["ca"], ["ra"]),
        helper.make_node("Conv", ["b", "wb"], ["cb"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["cb"], ["rb"]),
        helper.make_node("Resize", ["rb", "", "scale"], ["up"], mode="nearest"),
        helper.make_node("Add", ["ra", "up"], ["mix"]),
        helper.make_node("Conv", ["mix", "wm"], ["cm"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["cm"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wf"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "two_images",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3, 16, 16]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3, b_size, b_size]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [init("wa", 4, 3, 3, 3), init("wb", 4, 3, 3, 3), init("wm", 4, 4, 3, 3), init("wf", 3, 4), scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_two_image_inputs_of_different_sizes_need_a_layer_from_one_of_them():
    model = _two_images(8)
    with pytest.raises(onnxcam.OnnxcamError, match="several image inputs .*'a', 'b'.*choose a layer computed from one"):
        onnxcam.Explainer(model)
    rng = np.random.default_rng(1)
    feeds = {
        "a": rng.standard_normal((2, 3, 16, 16)).astype(np.float32),
        "b": rng.standard_normal((2, 3, 8, 8)).astype(np.float32),
    }
    assert onnxcam.Explainer(model, layer="ra").explain(feeds).cam.shape == (2, 16, 16)
    assert onnxcam.Explainer(model, layer="rb").explain(feeds).cam.shape == (2, 8, 8)


def test_two_image_inputs_of_one_size_share_the_heatmap():
    rng = np.random.default_rng(2)
    feeds = {k: rng.standard_normal((2, 3, 16, 16)).astype(np.float32) for k in "ab"}
    assert onnxcam.Explainer(_two_images(16)).explain(feeds).cam.shape == (2, 16, 16)


@pytest.mark.parametrize(
    "options", [{"method": "scorecam"}, {"aug_smooth": True}, {"method": "guided-gradcam", "aug_smooth": True}]
)
def test_host_side_methods_use_the_image_input_the_layer_comes_from(options):
    """Score-CAM masks, augmentations and guided products act on input ``b`` (not input 0) for a layer from ``b``."""
    rng = np.random.default_rng(3)
    feeds = {
        "a": rng.standard_normal((2, 3, 16, 16)).astype(np.float32),
        "b": rng.standard_normal((2, 3, 8, 8)).astype(np.float32),
    }
    res = onnxcam.Explainer(_two_images(8), layer="rb", **options).explain(feeds)
    assert res.cam.shape == (2, 8, 8) and np.isfinite(res.cam).all()
    if res.guided_gradcam is not None:
        assert res.guided_gradcam.shape == feeds["b"].shape

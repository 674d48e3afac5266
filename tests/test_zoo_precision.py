"""Float16 and static int8 QDQ copies of the demo model: they explain, and their heatmaps agree with float32.

Finite differences cannot serve as the oracle for these models (through
float16 rounding or int8 steps they measure the rounding, not the gradient),
so the oracle is the float32 model, whose gradients ``test_zoo_matrix.py``
ties to finite differences. Both copies explain the six demo images
(``onnxcam.demo.DEMO_IMAGES``) at the float32 model's automatic and earlier
layers, each image at the float32 model's top-1 class, and are compared with
``onnxcam.metrics.agreement`` (via ``model_zoo.precision_report.measure``).

Bounds, from the figures on 60 held-out images (README, "Tested models"):

* float16: ``cam_lowres`` within 5e-3 relative L2 (float16's unit roundoff is
  4.9e-4; measured 4e-4 at the last layer, 9e-4 one stage earlier, where the
  error has more layers to build up), Spearman above 0.99;
* int8: a different function (activations on 256 levels, weights per channel),
  so only the agreement a user would read: median Spearman above 0.95, median
  top-15 % IoU above 0.9, median peak distance at most 2 px (measured 0.998 /
  0.993 / 0 px at the last layer, 0.992 / 0.984 / 0 px earlier), same top-1.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxcam
from model_zoo.precision_report import counterpart, measure
from onnxcam.demo import DEMO_IMAGES
from tests.zoo_fixtures import zoo  # noqa: F401 - the session fixture


@pytest.fixture(scope="module")
def demo_images() -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in DEMO_IMAGES])


def _agreements(zoo, name, images):
    entry, path = zoo(name)
    base, base_path = zoo(entry.base)
    return [
        measure(base_path, path, layer, images, name, label)
        for label, layer in (("auto", base.suggested_layer), ("earlier", base.earlier_layer))
    ]


def test_float16_heatmaps_match_float32(zoo, demo_images):
    for a in _agreements(zoo, "demo_fp16", demo_images):
        assert np.nanmax(a.lowres_rel_l2) < 5e-3, f"{a.layer}: cam_lowres rel L2 {np.nanmax(a.lowres_rel_l2):.1e}"
        assert a.spearman.min() > 0.99 and a.same_top1 == 1.0, a.row()


def test_int8_heatmaps_agree_with_float32(zoo, demo_images):
    for a in _agreements(zoo, "demo_int8", demo_images):
        assert np.median(a.spearman) > 0.95, a.row()
        assert np.median(a.iou) > 0.9, a.row()
        assert np.median(a.peak_px) <= 2.0, a.row()
        assert a.same_top1 == 1.0, a.row()


def test_int8_layer_is_the_dequantized_tensor():
    """In a QDQ graph the float model's layer name is the raw producer output (a folded ReLU not yet applied)."""
    assert counterpart("a", ["a", "a_DequantizeLinear_Output"]) == "a_DequantizeLinear_Output"
    assert counterpart("a", ["a"]) == "a"


def _qdq_cnn() -> onnx.ModelProto:
    """image -> Conv -> QuantizeLinear (ReLU folded: zero point -128) -> DequantizeLinear -> GAP -> Gemm."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((8, 4)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(fc, "fc"),
        numpy_helper.from_array(np.float32(0.05), "s"),
        numpy_helper.from_array(np.int8(-128), "z"),
        numpy_helper.from_array(np.array([-1, 8], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["conv", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        helper.make_node("GlobalAveragePool", ["dq"], ["pool"]),
        helper.make_node("Reshape", ["pool", "flat"], ["vec"]),
        helper.make_node("Gemm", ["vec", "fc"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_auto_layer_reaches_through_quantize_dequantize():
    """The score depends on the feature maps through an integer tensor (Q's output): the automatic
    layer choice must follow the straight-through edge (it used to stop there and find no layer), and
    the explanation must equal Grad-CAM of the float function relu(conv) -> GAP -> Gemm."""
    model = _qdq_cnn()
    ex = onnxcam.Explainer(model)
    assert ex.layer == "dq"
    x = np.random.default_rng(1).random((2, 3, 8, 8)).astype(np.float32)
    res = ex.explain(x)
    from tests.oracles import run_with_intermediates  # noqa: PLC0415

    a = run_with_intermediates(model, {"image": x}, ["dq"])["dq"].astype(np.float64)
    fc = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "fc")).astype(np.float64)
    alpha = fc[:, res.targets].T / (8 * 8)  # d logit_t / d dq[k, i, j] = fc[k, t] / (h w): GAP then Gemm
    want = np.maximum((alpha[:, :, None, None] * a).sum(axis=1), 0)
    np.testing.assert_allclose(res.cam_lowres, want, rtol=1e-4, atol=1e-6)

"""Region, similarity, element and multi-label targets on model-zoo cases, against torch autograd.

The models come from ``model_zoo.target_models`` (random weights, TorchScript
export): an LR-ASPP segmenter ending in a Softmax, a YOLO-style detection head
with two outputs, a resnet18 embedding (L2-normalised) and a two-input model
(a metadata vector first, then the image) with two outputs. For each target
the reference is Grad-CAM computed in float64 torch on the same module:
``torch.autograd.grad`` of the same scalar (region sum, dot product, output
element, class logit) with respect to the forward-hooked module output whose
value equals the ONNX layer onnxcam chose (matched by value, so the test also
shows the layer is the expected feature map). Bar: relative L2 error of
``cam_lowres`` below 1e-4. The detection case is also checked against central
differences of the float64 ONNX tail (no torch, no onnxcam gradient rules).

Set ``ONNXCAM_ZOO_CACHE=<dir>`` to keep the exported files between runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")
from onnx.reference import ReferenceEvaluator

import onnxcam
from model_zoo.target_models import CASES, build_and_export, build_model
from onnxcam.explain.build import resolve_score
from tests.oracles import run_with_intermediates, tail_model, to_float64

REL_TOL = 1e-4


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    cache = os.environ.get("ONNXCAM_ZOO_CACHE")
    folder = Path(cache) if cache else tmp_path_factory.mktemp("target_zoo")
    return lambda name: build_and_export(name, folder)


@pytest.fixture(scope="module")
def segmenter(zoo):
    """The segmentation file and one Explainer for it (default score), shared: its graphs take seconds to build."""
    path = zoo("segmentation")
    return path, onnxcam.Explainer(path)


def _inputs(name: str, batch: int = 2, seed: int = 7) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in zip(CASES[name].inputs, CASES[name].example(batch, seed))}


def assert_same_cam(onnx_cam: np.ndarray, torch_cam: np.ndarray) -> None:
    """Relative L2 error below REL_TOL, on a map that is not all zero (a dead ReLU would compare nothing)."""
    assert (torch_cam.reshape(len(torch_cam), -1).max(axis=1) > 0).all(), "the reference map is all zero"
    rel = np.linalg.norm(onnx_cam - torch_cam) / np.linalg.norm(torch_cam)
    assert rel < REL_TOL, f"relative L2 error {rel:.2e}"


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _layer_value(path: Path, feeds: dict, layer: str) -> np.ndarray:
    return run_with_intermediates(onnx.load(str(path)), feeds, [layer])[layer]


def torch_layer_activation_and_gradient(
    module: torch.nn.Module, forward, feeds: dict, activation: np.ndarray, score
) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 (A, d score / d A) of ``score(forward(module, *inputs))``, A the hooked module output equal to
    ``activation`` (the ONNX layer's value on the same inputs)."""
    module = module.double()
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, out):
        if isinstance(out, torch.Tensor) and out.shape == activation.shape:
            captured.append(out)

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        outs = forward(module, *(torch.tensor(v, dtype=torch.float64) for v in feeds.values()))
    finally:
        for h in handles:
            h.remove()
    errors = [_rel(t.detach().numpy(), activation) for t in captured]
    best = min(errors, default=1)
    assert errors and best < 1e-4, f"no torch module output equals the ONNX layer (best {best})"
    A = captured[int(np.argmin(errors))]
    (g,) = torch.autograd.grad(score(outs), A)
    return A, g


def torch_gradcam(module: torch.nn.Module, forward, feeds: dict, activation: np.ndarray, score) -> np.ndarray:
    """float64 Grad-CAM of ``score(forward(module, *inputs))`` at the hooked module output equal to ``activation``."""
    A, g = torch_layer_activation_and_gradient(module, forward, feeds, activation, score)
    return torch.relu((g.mean((2, 3), keepdim=True) * A).sum(1)).detach().numpy()


def _segment_logits(module, image):
    return module.net(image)["out"]


def _box_region(size: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[40:90, 30:100] = True
    return mask


@pytest.mark.parametrize("score", ["logit", "probability"])
def test_region_target_on_a_segmenter(segmenter, score):
    path, ex = segmenter
    feeds = _inputs("segmentation")
    ex = ex if score == "logit" else onnxcam.Explainer(path, score=score)
    mask = _box_region(128)
    res = ex.explain(feeds["image"], target=onnxcam.RegionTarget("masks", mask, category=4))
    # layer="auto" skips the head's per-pixel class maps (5 channels) and the upsampled high branch (not a cut:
    # the shape-driven Resize sizes carry no gradient) and lands on the backbone's stride-8 map
    assert ex.index.shape(res.layer)[1:] == (40, 16, 16) and "on every path" in ex.layer_reason
    seed = torch.tensor(mask, dtype=torch.float64)
    if score == "logit":  # the default explains the logits before the Softmax

        def region(logits):
            return (logits[:, 4] * seed).sum()
    else:

        def region(logits):
            return (torch.softmax(logits, 1)[:, 4] * seed).sum()

    ref = torch_gradcam(
        build_model("segmentation"), _segment_logits, feeds, _layer_value(path, feeds, res.layer), region
    )
    assert_same_cam(res.cam_lowres, ref)
    assert res.cam.shape == (2, 128, 128) and list(res.targets) == [None, None]


def test_region_target_with_a_full_per_image_mask(segmenter):
    """A (N, C, H, W) mask weighting several classes per image is the same seed as the torch sum."""
    path, ex = segmenter
    feeds = _inputs("segmentation")
    weights = np.random.default_rng(0).random((2, 5, 128, 128)).astype(np.float32)
    weights[:, :, :64] = 0
    res = ex.explain(feeds, target=onnxcam.RegionTarget("masks", weights))
    seed = torch.tensor(weights, dtype=torch.float64)
    ref = torch_gradcam(
        build_model("segmentation"),
        _segment_logits,
        feeds,
        _layer_value(path, feeds, res.layer),
        lambda logits: (logits * seed).sum(),
    )
    assert_same_cam(res.cam_lowres, ref)


def test_similarity_target_on_an_embedding(zoo):
    path = zoo("embedding")
    feeds = _inputs("embedding")
    ex = onnxcam.Explainer(path)
    # Another image's embedding: random weights make every embedding nearly parallel (cosine ~0.996), so the
    # gradient r - (y.r) y of the normalisation cancels and float32 is good to ~5e-5 here (torch float32: 2e-5).
    reference = ex.predict(_inputs("embedding", batch=1, seed=11)).outputs["embedding"][0]
    per_image = np.random.default_rng(3).standard_normal((2, 512)).astype(np.float32)  # e.g. text embeddings
    module = build_model("embedding")
    for ref_vec in (reference, per_image):
        res = ex.explain(feeds, target=onnxcam.SimilarityTarget("embedding", ref_vec))
        r = torch.tensor(np.broadcast_to(ref_vec, (2, 512)).copy(), dtype=torch.float64)
        ref = torch_gradcam(
            module, lambda m, x: m(x), feeds, _layer_value(path, feeds, res.layer), lambda emb, r=r: (emb * r).sum()
        )
        assert_same_cam(res.cam_lowres, ref)


def _yolo_raw(module, image):
    p8 = module.stem(image)
    p16 = module.down(p8)
    f8 = module.merge(torch.cat([p8, F.interpolate(p16, scale_factor=2.0, mode="nearest")], dim=1))
    return torch.cat([module._rows(module.head8(f8)), module._rows(module.head16(p16))], dim=1)


STRIDE16_ANCHOR = 16 * 16 * 2 + 5  # rows after the 512 stride-8 anchors


def test_output_targets_on_several_outputs_of_a_detection_head(zoo):
    """One Explainer (created for ``boxes``) explains a class score on ``scores`` and a box coordinate."""
    path = zoo("detection")
    feeds = _inputs("detection")
    ex = onnxcam.Explainer(path)
    module = build_model("detection")
    cases = [  # (target, element of the raw head tensor it seeds)
        (onnxcam.OutputTarget("scores", (37, 2)), (37, 6)),  # class 1 of a stride-8 anchor, before its Sigmoid
        (onnxcam.OutputTarget("scores", (STRIDE16_ANCHOR, 0)), (STRIDE16_ANCHOR, 4)),  # objectness
        (onnxcam.OutputTarget("boxes", (STRIDE16_ANCHOR, 3)), (STRIDE16_ANCHOR, 3)),
    ]
    for target, (row, col) in cases:
        res = ex.explain(feeds, target=target)
        ref = torch_gradcam(
            module,
            _yolo_raw,
            feeds,
            _layer_value(path, feeds, res.layer),
            lambda raw, row=row, col=col: raw[:, row, col].sum(),
        )
        assert_same_cam(res.cam_lowres, ref)


def test_seed_graph_matches_finite_differences_of_the_onnx_tail(zoo):
    """alpha_k = mean_ij dS/dA_k by central differences of the float64 ONNX tail, one channel at a time."""
    path = zoo("detection")
    feeds = _inputs("detection")
    ex = onnxcam.Explainer(path)
    target = onnxcam.OutputTarget("scores", (STRIDE16_ANCHOR, 1))
    res = ex.explain(feeds, target=target)
    score = resolve_score(ex.index, "scores").tensor
    seed = ex.seed_for(target, 2).astype(np.float64)
    A = _layer_value(path, feeds, res.layer).astype(np.float64)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    tail = ReferenceEvaluator(to_float64(tail_model(model, res.layer, score)))

    def S(a):  # per-image score
        return (tail.run(None, {res.layer: a})[0] * seed).reshape(2, -1).sum(1)

    h = 1e-4
    alpha = np.zeros(A.shape[:2])
    for k in range(A.shape[1]):
        step = np.zeros_like(A)
        step[:, k] = h
        alpha[:, k] = (S(A + step) - S(A - step)) / (2 * h) / (A.shape[2] * A.shape[3])
    fd_cam = np.maximum((alpha[:, :, None, None] * A).sum(1), 0)
    assert_same_cam(res.cam_lowres, fd_cam)


def _two_input_forward(module, meta, image):
    return module(meta, image)


def test_two_inputs_two_outputs_multilabel_and_regression(zoo):
    """Input 0 is a vector: the heatmap covers the image input. Each output gets its own automatic layer."""
    path = zoo("two_inputs")
    feeds = _inputs("two_inputs", batch=3)
    ex = onnxcam.Explainer(path)
    module = build_model("two_inputs")
    labels = ex.predict(feeds).outputs["labels"]
    threshold = float(np.sort(labels.ravel())[-5])  # five (image, class) rows, whatever the random weights give

    res = ex.explain(feeds, target=onnxcam.MultiLabelTarget(threshold))
    want = np.argwhere(labels >= threshold)
    assert res.image_index.tolist() == want[:, 0].tolist() and res.targets.tolist() == want[:, 1].tolist()
    assert res.cam.shape == (5, 32, 32)
    rows = {k: v[res.image_index] for k, v in feeds.items()}
    picked = torch.tensor(res.targets)
    ref = torch_gradcam(
        module,
        lambda m, meta, image: m.classify(m.conv2(m.film(F.relu(m.conv1(image)), m.gamma(meta))).mean((2, 3))),
        rows,
        _layer_value(path, rows, res.layer),
        lambda logits: logits[torch.arange(5), picked].sum(),
    )
    assert_same_cam(res.cam_lowres, ref)

    value = ex.explain(feeds, target=onnxcam.OutputTarget("value", (0,)))
    assert value.layer != res.layer and ex.index.shape(value.layer)[1] == 8  # the FiLM product feeds `value`
    ref = torch_gradcam(
        module, _two_input_forward, feeds, _layer_value(path, feeds, value.layer), lambda outs: outs[1][:, 0].sum()
    )
    assert_same_cam(value.cam_lowres, ref)
    assert value.cam.shape == (3, 32, 32)


def test_a_layer_that_does_not_feed_the_output_is_refused_clearly(zoo):
    path = zoo("two_inputs")
    ex = onnxcam.Explainer(path, layer="/conv2/conv2.1/Relu_output_0")
    with pytest.raises(onnxcam.OnnxcamError, match="does not depend on tensor '/conv2/conv2.1/Relu_output_0'"):
        ex.explain(_inputs("two_inputs"), target=onnxcam.OutputTarget("value", (0,)))


BARE_RUNNER = r"""
import sys
import numpy as np
import onnxruntime as ort
assert "onnxcam" not in sys.modules
folder = sys.argv[1]
sess = ort.InferenceSession(folder + "/explainer.onnx", providers=["CPUExecutionProvider"])
cam, = sess.run(["cam"], {"image": np.load(folder + "/x.npy"), "target_seed": np.load(folder + "/seed.npy")})
np.save(folder + "/cam.npy", cam)
print(",".join(sorted(i.name for i in sess.get_inputs())))
"""


def test_exported_seed_graph_runs_a_region_target_in_a_bare_session(segmenter, tmp_path):
    _, ex = segmenter
    x = _inputs("segmentation")["image"]
    target = onnxcam.RegionTarget("masks", _box_region(128), category=3)
    ex.export(tmp_path / "explainer.onnx")  # a (N, C, H, W) output: seed mode is the default
    model = onnx.load(str(tmp_path / "explainer.onnx"))
    onnx.checker.check_model(model)
    assert model.ir_version <= 13
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "seed.npy", ex.seed_for(target, len(x)))
    proc = subprocess.run(
        [sys.executable, "-c", BARE_RUNNER, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "image,target_seed"
    np.testing.assert_allclose(np.load(tmp_path / "cam.npy"), ex.explain(x, target=target).cam, rtol=1e-5, atol=1e-6)
    json.dumps(ex.layer)  # the layer name is plain text, as the CLI summary needs

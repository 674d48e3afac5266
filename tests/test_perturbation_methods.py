"""Score-CAM and Ablation-CAM against pytorch-grad-cam, and the machinery around them.

Parity: three torchvision architectures (random weights, the cases of
``tests.test_methods_parity``, exported once per test run) at 64x64, two
images, each explaining its top-1 class, at an early layer with few channels
(one image costs one pass per channel, on both sides):

* resnet18 ``layer2`` (128 channels, 8x8): it ends with a ReLU, so ablated
  channels are set to 0;
* mobilenet_v3_small ``features.0`` (the stem's Conv-BN-Hardswish, 16
  channels, 32x32) and efficientnet_b0 ``features.2.0.block.3`` (the
  projection's Conv-BN, 24 channels, 16x16): negative values, so an ablated
  channel is set to the image's minimum minus 1e7.

Layers were picked where neither method's map is all zero after the ReLU
(a residual sum that is mostly negative gives an empty Score-CAM map, since
its weights are a softmax), and not at the end of a residual block's branch,
whose output torch then modifies in place. Where zeroing one channel moves the
logit by less than float32 resolution (mobilenet_v3_small ``features.3.block.1``
with random weights: 0.019573160 -> 0.019573155), Ablation-CAM's weights are
rounding noise on both sides and no comparison is meaningful; the layers here
move it well above that.

The reference is the library's own ``ScoreCAM`` / ``AblationCAM`` on the
float64 torch model through its public ``__call__``, with the layer's own size
as resize target (as in ``test_methods_parity``). ``AblationCAM`` runs with
``batch_size=1`` where the layer has negative values: with larger batches its
ablation layer reads the minimum of the batch it is editing in place, so the
j-th copy of a batch gets ``min - j * 1e7`` and its result depends on the batch
size (on mobilenet_v3_small ``features.8`` the weights of channels 1, 2, 3 come
out 2, 3, 4 times larger with ``batch_size=32``); ``batch_size=1`` is its
definition, the one onnxcam implements at any ``perturbation_batch``. After a
ReLU the ablation value is 0 whatever the batch, so resnet18 uses 32 (faster).
The library rounds Ablation-CAM's scores to float32 (``np.float32`` in
``ablation_cam.py``; 5.4e-6 relative on resnet18's raw map here); the reference
runs its code with that name bound to float64, so the comparison measures
onnxcam's error alone.
Two comparisons per image, relative L2:

* raw: ``cam_lowres`` against ``relu(get_cam_image(...))`` with the weights
  the reference call computed (captured, not recomputed): at most 1e-4;
* normalised: onnxcam's map through the library's ``scale_cam_image`` against
  the library's output: at most 1e-4.

Past 1e-4 the bound would be 3x the error of the same library call on the
float32 torch model against float64 (the convention of ``test_methods_parity``):
zeroing one of 128 channels moves a logit by little, so float32 rounding of
the scores limits any float32 runtime. At the time of writing no case needs it:
raw errors are at most 5.3e-5 (resnet18 Ablation-CAM), 8.9e-6 elsewhere.

The measured errors are printed (``pytest -s``).
"""

from __future__ import annotations

import types

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
from onnx import TensorProto, helper
from PIL import Image

pytest.importorskip("pytorch_grad_cam")

import pytorch_grad_cam.ablation_cam  # noqa: E402
from pytorch_grad_cam import AblationCAM, ScoreCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

import onnxcam  # noqa: E402
from onnxcam.graph.tail import tail_model  # noqa: E402
from onnxcam.methods.perturbation import upsample_align_corners  # noqa: E402
from tests.test_cli import run_cli  # noqa: E402
from tests.test_methods_parity import case_getter, grad_cam_normalise, per_image_rel_l2  # noqa: E402
from tests.tiny_models import tiny_cnn  # noqa: E402

REL_TOL = 1e-4
SIZE = 64
MODULES = {"resnet18": "layer2", "mobilenet_v3_small": "features.0", "efficientnet_b0": "features.2.0.block.3"}
#: pytorch-grad-cam's AblationCAM batch size: 1 (its exact definition) unless the layer ends with a ReLU.
ABLATION_REFERENCE_BATCH = {"resnet18": 32, "mobilenet_v3_small": 1, "efficientnet_b0": 1}
REFERENCES = {"scorecam": ScoreCAM, "ablationcam": AblationCAM}
PARITY_CASES = [(a, m) for a in MODULES for m in REFERENCES]


@pytest.fixture(scope="module")
def small_cases(tmp_path_factory):
    return case_getter(tmp_path_factory, SIZE, MODULES)


def numpy_with_float64_scores() -> types.SimpleNamespace:
    """numpy as ``pytorch_grad_cam.ablation_cam`` sees it, with ``float32`` meaning float64."""
    shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    shim.float32 = np.float64
    return shim


def perturbation_reference(
    case, method: str, targets: np.ndarray, torch_model: torch.nn.Module | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-grad-cam at the layer's resolution: (its normalised map, its raw map before normalising).

    ``torch_model`` defaults to the case's float64 model. Torch runs on one
    thread: the passes are small, and idle OpenMP threads spin on a loaded machine.
    """
    h, w = case.layer_hw
    torch_model = torch_model or case.torch_model
    layer = torch_model.get_submodule(case.torch_layer)
    x = torch.from_numpy(case.x).to(next(torch_model.parameters()).dtype)
    if method == "scorecam":
        cam_obj = ScoreCAM(model=torch_model, target_layers=[layer])
        cam_obj.batch_size = 64
    else:
        cam_obj = AblationCAM(model=torch_model, target_layers=[layer], batch_size=ABLATION_REFERENCE_BATCH[case.arch])
    cam_obj.get_target_width_height = lambda input_tensor: (w, h)
    compute_weights = cam_obj.get_cam_weights
    recorded = {}

    def record(*args):
        recorded["weights"] = compute_weights(*args)
        return recorded["weights"]

    cam_obj.get_cam_weights = record
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        targets_t = [ClassifierOutputTarget(int(t)) for t in targets]
        normalised = np.asarray(cam_obj(input_tensor=x, targets=targets_t))
        acts = cam_obj.activations_and_grads.activations[0].numpy()
        cam_obj.get_cam_weights = lambda *args: recorded["weights"]
        raw = np.maximum(cam_obj.get_cam_image(x, layer, targets_t, acts, None, False), 0)
    finally:
        torch.set_num_threads(threads)
        cam_obj.activations_and_grads.release()
    return normalised, raw


@pytest.mark.parametrize("arch,method", PARITY_CASES, ids=[f"{a}-{m}" for a, m in PARITY_CASES])
def test_matches_pytorch_grad_cam(arch, method, small_cases, monkeypatch):
    case = small_cases(arch)
    monkeypatch.setattr(pytorch_grad_cam.ablation_cam, "np", numpy_with_float64_scores())
    res = onnxcam.Explainer(case.model, layer=case.onnx_layer, method=method, perturbation_batch=64).explain(case.x)
    targets = np.asarray(res.targets)
    want, want_raw = perturbation_reference(case, method, targets)
    lowres = np.asarray(res.cam_lowres)
    assert lowres.shape == want.shape == want_raw.shape == (2, *case.layer_hw)
    assert (want_raw.reshape(len(want_raw), -1).max(1) > 0).all(), "a reference map is all zero: no test"
    raw_errs = per_image_rel_l2(lowres, want_raw)
    errs = per_image_rel_l2(grad_cam_normalise(lowres), want)
    bound, note = REL_TOL, ""
    if max(raw_errs + errs) > REL_TOL:
        want32, want32_raw = perturbation_reference(case, method, targets, case.torch_model_fp32())
        err32 = max(per_image_rel_l2(want32_raw, want_raw) + per_image_rel_l2(want32, want))
        bound, note = max(REL_TOL, 3 * err32), f" (torch fp32 vs fp64 {err32:.2e}: bound {max(REL_TOL, 3 * err32):.1e})"
    print(
        f"\n[perturbation] {arch:20s} {method:12s} targets {targets.tolist()}: rel L2 per image, "
        f"raw {', '.join(f'{e:.2e}' for e in raw_errs)}; min-max {', '.join(f'{e:.2e}' for e in errs)}{note}"
    )
    assert max(raw_errs) <= bound, f"{arch}/{method}: raw map rel L2 {raw_errs}{note}"
    assert max(errs) <= bound, f"{arch}/{method}: normalised map rel L2 {errs}{note}"


def test_masks_upsample_like_torch():
    """Score-CAM's masks use torch's UpsamplingBilinear2d (corners aligned), not the CAM head's half-pixel resize."""
    maps = np.random.default_rng(0).standard_normal((3, 4, 5))
    want = torch.nn.UpsamplingBilinear2d(size=(13, 9))(torch.from_numpy(maps)[None])[0].numpy()
    np.testing.assert_allclose(upsample_align_corners(maps, (13, 9)), want, rtol=1e-12, atol=1e-12)


# -- the machinery, on small hand-built models -------------------------------------------------------

METHODS = ["scorecam", "ablationcam"]


def _x(n: int = 2, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def _with_transposes(model: onnx.ModelProto, nhwc_input: bool = False, nhwc_layer: bool = False) -> onnx.ModelProto:
    """tiny_cnn with a channels-last input (transposed inside) and/or a channels-last copy of ``features``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if nhwc_input:
        size = g.input[0].type.tensor_type.shape.dim[2].dim_value
        g.node.insert(0, helper.make_node("Transpose", ["x_nhwc"], ["x"], perm=[0, 3, 1, 2]))
        del g.input[:]
        g.input.append(helper.make_tensor_value_info("x_nhwc", TensorProto.FLOAT, ["N", size, size, 3]))
    if nhwc_layer:
        gap = next(i for i, n in enumerate(g.node) if n.op_type == "GlobalAveragePool")
        g.node[gap].input[0] = "features_back"
        g.node.insert(gap, helper.make_node("Transpose", ["features_nhwc"], ["features_back"], perm=[0, 3, 1, 2]))
        g.node.insert(gap, helper.make_node("Transpose", ["features"], ["features_nhwc"], perm=[0, 2, 3, 1]))
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("method", METHODS)
def test_result_does_not_depend_on_the_batch_knob(method):
    """Scores of masked or ablated copies go through the session in batches; the split changes nothing."""
    x = _x(3)
    maps = [
        onnxcam.Explainer(tiny_cnn(), method=method, perturbation_batch=b).explain(x).cam_lowres for b in (1, 3, 64)
    ]
    assert maps[0].max() > 0
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_progress_counts_every_pass(method):
    calls = []
    ex = onnxcam.Explainer(tiny_cnn(), method=method, perturbation_batch=3, progress=lambda d, t: calls.append((d, t)))
    ex.explain(_x(2))
    channels = 8  # tiny_cnn's "features"
    assert calls[0] == (0, 2 * channels) and calls[-1] == (2 * channels, 2 * channels)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == 1 + 2 * 3  # ceil(8 / 3) per image


@pytest.mark.parametrize("method", METHODS)
def test_channels_last_input_and_layer_give_the_same_maps(method):
    x = _x(2)
    want = onnxcam.Explainer(tiny_cnn(), method=method).explain(x).cam_lowres
    nhwc_in = onnxcam.Explainer(_with_transposes(tiny_cnn(), nhwc_input=True), method=method)
    np.testing.assert_allclose(nhwc_in.explain(x.transpose(0, 2, 3, 1)).cam_lowres, want, rtol=1e-5, atol=1e-6)
    nhwc_layer = onnxcam.Explainer(_with_transposes(tiny_cnn(), nhwc_layer=True), layer="features_nhwc", method=method)
    assert nhwc_layer.candidates[[c.name for c in nhwc_layer.candidates].index("features_nhwc")].channel_axis == 3
    np.testing.assert_allclose(nhwc_layer.explain(x).cam_lowres, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_each_image_explains_its_own_target(method):
    """Batched rows with different classes give each image's own map, as explaining it alone does."""
    x = _x(2)
    ex = onnxcam.Explainer(tiny_cnn(), method=method)
    both = ex.explain(x, target=[1, 3]).cam_lowres
    np.testing.assert_allclose(both[0], ex.explain(x[:1], target=1).cam_lowres[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[1], ex.explain(x[1:], target=3).cam_lowres[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(both[0], ex.explain(x[:1], target=3).cam_lowres[0])
    seeded = ex.explain(x, target=onnxcam.OutputTarget("probs", (3,))).cam_lowres  # a seed on the logit of class 3
    np.testing.assert_allclose(seeded, ex.explain(x, target=3).cam_lowres, rtol=1e-5, atol=1e-6)


def _skip_model() -> onnx.ModelProto:
    """tiny_cnn whose score also reads the input through a path that bypasses the layer r1."""
    m = tiny_cnn()
    g = m.graph
    rng = np.random.default_rng(3)
    g.initializer.append(onnx.numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype(np.float32), "ws"))
    c2 = next(n for n in g.node if n.name == "conv2")
    relu2 = next(n for n in g.node if n.name == "relu2")
    g.node.insert(list(g.node).index(relu2), helper.make_node("Conv", ["x", "ws"], ["skip"], strides=[2, 2]))
    g.node.insert(list(g.node).index(relu2), helper.make_node("Add", ["c2", "skip"], ["c2_skip"]))
    c2.output[0], relu2.input[0] = "c2", "c2_skip"
    onnx.checker.check_model(m)
    return m


def test_tail_takes_the_inputs_of_paths_around_the_layer():
    model = onnx.shape_inference.infer_shapes(_skip_model())
    tail = tail_model(model, "r1", "logits")
    assert [i.name for i in tail.graph.input] == ["r1", "x"]
    onnx.checker.check_model(tail)
    x = _x(2)
    full = ort.InferenceSession(_exposing(model, "r1").SerializeToString(), providers=["CPUExecutionProvider"])
    r1, logits = full.run(["r1", "logits"], {"x": x})
    cut = ort.InferenceSession(tail.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(cut.run(["logits"], {"r1": r1, "x": x})[0], logits, rtol=1e-6)
    ex = onnxcam.Explainer(_skip_model(), layer="r1", method="ablationcam")
    assert ex.explain(x).cam_lowres.max() > 0


def _exposing(model: onnx.ModelProto, *names: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name in [*names, "logits"]:
        m.graph.output.append(helper.make_empty_tensor_value_info(name))
    return m


@pytest.mark.parametrize("method", METHODS)
def test_exported_file_carries_grad_cam(method, tmp_path):
    x = _x(2)
    onnxcam.Explainer(tiny_cnn(), method=method).export(tmp_path / "e.onnx")
    sess = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    cam = sess.run(["cam"], {"x": x, "target_class": np.array([-1, -1], np.int64)})[0]
    np.testing.assert_allclose(cam, onnxcam.Explainer(tiny_cnn()).explain(x).cam, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8"])
def test_bad_batch_knob_is_a_clear_error(bad):
    with pytest.raises(onnxcam.OnnxcamError, match="perturbation_batch must be a positive int"):
        onnxcam.Explainer(tiny_cnn(), method="scorecam", perturbation_batch=bad)


def tiny_model_and_photo(folder: Path) -> tuple[Path, Path]:
    """tiny_cnn saved as ``tiny.onnx`` and a random 20x24 ``photo.png`` in ``folder``, for CLI runs."""
    model, image = folder / "tiny.onnx", folder / "photo.png"
    onnx.save(tiny_cnn(), model)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(image)
    return model, image


def test_cli_method_and_batch_flag(tmp_path):
    model, image = tiny_model_and_photo(tmp_path)
    for method in METHODS:
        out = tmp_path / method
        run_cli("explain", model, image, "-o", out, "--method", method, "--perturbation-batch", 3, check_exit=0)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["method"] == method and (out / "photo.png.cam.png").exists()
    proc = run_cli(
        "explain", model, image, "-o", tmp_path / "bad", "--method", "scorecam", "--perturbation-batch", 0, check_exit=1
    )
    assert "--perturbation-batch must be at least 1" in proc.stderr

"""Every in-graph CAM method against pytorch-grad-cam (and torch autograd) on torchvision models.

Three architectures from ``model_zoo.torchvision_models`` (random weights,
randomised BatchNorm statistics, eval mode), exported once per module with
the TorchScript exporter, two seeded 3x128x128 images, the usual Grad-CAM
layer (``ArchSpec.last``: resnet18 ``layer4``, mobilenet_v3_small
``features.12``, efficientnet_b0 ``features.8``). The ONNX tensor of that
layer is found by value (``tests.test_torchvision_parity`` helpers).

* Methods pytorch-grad-cam also has (GradCAM, GradCAMPlusPlus, XGradCAM,
  HiResCAM, GradCAMElementWise, LayerCAM, and the host-side EigenCAM and
  EigenGradCAM), explaining each image's top-1
  class (``ClassifierOutputTarget`` of the class onnxcam explained). The
  reference runs in float64 (``model.double()``, a float64 input; the library
  keeps the dtype of the hooked tensors in its NumPy maths) through the
  library's public ``__call__`` with one change: ``get_target_width_height``
  returns the layer's own size, so its min-max is followed by a
  ``cv2.resize`` to the same size, which OpenCV performs as a copy. (By
  default it normalises and *then* resizes to the input, whereas onnxcam's
  ``cam`` resizes then normalises; the full-size maps differ by design.)
  Two comparisons, relative L2 error per image:

  - raw: ``cam_lowres`` against ``np.maximum(get_cam_image(...), 0)`` on the
    activations and gradients that call recorded (the map
    ``compute_cam_per_layer`` normalises): at most ``REL_TOL`` = 1e-4;
  - normalised: ``cam_lowres`` min-max normalised per image against the
    library's output: at most ``REL_TOL``, or, past it, 3x the error of the
    same pytorch-grad-cam call on the float32 model against float64 (the
    convention of ``test_torchvision_parity``). Min-max is ill-conditioned
    where a map is a large offset plus a small variation: with random
    weights, efficientnet_b0's and mobilenet_v3_small's maps at this layer
    vary by only 0.1-1.4 % of their maximum, whatever the input, so float32
    rounding of the forward pass (2e-7 relative on the raw map) is magnified
    several hundred times. At the time of writing every raw error is below
    6e-7; the normalised ones are below 7e-7 for resnet18, below 1e-4 for
    mobilenet_v3_small, and 1.1e-4 to 2.2e-4 for efficientnet_b0's
    gradcam++, layercam and gradcam-elementwise, where torch float32 itself
    is 1.3e-4 to 4.7e-4 from float64.

  The onnxcam map is normalised by the library's own ``scale_cam_image``,
  applied twice as ``__call__`` does (per layer, then after the mean over
  layers), so the ``1e-7`` it adds to each divisor is the same on both sides.
* ``counterfactual`` (not in pytorch-grad-cam): ``cam_lowres`` equals the
  float64 torch autograd ``relu(sum_k mean_hw(-dS/dA_k) A_k)`` (unnormalised),
  relative L2 at most ``REL_TOL``, explaining image 0's lowest-scoring class
  (a non-empty counterfactual map) and image 1's top-1 class (an empty one).
* Export: for every method, ``ex.export(path)`` opened in a bare
  ``onnxruntime.InferenceSession`` (feeds: the image and ``target_class``,
  -1 = top-1) gives the ``cam`` of ``ex.explain`` (rtol 1e-5).

The measured errors are printed (``pytest -s``). Set ``ONNXCAM_ZOO_CACHE`` to
keep the exported models between runs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam import (  # noqa: E402
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

import onnxcam  # noqa: E402
from model_zoo.torchvision_models import (  # noqa: E402
    ARCHS,
    INPUT_NAME,
    build_and_export,
    build_model,
    example_input,
)
from onnxcam.methods import method_names  # noqa: E402
from tests.test_torchvision_parity import onnx_tensor_for_torch_value, onnx_tensor_values, rel_l2  # noqa: E402

REL_TOL = 1e-4
EXPORT_RTOL = 1e-5
DATA_SEED = 1234
SIZE = 128
ARCHS_UNDER_TEST = ["resnet18", "mobilenet_v3_small", "efficientnet_b0"]
EXPORT_ARCH = "resnet18"
EXPORT_OTHER_CLASS = 917

#: onnxcam method -> pytorch-grad-cam class.
GRAD_CAM_CLASSES = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "gradcam-elementwise": GradCAMElementWise,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,  # host-side SVD (onnxcam.methods.eigen)
    "eigengradcam": EigenGradCAM,
}
PARITY_CASES = [(a, m) for a in ARCHS_UNDER_TEST for m in GRAD_CAM_CLASSES]


@dataclasses.dataclass
class Case:
    """One architecture: its ONNX model, the float64 torch twin, the images and the layer in both."""

    arch: str
    model: onnx.ModelProto
    torch_model: torch.nn.Module  # float64, eval
    x: np.ndarray  # float32 (2, 3, SIZE, SIZE)
    torch_layer: str  # module path
    onnx_layer: str  # tensor name
    layer_hw: tuple[int, int]
    explainers: dict[str, onnxcam.Explainer] = dataclasses.field(default_factory=dict)
    results: dict[str, object] = dataclasses.field(default_factory=dict)

    fp32_model: torch.nn.Module | None = None

    def explainer(self, method: str) -> onnxcam.Explainer:
        """One Explainer per method at the layer, kept for the other tests."""
        if method not in self.explainers:
            self.explainers[method] = onnxcam.Explainer(self.model, layer=self.onnx_layer, method=method)
        return self.explainers[method]

    def explain(self, method: str):
        """onnxcam's top-1 result for ``method``."""
        if method not in self.results:
            self.results[method] = self.explainer(method).explain(self.x)
        return self.results[method]

    def torch_model_fp32(self) -> torch.nn.Module:
        if self.fp32_model is None:
            self.fp32_model = build_model(self.arch)
        return self.fp32_model


#: Cases already built in this test run, shared by every module that uses ``case_getter``.
_BUILT: dict[tuple[str, int, str], Case] = {}


def case_getter(tmp_path_factory, size: int = SIZE, modules: dict[str, str] | None = None):
    """``get(arch) -> Case`` at ``size`` x ``size``, explaining ``modules[arch]`` (default: the
    ``ArchSpec.last`` layer), each built once per test run (other test modules reuse them)."""
    cache = os.environ.get("ONNXCAM_ZOO_CACHE")
    root = Path(cache) if cache else tmp_path_factory.getbasetemp() / "zoo_methods"
    folder = root if size == SIZE else root / f"size{size}"  # exported files are named by arch only

    def get(arch: str) -> Case:
        module = (modules or {}).get(arch, ARCHS[arch].last)
        if (arch, size, module) not in _BUILT:
            folder.mkdir(parents=True, exist_ok=True)
            _BUILT[arch, size, module] = _make_case(arch, folder, size, module)
        return _BUILT[arch, size, module]

    return get


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """``cases(arch) -> Case`` at the usual Grad-CAM layer."""
    return case_getter(tmp_path_factory)


def _make_case(arch: str, folder: Path, size: int = SIZE, module: str | None = None) -> Case:
    t0 = time.perf_counter()
    module = module or ARCHS[arch].last
    model = onnx.load(str(build_and_export(arch, "torchscript", folder, size=size)))
    x = example_input(2, size, seed=DATA_SEED)
    torch_model = build_model(arch).double()
    got = {}
    handle = torch_model.get_submodule(module).register_forward_hook(lambda m, i, o: got.update(a=o.detach().numpy()))
    with torch.no_grad():
        torch_model(x.double())
    handle.remove()
    a = got["a"]
    values, order = onnx_tensor_values(model, x.numpy(), [], a.shape)
    name = onnx_tensor_for_torch_value(values, order, a)
    assert name is not None, f"{arch}: no ONNX tensor equals torch {module} output {a.shape}"
    print(f"\n[methods] {arch}: torch {module} {a.shape} = ONNX {name!r} ({time.perf_counter() - t0:.1f}s)")
    return Case(arch, model, torch_model, x.numpy(), module, name, tuple(a.shape[2:]))


def grad_cam_normalise(cam: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's normalisation of a one-layer map: ``scale_cam_image`` per layer, then again
    after the (here trivial) mean over layers; per image ``(m - min) / (1e-7 + max(m - min))``."""
    return scale_cam_image(scale_cam_image(np.asarray(cam, np.float64)))


def per_image_rel_l2(got: np.ndarray, want: np.ndarray) -> list[float]:
    return [rel_l2(g, w) for g, w in zip(got, want)]


def grad_cam_reference(
    torch_model: torch.nn.Module,
    case: Case,
    method: str,
    targets: np.ndarray,
    eigen_smooth: bool = False,
    signed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-grad-cam at the layer resolution: (its normalised map, its raw map before normalising).

    The normalised map is what the library's ``__call__`` returns when its
    resize target is the layer's own size (so ``cv2.resize`` is a copy). The
    raw map is ``np.maximum(get_cam_image(...), 0)`` on the activations and
    gradients that same call recorded: the step ``compute_cam_per_layer``
    takes just before ``scale_cam_image`` (``signed``: before the ReLU too).
    ``eigen_smooth`` is passed to both.
    """
    h, w = case.layer_hw
    layer = torch_model.get_submodule(case.torch_layer)
    dtype = next(torch_model.parameters()).dtype
    x = torch.from_numpy(case.x).to(dtype)
    cam_obj = GRAD_CAM_CLASSES[method](model=torch_model, target_layers=[layer])
    cam_obj.get_target_width_height = lambda input_tensor: (w, h)  # (width, height), as cv2.resize takes it
    try:
        targets_t = [ClassifierOutputTarget(int(t)) for t in targets]
        normalised = np.asarray(cam_obj(input_tensor=x, targets=targets_t, eigen_smooth=eigen_smooth))
        acts = cam_obj.activations_and_grads.activations[0].numpy()
        recorded = cam_obj.activations_and_grads.gradients  # empty for gradient-free EigenCAM
        grads = recorded[0].numpy() if recorded else None
        raw = cam_obj.get_cam_image(x, layer, targets_t, acts, grads, eigen_smooth)
    finally:
        cam_obj.activations_and_grads.release()
        torch_model.zero_grad(set_to_none=True)
    return normalised, raw if signed else np.maximum(raw, 0)


@pytest.mark.parametrize("arch,method", PARITY_CASES, ids=[f"{a}-{m}" for a, m in PARITY_CASES])
def test_method_matches_pytorch_grad_cam(arch, method, cases):
    case = cases(arch)
    res = case.explain(method)
    targets = np.asarray(res.targets)
    want, want_raw = grad_cam_reference(case.torch_model, case, method, targets)
    lowres = np.asarray(res.cam_lowres)
    got = grad_cam_normalise(lowres)
    assert got.shape == want.shape == want_raw.shape, (
        f"cam_lowres {got.shape} vs pytorch-grad-cam {want.shape} / {want_raw.shape}"
    )
    assert (want_raw.reshape(len(want_raw), -1).max(1) > 0).all(), "a reference map is all zero: no test"

    # The map before normalisation: well conditioned, float32 reaches 1e-4 everywhere.
    raw_errs = per_image_rel_l2(lowres, want_raw)
    # After min-max: where a map is a large offset plus a small variation, subtracting the minimum
    # magnifies float32 rounding of the forward pass. Past REL_TOL the bound is 3x what torch itself
    # reaches in float32 against float64 on the same images (the convention of test_torchvision_parity).
    errs = per_image_rel_l2(got, want)
    bound, note = REL_TOL, ""
    if max(errs) > REL_TOL:
        want32, _ = grad_cam_reference(case.torch_model_fp32(), case, method, targets)
        err32 = max(per_image_rel_l2(want32, want))
        bound = max(REL_TOL, 3 * err32)
        note = f" (torch fp32 vs fp64 {err32:.2e}: bound {bound:.1e})"
    print(
        f"\n[methods] {arch:20s} {method:20s} targets {targets.tolist()}: rel L2 per image, "
        f"raw {', '.join(f'{e:.2e}' for e in raw_errs)}; min-max {', '.join(f'{e:.2e}' for e in errs)}{note}"
    )
    assert max(raw_errs) <= REL_TOL, f"{arch}/{method}: raw map rel L2 {raw_errs} > {REL_TOL}"
    assert max(errs) <= bound, f"{arch}/{method}: normalised map rel L2 {errs} > {bound:.1e}{note}"


@pytest.mark.parametrize("arch", ARCHS_UNDER_TEST)
def test_counterfactual_matches_torch_autograd(arch, cases):
    """Image 0 explains its lowest-scoring class (its Grad-CAM is negative, so the counterfactual
    map is not empty), image 1 its top-1 class (Grad-CAM positive, counterfactual empty)."""
    case = cases(arch)
    got = {}
    handle = case.torch_model.get_submodule(case.torch_layer).register_forward_hook(lambda m, i, o: got.update(a=o))
    try:
        with torch.enable_grad():
            logits = case.torch_model(torch.from_numpy(case.x).double())
    finally:
        handle.remove()
    a = got["a"]
    targets = torch.stack([logits[0].argmin(), logits[1].argmax()])
    score = logits[torch.arange(len(targets)), targets].sum()
    (g,) = torch.autograd.grad(score, a)
    alpha = (-g).mean(dim=(2, 3), keepdim=True)
    want = torch.relu((alpha * a).sum(1)).detach().numpy()
    assert want[0].max() > 0, "the counterfactual reference map is empty: no test"

    res = case.explainer("counterfactual").explain(case.x, target=targets.tolist())
    lowres = np.asarray(res.cam_lowres)
    err = rel_l2(lowres, want)
    print(
        f"\n[methods] {arch:20s} counterfactual       targets {targets.tolist()}: rel L2 {err:.2e} "
        f"(reference > 0 on {np.mean(want[0] > 0):.0%} / {np.mean(want[1] > 0):.0%} of image 0 / 1)"
    )
    assert err <= REL_TOL
    gradcam = np.asarray(case.explainer("gradcam").explain(case.x, target=targets.tolist()).cam_lowres)
    assert rel_l2(lowres, gradcam) > 0.1, "counterfactual gave the Grad-CAM map"


@pytest.mark.parametrize("method", method_names("gradient"))
def test_exported_method_runs_in_bare_onnxruntime(method, cases, tmp_path):
    case = cases(EXPORT_ARCH)
    ex = case.explainer(method)
    path = tmp_path / f"explainer_{method}.onnx"
    ex.export(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in sess.get_inputs()) == sorted([INPUT_NAME, "target_class"])
    cam, target = sess.run(
        ["cam", "target"], {INPUT_NAME: case.x, "target_class": np.array([-1, EXPORT_OTHER_CLASS], np.int64)}
    )
    top1 = int(np.asarray(ex.explain(case.x[:1]).targets)[0])
    assert target.tolist() == [top1, EXPORT_OTHER_CLASS]
    want = ex.explain(case.x, target=[top1, EXPORT_OTHER_CLASS]).cam
    np.testing.assert_allclose(cam, want, rtol=EXPORT_RTOL, atol=0)

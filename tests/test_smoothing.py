"""Eigen-smoothing against pytorch-grad-cam, test-time augmentation by hand, and multi-layer fusion.

* ``eigen_smooth``: Grad-CAM and LayerCAM on the three torchvision cases of
  ``tests.test_perturbation_methods`` (64x64, two images, top-1 class) against
  pytorch-grad-cam's ``GradCAM(...)(x, targets, eigen_smooth=True)`` (float64
  model, resized to the layer's own size as in ``test_methods_parity``). The
  library keeps the SVD's arbitrary sign; onnxcam orients the component to
  agree with the channel sum it smooths, so the reference's signed
  projection gets the same orientation (from the reference's own sum) before
  its ReLU. Where the library's sign already agrees, its ``__call__`` output
  is compared as is. Relative L2 per image at most 1e-4 on the raw map, and
  on the min-max normalised one (past it: 3x torch's float32-vs-float64 error,
  the convention of ``test_methods_parity``).
* ``aug_smooth``: on a small model, the smoothed map of a mirrored image is the
  mirrored smoothed map, and the map is the normalised mean of the plain maps
  of the flipped and shifted copies, each moved back by hand (numpy padding,
  not the code under test).
* Several layers: the fused ``cam`` is the normalised mean of each layer's
  own normalised ``cam``, the same for in-graph, host-side and perturbation methods.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import onnxcam
from onnxcam.methods.smoothing import augmentations
from tests.tiny_models import tiny_cnn

REL_TOL = 1e-4


def _x(n: int = 2, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def _minmax(m: np.ndarray) -> np.ndarray:
    lo = m.min(axis=(1, 2), keepdims=True)
    return (m - lo) / np.maximum(m.max(axis=(1, 2), keepdims=True) - lo, 1e-7)


# -- eigen_smooth against pytorch-grad-cam ----------------------------------------------------------

EIGEN_ARCHS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0"]
EIGEN_CASES = [(a, m) for a in EIGEN_ARCHS for m in ("gradcam", "layercam")]


@pytest.fixture(scope="module")
def small_cases(tmp_path_factory):
    pytest.importorskip("pytorch_grad_cam")
    from tests.test_methods_parity import case_getter
    from tests.test_perturbation_methods import MODULES, SIZE

    return case_getter(tmp_path_factory, SIZE, MODULES)


def oriented_reference(torch_model, case, method: str, targets) -> tuple[np.ndarray, np.ndarray, bool]:
    """(normalised, raw, flipped): pytorch-grad-cam's eigen-smoothed map, signed to agree with its channel sum."""
    from tests.test_methods_parity import grad_cam_normalise, grad_cam_reference

    normalised, projection = grad_cam_reference(torch_model, case, method, targets, eigen_smooth=True, signed=True)
    _, total = grad_cam_reference(torch_model, case, method, targets, signed=True)
    flip = np.einsum("nhw,nhw->n", projection.astype(np.float64), total.astype(np.float64)) < 0
    raw = np.maximum(np.where(flip[:, None, None], -projection, projection), 0)
    if flip.any():  # the library's own output is the other orientation: normalise the oriented map its way
        normalised = grad_cam_normalise(raw)
    return normalised, raw, bool(flip.any())


@pytest.mark.parametrize("arch,method", EIGEN_CASES, ids=[f"{a}-{m}" for a, m in EIGEN_CASES])
def test_eigen_smooth_matches_pytorch_grad_cam(arch, method, small_cases):
    from tests.test_methods_parity import grad_cam_normalise, per_image_rel_l2

    case = small_cases(arch)
    res = onnxcam.Explainer(case.model, layer=case.onnx_layer, method=method, eigen_smooth=True).explain(case.x)
    targets = np.asarray(res.targets)
    want, want_raw, flipped = oriented_reference(case.torch_model, case, method, targets)
    lowres = np.asarray(res.cam_lowres)
    assert lowres.shape == want_raw.shape and (want_raw.reshape(2, -1).max(1) > 0).all()
    raw_errs = per_image_rel_l2(lowres, want_raw)
    errs = per_image_rel_l2(grad_cam_normalise(lowres), want)
    bound, note = REL_TOL, ""
    if max(raw_errs + errs) > REL_TOL:
        want32, want32_raw, _ = oriented_reference(case.torch_model_fp32(), case, method, targets)
        err32 = max(per_image_rel_l2(want32_raw, want_raw) + per_image_rel_l2(want32, want))
        bound, note = max(REL_TOL, 3 * err32), f" (torch fp32 vs fp64 {err32:.2e})"
    plain = np.asarray(onnxcam.Explainer(case.model, layer=case.onnx_layer, method=method).explain(case.x).cam_lowres)
    print(
        f"\n[eigen_smooth] {arch:20s} {method:10s} raw {', '.join(f'{e:.2e}' for e in raw_errs)}; min-max "
        f"{', '.join(f'{e:.2e}' for e in errs)}{note}; library sign {'flipped' if flipped else 'kept'}"
    )
    assert max(raw_errs) <= bound and max(errs) <= bound
    assert max(per_image_rel_l2(lowres, plain)) > 1e-3, "eigen_smooth changed nothing: no test"


def test_eigen_smooth_orients_the_component_like_the_sum():
    """The principal component may come out of the SVD either way round; the map never is inverted."""
    from onnxcam.methods.smoothing import eigen_smooth

    rng = np.random.default_rng(1)
    pattern = rng.standard_normal((1, 1, 5, 6))
    contributions = pattern * rng.uniform(0.5, 1.5, (1, 7, 1, 1)) + 0.01 * rng.standard_normal((1, 7, 5, 6))
    for sign in (1, -1):  # the same data, mirrored: the SVD's sign follows the data, the result follows the sum
        got = eigen_smooth(sign * contributions)[0]
        total = (sign * contributions).sum(axis=1)[0]
        assert np.corrcoef(got.ravel(), total.ravel())[0, 1] > 0.99


# -- aug_smooth --------------------------------------------------------------------------------------


def _shift_by_hand(a: np.ndarray, offsets, axes) -> np.ndarray:
    """Move the content by ``offsets`` along ``axes``, repeating the edge into the uncovered border."""
    for o, axis in zip(offsets, axes):
        n = a.shape[axis]
        pad = [(0, 0)] * a.ndim
        pad[axis] = (o, 0) if o > 0 else (0, -o)
        a = np.take(np.pad(a, pad, mode="edge"), np.arange(n) + max(0, -o), axis=axis)
    return a


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_aug_smooth_is_the_mean_of_the_maps_moved_back(method):
    x, targets = _x(2), [1, 3]
    plain = onnxcam.Explainer(tiny_cnn(), method=method)
    maps = []
    for aug in augmentations((16, 16)):
        moved = np.flip(x, axis=3) if aug.flip else x
        moved = _shift_by_hand(moved, aug.shift, (2, 3))
        back = _shift_by_hand(
            plain.explain(np.ascontiguousarray(moved), target=targets).cam, [-s for s in aug.shift], (1, 2)
        )
        maps.append(np.flip(back, axis=2) if aug.flip else back)
    assert len(maps) == 6 and any(a.shift != (0, 0) for a in augmentations((16, 16)))
    want = _minmax(np.mean(maps, axis=0))
    got = onnxcam.Explainer(tiny_cnn(), method=method, aug_smooth=True).explain(x, target=targets)
    np.testing.assert_allclose(got.cam, want, atol=2e-6)
    assert np.abs(got.cam - plain.explain(x, target=targets).cam).max() > 0.05, "smoothing changed nothing"


@pytest.mark.parametrize("method", ["gradcam", "ablationcam"])
def test_aug_smooth_map_of_a_mirrored_image_is_the_mirrored_map(method):
    x, targets = _x(2, seed=5), [0, 2]
    ex = onnxcam.Explainer(tiny_cnn(), method=method, aug_smooth=True)
    mirrored = ex.explain(np.ascontiguousarray(np.flip(x, axis=3)), target=targets).cam
    np.testing.assert_allclose(mirrored, np.flip(ex.explain(x, target=targets).cam, axis=2), atol=2e-6)
    plain = onnxcam.Explainer(tiny_cnn(), method=method)
    assert not np.allclose(
        plain.explain(np.ascontiguousarray(np.flip(x, axis=3)), target=targets).cam,
        np.flip(plain.explain(x, target=targets).cam, axis=2),
        atol=1e-3,
    ), "the plain map is already mirror-symmetric: no test"


def test_guided_gradcam_follows_the_smoothed_map():
    x = _x(2)
    for options in ({"aug_smooth": True}, {"eigen_smooth": True}):
        res = onnxcam.Explainer(tiny_cnn(), method="guided-gradcam", **options).explain(x)
        np.testing.assert_allclose(res.guided_gradcam, res.guided * res.cam[:, None], rtol=1e-6, atol=1e-7)


# -- several layers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,options", [("gradcam", {}), ("eigencam", {}), ("scorecam", {}), ("gradcam++", {"eigen_smooth": True})]
)
def test_layers_fuse_as_the_mean_of_normalised_maps(method, options):
    x, layers = _x(2), ["r1", "features"]
    singles = [
        onnxcam.Explainer(tiny_cnn(), layer=name, method=method, **options).explain(x, target=[1, 2]) for name in layers
    ]
    fused = onnxcam.Explainer(tiny_cnn(), layer=layers, method=method, **options).explain(x, target=[1, 2])
    np.testing.assert_allclose(fused.cam, _minmax(np.mean([s.cam for s in singles], axis=0)), atol=2e-6)
    for low, single in zip(fused.cam_lowres, singles):
        np.testing.assert_allclose(low, single.cam_lowres, rtol=1e-5, atol=1e-7)


# -- command line -----------------------------------------------------------------------------------


def test_cli_smoothing_flags(tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    from tests.test_cli import run_cli
    from tests.test_perturbation_methods import tiny_model_and_photo

    model, image = tiny_model_and_photo(tmp_path)
    runs = {}
    for name, flags in {"plain": [], "smooth": ["--aug-smooth", "--eigen-smooth"]}.items():
        run_cli("explain", model, image, "-o", tmp_path / name, *flags, check_exit=0)
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())["results"][0]
    assert runs["plain"]["target"] == runs["smooth"]["target"]
    assert (tmp_path / "smooth" / "photo.png.cam.png").exists()
    help_text = run_cli("explain", "--help", check_exit=0).stdout
    assert "--aug-smooth" in help_text and "--eigen-smooth" in help_text

"""onnxcam against pytorch-grad-cam on a timm VisionTransformer, the way pytorch-grad-cam's ViT tutorial explains it.

The model: timm ``VisionTransformer`` (random weights, ``torch.manual_seed(0)``, a class token, 56x64 input,
8x8 patches: a 7x8 patch grid, not square so that a transposed grid would show; 4 blocks of width 48, 3 heads),
exported with the TorchScript exporter (batch axis dynamic), three seeded N(0, 1) images. The layer is the
tutorial's ``target_layers=[model.blocks[-1].norm1]``; onnxcam explains the ONNX tensor equal by value to that
module's output (``tests.test_torchvision_parity`` helpers), whose token layout it reads from the graph.
pytorch-grad-cam runs on the float64 twin of the model with the tutorial's ``reshape_transform`` (drop the class
token, patch tokens to ``(N, C, 7, 8)``: ``tools.bench.models.tokens_to_map``), each image's top-1 class as
onnxcam chose it (``ClassifierOutputTarget``). For gradcam, gradcam++, scorecam and eigencam, per image:

* the full-size maps (onnxcam's ``cam`` and the library's output, both 56x64) have Pearson correlation
  >= ``MIN_PEARSON`` = 0.99 (their normalisation and upsampling come in a different order by design, see
  ``tests/test_methods_parity.py``, so the comparison is a correlation rather than an error bound);
* the peak cell on the 7x8 token grid is the same: argmax of onnxcam's ``cam_lowres`` and of the library's map
  at the grid's own size (its ``get_target_width_height`` set to the grid, so its resize is a copy). A peak is
  only compared where it is well posed: the reference's highest cell must beat the runner-up by at least
  ``PEAK_MARGIN`` = 2 % of the map's range, or the test fails as "no test" rather than passing.

At the time of writing every Pearson correlation is 1.00000 (to five decimals) and all 12 peaks agree, with the
runner-up 4-30 % of the range below the peak (with these weights the three images' top-1 class is the same, 5).
The check can fail: ``test_a_wrong_token_layout_fails_the_check`` explains the same layer with
``prefix_tokens=3, token_grid=(6, 9)`` (the same 57 tokens, split wrongly: Pearson -0.10 to 0.31) and with the
grid transposed (``token_grid=(8, 7)``: -0.09 to 0.31), and requires both to fail it. 15-30 seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

import onnxcam  # noqa: E402
from model_zoo.torchvision_models import export_onnx  # noqa: E402
from tests.test_torchvision_parity import onnx_tensor_for_torch_value, onnx_tensor_values  # noqa: E402
from tools.bench.models import tokens_to_map  # noqa: E402
from tools.bench.timing import pearson  # noqa: E402

IMAGE = (56, 64)
PATCH = 8
GRID = (IMAGE[0] // PATCH, IMAGE[1] // PATCH)  # (7, 8)
PREFIX = 1  # the class token
MIN_PEARSON = 0.99
PEAK_MARGIN = 0.02
METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM, "eigencam": EigenCAM}


def build_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=IMAGE, patch_size=PATCH, embed_dim=48, depth=4, num_heads=3, num_classes=10
    ).eval()


@dataclasses.dataclass
class VitCase:
    path: str
    torch_model: torch.nn.Module  # float64
    x: np.ndarray  # float32 (3, 3, *IMAGE)
    layer: str  # the ONNX tensor of blocks[-1].norm1's output


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> VitCase:
    model = build_vit()
    path = str(tmp_path_factory.mktemp("vit_parity") / "timm_vit.onnx")
    export_onnx(model, path, "torchscript", torch.randn(2, 3, *IMAGE))
    x = np.random.default_rng(0).standard_normal((3, 3, *IMAGE)).astype(np.float32)
    got = {}
    handle = model.blocks[-1].norm1.register_forward_hook(lambda m, i, o: got.update(a=o.detach().numpy()))
    with torch.no_grad():
        model(torch.from_numpy(x))
    handle.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        candidates = [c.name for c in onnxcam.Explainer(path).candidates]  # every float tensor that can be a layer
    values, order = onnx_tensor_values(onnx.load(path), x, candidates, got["a"].shape)
    layer = onnx_tensor_for_torch_value(values, order, got["a"])
    assert layer is not None, "no ONNX tensor equals blocks[-1].norm1's output"
    return VitCase(path, model.double(), x, layer)


def explain(case: VitCase, method: str, **tokens):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = onnxcam.Explainer(case.path, layer=case.layer, method=method, **tokens)
    return ex, ex.explain(case.x)


def pytorch_grad_cam(case: VitCase, method: str, targets) -> tuple[np.ndarray, np.ndarray]:
    """The library's maps for ``targets``: (full size, at the token grid's size)."""
    model = case.torch_model
    cam = METHODS[method](
        model=model,
        target_layers=[model.blocks[-1].norm1],
        reshape_transform=functools.partial(tokens_to_map, prefix=PREFIX, height=GRID[0], width=GRID[1]),
    )
    x, targets_t = torch.from_numpy(case.x).double(), [ClassifierOutputTarget(int(t)) for t in targets]
    try:
        full = np.asarray(cam(input_tensor=x, targets=targets_t))
        cam.get_target_width_height = lambda input_tensor: (GRID[1], GRID[0])  # (width, height), as cv2 takes it
        grid = np.asarray(cam(input_tensor=x, targets=targets_t))
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
    return full, grid


def peak(m: np.ndarray) -> tuple[int, int]:
    return tuple(int(i) for i in np.unravel_index(np.argmax(m), m.shape))


def agreement(res, want_full: np.ndarray, want_grid: np.ndarray) -> list[tuple[float | None, bool]]:
    """Per image: (Pearson correlation of the full-size maps, same peak cell on the token grid)."""
    lowres = np.asarray(res.cam_lowres)
    return [
        (pearson(got, want), lowres.shape[1:] == want_grid.shape[1:] and peak(low) == peak(ref))
        for got, want, low, ref in zip(np.asarray(res.cam), want_full, lowres, want_grid)
    ]


def passes(agreed: list[tuple[float | None, bool]]) -> bool:
    return all(r is not None and r >= MIN_PEARSON and same for r, same in agreed)


@pytest.mark.parametrize("method", METHODS)
def test_matches_pytorch_grad_cam_with_reshape_transform(method, vit):
    ex, res = explain(vit, method)
    layer = next(c for c in ex.candidates if c.name == ex.layer)
    assert layer.tokens is not None and (layer.tokens.prefix, layer.tokens.grid) == (PREFIX, GRID)
    want_full, want_grid = pytorch_grad_cam(vit, method, res.targets)
    assert want_full.shape == np.asarray(res.cam).shape == (len(vit.x), *IMAGE)
    assert want_grid.shape == np.asarray(res.cam_lowres).shape == (len(vit.x), *GRID)
    ranked = np.sort(want_grid.reshape(len(want_grid), -1), axis=1)
    margins = (ranked[:, -1] - ranked[:, -2]) / np.maximum(ranked[:, -1] - ranked[:, 0], 1e-12)
    assert (margins >= PEAK_MARGIN).all(), f"a reference peak is within {PEAK_MARGIN:.0%} of the runner-up: no test"

    agreed = agreement(res, want_full, want_grid)
    print(
        f"\n[vit parity] {method:10s} targets {np.asarray(res.targets).tolist()}: Pearson "
        + ", ".join(f"{r:.5f}" if r is not None else "flat" for r, _ in agreed)
        + f"; same peak {[same for _, same in agreed]}; peak margins {', '.join(f'{m:.3f}' for m in margins)}"
    )
    assert passes(agreed), f"{method}: (Pearson, same peak) per image {agreed}"


WRONG_LAYOUTS = {"3+6x9": {"prefix_tokens": 3, "token_grid": (6, 9)}, "1+8x7": {"token_grid": (GRID[1], GRID[0])}}


@pytest.mark.parametrize("tokens", WRONG_LAYOUTS.values(), ids=WRONG_LAYOUTS)
def test_a_wrong_token_layout_fails_the_check(tokens, vit):
    """The comparison notices a token view that is not pytorch-grad-cam's: too many prefix tokens (the same 57
    tokens split as 3 + 6x9) or the grid transposed (1 + 8x7)."""
    _, res = explain(vit, "gradcam", **tokens)
    want_full, want_grid = pytorch_grad_cam(vit, "gradcam", res.targets)
    assert np.asarray(res.cam_lowres).shape[1:] == tokens.get("token_grid")
    agreed = agreement(res, want_full, want_grid)
    print(f"\n[vit parity] wrong layout {tokens}: (Pearson, same peak) {agreed}")
    assert not passes(agreed)

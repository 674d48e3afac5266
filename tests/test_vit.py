"""Vision transformers: token layers, their grid, the automatic layer, and Grad-CAM against float64 torch autograd.

Each model of :mod:`model_zoo.transformer_models` (torchvision ViT and Swin,
timm ViT with register tokens and distilled DeiT, Hugging Face ViT; small
configs, random weights) is exported by both torch exporters with a dynamic
batch, and explained by onnxcam at ``layer="auto"`` and at an earlier layer.
Checks, on three seeded images (the export saw two):

* ``layer="auto"`` lands on the output of ``spec.auto`` (compared by value):
  for class-token heads the last block's *input*, not its output, whose patch
  tokens never reach the score;
* the token layer's grid and prefix count are the model's;
* ``cam_lowres`` equals the float64 torch Grad-CAM on the patch tokens,
  ``relu(sum_c mean_hw(G) * A)`` over ``A[:, P:].reshape(N, h, w, C)``
  (pytorch-grad-cam's ``reshape_transform``), relative L2 at most 1e-4.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import onnx  # noqa: E402

import onnxcam  # noqa: E402
from model_zoo.torchvision_models import export_onnx  # noqa: E402
from model_zoo.transformer_models import SPECS, TransformerSpec  # noqa: E402
from tests.oracles import run_with_intermediates  # noqa: E402

REL_TOL = 1e-4
_NEEDS = {
    "timm_vit_registers": "timm",
    "timm_deit_distilled": "timm",
    "hf_vit": "transformers",
    "hf_dinov2": "transformers",
    "hf_clip_vision": "transformers",
}
CASES = [
    pytest.param(name, exporter, id=f"{name}-{exporter}")
    for name in SPECS
    for exporter in ("torchscript", "dynamo")
    if not (name == "torchvision_swin" and exporter == "dynamo")  # see the README's compatibility table
]


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache: dict[tuple[str, str], tuple[torch.nn.Module, str]] = {}

    def get(name: str, exporter: str) -> tuple[torch.nn.Module, str]:
        if name in _NEEDS:
            pytest.importorskip(_NEEDS[name])
        if (name, exporter) not in cache:
            spec = SPECS[name]
            model = spec.build()
            path = tmp_path_factory.mktemp("vit") / f"{name}_{exporter}.onnx"
            export_onnx(model, path, exporter, torch.randn(2, 3, *spec.size))
            cache[name, exporter] = model, str(path)
        return cache[name, exporter]

    return get


def _images(spec: TransformerSpec, n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 3, *spec.size)).astype(np.float32)


def _torch_output(model: torch.nn.Module, path: str, x: torch.Tensor, classes=None):
    """The module's output (first element of a tuple) and, with ``classes``, d(sum of their logits)/d output."""
    captured = {}

    def hook(_module, _inputs, out):
        captured["a"] = out[0] if isinstance(out, tuple) else out

    handle = model.get_submodule(path).register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    a = captured["a"]
    if classes is None:
        return a, None
    score = logits.gather(1, torch.as_tensor(classes).reshape(-1, 1)).sum()
    return a, torch.autograd.grad(score, a)[0]


def _as_map(t: torch.Tensor, layout: str, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    if layout == "NTC":
        return t[:, prefix:].reshape(len(t), *grid, t.shape[-1]).permute(0, 3, 1, 2)
    return t.permute(0, 3, 1, 2) if layout == "NHWC" else t


def _torch_gradcam(spec, model, module, x, classes, layout, prefix, grid) -> np.ndarray:
    model64 = model.double()
    try:
        a, g = _torch_output(model64, module, torch.from_numpy(x).double().requires_grad_(True), classes)
        a, g = _as_map(a, layout, prefix, grid), _as_map(g, layout, prefix, grid)
        return torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)).detach().numpy()
    finally:
        model.float()


def _onnx_tensor_of(ex: onnxcam.Explainer, model_path: str, value: np.ndarray, x: np.ndarray) -> str:
    """The earliest candidate layer whose value equals ``value`` (relative L2 below 1e-4)."""
    names = [c.name for c in ex.candidates]
    got = run_with_intermediates(onnx.load(model_path), {ex.index.inputs[0]: x}, names)
    for name in names:
        if got[name].shape == value.shape and _rel_l2(got[name], value) < 1e-4:
            return name
    raise AssertionError("no candidate layer equals the torch module's output")


@pytest.mark.parametrize("name, exporter", CASES)
def test_vit_gradcam_matches_torch_autograd(name, exporter, exported):
    spec = SPECS[name]
    model, path = exported(name, exporter)
    x = _images(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = onnxcam.Explainer(path)
    auto_layer = next(c for c in ex.candidates if c.name == ex.layer)
    with torch.no_grad():
        want_auto, _ = _torch_output(model, spec.auto, torch.from_numpy(x))
        want_early, _ = _torch_output(model, spec.early, torch.from_numpy(x))
    assert ex.layer == _onnx_tensor_of(ex, path, want_auto.numpy(), x), ex.layer_reason
    res = ex.explain(x)
    classes = res.targets.astype(int)
    auto_layout = "NCHW" if spec.layout == "NHWC" else "NTC"
    if auto_layout == "NTC":
        assert auto_layer.tokens is not None and (auto_layer.tokens.prefix, auto_layer.tokens.grid) == (
            spec.prefix,
            spec.grid,
        )
        assert ("patch tokens reach the score" in ex.layer_reason) == (spec.name != "hf_dinov2"), ex.layer_reason
    want = _torch_gradcam(spec, model, spec.auto, x, classes, auto_layout, spec.prefix, spec.grid)
    assert res.cam_lowres.shape == want.shape and _rel_l2(res.cam_lowres, want) <= REL_TOL, _rel_l2(
        res.cam_lowres, want
    )

    early = _onnx_tensor_of(ex, path, want_early.numpy(), x)
    ex_early = onnxcam.Explainer(path, layer=early)
    res = ex_early.explain(x, target=classes)
    want = _torch_gradcam(spec, model, spec.early, x, classes, spec.layout, spec.prefix, spec.grid)
    assert res.cam_lowres.shape == want.shape and _rel_l2(res.cam_lowres, want) <= REL_TOL, _rel_l2(
        res.cam_lowres, want
    )


@pytest.mark.parametrize("name", ["timm_vit_registers", "timm_deit_distilled"])
def test_gradient_rollout_matches_a_torch_reference(name, exported):
    """Chefer et al.'s rollout in float64 torch, on the attention probabilities timm's blocks compute."""
    spec = SPECS[name]
    model, path = exported(name, "torchscript")
    x = _images(spec)
    res = onnxcam.Explainer(path, method="gradient-rollout").explain(x)  # method "gradient-rollout"
    model64, probs, hooks = model.double(), [], []
    try:
        for block in model64.blocks:
            block.attn.fused_attn = False  # the explicit softmax(q k^T) path, whose probabilities can be hooked
            hooks.append(block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: probs.append(out)))
        logits = model64(torch.from_numpy(x).double())
        score = logits.gather(1, torch.as_tensor(res.targets.astype(int)).reshape(-1, 1)).sum()
        grads = torch.autograd.grad(score, probs)
    finally:
        for hook in hooks:
            hook.remove()
        for block in model.blocks:
            block.attn.fused_attn = True
        model.float()
    tokens = probs[0].shape[-1]
    relevance = torch.eye(tokens, dtype=torch.float64).expand(len(x), tokens, tokens)
    for p, g in zip(probs, grads):
        relevance = relevance + (g * p).clamp(min=0).mean(dim=1) @ relevance
    want = relevance[:, 0, spec.prefix :].reshape(len(x), *spec.grid).detach().numpy()
    assert len(probs) == 3 and (want > 0).sum() > len(x)
    assert res.cam_lowres.shape == want.shape and _rel_l2(res.cam_lowres, want) <= REL_TOL, _rel_l2(
        res.cam_lowres, want
    )

"""Guided backprop and Guided Grad-CAM against torch autograd with a guided-ReLU backward."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxcam
from model_zoo.torchvision_models import build_model, export_onnx


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients at positive inputs (Springenberg et al.)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0) * (g > 0)


class _GuidedReLUModule(torch.nn.Module):
    def forward(self, x):
        return _GuidedReLU.apply(x)


def _guided_copy(model: torch.nn.Module) -> torch.nn.Module:
    for name, child in model.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(model, name, _GuidedReLUModule())
        else:
            _guided_copy(child)
    return model


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    model = build_model("resnet18", seed=0)
    path = tmp_path_factory.mktemp("guided") / "resnet18.onnx"
    export_onnx(model, path, "torchscript", torch.randn(1, 3, 64, 64))
    return model, path


def test_guided_backprop_matches_torch(resnet):
    import copy

    model, path = resnet
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    ex = onnxcam.Explainer(path, method="guided-gradcam")
    res = ex.explain(x, target=[3, 917])

    guided_model = _guided_copy(copy.deepcopy(model)).double().eval()
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    logits = guided_model(xt)
    (g,) = torch.autograd.grad(logits[[0, 1], [3, 917]].sum(), xt)
    ref = g.numpy()
    err = np.linalg.norm(res.guided - ref) / np.linalg.norm(ref)
    print(f"guided backprop rel. L2 error vs float64 torch: {err:.2e}")
    assert res.guided.shape == x.shape and err < 1e-4, err

    plain = torch.autograd.grad(model.double()(xt)[[0, 1], [3, 917]].sum(), xt)[0].numpy()
    assert np.linalg.norm(plain - ref) / np.linalg.norm(ref) > 0.1  # the guided rule really changed the pass

    expected = res.guided * res.cam[:, None, :, :]
    np.testing.assert_allclose(res.guided_gradcam, expected, rtol=1e-6, atol=1e-9)


def test_guided_outputs_in_exported_file(resnet, tmp_path):
    import onnxruntime as ort

    _, path = resnet
    ex = onnxcam.Explainer(path, method="guided-backprop")
    ex.export(tmp_path / "g.onnx")
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    names = [o.name for o in sess.get_outputs()]
    assert {"guided_backprop", "guided_gradcam", "cam"} <= set(names)
    out = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x, "target_class": np.array([-1])})))
    res = ex.explain(x)
    np.testing.assert_allclose(out["guided_backprop"], res.guided, rtol=1e-5, atol=1e-7)
    assert res.guided_gradcam is not None and ex.explain(x).cam.shape == (1, 64, 64)

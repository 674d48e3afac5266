"""Targets and scores against torch autograd on a torch twin of the tiny CNN."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")
from onnx import numpy_helper

import onnxcam
from tests.tiny_models import tiny_cnn


def _torch_twin(model):
    """The tiny CNN in float64 torch, returning (features, logits, probs)."""
    w = {t.name: torch.tensor(numpy_helper.to_array(t).astype(np.float64)) for t in model.graph.initializer}

    def forward(x):
        r1 = F.relu(F.conv2d(x, w["w1"], w["b1"], padding=1))
        feats = F.relu(F.conv2d(r1, w["w2"], w["b2"], padding=1, stride=2))
        logits = feats.mean((2, 3)) @ w["wf"].T + w["bf"]
        return feats, logits, torch.softmax(logits, 1)

    return forward


def _reference_cam(forward, x, pick):
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    feats, logits, probs = forward(xt)
    score = pick(logits, probs)
    (g,) = torch.autograd.grad(score, feats)
    cam = torch.relu((g.mean((2, 3), keepdim=True) * feats).sum(1))
    return cam.detach().numpy(), logits.detach().numpy()


def _rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


@pytest.fixture(scope="module")
def setup():
    model = tiny_cnn(classes=5, size=16, seed=3)
    x = np.random.default_rng(4).standard_normal((3, 3, 16, 16)).astype(np.float32)
    return model, _torch_twin(model), x


def test_default_is_top1_logit(setup):
    model, forward, x = setup
    res = onnxcam.Explainer(model).explain(x)
    ref_logits = forward(torch.tensor(x.astype(np.float64)))[1].detach().numpy()
    top1 = ref_logits.argmax(1)
    cam, _ = _reference_cam(forward, x, lambda lg, pr: lg[range(3), top1].sum())
    assert res.targets.tolist() == top1.tolist()
    assert _rel(res.cam_lowres, cam) < 1e-5
    np.testing.assert_allclose(
        res.outputs["probs"], torch.softmax(torch.tensor(ref_logits), 1).numpy(), rtol=1e-4, atol=1e-6
    )


def test_explicit_classes_per_image(setup):
    model, forward, x = setup
    targets = [4, 0, 2]
    res = onnxcam.Explainer(model).explain(x, target=targets)
    cam, _ = _reference_cam(forward, x, lambda lg, pr: lg[range(3), targets].sum())
    assert res.targets.tolist() == targets
    assert _rel(res.cam_lowres, cam) < 1e-5


def test_probability_score_differs_from_logit_and_matches_torch(setup):
    model, forward, x = setup
    ex = onnxcam.Explainer(model, score="probability")
    res = ex.explain(x, target=1)
    cam, _ = _reference_cam(forward, x, lambda lg, pr: pr[:, 1].sum())
    assert _rel(res.cam_lowres, cam) < 1e-4
    logit_cam, _ = _reference_cam(forward, x, lambda lg, pr: lg[:, 1].sum())
    assert _rel(cam, logit_cam) > 1e-3  # the two scores really are different explanations


def test_output_target_selects_one_element(setup):
    model, forward, x = setup
    ex = onnxcam.Explainer(model)
    res = ex.explain(x, target=onnxcam.OutputTarget("probs", (3,)))
    cam, _ = _reference_cam(forward, x, lambda lg, pr: lg[:, 3].sum())  # logit of element 3, as for classes
    assert _rel(res.cam_lowres, cam) < 1e-5
    assert list(res.targets) == [None, None, None]
    by_class = ex.explain(x, target=3)
    np.testing.assert_allclose(res.cam, by_class.cam, rtol=1e-5, atol=1e-6)


def test_predict_matches_a_plain_session_and_exposes_the_logit():
    """predict() is one forward pass of the user's graph: outputs equal a bare session, scores are the logits."""
    import onnxruntime as ort

    model = tiny_cnn(classes=5, size=16, seed=4)  # ends in Softmax
    ex = onnxcam.Explainer(model)
    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    pred = ex.predict(x)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (probs,) = sess.run(None, {"x": x})
    np.testing.assert_allclose(pred.outputs[model.graph.output[0].name], probs, rtol=1e-5, atol=1e-7)
    assert pred.scores.shape == (3, 5)
    e = np.exp(pred.scores - pred.scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), probs, rtol=1e-4, atol=1e-7)
    assert np.argmax(pred.scores, 1).tolist() == ex.explain(x).targets.tolist()

"""The runner under the Explainer: sessions keyed by what they compute, and models whose batch size is fixed."""

from __future__ import annotations

import numpy as np
import pytest

import onnxcam
from onnxcam.explain.runner import GraphKey
from tests.tiny_models import tiny_cnn


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(1).random((n, 3, 16, 16), dtype=np.float32)


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "ablationcam"])
def test_a_fixed_batch_model_explains_any_batch_size(method):
    """Batches of 3 and 1 on a model fixed at 2: chunks of 2, the last one padded, equal to the dynamic model's maps."""
    fixed = onnxcam.Explainer(tiny_cnn(batch=2, seed=3), method=method, perturbation_batch=3)
    dynamic = onnxcam.Explainer(tiny_cnn(seed=3), method=method, perturbation_batch=3)
    for n in (3, 1):
        x = _images(n)
        got, want = fixed.explain(x), dynamic.explain(x)
        assert got.cam.shape == (n, 16, 16) and got.targets.tolist() == want.targets.tolist()
        np.testing.assert_allclose(got.cam, want.cam, atol=1e-5)
        np.testing.assert_allclose(fixed.predict(x).scores, dynamic.predict(x).scores, rtol=1e-6)


def test_equal_keys_share_one_file_and_session_and_different_keys_do_not():
    ex = onnxcam.Explainer(tiny_cnn(), method="ablationcam")
    ex.explain(_images(2))
    runner = ex._runner
    files = sorted(p.name for p in runner.weights.path.glob("*.onnx"))
    assert len(files) == len(set(files)) and any(f.startswith("tail_") for f in files)
    tail = runner.tail_session(ex.layer, ex.score_tensor)[0]
    assert runner.tail_session(ex.layer, ex.score_tensor)[0] is tail
    assert runner.tail_session(None, ex.score_tensor)[0] is not tail
    key = GraphKey("tail", ex.score_tensor, start=(ex.layer,))
    assert key == GraphKey("tail", ex.score_tensor, start=(ex.layer,)) and key.file_name in files
    assert GraphKey("tail", ex.score_tensor).file_name != key.file_name


@pytest.mark.parametrize("layer", [None, 3, ["auto", 4]])
def test_a_layer_that_is_not_a_name_is_a_clear_error(layer):
    with pytest.raises(onnxcam.LayerError, match="layer must be 'auto', a tensor or node name, or a list of names"):
        onnxcam.Explainer(tiny_cnn(), layer=layer)


@pytest.mark.parametrize("value", [0, True, 2.0])
def test_perturbation_batch_must_be_a_positive_int(value):
    with pytest.raises(onnxcam.OnnxcamError, match="perturbation_batch must be a positive int"):
        onnxcam.Explainer(tiny_cnn(), method="scorecam", perturbation_batch=value)

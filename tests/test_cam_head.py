"""The shared CAM head: the channel sum of every method, and the normalised upsampling.

* ``channel_sum`` (one batched MatMul for channel-weighting methods, a
  ReduceSum for position-weighting ones) against numpy's ``sum_k M_k`` of the
  same method's contributions, for NCHW and NHWC layers, static and dynamic
  spatial sizes. The contributions themselves are checked against
  pytorch-grad-cam in ``test_methods_parity``; here the question is only
  whether the sum is taken over the right axis for every layout.
* ``extreme_samples``: on random maps of random sizes (up- and down-sampling,
  one-pixel maps), the rows x columns it names hold the float64 minimum and
  maximum of the full upsampled map.
* The head of the explainer graph: ``cam`` against numpy (resize with the
  interpolation matrices in float64, then per-image min-max) for maps with a
  single peak, an all-zero map and random ones; values stay inside [0, 1],
  and a constant map stays flat.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxcam.graph.builder import GraphBuilder
from onnxcam.explain.build import _upsampled_cam
from onnxcam.methods import channel_sum, contributions, method_names
from onnxcam.methods.upsampling import extreme_samples, interpolation_matrix
from onnxcam.runtime.session import create_session

OPSET = 17


def _run(b: GraphBuilder, inputs: dict[str, np.ndarray], out: str, rank: int, dynamic: bool = False) -> np.ndarray:
    shapes = {k: [None] * v.ndim if dynamic else list(v.shape) for k, v in inputs.items()}
    graph = helper.make_graph(
        b.nodes,
        "head",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, shapes[k]) for k in inputs],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None] * rank)],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return create_session(model.SerializeToString(), ["CPUExecutionProvider"]).run([out], inputs)[0]


@pytest.mark.parametrize("method", method_names("gradient"))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_channel_sum_is_the_sum_of_the_contributions(method, layout, dynamic):
    rng = np.random.default_rng(len(method))
    A = rng.standard_normal((3, 5, 4, 6)).astype(np.float32)  # NCHW; h != w so a swapped axis shows
    G = rng.standard_normal(A.shape).astype(np.float32)
    channel_axis = 1
    if layout == "NHWC":
        A, G, channel_axis = A.transpose(0, 2, 3, 1).copy(), G.transpose(0, 2, 3, 1).copy(), 3
    spatial_axes = (2, 3) if channel_axis == 1 else (1, 2)

    b = GraphBuilder(OPSET, taken_names={"A", "G", "M"})
    b.op("Identity", contributions(b, method, "A", "G", spatial_axes), outputs=["M"])
    M = _run(b, {"A": A, "G": G}, "M", 4)
    assert M.shape == A.shape

    size = (4, 6) if not dynamic else (None, None)
    b = GraphBuilder(OPSET, taken_names={"A", "G", "S"})
    b.op("Identity", channel_sum(b, method, "A", "G", channel_axis, size), outputs=["S"])
    got = _run(b, {"A": A, "G": G}, "S", 3, dynamic=dynamic)
    want = M.astype(np.float64).sum(axis=channel_axis)
    assert got.shape == (3, 4, 6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_extreme_samples_hold_the_extremes_of_the_upsampled_map():
    rng = np.random.default_rng(0)
    for _ in range(400):
        h, w = rng.integers(1, 16, 2)
        H, W = rng.integers(1, 260, 2)
        low = rng.standard_normal((h, w))
        full = interpolation_matrix(h, H) @ low @ interpolation_matrix(w, W).T
        probe = full[np.ix_(extreme_samples(h, H), extreme_samples(w, W))]
        assert np.isclose(probe.max(), full.max(), rtol=0, atol=1e-12), (h, w, H, W)
        assert np.isclose(probe.min(), full.min(), rtol=0, atol=1e-12), (h, w, H, W)
    assert len(extreme_samples(7, 224)) == 12  # two per interval between the 7 samples
    assert extreme_samples(1, 5).tolist() == [0, 4]


def _maps() -> np.ndarray:
    rng = np.random.default_rng(1)
    peak = np.zeros((7, 7))
    peak[3, 3] = 2.5
    return np.stack(
        [peak, np.full((7, 7), 0.3), np.zeros((7, 7)), rng.random((7, 7)), rng.random((7, 7)) * 1e-3]
    ).astype(np.float32)


def _numpy_cam(low: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rows, cols = interpolation_matrix(low.shape[1], size[0]), interpolation_matrix(low.shape[2], size[1])
    up = rows @ low.astype(np.float64) @ cols.T
    lo = up.min(axis=(1, 2), keepdims=True)
    return (up - lo) / np.maximum(up.max(axis=(1, 2), keepdims=True) - lo, 1e-7)


@pytest.mark.parametrize("size", [(224, 224), (50, 31), (5, 3)], ids=["224", "50x31", "down-5x3"])
def test_head_normalises_the_upsampled_map(size):
    low = _maps()
    b = GraphBuilder(OPSET, taken_names={"L", "cam"})
    _upsampled_cam(b, "L", (7, 7), size, None, out="cam")
    cam = _run(b, {"L": low}, "cam", 3)
    want = _numpy_cam(low, size)
    assert cam.shape == (len(low), *size) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() <= 1
    varied = [0, 2, 3, 4]
    np.testing.assert_allclose(cam[varied], want[varied], atol=2e-6)
    assert np.allclose(cam[0].max(), 1) and np.all(cam[2] == 0)
    # A constant map has no contrast to normalise; float32 rounding of the interpolation leaves its level
    # anywhere in [0, 1], but it stays flat instead of amplifying the rounding into a pattern.
    assert np.ptp(cam[1]) < 1e-5


def test_a_resize_too_large_for_embedded_matrices_uses_resize_with_the_same_numbers(monkeypatch):
    """A model with a huge static input must not make building its head allocate n_out x n_in matrices."""
    from onnxcam.methods import upsampling

    low, size = _maps(), (224, 224)
    monkeypatch.setattr(upsampling, "MAX_MATRIX_ELEMENTS", 7 * 224 - 1)  # as if 224 were 20000
    b = GraphBuilder(OPSET, taken_names={"L", "cam"})
    _upsampled_cam(b, "L", (7, 7), size, None, out="cam")
    assert "Resize" in {n.op_type for n in b.nodes} and "MatMul" not in {n.op_type for n in b.nodes}
    assert max((t.dims[0] * t.dims[1] for t in b.initializers if len(t.dims) == 2), default=0) == 0
    cam = _run(b, {"L": low}, "cam", 3)
    varied = [0, 2, 3, 4]
    np.testing.assert_allclose(cam[varied], _numpy_cam(low, size)[varied], atol=2e-6)


def test_host_side_resize_equals_the_interpolation_matrices():
    from onnxcam.methods.upsampling import resize_half_pixel

    low = _maps()
    for size in [(224, 224), (50, 31), (5, 3), (7, 7)]:
        rows, cols = interpolation_matrix(7, size[0]), interpolation_matrix(7, size[1])
        np.testing.assert_allclose(
            resize_half_pixel(low, size), rows @ low.astype(np.float64) @ cols.T, rtol=1e-6, atol=1e-7
        )

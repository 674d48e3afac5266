"""The portable rules (``@vjp_rule(..., portable=True)``) against torch autograd, ties included.

A portable build swaps MaxPool's Indices-and-scatter gradient for a mask
(``vjp_max_pool_portable``) and writes pooling gradients without
``output_padding`` or run-time shapes. Each row builds a one-node model,
appends the gradient with a portable :class:`GraphBuilder`, runs it in
onnxruntime (float32) and compares with ``torch.autograd.grad`` of the torch
twin in float64. Integer-valued inputs make ties common: the gradient must
go to the first maximum of each window, as MaxPool's own index (and torch) do.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxcam.autodiff import build_vjp
from onnxcam.errors import UnsupportedModelError
from onnxcam.graph.builder import GraphBuilder
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.prepare import WORKING_OPSET
from tests.vjp_check import build_single_node, ort_session

torch = pytest.importorskip("torch")
F = torch.nn.functional


def portable_gradient(op_type: str, x: np.ndarray, attrs: dict, dtype=np.float32, symbolic: dict | None = None):
    """(model with outputs y and dx, seed input name): the op's gradient from a portable build."""
    model, outs = build_single_node(op_type, {"x": x}, ["x"], attrs, 1, np.float32, WORKING_OPSET)
    if dtype == np.float16:  # a one-node graph without weights: retyping its input and output is enough
        for vi in (model.graph.input[0], model.graph.output[0]):
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    for axis, name in (symbolic or {}).items():  # symbolic sizes, as exported models have
        for vi in (model.graph.input[0], model.graph.output[0]):
            vi.type.tensor_type.shape.dim[axis].dim_param = name
    index = GraphIndex(model)
    b = GraphBuilder(WORKING_OPSET, taken_names=index.names, portable_shapes=index.shape)
    t = index.type_of(outs[0])
    seed = b.reserve("seed")
    dx = build_vjp(index, b, ["x"], {outs[0]: seed})["x"]
    g = onnx.GraphProto()
    g.CopyFrom(model.graph)
    g.node.extend(b.nodes)
    g.initializer.extend(b.initializers)
    # the seed's sizes are left open: ONNX shape inference misjudges some ceil_mode pools' output size
    g.input.append(helper.make_tensor_value_info(seed, t.elem_type, [None] * len(t.shape)))
    g.output.append(helper.make_tensor_value_info(dx, t.elem_type, index.shape("x")))
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    onnx.checker.check_model(m, full_check=True)
    return m, seed


def against_torch(op_type: str, x: np.ndarray, attrs: dict, twin, seed_rng: int = 0, **kwargs) -> onnx.ModelProto:
    """Assert the portable gradient run by onnxruntime equals torch autograd; return the gradient model."""
    m, seed_name = portable_gradient(op_type, x, attrs, **kwargs)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = twin(tx)
    seed = np.random.default_rng(seed_rng).standard_normal(tuple(ty.shape))
    (want,) = torch.autograd.grad(ty, [tx], torch.tensor(seed))
    dtype = np.float16 if kwargs.get("dtype") == np.float16 else np.float32
    y, dx = ort_session(m).run(None, {"x": x.astype(dtype), seed_name: seed.astype(dtype)})
    tol = 2e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, want.numpy(), rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())))
    return m


def _emitted_ops(m: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in m.graph.node[1:]}


def _random_pool(rng: np.random.Generator, n: int, dilation: bool) -> tuple[dict, list, list, list, list]:
    k = [int(v) for v in rng.integers(2, 4, n)]
    s = [int(v) for v in rng.integers(1, 4, n)]
    p = [int(rng.integers(0, kk // 2 + 1)) for kk in k]  # torch allows pad <= kernel/2
    d = [int(v) for v in rng.integers(1, 3, n)] if dilation else [1] * n
    attrs = {"kernel_shape": k, "strides": s, "pads": p + p, "ceil_mode": int(rng.integers(0, 2)), "dilations": d}
    return attrs, k, s, p, d


def _max_twin(n, k, s, p, d, ceil):
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    return lambda x: fn(x, k, s, p, dilation=d, ceil_mode=bool(ceil))


@pytest.mark.parametrize("seed", range(10))
def test_max_pool_mask_ties_first_index(seed):
    """Random 2-D geometry (dilation, padding, ceil_mode) on integer inputs, so windows hold several maxima."""
    rng = np.random.default_rng(1700 + seed)
    attrs, k, s, p, d = _random_pool(rng, 2, dilation=seed % 2 == 0)
    x = rng.integers(0, 3, (2, 3, int(rng.integers(5, 9)), int(rng.integers(5, 9)))).astype(np.float64)
    if seed % 3 == 0:
        x = rng.standard_normal(x.shape)
    m = against_torch("MaxPool", x, attrs, _max_twin(2, k, s, p, d, attrs["ceil_mode"]))
    assert not {"ScatterElements", "MaxPool", "Size"} & _emitted_ops(m)
    assert all(len(n.output) == 1 for n in m.graph.node if n.op_type == "MaxPool")


@pytest.mark.parametrize("n", [1, 3])
def test_max_pool_mask_1d_and_3d(n):
    rng = np.random.default_rng(1800 + n)
    attrs, k, s, p, d = _random_pool(rng, n, dilation=True)
    shape = (2, 2, 11) if n == 1 else (1, 2, 5, 6, 6)
    x = rng.integers(0, 3, shape).astype(np.float64)
    against_torch("MaxPool", x, attrs, _max_twin(n, k, s, p, d, attrs["ceil_mode"]))


def test_max_pool_mask_stride1_same_and_symbolic_batch():
    """Inception's 3x3/s1/p1 (every input in up to 9 windows), SAME_UPPER, and a batch the graph leaves symbolic."""
    rng = np.random.default_rng(1900)
    x = rng.integers(0, 3, (3, 2, 6, 6)).astype(np.float64)
    attrs = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}
    m = against_torch("MaxPool", x, attrs, lambda t: F.max_pool2d(t, 3, 1, 1), symbolic={0: "N"})
    assert "Shape" not in _emitted_ops(m)  # all but the batch is static: the reshapes take constants
    same = {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}  # pads (0, 1) and (0, 0)
    against_torch("MaxPool", x, same, lambda t: F.max_pool2d(F.pad(t, (0, 0, 0, 1), value=-math.inf), [3, 2], 2))


@pytest.mark.parametrize(("k", "s", "p"), [(2, 2, 0), (3, 2, 1)])
def test_max_pool_mask_dynamic_image_size(k, s, p):
    """Run-time height and width (rapidocr's classifier): the inside mask and the tail padding are computed."""
    x = np.random.default_rng(1960 + k).integers(0, 3, (2, 3, 7, 6)).astype(np.float64)
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}
    symbolic = {0: "N", 2: "H", 3: "W"}
    against_torch("MaxPool", x, attrs, lambda t: F.max_pool2d(t, k, s, p), symbolic=symbolic)


def test_max_pool_mask_dynamic_ceil_mode_is_refused():
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}
    with pytest.raises(UnsupportedModelError, match="portable"):
        portable_gradient("MaxPool", np.zeros((1, 2, 7, 7)), attrs, symbolic={2: "H", 3: "W"})


def test_max_pool_mask_float16():
    """A float16 pool: the mask and the window sums run in float32 and are cast back."""
    rng = np.random.default_rng(1950)
    x = rng.integers(0, 3, (2, 2, 7, 7)).astype(np.float64)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    against_torch("MaxPool", x, attrs, lambda t: F.max_pool2d(t, 3, 2, 1), dtype=np.float16)


def test_average_pool_tail_padding_without_output_padding():
    """An AveragePool whose windows miss the input's last rows: zeros padded on instead of output_padding."""
    rng = np.random.default_rng(1990)
    x = rng.standard_normal((2, 3, 8, 9))
    attrs = {"kernel_shape": [3, 2], "strides": [3, 3]}  # rows 6..7 of 8 and column 8 of 9 lie in no window
    m = against_torch("AveragePool", x, attrs, lambda t: F.avg_pool2d(t, [3, 2], 3))
    assert "Pad" in _emitted_ops(m)
    assert all(a.name != "output_padding" for n in m.graph.node for a in n.attribute)


def test_portable_builder_drops_default_attributes_and_folds_static_shapes():
    """Attributes equal to their default are left out; Shape/Size of static tensors become constants."""
    b = GraphBuilder(17, portable_shapes=lambda name: {"x": ("N", 3, 4, 5), "y": (2, 3)}.get(name))
    b.op("MaxPool", "x", kernel_shape=[2, 2], dilations=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0], ceil_mode=0)
    b.op("ArgMax", "x", axis=0, keepdims=1, select_last_index=0)
    (pool, argmax) = b.nodes
    assert [a.name for a in pool.attribute] == ["kernel_shape"]
    assert list(argmax.attribute) == []
    assert b.op("Size", "y") in {t.name for t in b.initializers}
    assert b.op("Shape", "x", start=1) in {t.name for t in b.initializers}
    b.op("Shape", "x")  # the batch is symbolic: the node stays
    assert [n.op_type for n in b.nodes] == ["MaxPool", "ArgMax", "Shape"]
    plain = GraphBuilder(17)
    plain.op("ArgMax", "x", axis=0, keepdims=1)
    assert len(plain.nodes[0].attribute) == 2  # the default build writes what it is given

"""VJP rows for normalisation (BatchNormalization, InstanceNormalization, LayerNormalization, LRN)
and pooling (MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool).

Every row checks finite differences + torch autograd + onnxruntime through
``check_vjp``. Where onnx's ReferenceEvaluator disagrees with onnxruntime on
the forward op (ceil_mode AveragePool, padded stride-1 MaxPool, SAME_LOWER
MaxPool; its LRN only works when N == C), finite differences are skipped
and the row relies on a torch twin whose forward is asserted equal to
onnxruntime's. ``_ort_vs_torch`` covers what the reference evaluator cannot
run at all, and symbolic (dynamic) batch / spatial dimensions.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")
from onnx import helper
from onnx.reference import ReferenceEvaluator

from onnxcam.errors import UnsupportedModelError
from tests.vjp_check import (
    build_single_node,
    check_vjp,
    gradient_model,
    ort_grad_vs_torch,
    ort_session,
    with_inferred_outputs,
)


@pytest.fixture(autouse=True)
def _float64_torch():
    """torch twins build float64 tensors; restore the default so other modules keep float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _torch_forward(torch_fn, inputs):
    tin = {k: (torch.tensor(np.asarray(v)) if v is not None else None) for k, v in inputs.items()}
    with torch.no_grad():
        out = torch_fn(**tin)
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


def _forward_agreement(op_type, inputs, wrt, attrs, torch_fn=None, opset=17, n_outputs=1) -> str:
    """How a row can be checked: "all" (reference evaluator = onnxruntime), "ort" (only onnxruntime
    runs the op as specified, or shape inference disagrees with it), "no-ort" (onnxruntime refuses the op).

    Whenever onnxruntime runs the op, the torch twin must compute exactly its forward.
    """
    m32, _ = build_single_node(op_type, inputs, wrt, attrs, n_outputs, np.float32, opset)
    feeds = {w: np.asarray(inputs[w], dtype=np.float32) for w in wrt}
    try:
        y_ort = ort_session(m32).run(None, feeds)[0]
    except Exception:
        return "no-ort"
    if torch_fn is not None:
        y_t = _torch_forward(torch_fn, inputs)
        assert y_t.shape == y_ort.shape, f"torch twin shape {y_t.shape} != onnxruntime {y_ort.shape}"
        np.testing.assert_allclose(y_t, y_ort, rtol=1e-4, atol=1e-4, err_msg="torch twin != onnxruntime forward")
    declared = tuple(d.dim_value for d in m32.graph.output[0].type.tensor_type.shape.dim)
    if declared != y_ort.shape:
        return "ort"
    m64, _ = build_single_node(op_type, inputs, wrt, attrs, n_outputs, np.float64, opset)
    try:
        y_ref = ReferenceEvaluator(m64).run(None, {w: np.asarray(inputs[w], np.float64) for w in wrt})[0]
    except Exception:
        return "ort"
    ok = y_ref.shape == y_ort.shape and np.allclose(y_ref, y_ort, rtol=1e-4, atol=1e-4)
    return "all" if ok else "ort"


def _check(op_type, inputs, wrt, attrs, torch_fn, fd=True, opset=17, **kw) -> str:
    """check_vjp where onnx's reference evaluator runs onnxruntime's semantics, else onnxruntime vs torch."""
    route = _forward_agreement(op_type, inputs, wrt, attrs, torch_fn, opset, kw.get("n_outputs", 1))
    if route == "ort":
        assert list(wrt) == ["x"]
        _ort_vs_torch(op_type, inputs, attrs, torch_fn, opset, n_outputs=kw.get("n_outputs", 1))
    else:
        check_vjp(op_type, inputs, wrt, attrs=attrs, torch_fn=torch_fn, fd=fd, opset=opset, ort=route == "all", **kw)
    return route


def _symbolic(model: onnx.ModelProto, dims: dict[int, str]) -> onnx.ModelProto:
    """The same model with the given dims of every graph input made symbolic, shapes re-inferred."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        for axis, sym in dims.items():
            vi.type.tensor_type.shape.dim[axis].Clear()
            vi.type.tensor_type.shape.dim[axis].dim_param = sym
    return with_inferred_outputs(m, [o.name for o in m.graph.output], data_prop=True)


def _ort_vs_torch(op_type, inputs, attrs, torch_fn, opset=17, symbolic=None, run_inputs=None, n_outputs=1):
    """Gradient of input ``x`` computed by onnxruntime (float32) vs torch autograd, no reference evaluator.

    ``symbolic`` makes dims of ``x`` symbolic at build time; ``run_inputs`` then feeds differently sized data.
    """
    model, outs = build_single_node(op_type, inputs, ["x"], attrs, n_outputs, np.float32, opset)
    if symbolic:
        model = _symbolic(model, symbolic)
    gm, seeds, _ = gradient_model(model, ["x"], [outs[0]])
    for vi in gm.graph.input:  # the seed's declared shape may be shape inference's, not onnxruntime's
        if vi.name == seeds[outs[0]]:
            for i, dim in enumerate(vi.type.tensor_type.shape.dim):
                dim.Clear()
                dim.dim_param = f"seed_{i}"
    run_inputs = run_inputs or inputs
    x = np.asarray(run_inputs["x"], dtype=np.float64)
    tin = {k: torch.tensor(np.asarray(v)) if v is not None else None for k, v in {**inputs, "x": x}.items()}
    tin["x"].requires_grad_(True)
    y = torch_fn(**tin)
    y = y[0] if isinstance(y, (tuple, list)) else y
    seed = np.random.default_rng(7).standard_normal(tuple(y.shape))
    (tg,) = torch.autograd.grad(y, [tin["x"]], torch.tensor(seed))
    res = ort_session(gm).run(None, {"x": x.astype(np.float32), seeds[outs[0]]: seed.astype(np.float32)})
    np.testing.assert_allclose(res[0], y.detach().numpy(), rtol=1e-4, atol=1e-4, err_msg="forward differs")
    np.testing.assert_allclose(
        res[1],
        tg.numpy(),
        rtol=1e-4,
        atol=1e-4 * max(1.0, float(tg.abs().max())),
        err_msg=f"{op_type}: onnxruntime gradient differs from torch",
    )


def _small_shape(rng, rank, budget=160, lo=1, hi=6):
    while True:
        shape = tuple(int(v) for v in rng.integers(lo, hi, rank))
        if math.prod(shape) <= budget:
            return shape


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("seed", range(4))
def test_batch_normalization(seed):
    rng = np.random.default_rng(100 + seed)
    rank = int(rng.integers(2, 5))
    shape = _small_shape(rng, rank, lo=2)
    c = shape[1]
    ins = {
        "x": rng.standard_normal(shape),
        "scale": rng.standard_normal(c),
        "bias": rng.standard_normal(c),
        "mean": rng.standard_normal(c),
        "var": rng.uniform(0.2, 2.0, c),
    }
    eps = float(np.float32(rng.choice([1e-5, 1e-3, 0.1])))  # float32 attribute
    _check(
        "BatchNormalization",
        ins,
        ["x"],
        {"epsilon": eps},
        lambda x, scale, bias, mean, var: F.batch_norm(x, mean, var, scale, bias, training=False, eps=eps),
    )


def test_batch_normalization_runtime_stats_and_dynamic_batch():
    """scale/var produced by nodes (not constants) take the in-graph path; batch is symbolic."""
    rng = np.random.default_rng(5)
    rng.standard_normal((2, 3, 4, 4))  # keeps the parameters below those the test was written with
    p = {k: rng.standard_normal(3).astype(np.float32) for k in ("scale", "bias", "mean")}
    p["var"] = rng.uniform(0.5, 2, 3).astype(np.float32)
    nodes = [helper.make_node("Identity", [k], [k + "_r"]) for k in p]
    nodes.append(helper.make_node("BatchNormalization", ["x"] + [k + "_r" for k in p], ["y"], epsilon=1e-3))
    graph = helper.make_graph(
        nodes,
        "bn",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])],
        [],
        [onnx.numpy_helper.from_array(v, k) for k, v in p.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)
    m.graph.output.extend([helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])])
    gm, seeds, _ = gradient_model(m, ["x"], ["y"])
    xs = rng.standard_normal((5, 3, 4, 4))
    t = {k: torch.tensor(v.astype(np.float64)) for k, v in p.items()}
    ort_grad_vs_torch(
        ort_session(gm),
        {"x": xs},
        seeds["y"],
        lambda x: F.batch_norm(x, t["mean"], t["var"], t["scale"], t["bias"], training=False, eps=1e-3),
        rng,
        check_forward=False,
    )


def test_batch_normalization_training_mode_refused():
    rng = np.random.default_rng(0)
    ins = {
        "x": rng.standard_normal((2, 3, 2, 2)),
        "scale": np.ones(3),
        "bias": np.zeros(3),
        "mean": np.zeros(3),
        "var": np.ones(3),
    }
    with pytest.raises(UnsupportedModelError, match="training mode"):
        check_vjp("BatchNormalization", ins, ["x"], {"training_mode": 1}, n_outputs=3, fd=False, ort=False)


@pytest.mark.parametrize("seed", range(3))
def test_instance_normalization(seed):
    rng = np.random.default_rng(200 + seed)
    rank = int(rng.integers(3, 6))
    shape = _small_shape(rng, rank, lo=2, hi=5)
    c = shape[1]
    eps = float(np.float32(rng.choice([1e-5, 1e-2])))  # float32 attribute
    ins = {"x": rng.standard_normal(shape), "scale": rng.standard_normal(c), "bias": rng.standard_normal(c)}
    _check(
        "InstanceNormalization",
        ins,
        ["x"],
        {"epsilon": eps},
        lambda x, scale, bias: F.instance_norm(x, weight=scale, bias=bias, eps=eps),
    )


@pytest.mark.parametrize("seed", range(5))
def test_layer_normalization(seed):
    rng = np.random.default_rng(300 + seed)
    rank = int(rng.integers(2, 5))
    shape = _small_shape(rng, rank, lo=2, hi=6)
    axis = int(rng.integers(-rank, rank))
    norm_shape = shape[axis:]
    eps = float(np.float32(rng.choice([1e-5, 1e-2])))  # float32 attribute
    with_bias = bool(seed % 2)
    n_outputs = 3 if seed in (2, 3) else 1
    ins = {"x": rng.standard_normal(shape), "scale": rng.standard_normal(norm_shape)}
    if with_bias:  # omitted, not "": onnxruntime 1.31 segfaults on LayerNormalization(x, scale, "")
        ins["bias"] = rng.standard_normal(norm_shape)
    _check(
        "LayerNormalization",
        ins,
        ["x"],
        {"axis": axis, "epsilon": eps},
        lambda x, scale, bias=None: F.layer_norm(x, norm_shape, scale, bias, eps=eps),
        n_outputs=n_outputs,
    )


def test_layer_normalization_statistics_output_refused():
    rng = np.random.default_rng(1)
    ins = {"x": rng.standard_normal((2, 3)), "scale": np.ones(3)}
    with pytest.raises(UnsupportedModelError, match="statistics"):
        check_vjp("LayerNormalization", ins, ["x"], {"axis": -1}, n_outputs=3, seeded=(0, 1), fd=False, ort=False)


def _lrn_twin(size, alpha, beta, bias):
    """ONNX LRN: window [c - floor((size-1)/2), c + ceil((size-1)/2)] (torch's F.local_response_norm
    puts the longer side first for even sizes, so it only matches ONNX for odd sizes)."""
    lo, hi = (size - 1) // 2, size // 2

    def f(x):
        sq = F.pad((x * x).unsqueeze(1), (0, 0, 0, 0, lo, hi))
        s = F.avg_pool3d(sq, (size, 1, 1), stride=1).squeeze(1) * size
        return x / (bias + alpha / size * s) ** beta

    return f


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_lrn(size):
    rng = np.random.default_rng(400 + size)
    c = int(rng.integers(3, 6))
    x = rng.standard_normal((c, c, 3, 2)) * 2  # N == C: the reference evaluator's LRN loops channels over N
    # attributes are float32 in the model; give torch the same values
    alpha, beta, bias = (float(np.float32(v)) for v in (rng.uniform(0.1, 2), rng.uniform(0.3, 1), rng.uniform(0.5, 2)))
    attrs = {"size": size, "alpha": alpha, "beta": beta, "bias": bias}
    if size % 2:
        twin = lambda x: F.local_response_norm(x, size, alpha=alpha, beta=beta, k=bias)  # noqa: E731
    else:
        twin = _lrn_twin(size, alpha, beta, bias)
    route = _check("LRN", {"x": x}, ["x"], attrs, twin)
    # onnxruntime's LRN kernel takes only 4-D inputs and odd sizes
    assert route == ("all" if size % 2 else "no-ort")


# --------------------------------------------------------------------------- pooling


def _random_pool(rng, n, *, avg: bool, allow_dilation: bool):
    k = [int(v) for v in rng.integers(1, 4, n)]
    s = [int(v) for v in rng.integers(1, 4, n)]
    p = [int(rng.integers(0, kk // 2 + 1)) for kk in k]  # torch allows pad <= kernel/2
    d = [int(v) for v in rng.integers(1, 3, n)] if allow_dilation else [1] * n
    attrs = {"kernel_shape": k, "strides": s, "pads": p + p, "ceil_mode": int(rng.integers(0, 2))}
    if avg:
        attrs["count_include_pad"] = int(rng.integers(0, 2))
    if allow_dilation:
        attrs["dilations"] = d
    return attrs, k, s, p, d


def _maxpool_twin(n, k, s, p, d, ceil):
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    return lambda x: fn(x, k, s, p, dilation=d, ceil_mode=bool(ceil))


@pytest.mark.parametrize("seed", range(8))
def test_max_pool_2d(seed):
    rng = np.random.default_rng(500 + seed)
    attrs, k, s, p, d = _random_pool(rng, 2, avg=False, allow_dilation=True)
    if all(v == 1 for v in s + d):
        s[0] = attrs["strides"][0] = 2  # the reference evaluator mis-sizes padded stride-1 MaxPool
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(5, 9)), int(rng.integers(5, 9)))
    x = rng.standard_normal(shape)
    _check("MaxPool", {"x": x}, ["x"], attrs, _maxpool_twin(2, k, s, p, d, attrs["ceil_mode"]))


@pytest.mark.parametrize("seed", range(5))
def test_max_pool_ties_match_torch(seed):
    """Integer inputs make ties common; the first maximum of a window gets the gradient, as in torch."""
    rng = np.random.default_rng(600 + seed)
    attrs, k, s, p, d = _random_pool(rng, 2, avg=False, allow_dilation=seed % 2 == 0)
    k[0] = attrs["kernel_shape"][0] = max(k[0], 2)
    if all(v == 1 for v in s + d):
        s[1] = attrs["strides"][1] = 2
    x = rng.integers(0, 3, (2, 2, 6, 7)).astype(np.float64)
    _check("MaxPool", {"x": x}, ["x"], attrs, _maxpool_twin(2, k, s, p, d, attrs["ceil_mode"]), fd=False)


@pytest.mark.parametrize("seed", range(3))
def test_max_pool_1d_and_3d(seed):
    rng = np.random.default_rng(700 + seed)
    n = 1 if seed < 2 else 3
    attrs, k, s, p, d = _random_pool(rng, n, avg=False, allow_dilation=True)
    if all(v == 1 for v in s + d):
        s[0] = attrs["strides"][0] = 2
    shape = (2, 2, int(rng.integers(6, 12))) if n == 1 else (1, 2, 5, 6, 6)
    x = rng.integers(0, 4, shape).astype(np.float64) if seed == 1 else rng.standard_normal(shape)
    _check("MaxPool", {"x": x}, ["x"], attrs, _maxpool_twin(n, k, s, p, d, attrs["ceil_mode"]), fd=seed != 1)


@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_with_indices_output(storage_order):
    """The node's own Indices output is reused (storage_order 0) or the pool is re-emitted (1)."""
    rng = np.random.default_rng(800 + storage_order)
    x = rng.standard_normal((2, 2, 5, 6))
    attrs = {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1], "storage_order": storage_order}
    twin = lambda x: F.max_pool2d(F.pad(x, (0, 1, 1, 1), value=-math.inf), [3, 2], [2, 1])  # noqa: E731
    _check("MaxPool", {"x": x}, ["x"], attrs, twin, n_outputs=2)


def _same_pads(size, k, s, mode):
    """onnxruntime's SAME padding (undilated kernel): (begin, end)."""
    total = max(0, (-(-size // s) - 1) * s + k - size)
    pb = total // 2 if mode == "SAME_UPPER" else (total + 1) // 2
    return pb, total - pb


def _torch_pads_2d(auto_pad, h, w, k, s):
    """``F.pad``'s (left, right, top, bottom) for a 2-D pool with ``auto_pad`` VALID or SAME_*."""
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    (t, bo), (le, r) = _same_pads(h, k[0], s[0], auto_pad), _same_pads(w, k[1], s[1], auto_pad)
    return (le, r, t, bo)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_max_pool_auto_pad(auto_pad):
    rng = np.random.default_rng(900 + len(auto_pad))
    k, s, (h, w) = [3, 2], [2, 2], (7, 6)
    x = rng.standard_normal((1, 3, h, w))
    pads = _torch_pads_2d(auto_pad, h, w, k, s)
    twin = lambda x: F.max_pool2d(F.pad(x, pads, value=-math.inf), k, s)  # noqa: E731
    _check("MaxPool", {"x": x}, ["x"], {"kernel_shape": k, "strides": s, "auto_pad": auto_pad}, twin)


def test_max_pool_stride1_padded_and_dynamic_batch():
    """3x3/s1/p1 (Inception style), which the reference evaluator mis-sizes, on onnxruntime; symbolic batch."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 3, (2, 3, 6, 6)).astype(np.float64)
    attrs = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}
    twin = lambda x: F.max_pool2d(x, 3, 1, 1)  # noqa: E731
    _ort_vs_torch("MaxPool", {"x": x}, attrs, twin)
    _ort_vs_torch(
        "MaxPool", {"x": x}, attrs, twin, symbolic={0: "N"}, run_inputs={"x": rng.standard_normal((3, 3, 6, 6))}
    )
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}
    _ort_vs_torch(
        "MaxPool",
        {"x": x},
        attrs,
        lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True),
        symbolic={0: "N", 2: "H", 3: "W"},
        run_inputs={"x": rng.standard_normal((1, 3, 8, 9))},
    )


def _avgpool_twin(n, k, s, p, ceil, cip):
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    return lambda x: fn(x, k, s, p, ceil_mode=bool(ceil), count_include_pad=bool(cip))


@pytest.mark.parametrize("seed", range(10))
def test_average_pool_2d(seed):
    rng = np.random.default_rng(1000 + seed)
    attrs, k, s, p, _ = _random_pool(rng, 2, avg=True, allow_dilation=False)
    if seed < 4:
        attrs["ceil_mode"] = 1  # the windows that run past the padded input
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(4, 9)), int(rng.integers(4, 9)))
    x = rng.standard_normal(shape)
    _check(
        "AveragePool", {"x": x}, ["x"], attrs, _avgpool_twin(2, k, s, p, attrs["ceil_mode"], attrs["count_include_pad"])
    )


@pytest.mark.parametrize("seed", range(4))
def test_average_pool_1d_and_3d(seed):
    rng = np.random.default_rng(1100 + seed)
    n = 1 if seed < 2 else 3
    attrs, k, s, p, _ = _random_pool(rng, n, avg=True, allow_dilation=False)
    shape = (2, 2, int(rng.integers(5, 12))) if n == 1 else (1, 2, 5, 4, 5)
    x = rng.standard_normal(shape)
    _check(
        "AveragePool", {"x": x}, ["x"], attrs, _avgpool_twin(n, k, s, p, attrs["ceil_mode"], attrs["count_include_pad"])
    )


def _sum_pool_twin(pads, k, s, cip, dilation=(1, 1)):
    """Average over windows of explicitly padded x, divided by the in-input (or in-padded) element count."""

    def sum_pool(t):
        cols = F.unfold(t.reshape(-1, 1, *t.shape[2:]), k, dilation=dilation, stride=s)
        out = [(t.shape[2 + i] - (k[i] - 1) * dilation[i] - 1) // s[i] + 1 for i in range(2)]
        return cols.sum(1).reshape(*t.shape[:2], *out)

    def f(x):
        ones = torch.ones_like(x)
        num = sum_pool(F.pad(x, pads))
        den = sum_pool(F.pad(ones, pads, value=float(cip)))
        return num / den

    return f


@pytest.mark.parametrize("auto_pad,cip", [("SAME_UPPER", 0), ("SAME_LOWER", 1), ("SAME_LOWER", 0), ("VALID", 0)])
def test_average_pool_auto_pad(auto_pad, cip):
    rng = np.random.default_rng(1200 + cip)
    k, s, (h, w) = [3, 2], [2, 1], (7, 6)
    x = rng.standard_normal((2, 2, h, w))
    pads = _torch_pads_2d(auto_pad, h, w, k, s)
    attrs = {"kernel_shape": k, "strides": s, "auto_pad": auto_pad, "count_include_pad": cip}
    _check("AveragePool", {"x": x}, ["x"], attrs, _sum_pool_twin(pads, k, s, cip))


@pytest.mark.parametrize("cip", [0, 1])
def test_average_pool_dilations_opset19(cip):
    rng = np.random.default_rng(1300 + cip)
    k, s, p, d = [2, 3], [1, 2], [1, 1], [2, 2]
    x = rng.standard_normal((1, 2, 6, 7))
    attrs = {"kernel_shape": k, "strides": s, "pads": p + p, "dilations": d, "count_include_pad": cip}
    _check(
        "AveragePool", {"x": x}, ["x"], attrs, _sum_pool_twin((p[1], p[1], p[0], p[0]), k, s, cip, dilation=d), opset=19
    )


def test_average_pool_dynamic_batch():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3, 7, 7))
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}
    _ort_vs_torch(
        "AveragePool",
        {"x": x},
        attrs,
        lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        symbolic={0: "N", 1: "C"},
        run_inputs={"x": rng.standard_normal((4, 3, 7, 7))},
    )


def test_average_pool_dynamic_spatial_refused():
    x = np.zeros((1, 2, 5, 5), np.float32)
    model, outs = build_single_node("AveragePool", {"x": x}, ["x"], {"kernel_shape": [2, 2]}, 1, np.float32, 17)
    model = _symbolic(model, {2: "H"})
    with pytest.raises(UnsupportedModelError, match="static spatial"):
        gradient_model(model, ["x"], outs)


@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 4, 5), (1, 2, 3, 4, 3)])
def test_global_average_pool(shape):
    rng = np.random.default_rng(sum(shape))
    dims = tuple(range(2, len(shape)))
    _check("GlobalAveragePool", {"x": rng.standard_normal(shape)}, ["x"], {}, lambda x: x.mean(dim=dims, keepdim=True))


def test_global_average_pool_dynamic_shape():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 4, 5))
    _ort_vs_torch(
        "GlobalAveragePool",
        {"x": x},
        {},
        lambda x: x.mean(dim=(2, 3), keepdim=True),
        symbolic={0: "N", 2: "H", 3: "W"},
        run_inputs={"x": rng.standard_normal((3, 3, 6, 2))},
    )


@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 4, 5), (1, 2, 3, 2, 3)])
def test_global_max_pool(shape):
    rng = np.random.default_rng(sum(shape) + 1)
    dims = tuple(range(2, len(shape)))
    _check(
        "GlobalMaxPool", {"x": rng.standard_normal(shape)}, ["x"], {}, lambda x: torch.amax(x, dim=dims, keepdim=True)
    )


def test_global_max_pool_ties_shared_like_amax():
    """Ties split the cotangent evenly among the maxima, as torch.amax does."""
    rng = np.random.default_rng(15)
    x = rng.integers(0, 3, (2, 3, 3, 4)).astype(np.float64)
    _check("GlobalMaxPool", {"x": x}, ["x"], {}, lambda x: torch.amax(x, dim=(2, 3), keepdim=True), fd=False)


def test_average_pool_ceil_mode_where_shape_inference_disagrees():
    """k2/s2/p1 with ceil_mode on 5x5: ONNX shape inference says 4x4, onnxruntime and torch give 3x3
    (the last window would start in the right padding); the per-window counts are not uniform."""
    x = np.random.default_rng(16).standard_normal((2, 2, 5, 5))
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1, "count_include_pad": 0}
    twin = lambda x: F.avg_pool2d(x, 2, 2, 1, ceil_mode=True, count_include_pad=False)  # noqa: E731
    assert _check("AveragePool", {"x": x}, ["x"], attrs, twin) == "ort"


@pytest.mark.parametrize("op_type", ["LayerNormalization", "InstanceNormalization"])
def test_normalization_opset18_reduce_axes_input(op_type):
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 3, 4))
    if op_type == "LayerNormalization":
        ins = {"x": x, "scale": rng.standard_normal((3, 4)), "bias": rng.standard_normal((3, 4))}
        _check(op_type, ins, ["x"], {"axis": 1}, lambda x, scale, bias: F.layer_norm(x, (3, 4), scale, bias), opset=18)
    else:
        ins = {"x": x, "scale": rng.standard_normal(3), "bias": rng.standard_normal(3)}
        _check(op_type, ins, ["x"], {}, lambda x, scale, bias: F.instance_norm(x, weight=scale, bias=bias), opset=18)

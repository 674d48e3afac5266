"""VJP rows for Conv, ConvTranspose, Gemm and MatMul (randomised, seeded).

onnx's reference ConvTranspose is wrong for ``group > 1`` unless every group
has one input and one output channel (it slices the weight by output channels
and writes one channel per group), and ignores ``output_shape`` under
``auto_pad=NOTSET``. The Conv gradient *is* a ConvTranspose, so this module
swaps in a direct scatter implementation (``_conv_transpose_oracle``) while its
tests run; every ConvTranspose row also checks that oracle's forward against
onnxruntime's, so the float64 checks still rest on the runtime's semantics.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.ops.op_conv_transpose import ConvTranspose as _RefConvTranspose

from onnxcam.errors import UnsupportedModelError
from tests.vjp_check import (
    build_single_node,
    check_vjp,
    gradient_model,
    ort_grad_vs_torch,
    ort_session,
    with_inferred_outputs,
)


# --------------------------------------------------------------------------- padding semantics (spec / onnxruntime)


def conv_pads(size, kernel, strides, dilations, auto_pad, pads):
    """Explicit (begin, end) pads of a Conv, per spatial axis."""
    n = len(kernel)
    out = []
    for i in range(n):
        ke = (kernel[i] - 1) * dilations[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = -(-size[i] // strides[i])
            total = max(0, (target - 1) * strides[i] + ke - size[i])
            head = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            out.append((head, total - head))
        elif auto_pad == "VALID" or pads is None:
            out.append((0, 0))
        else:
            out.append((pads[i], pads[i + n]))
    return out


def conv_transpose_pads(size, kernel, strides, dilations, auto_pad, pads, output_padding, output_shape):
    """Explicit (begin, end) crops of a ConvTranspose's full output; a negative end appends zeros."""
    n = len(kernel)
    out = []
    for i in range(n):
        ke = (kernel[i] - 1) * dilations[i] + 1
        if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = output_shape[i] if output_shape is not None else size[i] * strides[i]
            total = strides[i] * (size[i] - 1) + output_padding[i] + ke - target
            if output_shape is None:
                total = max(0, total)
            if total < 0:
                out.append((0, total))
            else:
                head = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
                out.append((head, total - head))
        elif auto_pad == "VALID" or pads is None:
            out.append((0, 0))
        else:
            out.append((pads[i], pads[i + n]))
    return out


def _conv_transpose_oracle(
    self,
    X,
    W,
    B=None,
    auto_pad=None,
    dilations=None,
    group=None,
    kernel_shape=None,
    output_padding=None,
    output_shape=None,
    pads=None,
    strides=None,
):
    """ConvTranspose as a literal scatter: every (input pixel, kernel tap) adds into the output."""
    n = X.ndim - 2
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    group = group or 1
    output_padding = list(output_padding or [0] * n)
    kernel = W.shape[2:]
    size = X.shape[2:]
    crops = conv_transpose_pads(
        size,
        kernel,
        strides,
        dilations,
        auto_pad or "NOTSET",
        pads,
        output_padding,
        None if output_shape is None else list(output_shape)[-n:],
    )
    full = [(size[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 + output_padding[i] for i in range(n)]
    cin_g, cout_g = X.shape[1] // group, W.shape[1]
    y = np.zeros((X.shape[0], cout_g * group, *full), dtype=X.dtype)
    for gi in range(group):
        xg = X[:, gi * cin_g : (gi + 1) * cin_g]
        wg = W[gi * cin_g : (gi + 1) * cin_g]
        for tap in itertools.product(*(range(k) for k in kernel)):
            contrib = np.einsum("nc...,co->no...", xg, wg[(slice(None), slice(None), *tap)])
            where = tuple(
                slice(t * d, t * d + (sz - 1) * s + 1, s) for t, d, sz, s in zip(tap, dilations, size, strides)
            )
            y[(slice(None), slice(gi * cout_g, (gi + 1) * cout_g), *where)] += contrib
    pad_width = [(0, 0), (0, 0)] + [(0, max(0, -e)) for _, e in crops]
    y = np.pad(y, pad_width)
    y = y[(slice(None), slice(None), *(slice(b, y.shape[2 + i] - max(e, 0)) for i, (b, e) in enumerate(crops)))]
    if B is not None:
        y = y + B.reshape(1, -1, *([1] * n))
    return (y.astype(X.dtype),)


@pytest.fixture(autouse=True)
def _exact_reference_conv_transpose(monkeypatch):
    monkeypatch.setattr(_RefConvTranspose, "_run", _conv_transpose_oracle)


def ort_forward_matches_reference(op_type, inputs, attrs):
    """The (patched) reference evaluator and onnxruntime agree on the forward op."""
    model, _ = build_single_node(op_type, inputs, list(inputs), attrs, 1, np.float32, 17)
    feeds = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
    ref = ReferenceEvaluator(model).run(None, feeds)[0]
    got = ort_session(model).run(None, feeds)[0]
    np.testing.assert_allclose(ref, got, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- torch twins

_TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TORCH_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _torch_pad_arg(pairs):
    """F.pad's argument (last axis first) from per-axis (begin, end) pairs."""
    return [v for b, e in reversed(pairs) for v in (b, e)]


def torch_conv(attrs, size):
    n = len(size)
    strides = attrs.get("strides", [1] * n)
    dilations = attrs.get("dilations", [1] * n)

    def fn(x, w, b=None):
        pairs = conv_pads(size, w.shape[2:], strides, dilations, attrs.get("auto_pad", "NOTSET"), attrs.get("pads"))
        return _TORCH_CONV[n](
            F.pad(x, _torch_pad_arg(pairs)), w, b, stride=strides, dilation=dilations, groups=attrs.get("group", 1)
        )

    return fn


def torch_conv_transpose(attrs, size):
    n = len(size)
    strides = attrs.get("strides", [1] * n)
    dilations = attrs.get("dilations", [1] * n)
    op = attrs.get("output_padding", [0] * n)

    def fn(x, w, b=None):
        pairs = conv_transpose_pads(
            size,
            w.shape[2:],
            strides,
            dilations,
            attrs.get("auto_pad", "NOTSET"),
            attrs.get("pads"),
            op,
            attrs.get("output_shape"),
        )
        full = _TORCH_CONV_T[n](x, w, None, stride=strides, dilation=dilations, groups=attrs.get("group", 1))
        y = F.pad(full, _torch_pad_arg([(-bp, o - ep) for (bp, ep), o in zip(pairs, op)]))
        return y if b is None else y + b.reshape(1, -1, *([1] * n))

    return fn


# --------------------------------------------------------------------------- Conv


def random_conv_case(seed, n):
    """A random Conv: groups (incl. depthwise), strides that need not divide, dilations, every auto_pad."""
    r = np.random.default_rng(seed)
    group = int(r.choice([1, 1, 2, 3]))
    cin = group * int(r.integers(1, 3))
    cout = group * int(r.integers(1, 3)) if r.random() < 0.7 else cin  # cout == cin == group: depthwise
    if r.random() < 0.25:
        group = cin = cout = int(r.integers(2, 4))
    kernel = [int(r.integers(1, 4)) for _ in range(n)]
    strides = [int(r.integers(1, 4)) for _ in range(n)]
    dilations = [int(r.integers(1, 3)) for _ in range(n)]
    budget = {1: 30, 2: 8, 3: 4}[n]
    size = [int(r.integers((k - 1) * d + 1, (k - 1) * d + 1 + budget)) for k, d in zip(kernel, dilations)]
    auto_pad = str(r.choice(["NOTSET", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]))
    if auto_pad.startswith("SAME"):  # onnxruntime refuses dilated SAME convolutions
        dilations = [1] * n
        size = [max(s, k) for s, k in zip(size, kernel)]
    attrs = {"strides": strides, "dilations": dilations, "group": group, "kernel_shape": kernel}
    if auto_pad == "NOTSET":
        attrs["pads"] = [int(v) for v in r.integers(0, 3, size=2 * n)]
    else:
        attrs["auto_pad"] = auto_pad
    batch = int(r.integers(1, 3))
    while batch * cin * int(np.prod(size)) > 200:
        size[int(np.argmax(size))] -= 1
    size = [max(s, (k - 1) * d + 1) for s, k, d in zip(size, kernel, dilations)]
    x = r.standard_normal((batch, cin, *size))
    w = r.standard_normal((cout, cin // group, *kernel))
    bias = r.standard_normal(cout) if r.random() < 0.5 else None
    return x, w, bias, attrs


def _run_conv(x, w, bias, attrs, op_type="Conv"):
    inputs = {"x": x, "w": w} if bias is None else {"x": x, "w": w, "b": bias}
    twin = (torch_conv if op_type == "Conv" else torch_conv_transpose)(attrs, list(x.shape[2:]))
    check_vjp(op_type, inputs, ["x"], attrs=attrs, torch_fn=twin)


@pytest.mark.parametrize("seed", range(14))
def test_conv2d_random(seed):
    _run_conv(*random_conv_case(seed, 2))


@pytest.mark.parametrize("seed", range(5))
def test_conv1d_random(seed):
    _run_conv(*random_conv_case(100 + seed, 1))


@pytest.mark.parametrize("seed", range(2))
def test_conv3d_random(seed):
    _run_conv(*random_conv_case(200 + seed, 3))


@pytest.mark.parametrize(
    "case",
    [
        # stride does not divide: the last rows/cols are read by no window and get zero gradient
        dict(size=(8, 7), kernel=(3, 2), attrs={"strides": [3, 2]}),
        dict(size=(9, 6), kernel=(2, 3), attrs={"strides": [4, 3], "pads": [1, 0, 0, 2]}),
        dict(size=(7, 7), kernel=(3, 3), attrs={"strides": [2, 3], "dilations": [2, 1], "auto_pad": "VALID"}),
        dict(size=(6, 7), kernel=(3, 3), attrs={"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
        dict(size=(6, 7), kernel=(2, 4), attrs={"strides": [3, 2], "auto_pad": "SAME_LOWER"}),
        # pads wider than the kernel: whole output rows read only padding
        dict(size=(4, 5), kernel=(2, 2), attrs={"strides": [2, 1], "pads": [3, 0, 2, 3]}),
        # no attributes at all (kernel from the weight)
        dict(size=(5, 6), kernel=(3, 3), attrs={}),
    ],
)
def test_conv2d_edges(case):
    r = np.random.default_rng(7)
    x = r.standard_normal((1, 2, *case["size"]))
    w = r.standard_normal((3, 2, *case["kernel"]))
    _run_conv(x, w, None, case["attrs"])


def test_conv_bias_gradient():
    """The bias gradient is emitted when the bias depends on the layer (it is summed g)."""
    r = np.random.default_rng(3)
    x = r.standard_normal((2, 2, 5, 5))
    w = r.standard_normal((4, 1, 3, 3))
    bias = r.standard_normal(4)
    attrs = {"strides": [2, 2], "pads": [1, 1, 0, 0], "group": 2}
    check_vjp("Conv", {"x": x, "w": w, "b": bias}, ["x", "b"], attrs=attrs, torch_fn=torch_conv(attrs, [5, 5]))


def _one_node_model(node, inputs, inits=()):
    """Opset-17 float32 model ``inputs -> node -> y0`` (inputs may have symbolic dims), shapes inferred."""
    graph = helper.make_graph([node], "g", inputs, [], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return with_inferred_outputs(model, ["y0"], strict_mode=True)


def _symbolic_model(op_type, x_shape, w, attrs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    node = helper.make_node(op_type, ["x", "w"], ["y0"], **attrs)
    return _one_node_model(node, [x], [onnx.numpy_helper.from_array(w.astype(np.float32), "w")])


def _ort_grad_vs_torch(model, x, w, twin, rng):
    """Run the gradient model in onnxruntime and compare output and input gradient with torch."""
    gm, seeds, _ = gradient_model(model, ["x"], ["y0"])
    ort_grad_vs_torch(ort_session(gm), {"x": x}, seeds["y0"], lambda x: twin(x, torch.tensor(w)), rng)


@pytest.mark.parametrize("op_type", ["Conv", "ConvTranspose"])
def test_symbolic_batch(op_type):
    """A symbolic batch dim needs no runtime shape work; onnxruntime gradient equals torch's."""
    r = np.random.default_rng(11)
    w = r.standard_normal((4, 2, 3, 3))
    attrs = {"strides": [2, 2], "pads": [1, 0, 1, 1], "group": 2}
    if op_type == "ConvTranspose":
        attrs["output_padding"] = [1, 0]
    model = _symbolic_model(op_type, ["N", 4, 7, 6], w, attrs)
    twin = (torch_conv if op_type == "Conv" else torch_conv_transpose)(attrs, [7, 6])
    _ort_grad_vs_torch(model, r.standard_normal((3, 4, 7, 6)), w, twin, r)


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 3], "pads": [1, 0, 2, 1]},
        {"strides": [3, 2], "dilations": [1, 2], "auto_pad": "VALID", "group": 2},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [1, 3], "auto_pad": "SAME_LOWER"},  # kernel 2 < stride 3: total pad clamps at 0
    ],
)
def test_conv_dynamic_spatial_strided(attrs):
    """Symbolic height/width under a stride: leftover rows and SAME pads are computed at run time."""
    r = np.random.default_rng(13)
    w = r.standard_normal((4, 2 // attrs.get("group", 1), 3, 2))
    model = _symbolic_model("Conv", ["N", 2, "H", "W"], w, attrs)
    for size in [(7, 9), (8, 6), (10, 11)]:  # one graph, sizes with every remainder
        x = r.standard_normal((2, 2, *size))
        _ort_grad_vs_torch(model, x, w, torch_conv(attrs, list(size)), r)


def test_conv_transpose_output_shape_dynamic_spatial_unsupported():
    w = np.ones((2, 3, 3, 3))
    model = _symbolic_model("ConvTranspose", ["N", 2, "H", "W"], w, {"strides": [2, 2], "output_shape": [9, 9]})
    with pytest.raises(UnsupportedModelError, match="static spatial size"):
        gradient_model(model, ["x"], ["y0"])


def test_conv_dynamic_spatial_stride_one_supported():
    """Stride 1 needs no spatial size, even with SAME padding."""
    w = np.ones((3, 2, 3, 2))
    model = _symbolic_model("Conv", ["N", 2, "H", "W"], w, {"auto_pad": "SAME_LOWER"})
    gradient_model(model, ["x"], ["y0"])


def test_conv_weight_gradient_refused():
    r = np.random.default_rng(5)
    with pytest.raises(UnsupportedModelError, match="weight"):
        check_vjp(
            "Conv",
            {"x": r.standard_normal((1, 2, 4, 4)), "w": r.standard_normal((2, 2, 3, 3))},
            ["x", "w"],
            fd=False,
            ort=False,
        )


# --------------------------------------------------------------------------- ConvTranspose


def random_conv_transpose_case(seed, n):
    r = np.random.default_rng(seed)
    group = int(r.choice([1, 1, 2, 3]))
    cin = group * int(r.integers(1, 3))
    cout_g = int(r.integers(1, 3))
    kernel = [int(r.integers(1, 4)) for _ in range(n)]
    strides = [int(r.integers(1, 4)) for _ in range(n)]
    dilations = [int(r.integers(1, 3)) for _ in range(n)]
    size = [int(r.integers(2, {1: 12, 2: 5}[n])) for _ in range(n)]
    batch = int(r.integers(1, 3))
    while batch * cin * int(np.prod(size)) > 150 and max(size) > 1:
        size[int(np.argmax(size))] -= 1
    attrs = {"strides": strides, "dilations": dilations, "group": group}
    mode = str(r.choice(["pads", "pads", "VALID", "SAME_UPPER", "SAME_LOWER", "output_shape"]))
    if r.random() < 0.6 and not mode.startswith("SAME"):  # onnx's shape inference ignores it under SAME
        attrs["output_padding"] = [int(r.integers(0, s)) for s in strides]
    op = attrs.get("output_padding", [0] * n)
    full = [(sz - 1) * s + (k - 1) * d + 1 + o for sz, s, k, d, o in zip(size, strides, kernel, dilations, op)]
    if mode == "pads":
        pads = [int(r.integers(0, 3)) for _ in range(n)]
        pads += [int(r.integers(0, 3)) for _ in range(n)]
        for i in range(n):  # keep at least one output pixel
            while full[i] - pads[i] - pads[i + n] < 1:
                pads[i + n] -= 1 if pads[i + n] else 0
                pads[i] -= 1 if pads[i] else 0
        attrs["pads"] = pads
    elif mode == "output_shape":
        # not below the input size (onnx's shape inference gives up there), at most stride - 1 beyond the full size
        attrs["output_shape"] = [max(sz, f - int(r.integers(-s + 1, 4))) for sz, f, s in zip(size, full, strides)]
    else:
        attrs["auto_pad"] = mode
    x = r.standard_normal((batch, cin, *size))
    w = r.standard_normal((cin, cout_g, *kernel))
    bias = r.standard_normal(cout_g * group) if r.random() < 0.5 else None
    return x, w, bias, attrs


def _run_conv_transpose(x, w, bias, attrs):
    inputs = {"x": x, "w": w} if bias is None else {"x": x, "w": w, "b": bias}
    ort_forward_matches_reference("ConvTranspose", inputs, attrs)
    _run_conv(x, w, bias, attrs, op_type="ConvTranspose")


@pytest.mark.parametrize("seed", range(10))
def test_conv_transpose2d_random(seed):
    _run_conv_transpose(*random_conv_transpose_case(300 + seed, 2))


@pytest.mark.parametrize("seed", range(4))
def test_conv_transpose1d_random(seed):
    _run_conv_transpose(*random_conv_transpose_case(400 + seed, 1))


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [3], "output_padding": [2], "pads": [0, 0]},  # tail zeros, absorbed by the Conv's floor
        {"strides": [2], "output_shape": [10]},  # output_shape larger than the full output: zeros appended
        {"strides": [2], "output_shape": [8], "auto_pad": "SAME_UPPER"},
        {"strides": [3], "auto_pad": "SAME_LOWER", "dilations": [2]},
        {"strides": [2], "output_padding": [1], "auto_pad": "VALID"},
    ],
)
def test_conv_transpose1d_edges(attrs):
    r = np.random.default_rng(9)
    x = r.standard_normal((1, 2, 4))
    w = r.standard_normal((2, 3, 3))
    _run_conv_transpose(x, w, None, attrs)


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [1], "dilations": [3], "output_padding": [2]},
        {"strides": [2], "dilations": [4], "output_padding": [3], "pads": [1, 0]},
    ],
)
def test_conv_transpose_output_padding_beyond_stride(attrs):
    """output_padding >= stride (legal when < dilation): the cotangent's tail is sliced off.

    onnxruntime refuses such nodes, so this row checks the float64 graph only.
    """
    r = np.random.default_rng(12)
    x, w = r.standard_normal((1, 2, 4)), r.standard_normal((2, 3, 2))
    check_vjp(
        "ConvTranspose", {"x": x, "w": w}, ["x"], attrs=attrs, torch_fn=torch_conv_transpose(attrs, [4]), ort=False
    )


def test_conv_transpose_bias_and_groups():
    r = np.random.default_rng(4)
    x = r.standard_normal((2, 4, 3, 3))
    w = r.standard_normal((4, 3, 2, 2))
    bias = r.standard_normal(6)
    attrs = {"strides": [2, 1], "group": 2, "pads": [0, 1, 1, 0]}
    ort_forward_matches_reference("ConvTranspose", {"x": x, "w": w, "b": bias}, attrs)
    check_vjp(
        "ConvTranspose",
        {"x": x, "w": w, "b": bias},
        ["x", "b"],
        attrs=attrs,
        torch_fn=torch_conv_transpose(attrs, [3, 3]),
    )


# --------------------------------------------------------------------------- Gemm


@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([0, 1], [0, 1])))
@pytest.mark.parametrize("c_shape", [None, (), (5,), (1, 5), (4, 1), (4, 5)])
def test_gemm(trans_a, trans_b, c_shape):
    r = np.random.default_rng(trans_a * 2 + trans_b + 10 * (len(c_shape) if c_shape is not None else 9))
    m, k, n = 4, 3, 5
    a = r.standard_normal((k, m) if trans_a else (m, k))
    bm = r.standard_normal((n, k) if trans_b else (k, n))
    attrs = {"transA": trans_a, "transB": trans_b}
    alpha, beta = float(r.choice([1.0, 0.5, -2.0])), float(r.choice([1.0, 0.25, 3.0]))
    if alpha != 1.0:
        attrs["alpha"] = alpha
    if beta != 1.0:
        attrs["beta"] = beta
    inputs = {"a": a, "bm": bm}
    wrt = ["a", "bm"]
    if c_shape is not None:
        inputs["c"] = r.standard_normal(c_shape)
        wrt.append("c")

    def twin(a, bm, c=None):
        y = alpha * ((a.T if trans_a else a) @ (bm.T if trans_b else bm))
        return y if c is None else y + beta * c

    check_vjp("Gemm", inputs, wrt, attrs=attrs, torch_fn=twin)


def test_gemm_input_only():
    """The usual classifier head: only A (the features) wants a gradient."""
    r = np.random.default_rng(1)
    inputs = {"a": r.standard_normal((2, 6)), "w": r.standard_normal((3, 6)), "c": r.standard_normal(3)}
    check_vjp("Gemm", inputs, ["a"], attrs={"transB": 1}, torch_fn=lambda a, w, c: a @ w.T + c)


def _one_hot_seeded_gradient(node: onnx.NodeProto, a: np.ndarray, weight: np.ndarray, classes: int) -> tuple:
    """Run ``node`` (inputs a, w) under a class-id seed marked one-hot; return (dA, backward op types)."""
    from onnxcam.graph.builder import GraphBuilder
    from onnxcam.autodiff.engine import build_vjp
    from onnxcam.graph.index import GraphIndex

    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, a.shape)],
        [],
        [onnx.numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = with_inferred_outputs(model, ["y0"], strict_mode=True)
    index = GraphIndex(model)
    b = GraphBuilder(17, taken_names=index.names)
    ids = b.reserve("ids")
    seed = b.op("OneHot", ids, b.ints([classes]), b.const([0.0, 1.0], np.float32))
    grad = build_vjp(index, b, ["a"], {"y0": seed}, one_hot={seed: ids})["a"]
    g = onnx.GraphProto()
    g.CopyFrom(model.graph)
    g.node.extend(b.nodes)
    g.initializer.extend(b.initializers)
    g.input.append(helper.make_tensor_value_info(ids, TensorProto.INT64, [a.shape[0]]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(grad, TensorProto.FLOAT, a.shape))
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    target = np.array([2, 0, classes - 1], np.int64)[: a.shape[0]]
    (da,) = ort_session(m).run(None, {"a": a.astype(np.float32), ids: target})
    return da, target, [n.op_type for n in b.nodes]


@pytest.mark.parametrize("trans_b,alpha", [(1, 1.0), (0, 1.0), (1, -0.5), (0, 2.0)])
def test_gemm_one_hot_seed_gathers_class_rows(trans_b, alpha):
    """A class target on Gemm logits reads one weight row per image: same dA as autograd, no backward Gemm."""
    r = np.random.default_rng(7 + trans_b)
    a, classes = r.standard_normal((3, 6)), 5
    w = r.standard_normal((classes, 6) if trans_b else (6, classes))
    node = helper.make_node("Gemm", ["a", "w"], ["y0"], transB=trans_b, alpha=alpha)
    da, target, ops = _one_hot_seeded_gradient(node, a, w, classes)
    ta = torch.tensor(a, requires_grad=True)
    y = alpha * (ta @ (torch.tensor(w).T if trans_b else torch.tensor(w)))
    y.backward(F.one_hot(torch.tensor(target), classes).double())
    np.testing.assert_allclose(da, ta.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert "Gather" in ops and "Gemm" not in ops and "MatMul" not in ops


def test_matmul_one_hot_seed_gathers_class_columns():
    r = np.random.default_rng(3)
    a, w = r.standard_normal((3, 6)), r.standard_normal((6, 4))
    da, target, ops = _one_hot_seeded_gradient(helper.make_node("MatMul", ["a", "w"], ["y0"]), a, w, 4)
    ta = torch.tensor(a, requires_grad=True)
    (ta @ torch.tensor(w)).backward(F.one_hot(torch.tensor(target), 4).double())
    np.testing.assert_allclose(da, ta.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert "Gather" in ops and "MatMul" not in ops


# --------------------------------------------------------------------------- MatMul


@pytest.mark.parametrize(
    "a_shape,b_shape,wrt",
    [
        ((4,), (4,), ["a", "b"]),
        ((4,), (4, 3), ["a", "b"]),
        ((3, 4), (4,), ["a", "b"]),
        ((4,), (2, 4, 3), ["a", "b"]),
        ((2, 3, 4), (4,), ["a", "b"]),
        ((3, 4), (4, 5), ["a", "b"]),
        ((2, 3, 4), (2, 4, 5), ["a", "b"]),
        ((2, 3, 4), (4, 5), ["a", "b"]),
        ((3, 4), (2, 4, 5), ["a", "b"]),
        ((2, 1, 3, 4), (3, 4, 2), ["a", "b"]),
        ((1, 2, 3, 4), (2, 1, 4, 2), ["a", "b"]),
        ((2, 3, 3, 4), (4, 5), ["a"]),
    ],
)
def test_matmul(a_shape, b_shape, wrt):
    r = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    inputs = {"a": r.standard_normal(a_shape), "b": r.standard_normal(b_shape)}
    check_vjp("MatMul", inputs, wrt, torch_fn=lambda a, b: torch.matmul(a, b))


@pytest.mark.parametrize(
    "a_shape,b_shape,feeds",
    [
        (["N", 3, 4], [4, 5], [(2, 3, 4), (4, 5)]),
        (["N", 1, 3, 4], ["M", 4, 2], [(2, 1, 3, 4), (3, 4, 2)]),  # broadcast against a symbolic dim
        (["N", 3, 4], ["N", 4, 2], [(2, 3, 4), (2, 4, 2)]),
        (["P", 3, 4], ["Q", 4, 2], [(1, 3, 4), (3, 4, 2)]),  # unknown relation: runtime broadcast axes
    ],
)
def test_matmul_symbolic(a_shape, b_shape, feeds):
    """Symbolic batch dims: onnxruntime gradients of both operands equal torch's."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, b_shape)
    model = _one_node_model(helper.make_node("MatMul", ["a", "b"], ["y0"]), [a, b])
    gm, seeds, _ = gradient_model(model, ["a", "b"], ["y0"])
    r = np.random.default_rng(2)
    av, bv = r.standard_normal(feeds[0]), r.standard_normal(feeds[1])
    ort_grad_vs_torch(ort_session(gm), {"a": av, "b": bv}, seeds["y0"], lambda a, b: a @ b, r, check_forward=False)


@pytest.mark.parametrize("opset", [18, 21])
def test_newer_opsets(opset):
    """Reductions (bias, 1-D MatMul) and the emitted ops stay valid where ReduceSum/Pad changed form."""
    r = np.random.default_rng(opset)
    attrs = {"strides": [2], "pads": [1, 0]}
    check_vjp(
        "Conv",
        {"x": r.standard_normal((2, 2, 7)), "w": r.standard_normal((3, 2, 3)), "b": r.standard_normal(3)},
        ["x", "b"],
        attrs=attrs,
        torch_fn=torch_conv(attrs, [7]),
        opset=opset,
    )
    check_vjp(
        "MatMul",
        {"a": r.standard_normal(4), "b": r.standard_normal((2, 4, 3))},
        ["a", "b"],
        torch_fn=lambda a, b: torch.matmul(a, b),
        opset=opset,
    )
    check_vjp(
        "Gemm",
        {"a": r.standard_normal((3, 4)), "w": r.standard_normal((4, 2)), "c": r.standard_normal((1, 2))},
        ["a", "c"],
        attrs={"beta": 0.5},
        torch_fn=lambda a, w, c: a @ w + 0.5 * c,
        opset=opset,
    )

"""VJP rules of activations, broadcasting arithmetic, reductions, softmax outputs and Q/DQ.

Each row draws shapes, broadcasting partners, attributes and inputs from a
seeded RNG, keeps inputs away from kinks where finite differences would be
meaningless, and checks the gradient three ways through ``check_vjp``.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxcam.graph.prepare import emitted_ir_version
from tests.vjp_check import build_single_node, check_vjp, gradient_model, ort_session, with_inferred_outputs

SEEDS = [0, 1]


# ---------------------------------------------------------------- helpers


def _shape(rng, min_rank=1, max_rank=4, max_dim=4) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(1, max_dim + 1, size=rng.integers(min_rank, max_rank + 1)))


def _partner(rng, shape) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape``: some dims set to 1, maybe fewer leading dims."""
    dims = [d if rng.random() < 0.5 else 1 for d in shape]
    return tuple(dims[int(rng.integers(0, len(dims) + 1)) :])


def _away(rng, shape, lo=0.05, hi=2.0, kinks=(0.0,)) -> np.ndarray:
    """Uniform values in (-hi, hi) at least ``lo`` from every kink."""
    x = rng.uniform(-hi, hi, size=shape)
    for k in kinks:
        near = np.abs(x - k) < lo
        x[near] = k + np.where(x[near] >= k, lo, -lo) * 2
    return x


def _positive(rng, shape, lo=0.3, hi=2.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape)


# ---------------------------------------------------------------- the three rows of the first smoke test


def test_relu():
    rng = np.random.default_rng(0)
    x = _away(rng, (2, 3, 4))
    check_vjp("Relu", {"x": x}, ["x"], torch_fn=lambda x: torch.relu(x))


def test_mul_broadcast():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 3, 4))
    c = rng.standard_normal((3, 1))
    check_vjp("Mul", {"a": a, "c": c}, ["a", "c"], torch_fn=lambda a, c: a * c)


def test_add_const():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3, 4))
    c = rng.standard_normal((1, 3, 1))
    check_vjp("Add", {"a": a, "c": c}, ["a"], torch_fn=lambda a, c: a + c)


# ---------------------------------------------------------------- one-input activations


def _unary(op, attrs_fn, torch_fn, sample=_away, opset=17, fd=True):
    """A row: op, rng -> attrs, attrs -> torch twin of x, (rng, shape, attrs) -> x, opset, finite differences?"""
    return op, attrs_fn, torch_fn, sample, opset, fd


UNARY = {
    "LeakyRelu": _unary(
        "LeakyRelu", lambda r: {"alpha": float(r.uniform(0.01, 0.5))}, lambda a: lambda x: F.leaky_relu(x, a["alpha"])
    ),
    "Elu": _unary("Elu", lambda r: {"alpha": float(r.uniform(0.3, 2.0))}, lambda a: lambda x: F.elu(x, a["alpha"])),
    "Selu": _unary(
        "Selu",
        lambda r: {"alpha": float(r.uniform(0.5, 2.0)), "gamma": float(r.uniform(0.5, 2.0))},
        lambda a: lambda x: a["gamma"] * F.elu(x, a["alpha"]),
    ),
    "Selu-default": _unary(
        "Selu", lambda r: {}, lambda a: lambda x: 1.05070102214813232421875 * F.elu(x, 1.67326319217681884765625)
    ),
    "Sigmoid": _unary("Sigmoid", lambda r: {}, lambda a: torch.sigmoid),
    "HardSigmoid": _unary(
        "HardSigmoid",
        lambda r: {"alpha": float(r.uniform(0.1, 0.5)), "beta": float(r.uniform(0.2, 0.8))},
        lambda a: lambda x: torch.clamp(a["alpha"] * x + a["beta"], 0.0, 1.0),
        lambda r, s, a: _away(r, s, hi=4.0, kinks=(-a["beta"] / a["alpha"], (1 - a["beta"]) / a["alpha"])),
    ),
    "HardSwish": _unary(
        "HardSwish",
        lambda r: {},
        lambda a: lambda x: F.hardswish(x),
        lambda r, s, a: _away(r, s, hi=5.0, kinks=(-3.0, 3.0)),
    ),
    "Tanh": _unary("Tanh", lambda r: {}, lambda a: torch.tanh),
    "Softplus": _unary(
        "Softplus", lambda r: {}, lambda a: lambda x: F.softplus(x), lambda r, s, a: _away(r, s, hi=6.0)
    ),
    "Softsign": _unary("Softsign", lambda r: {}, lambda a: lambda x: F.softsign(x)),
    # onnx's reference Erf works in float32 (np.vectorize(math.erf, otypes="f")): no float64 finite differences
    "Erf": _unary("Erf", lambda r: {}, lambda a: torch.erf, fd=False),
    "Gelu": _unary("Gelu", lambda r: {}, None, opset=20, fd=False),  # its gradient uses Erf: see test_gelu
    "Gelu-tanh": _unary(
        "Gelu", lambda r: {"approximate": "tanh"}, lambda a: lambda x: F.gelu(x, approximate="tanh"), opset=20
    ),
    "Exp": _unary("Exp", lambda r: {}, lambda a: torch.exp),
    "Log": _unary("Log", lambda r: {}, lambda a: torch.log, lambda r, s, a: _positive(r, s)),
    "Sqrt": _unary("Sqrt", lambda r: {}, lambda a: torch.sqrt, lambda r, s, a: _positive(r, s)),
    "Reciprocal": _unary("Reciprocal", lambda r: {}, lambda a: torch.reciprocal, lambda r, s, a: _away(r, s, lo=0.3)),
    "Neg": _unary("Neg", lambda r: {}, lambda a: torch.neg),
    "Abs": _unary("Abs", lambda r: {}, lambda a: torch.abs),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", sorted(UNARY))
def test_unary(case, seed):
    op, attrs_fn, torch_fn, sample, opset, fd = UNARY[case]
    rng = np.random.default_rng([seed, sum(map(ord, case))])
    attrs = attrs_fn(rng)
    shape = _shape(rng)
    x = sample(rng, shape) if sample is _away else sample(rng, shape, attrs)
    twin = torch_fn(attrs) if torch_fn is not None else None
    check_vjp(op, {"x": x}, ["x"], attrs=attrs, torch_fn=twin, opset=opset, rng_seed=seed, fd=fd)


KINKS = {
    # op: (attrs, x with points exactly on the kinks, torch twin) -- subgradients must be torch's
    "Relu": ({}, [0.0, 1.0, -1.0], torch.relu),
    "Abs": ({}, [0.0, 1.0, -1.0], torch.abs),
    "LeakyRelu": ({"alpha": 0.25}, [0.0, 1.0, -1.0], lambda x: F.leaky_relu(x, 0.25)),
    "Elu": ({"alpha": 0.5}, [0.0, 1.0, -1.0], lambda x: F.elu(x, 0.5)),
    "Selu": ({"alpha": 1.5, "gamma": 1.25}, [0.0, 1.0, -1.0], lambda x: 1.25 * F.elu(x, 1.5)),
    "HardSigmoid": (
        {"alpha": 0.25, "beta": 0.5},
        [-2.0, 2.0, 0.0, -3.0, 3.0],
        lambda x: torch.clamp(0.25 * x + 0.5, 0.0, 1.0),
    ),
    "HardSwish": ({}, [-3.0, 3.0, -3.5, 3.5, 0.5], lambda x: F.hardswish(x)),
}


@pytest.mark.parametrize("op", sorted(KINKS))
def test_unary_at_kinks(op):
    attrs, x, twin = KINKS[op]
    check_vjp(op, {"x": np.array(x)}, ["x"], attrs=attrs, torch_fn=twin, fd=False)


def _ort_vs_torch(op, inputs, wrt, attrs, torch_fn, opset=17, rng_seed=0, symbolic=()):
    """float32 onnxruntime gradient against torch autograd in float64.

    For rows the float64 reference path cannot take: ops typed float32-only
    (Celu), opset < 13 Softmax semantics, which onnx's reference evaluator
    does not implement, and gradients that use Erf, which it computes in float32.
    Inputs named in ``symbolic`` get a symbolic leading dim "N" (dynamic batch).
    """
    model, outs = build_single_node(op, inputs, wrt, attrs, 1, np.float32, opset)
    if symbolic:
        model = _symbolic_batch(model, symbolic, outs)
    gm, seeds, _ = gradient_model(model, wrt, outs)
    rng = np.random.default_rng(rng_seed)
    feeds = {w: np.asarray(inputs[w], dtype=np.float32) for w in wrt}
    tin = {
        k: (
            v
            if v is None
            else torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=k in wrt)
            if np.issubdtype(np.asarray(v).dtype, np.floating)
            else torch.tensor(v)
        )
        for k, v in inputs.items()
    }
    ty = torch_fn(**tin)
    seed = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    tgrads = torch.autograd.grad(ty, [tin[w] for w in wrt], torch.tensor(seed, dtype=torch.float64))
    grads = ort_session(gm).run(None, {**feeds, seeds[outs[0]]: seed})[1:]
    for w, g, tg in zip(wrt, grads, tgrads):
        tg = tg.numpy()
        np.testing.assert_allclose(
            g,
            tg,
            rtol=1e-4,
            atol=1e-5 * max(1.0, np.abs(tg).max()),
            err_msg=f"{op}: d/d{w} differs from torch autograd",
        )


def _symbolic_batch(model, names, outs):
    """``model`` with the leading dim of inputs ``names`` made symbolic ("N") and shapes inferred again."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name in names:
            vi.type.tensor_type.shape.dim[0].dim_param = "N"
    return with_inferred_outputs(m, outs, strict_mode=True)


def _sym_rows():
    r = np.random.default_rng(53)
    x = r.standard_normal((3, 2, 4))
    return {
        "ReduceMean-batch-axis": ("ReduceMean", {"x": x}, {"axes": [0, -1], "keepdims": 0}, lambda x: x.mean((0, 2))),
        "ReduceMean-other": (
            "ReduceMean",
            {"x": x, "axes": np.array([1], np.int64)},
            {"keepdims": 0},
            lambda x, axes: x.mean(1),
        ),
        "ReduceSum-all": ("ReduceSum", {"x": x}, {"keepdims": 0}, lambda x: x.sum()),
        "ReduceMax": ("ReduceMax", {"x": x}, {"axes": [0], "keepdims": 1}, lambda x: x.amax(0, True)),
        "ReduceLogSum": (
            "ReduceLogSum",
            {"x": np.abs(x) + 0.5},
            {"axes": [0, 2], "keepdims": 0},
            lambda x: torch.log(x.sum((0, 2))),
        ),
        "Softmax": ("Softmax", {"x": x}, {"axis": 0}, lambda x: torch.softmax(x, 0)),
        "Sub": ("Sub", {"a": x, "c": r.standard_normal((1, 2, 1))}, {}, lambda a, c: a - c),
        "Div": ("Div", {"a": r.standard_normal((1, 2, 1)), "c": np.abs(x) + 0.5}, {}, lambda a, c: a / c),
        "Max": ("Max", {"a": x, "c": r.standard_normal((1, 1, 4))}, {}, lambda a, c: torch.maximum(a, c)),
        "PRelu": ("PRelu", {"a": x, "c": r.uniform(0.1, 0.5, (2, 1))}, {}, lambda a, c: torch.where(a > 0, a, a * c)),
        "Where": (
            "Where",
            {"cond": r.random((2, 4)) < 0.5, "a": x, "c": r.standard_normal((4,))},
            {},
            lambda cond, a, c: torch.where(cond, a, c),
        ),
    }


SYM_ROWS = _sym_rows()


@pytest.mark.parametrize("case", sorted(SYM_ROWS))
def test_symbolic_batch(case):
    """A dynamic batch dimension (dim_param "N"): shapes that are only known at run time."""
    op, inputs, attrs, twin = SYM_ROWS[case]
    names = [k for k, v in inputs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    wrt = names if op != "Where" else ["a", "c"]
    batched = [k for k in wrt if np.ndim(inputs[k]) == 3 and np.shape(inputs[k])[0] == 3]
    assert batched
    opset = 18 if "axes" in inputs else 17
    _ort_vs_torch(op, inputs, wrt, attrs, twin, opset=opset, symbolic=batched)


@pytest.mark.parametrize("seed", SEEDS)
def test_gelu(seed):
    """Exact Gelu against torch through onnxruntime (the reference evaluator's Erf is float32-accurate)."""
    rng = np.random.default_rng([seed, 5])
    x = _away(rng, _shape(rng), hi=3.0)
    _ort_vs_torch("Gelu", {"x": x}, ["x"], {}, lambda x: F.gelu(x), opset=20, rng_seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_celu(seed):
    """Celu is typed float32-only, so the float64 reference path cannot build it: onnxruntime vs torch."""
    rng = np.random.default_rng([seed, 7])
    alpha = float(rng.uniform(0.3, 2.0))
    x = _away(rng, _shape(rng))
    _ort_vs_torch("Celu", {"x": x}, ["x"], {"alpha": alpha}, lambda x: F.celu(x, alpha), rng_seed=seed)
    _ort_vs_torch("Celu", {"x": np.array([0.0, -1.0, 1.0])}, ["x"], {"alpha": alpha}, lambda x: F.celu(x, alpha))


# ---------------------------------------------------------------- PRelu and Clip


@pytest.mark.parametrize("seed", SEEDS)
def test_prelu(seed):
    rng = np.random.default_rng([seed, 11])
    shape = _shape(rng, min_rank=2)
    x = _away(rng, shape)
    slope = rng.uniform(-0.5, 0.5, size=_partner(rng, shape))
    wrt = ["x", "slope"] if seed == 0 else ["x"]
    check_vjp(
        "PRelu",
        {"x": x, "slope": slope},
        wrt,
        torch_fn=lambda x, slope: torch.where(x > 0, x, slope * x),
        rng_seed=seed,
    )


CLIP_FORMS = ["both", "min", "max", "none", "bounds_wrt"]


@pytest.mark.parametrize("form", CLIP_FORMS)
def test_clip(form):
    rng = np.random.default_rng([CLIP_FORMS.index(form), 13])
    lo, hi = sorted(rng.uniform(-1.5, 1.5, size=2))
    hi = max(hi, lo + 0.3)
    x = _away(rng, _shape(rng), kinks=(lo, hi))
    inputs = {
        "x": x,
        "lo": None if form in ("max", "none") else np.array(lo),
        "hi": None if form in ("min", "none") else np.array(hi),
    }
    wrt = ["x", "lo", "hi"] if form == "bounds_wrt" else ["x"]
    check_vjp(
        "Clip",
        inputs,
        wrt,
        torch_fn=lambda x, lo, hi: torch.clamp(x, lo, hi) if lo is not None or hi is not None else x * 1,
    )


def test_clip_at_its_bounds_like_torch_clamp():
    """x equal to a bound gets no gradient: torch.clamp with scalar bounds (also hardtanh, relu6)."""
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    check_vjp(
        "Clip",
        {"x": x, "lo": np.array(-0.5), "hi": np.array(0.5)},
        ["x"],
        torch_fn=lambda x, lo, hi: torch.clamp(x, -0.5, 0.5),
        fd=False,
    )
    check_vjp(
        "Clip",
        {"x": x, "lo": np.array(-0.5), "hi": None},
        ["x"],
        torch_fn=lambda x, lo, hi: torch.clamp(x, min=-0.5),
        fd=False,
    )
    check_vjp(
        "Clip",
        {"x": x, "lo": None, "hi": np.array(0.0)},
        ["x"],
        torch_fn=lambda x, lo, hi: F.hardtanh(x, -10.0, 0.0),
        fd=False,
    )


def test_clip_min_above_max():
    """min > max: every output equals max, so max takes all of g (torch.clamp with tensor bounds)."""
    x = np.array([-1.0, -0.3, 0.2, 0.7, 2.0])
    check_vjp(
        "Clip",
        {"x": x, "lo": np.array(0.5), "hi": np.array(-0.5)},
        ["x", "lo", "hi"],
        torch_fn=lambda x, lo, hi: torch.clamp(x, lo, hi),
    )


# ---------------------------------------------------------------- Pow


POW_FORMS = [
    "const2",
    "const3_int",
    "const_half",
    "const_neg",
    "const1",
    "const0",
    "tensor_const",
    "tensor_int",
    "both_wrt",
]


@pytest.mark.parametrize("form", POW_FORMS)
def test_pow(form):
    rng = np.random.default_rng([POW_FORMS.index(form), 17])
    shape = _shape(rng)
    x = _positive(rng, shape)
    p = {
        "const2": np.array(2.0),
        "const3_int": np.array(3, dtype=np.int64),
        "const_half": np.array(0.5),
        "const_neg": np.array([-1.5]),
        "const1": np.array(1.0),
        "const0": np.array(0.0),
        "tensor_const": rng.uniform(-2, 3, size=_partner(rng, shape)),
        "tensor_int": rng.integers(-2, 4, size=(2,) + shape),  # size > 1: not folded, cast to float
        "both_wrt": rng.uniform(-2, 3, size=_partner(rng, shape)),
    }[form]
    if form == "tensor_const":
        p.reshape(-1)[0] = 0.0  # a zero exponent entry: torch's dx is 0 there
    wrt = ["x", "p"] if form == "both_wrt" else ["x"]
    check_vjp("Pow", {"x": x, "p": p}, wrt, torch_fn=lambda x, p: torch.pow(x, p))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the masked log(0) and 0 * 0^-1
def test_pow_through_zero_base():
    """At x = 0: d/dp of 0^p is 0 for p >= 0, and d/dx of x^0 is 0 (torch masks both)."""
    x = np.array([0.0, 0.5, 2.0, 0.0])
    p = np.array([1.5, 2.0, -1.0, 0.0])
    check_vjp("Pow", {"x": x[:3], "p": p[:3]}, ["p"], torch_fn=lambda x, p: torch.pow(x, p), fd=False)
    check_vjp("Pow", {"x": x, "p": p}, ["x"], torch_fn=lambda x, p: torch.pow(x, p), fd=False)


# ---------------------------------------------------------------- broadcasting arithmetic


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op", ["Sub", "Div"])
def test_sub_div(op, seed):
    rng = np.random.default_rng([seed, 19 + len(op)])
    shape = _shape(rng)
    a, c = shape, _partner(rng, shape)
    if seed == 1:
        a, c = c, a  # the broadcast operand on the left
    av = rng.standard_normal(a)
    cv = _away(rng, c, lo=0.4) if op == "Div" else rng.standard_normal(c)
    fn = (lambda a, c: a - c) if op == "Sub" else (lambda a, c: a / c)
    check_vjp(op, {"a": av, "c": cv}, ["a", "c"], torch_fn=fn, rng_seed=seed)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("op", ["Sum", "Mean"])
def test_sum_mean(op, n):
    rng = np.random.default_rng([n, 23 + len(op)])
    shape = _shape(rng, max_dim=3)
    inputs = {f"x{i}": rng.standard_normal(shape if i == 0 else _partner(rng, shape)) for i in range(n)}
    wrt = [k for i, k in enumerate(inputs) if i != 1]  # x1 (when present) is a constant

    def twin(**xs):
        total = sum(xs.values())
        return total / n if op == "Mean" else total * 1

    check_vjp(op, inputs, wrt, torch_fn=twin)


def _stacked(op):
    def twin(**xs):
        xs = torch.broadcast_tensors(*xs.values())
        st = torch.stack(xs)
        return st.amax(0) if op == "Max" else st.amin(0)

    return twin


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min(op, n):
    rng = np.random.default_rng([n, 29 + len(op)])
    shape = _shape(rng, max_dim=3)
    inputs = {f"x{i}": rng.standard_normal(shape if i == 0 else _partner(rng, shape)) for i in range(n)}
    twin = (lambda x0, x1: torch.maximum(x0, x1) if op == "Max" else torch.minimum(x0, x1)) if n == 2 else _stacked(op)
    check_vjp(op, inputs, list(inputs), torch_fn=twin)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_ties(op):
    """Ties share g evenly: halves for two inputs (torch.maximum, and central differences), thirds for three."""
    rng = np.random.default_rng(31)
    a = rng.integers(-2, 3, size=(3, 4)) * 0.5
    b = rng.integers(-2, 3, size=(3, 4)) * 0.5
    c = rng.integers(-2, 3, size=(4,)) * 0.5
    fn2 = (lambda a, b: torch.maximum(a, b)) if op == "Max" else (lambda a, b: torch.minimum(a, b))
    check_vjp(op, {"a": a, "b": b}, ["a", "b"], torch_fn=fn2)
    check_vjp(op, {"a": a, "b": b, "c": c}, ["a", "b", "c"], torch_fn=_stacked(op), fd=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_where(seed):
    rng = np.random.default_rng([seed, 37])
    shape = _shape(rng)
    cond = rng.random(_partner(rng, shape)) < 0.5
    a, c = (shape, _partner(rng, shape)) if seed == 0 else (_partner(rng, shape), shape)
    inputs = {"cond": cond, "a": rng.standard_normal(a), "c": rng.standard_normal(c)}
    check_vjp("Where", inputs, ["a", "c"], torch_fn=lambda cond, a, c: torch.where(cond, a, c), rng_seed=seed)


# ---------------------------------------------------------------- reductions


def _tied(rng, shape):
    return rng.integers(-2, 3, size=shape) * 0.5


REDUCE = {
    # op: (torch twin over dims, elementwise twin for a no-op reduction, sampler)
    "ReduceSum": (lambda x, d, k: x.sum(d, k), lambda x: x * 1, None),
    "ReduceMean": (lambda x, d, k: x.mean(d, k), lambda x: x * 1, None),
    "ReduceMax": (lambda x, d, k: x.amax(d, k), lambda x: x * 1, None),
    "ReduceMin": (lambda x, d, k: x.amin(d, k), lambda x: x * 1, None),
    "ReduceL1": (lambda x, d, k: x.abs().sum(d, k), torch.abs, None),
    "ReduceL2": (lambda x, d, k: torch.linalg.vector_norm(x, 2, d, k), torch.abs, None),
    "ReduceSumSquare": (lambda x, d, k: (x * x).sum(d, k), lambda x: x * x, None),
    "ReduceLogSumExp": (lambda x, d, k: torch.logsumexp(x, d, k), lambda x: x * 1, None),
    "ReduceLogSum": (lambda x, d, k: torch.log(x.sum(d, k)), torch.log, _positive),
}

#: axes forms: attribute (opset 17, ReduceSum at 12) or constant input (opset 18, ReduceSum at 13).
AXES_FORMS = ["attr", "input", "all", "noop"]


@pytest.mark.parametrize("form", AXES_FORMS)
@pytest.mark.parametrize("op", sorted(REDUCE))
def test_reduce(op, form):
    rng = np.random.default_rng([AXES_FORMS.index(form), sum(map(ord, op))])
    twin, elementwise, sample = REDUCE[op]
    shape = _shape(rng, max_dim=3)
    rank = len(shape)
    x = (sample or _away)(rng, shape)
    keepdims = int(rng.integers(0, 2))
    attrs = {"keepdims": keepdims}
    inputs = {"x": x}
    attr_opset, input_opset = (12, 13) if op == "ReduceSum" else (17, 18)
    opset = input_opset
    dims = tuple(range(rank))
    if form in ("attr", "input"):
        k = int(rng.integers(1, rank + 1))
        chosen = sorted(rng.choice(rank, size=k, replace=False).tolist())
        axes = [a - rank if rng.random() < 0.5 else a for a in chosen]
        dims = tuple(chosen)
        if form == "attr":
            attrs["axes"] = axes
            opset = attr_opset
        else:
            inputs["axes"] = np.array(axes, dtype=np.int64)
    elif form == "noop":
        attrs["noop_with_empty_axes"] = 1
        inputs["axes"] = np.array([], dtype=np.int64)
    fn = (
        (lambda x, axes=None: elementwise(x))
        if form == "noop"
        else (lambda x, axes=None: twin(x, dims, bool(keepdims)))
    )
    check_vjp(op, inputs, ["x"], attrs=attrs, torch_fn=fn, opset=opset)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_max_min_ties(op):
    """Tied extremes share g evenly, as torch.amax/amin do."""
    rng = np.random.default_rng(41)
    x = _tied(rng, (3, 4, 2))
    twin = REDUCE[op][0]
    check_vjp(
        op, {"x": x}, ["x"], attrs={"axes": [1], "keepdims": 0}, torch_fn=lambda x: twin(x, (1,), False), fd=False
    )
    check_vjp(
        op,
        {"x": x, "axes": np.array([0, -1], dtype=np.int64)},
        ["x"],
        attrs={"keepdims": 1},
        torch_fn=lambda x, axes: twin(x, (0, 2), True),
        fd=False,
        opset=18,
    )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # g / 0, masked
def test_reduce_l2_zero_slice():
    """An all-zero slice has gradient 0, not NaN (torch.linalg.vector_norm's convention)."""
    x = np.random.default_rng(43).standard_normal((3, 4))
    x[1] = 0.0
    check_vjp(
        "ReduceL2",
        {"x": x},
        ["x"],
        attrs={"axes": [1], "keepdims": 1},
        torch_fn=lambda x: torch.linalg.vector_norm(x, 2, (1,), True),
    )


# ---------------------------------------------------------------- Softmax / LogSoftmax


def _coerced(fn, axis):
    """The opset < 13 semantics: normalise over all axes from ``axis`` on."""

    def twin(x):
        shape = x.shape
        a = axis % x.dim()
        return fn(x.reshape(math.prod(shape[:a]), -1), 1).reshape(shape)

    return twin


@pytest.mark.parametrize("opset", [17, 12])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax(op, seed, opset):
    rng = np.random.default_rng([seed, opset, len(op)])
    shape = _shape(rng, max_dim=3)
    rank = len(shape)
    x = rng.standard_normal(shape) * 2
    fn = torch.softmax if op == "Softmax" else torch.log_softmax
    if seed == 0:
        attrs, axis = {}, (-1 if opset >= 13 else 1 % rank)
    else:
        axis = int(rng.integers(-rank, rank))
        attrs = {"axis": axis}
    if opset >= 13:
        check_vjp(op, {"x": x}, ["x"], attrs=attrs, torch_fn=lambda x: fn(x, axis), opset=opset, rng_seed=seed)
    else:  # onnx's reference evaluator implements only the opset-13 form
        _ort_vs_torch(op, {"x": x}, ["x"], attrs, _coerced(fn, axis), opset=opset, rng_seed=seed)


# ---------------------------------------------------------------- QuantizeLinear -> DequantizeLinear


def _qdq_model(shape, axis, signed, requant, rng, opset=19):
    """x -> QuantizeLinear -> DequantizeLinear -> y; per-tensor when ``axis`` is None.

    With ``requant`` the DQ scale is the Q scale times a random per-channel
    factor r, so the straight-through gradient is g * r, laid along ``axis``.
    """
    shape_s = (shape[axis],) if axis is not None else ()
    scale = rng.uniform(0.02, 0.1, size=shape_s).astype(np.float32)
    ratio = rng.uniform(0.5, 3.0, size=shape_s).astype(np.float32) if requant else np.ones(shape_s, np.float32)
    zp = (
        rng.integers(-5, 6, size=shape_s).astype(np.int8)
        if signed
        else rng.integers(120, 136, size=shape_s).astype(np.uint8)
    )
    inits = [
        numpy_helper.from_array(scale, "s"),
        numpy_helper.from_array(zp, "zp"),
        numpy_helper.from_array(scale * ratio, "s_dq"),
    ]
    attrs = {"axis": axis} if axis is not None else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q", **attrs),
        helper.make_node("DequantizeLinear", ["q", "s_dq", "zp"], ["y"], name="dq", **attrs),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = emitted_ir_version(opset, 8)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return model, scale, zp, ratio


QDQ_FORMS = {
    # form: (shape, axis or None for a per-tensor scale, signed zero point, DQ scale != Q scale)
    "per_tensor_uint8": ((2, 3, 4), None, False, False),
    "per_tensor_int8": ((3, 5), None, True, False),
    "per_channel_int8": ((2, 3, 4, 5), 1, True, False),
    "per_channel_neg_axis_uint8": ((4, 3, 2), -3, False, False),
    "per_channel_last_axis": ((2, 5, 3), 2, True, False),
    "requant_per_tensor": ((2, 3), None, True, True),
    "requant_per_channel": ((3, 4, 2), 1, True, True),
    "requant_per_channel_neg_axis": ((2, 4, 3, 5), -2, False, True),
}


@pytest.mark.parametrize("form", sorted(QDQ_FORMS))
def test_quantize_dequantize_straight_through(form):
    """dx of DQ(Q(x)) is g (straight-through), g * s_dq / s_q when the scales differ; agrees with torch's
    fake_quantize for in-range inputs."""
    rng = np.random.default_rng(sorted(QDQ_FORMS).index(form))
    shape, axis, signed, requant = QDQ_FORMS[form]
    rank = len(shape)
    model, scale, zp, ratio = _qdq_model(shape, axis, signed, requant, rng)
    gm, seeds, grads = gradient_model(model, ["x"], ["y"])
    assert all(n.domain in ("", "ai.onnx") for n in gm.graph.node)

    x = (rng.uniform(-3, 3, size=shape) * 0.02).astype(np.float32)  # well inside the int8 range
    g = rng.standard_normal(shape).astype(np.float32)
    along = [1] * rank
    if axis is not None:
        along[axis] = -1
    expected = g * ratio.reshape(along)

    ref = ReferenceEvaluator(gm).run(None, {"x": x, seeds["y"]: g})[1]
    got = ort_session(gm).run(None, {"x": x, seeds["y"]: g})[1]
    np.testing.assert_allclose(ref, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    if not requant:  # torch's fake quantisation: straight-through inside the representable range
        tx = torch.tensor(x, requires_grad=True)
        qmin, qmax = (-128, 127) if zp.dtype == np.int8 else (0, 255)
        if axis is not None:
            ty = torch.fake_quantize_per_channel_affine(
                tx, torch.tensor(scale), torch.tensor(zp.astype(np.int32)), axis % rank, qmin, qmax
            )
        else:
            ty = torch.fake_quantize_per_tensor_affine(tx, float(scale), int(zp), qmin, qmax)
        (tg,) = torch.autograd.grad(ty, tx, torch.tensor(g))
        np.testing.assert_allclose(got, tg.numpy(), rtol=1e-6)

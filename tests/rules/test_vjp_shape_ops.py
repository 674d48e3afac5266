"""VJP rows for shape and data-movement ops (onnxcam/autodiff/rules/shape_ops.py).

Each row draws its shapes/axes/indices from a seeded RNG and goes through
``check_vjp`` (finite differences + torch autograd + onnxruntime float32).
The ``dynamic`` rows build small graphs with a symbolic batch dimension and
compare onnxruntime's gradient with torch for two batch sizes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")
from onnx import TensorProto, helper, numpy_helper

from onnxcam.autodiff.registry import VJP_RULES
from onnxcam.errors import UnsupportedModelError
from tests.vjp_check import check_vjp, gradient_model, ort_grad_vs_torch, ort_session

I64 = np.int64


def _i(*v):
    return np.array(v, dtype=I64)


def _shape(rng, rank, lo=1, hi=4):
    return tuple(int(d) for d in rng.integers(lo, hi + 1, size=rank))


# ------------------------------------------------------------------------------------------ reshapes


@pytest.mark.parametrize("seed", range(3))
def test_reshape(seed):
    rng = np.random.default_rng(seed)
    shape = _shape(rng, 3)
    x = rng.standard_normal(shape)
    target = _i(0, -1) if seed % 2 else _i(-1, shape[-1], 1)
    tshape = (shape[0], -1) if seed % 2 else (-1, shape[-1], 1)
    check_vjp("Reshape", {"x": x, "s": target}, ["x"], torch_fn=lambda x, s: x.reshape(tshape))


@pytest.mark.parametrize("seed", range(3))
def test_flatten(seed):
    rng = np.random.default_rng(10 + seed)
    shape = _shape(rng, 4, hi=3)
    axis = int(rng.integers(-4, 5))
    x = rng.standard_normal(shape)
    a = axis % 4 if axis < 0 else axis
    check_vjp(
        "Flatten", {"x": x}, ["x"], attrs={"axis": axis}, torch_fn=lambda x: x.reshape(int(np.prod(shape[:a])), -1)
    )


@pytest.mark.parametrize("seed", range(3))
def test_squeeze_unsqueeze(seed):
    rng = np.random.default_rng(20 + seed)
    shape = list(_shape(rng, 3))
    pos = int(rng.integers(0, 4))
    shape.insert(pos, 1)
    x = rng.standard_normal(shape)
    neg = pos - 4 if seed % 2 else pos
    check_vjp("Squeeze", {"x": x, "a": _i(neg)}, ["x"], torch_fn=lambda x, a: x.squeeze(pos))
    check_vjp("Squeeze", {"x": x}, ["x"], torch_fn=lambda x: x.reshape([d for d in shape if d != 1]))
    y = rng.standard_normal(_shape(rng, 2))
    check_vjp("Unsqueeze", {"x": y, "a": _i(-1, 0)}, ["x"], torch_fn=lambda x, a: x[None, ..., None])


def test_identity_dropout():
    rng = np.random.default_rng(30)
    x = rng.standard_normal((2, 3, 4))
    check_vjp("Identity", {"x": x}, ["x"], torch_fn=lambda x: x)
    check_vjp("Dropout", {"x": x, "r": np.array(0.3)}, ["x"], torch_fn=lambda x, r: x)
    check_vjp(
        "Dropout",
        {"x": x, "r": np.array(0.3), "t": np.array(False)},
        ["x"],
        n_outputs=2,
        torch_fn=lambda x, r, t: (x, None),
    )
    with pytest.raises(UnsupportedModelError, match="training mode"):
        check_vjp("Dropout", {"x": x, "r": np.array(0.3), "t": np.array(True)}, ["x"], fd=False, ort=False)


@pytest.mark.parametrize("to", [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16])
def test_cast(to):
    """Cast's gradient is the cotangent cast back to the input type (checked exactly, in ORT too)."""
    node = helper.make_node("Cast", ["x"], ["y"], to=to)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", to, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    gm, seeds, _ = gradient_model(model, ["x"], ["y"])
    seed = np.random.default_rng(31).standard_normal((2, 3)).astype(helper.tensor_dtype_to_np_dtype(to))
    x = np.ones((2, 3), np.float32)
    _, gx = ort_session(gm).run(None, {"x": x, seeds["y"]: seed})
    assert gx.dtype == np.float32
    np.testing.assert_array_equal(gx, seed.astype(np.float32))


@pytest.mark.parametrize("seed", range(3))
def test_expand(seed):
    rng = np.random.default_rng(40 + seed)
    out = _shape(rng, 3, lo=2)
    xs = tuple(d if rng.random() < 0.5 else 1 for d in out)[1:]
    x = rng.standard_normal(xs)
    target = _i(*out) if seed % 2 else _i(out[0], *[1] * len(xs))  # Expand broadcasts both ways
    tshape = out if seed % 2 else np.broadcast_shapes((out[0], *[1] * len(xs)), xs)
    check_vjp("Expand", {"x": x, "s": target}, ["x"], torch_fn=lambda x, s: x.expand(*tshape))


@pytest.mark.parametrize("seed", range(4))
def test_transpose(seed):
    rng = np.random.default_rng(50 + seed)
    rank = 2 + seed % 3
    x = rng.standard_normal(_shape(rng, rank))
    if seed == 0:
        check_vjp("Transpose", {"x": x}, ["x"], torch_fn=lambda x: x.permute(*range(rank - 1, -1, -1)))
        return
    perm = [int(p) for p in rng.permutation(rank)]
    check_vjp("Transpose", {"x": x}, ["x"], attrs={"perm": perm}, torch_fn=lambda x: x.permute(*perm))


# ------------------------------------------------------------------------------------- concat/split


@pytest.mark.parametrize("seed", range(4))
def test_concat(seed):
    rng = np.random.default_rng(60 + seed)
    rank = int(rng.integers(1, 4))
    base = list(_shape(rng, rank))
    axis = int(rng.integers(-rank, rank))
    n = int(rng.integers(2, 4))
    ins = {}
    for k in range(n):
        s = list(base)
        s[axis] = int(rng.integers(1, 4))
        ins[f"x{k}"] = rng.standard_normal(s)
    wrt = [k for k in ins if rng.random() < 0.7] or ["x0"]
    check_vjp("Concat", ins, wrt, attrs={"axis": axis}, torch_fn=lambda **t: torch.cat(list(t.values()), axis))


@pytest.mark.parametrize("seed", range(4))
def test_split(seed):
    rng = np.random.default_rng(70 + seed)
    rank = int(rng.integers(1, 4))
    shape = list(_shape(rng, rank))
    axis = int(rng.integers(-rank, rank))
    n = int(rng.integers(2, 4))
    sizes = [int(s) for s in rng.integers(1, 4, size=n)]
    shape[axis] = sum(sizes)
    x = rng.standard_normal(shape)
    seeded = tuple(sorted(rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False).tolist()))
    check_vjp(
        "Split",
        {"x": x, "s": _i(*sizes)},
        ["x"],
        attrs={"axis": axis},
        n_outputs=n,
        seeded=seeded,
        torch_fn=lambda x, s: torch.split(x, sizes, axis),
    )
    # equal split without the split input; opset 18 spells the count num_outputs
    shape[axis] = 2 * n
    x = rng.standard_normal(shape)
    check_vjp(
        "Split",
        {"x": x},
        ["x"],
        attrs={"axis": axis},
        n_outputs=n,
        seeded=seeded,
        torch_fn=lambda x: torch.split(x, 2, axis),
    )
    check_vjp(
        "Split",
        {"x": x},
        ["x"],
        attrs={"axis": axis, "num_outputs": n},
        n_outputs=n,
        seeded=seeded,
        opset=18,
        torch_fn=lambda x: torch.split(x, 2, axis),
    )


# ------------------------------------------------------------------------------------------- slice


def _onnx_slice_to_python(s, e, st, d):
    """ONNX Slice bounds (with its clamping rules) as a python slice of a length-d axis."""
    if s < 0:
        s += d
    if e < 0:
        e += d
    if st > 0:
        return slice(min(max(s, 0), d), min(max(e, 0), d), st)
    s = min(max(s, 0), d - 1)
    e = min(max(e, -1), d - 1)
    return slice(s, None if e < 0 else e, st)


@pytest.mark.parametrize("seed", range(8))
def test_slice(seed):
    rng = np.random.default_rng(80 + seed)
    rank = int(rng.integers(1, 4))
    shape = _shape(rng, rank, lo=2, hi=5)
    x = rng.standard_normal(shape)
    axes = sorted(rng.choice(rank, size=int(rng.integers(1, rank + 1)), replace=False).tolist())
    starts, ends, steps = [], [], []
    for a in axes:
        d = shape[a]
        step = 1 if seed < 3 else int(rng.choice([-3, -2, -1, 1, 2, 3]))
        # (below -d a negative-step start clamps to 0 in ONNX, but numpy and so the reference evaluator
        # read it as "before the first element": keep it in range there)
        starts.append(int(rng.integers(-d if step < 0 else -d - 2, d + 2)))
        ends.append(int(rng.choice([int(rng.integers(-d - 2, d + 2)), 2**62, -(2**62)])))
        steps.append(step)
    idx = [slice(None)] * rank
    for a, s, e, st in zip(axes, starts, ends, steps):
        idx[a] = _onnx_slice_to_python(s, e, st, shape[a])
    flat = np.arange(x.size).reshape(shape)[tuple(idx)]
    if flat.size == 0:  # an empty slice has a zero gradient; make the row non-trivial
        starts = [0] * len(axes)
        ends = [2**62 if st > 0 else -(2**62) for st in steps]
        starts = [0 if st > 0 else -1 for st in steps]
        idx = [slice(None)] * rank
        for a, s, e, st in zip(axes, starts, ends, steps):
            idx[a] = _onnx_slice_to_python(s, e, st, shape[a])
        flat = np.arange(x.size).reshape(shape)[tuple(idx)]
    neg_axes = [a - rank if rng.random() < 0.5 else a for a in axes]
    ins = {"x": x, "s": _i(*starts), "e": _i(*ends), "a": _i(*neg_axes)}
    if seed % 2 or any(st != 1 for st in steps):
        ins["st"] = _i(*steps)
    check_vjp("Slice", ins, ["x"], torch_fn=lambda x, **_: x.reshape(-1)[torch.tensor(flat.copy())])


# ------------------------------------------------------------------------------------------ gathers


@pytest.mark.parametrize("seed", range(5))
def test_gather(seed):
    rng = np.random.default_rng(90 + seed)
    rank = int(rng.integers(1, 4))
    shape = _shape(rng, rank, lo=2, hi=4)
    axis = int(rng.integers(-rank, rank))
    d = shape[axis]
    ishape = () if seed == 0 else _shape(rng, int(rng.integers(1, 3)), hi=3)
    idx = rng.integers(-d, d, size=ishape).astype(I64)  # negative and (usually) repeated indices
    x = rng.standard_normal(shape)
    a = axis % rank
    pos = np.where(idx < 0, idx + d, idx)
    out_shape = shape[:a] + tuple(idx.shape) + shape[a + 1 :]
    check_vjp(
        "Gather",
        {"x": x, "i": idx},
        ["x"],
        attrs={"axis": axis},
        torch_fn=lambda x, i: x.index_select(a, torch.tensor(pos.reshape(-1))).reshape(out_shape),
    )


def test_gather_unique_indices():
    rng = np.random.default_rng(95)
    x = rng.standard_normal((2, 5, 3))
    check_vjp("Gather", {"x": x, "i": _i(4, 0, -2)}, ["x"], attrs={"axis": 1}, torch_fn=lambda x, i: x[:, [4, 0, 3]])


@pytest.mark.parametrize("seed", range(3))
def test_gather_elements(seed):
    rng = np.random.default_rng(100 + seed)
    shape = _shape(rng, 3, lo=2, hi=4)
    axis = int(rng.integers(0, 3))  # the reference evaluator's GatherElements mishandles a negative axis
    d = shape[axis]
    ishape = list(shape)
    ishape[axis] = int(rng.integers(1, 5))
    idx = rng.integers(-d, d, size=ishape).astype(I64)
    pos = torch.tensor(np.where(idx < 0, idx + d, idx))
    x = rng.standard_normal(shape)
    check_vjp(
        "GatherElements",
        {"x": x, "i": idx},
        ["x"],
        attrs={"axis": axis},
        torch_fn=lambda x, i: torch.gather(x, axis, pos),
    )


@pytest.mark.parametrize("seed", range(3))
def test_gather_nd(seed):
    rng = np.random.default_rng(110 + seed)
    shape = _shape(rng, 3, lo=2, hi=4)
    k = int(rng.integers(1, 4))
    idx = np.stack([rng.integers(0, shape[j], size=(4,)) for j in range(k)], axis=-1).astype(I64)
    x = rng.standard_normal(shape)
    check_vjp(
        "GatherND", {"x": x, "i": idx}, ["x"], torch_fn=lambda x, i: x[tuple(torch.tensor(idx[:, j]) for j in range(k))]
    )
    # batch_dims=1: one index tuple per batch row
    idx_b = np.stack([rng.integers(0, shape[1], size=(shape[0], 2))], axis=-1).astype(I64)
    rows = torch.arange(shape[0])[:, None]
    check_vjp(
        "GatherND",
        {"x": x, "i": idx_b},
        ["x"],
        attrs={"batch_dims": 1},
        torch_fn=lambda x, i: x[rows, torch.tensor(idx_b[..., 0])],
    )


# ---------------------------------------------------------------------------------------- pad, tile


@pytest.mark.parametrize("seed", range(4))
def test_pad_constant(seed):
    rng = np.random.default_rng(120 + seed)
    rank = int(rng.integers(1, 4))
    shape = _shape(rng, rank, lo=2)
    pads = [int(p) for p in rng.integers(0, 3, size=2 * rank)]
    x = rng.standard_normal(shape)
    tpad = [v for a in reversed(range(rank)) for v in (pads[a], pads[rank + a])]
    check_vjp(
        "Pad", {"x": x, "p": _i(*pads), "v": np.array(0.5)}, ["x"], torch_fn=lambda x, p, v: F.pad(x, tpad, value=0.5)
    )
    # opset 18: pads for a subset of (negative) axes
    a = int(rng.integers(-rank, rank))
    tpad18 = [0, 0] * ((rank - 1) - a % rank) + [pads[0], pads[1]]
    check_vjp(
        "Pad",
        {"x": x, "p": _i(pads[0], pads[1]), "v": None, "a": _i(a)},
        ["x"],
        opset=18,
        torch_fn=lambda x, p, v, a: F.pad(x, tpad18),
    )


@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
@pytest.mark.parametrize("seed", range(2))
def test_pad_modes(mode, seed):
    rng = np.random.default_rng(130 + seed)
    shape = (1, 2) + _shape(rng, 2, lo=3, hi=4)
    hi = 3 if mode == "reflect" else 4
    pads = (
        [0, 0] + [int(p) for p in rng.integers(0, hi, size=2)] + [0, 0] + [int(p) for p in rng.integers(0, hi, size=2)]
    )
    x = rng.standard_normal(shape)
    tmode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    tpad = [pads[3], pads[7], pads[2], pads[6]]
    check_vjp(
        "Pad",
        {"x": x, "p": _i(*pads)},
        ["x"],
        attrs={"mode": mode},
        opset=19 if mode == "wrap" else 17,
        torch_fn=lambda x, p: F.pad(x, tpad, mode=tmode),
    )


@pytest.mark.parametrize("seed", range(3))
def test_tile(seed):
    rng = np.random.default_rng(140 + seed)
    rank = int(rng.integers(1, 4))
    shape = _shape(rng, rank, hi=3)
    reps = [int(r) for r in rng.integers(1, 4, size=rank)]
    x = rng.standard_normal(shape)
    check_vjp("Tile", {"x": x, "r": _i(*reps)}, ["x"], torch_fn=lambda x, r: x.repeat(*reps))


# ------------------------------------------------------------------------------------------- resize


def _resize_inputs(x, scales=None, sizes=None, roi=None):
    return {
        "x": x,
        "roi": None if roi is None else np.asarray(roi, np.float32),
        "sc": None if scales is None else np.asarray(scales, np.float32),
        "sz": None if sizes is None else np.asarray(sizes, I64),
    }


def _check_resize(ins, wrt, **kw):
    check_vjp("Resize", ins, wrt, keep_dtype=("sc",), **kw)  # scales stay float32, as Resize requires


TORCH_RESIZE = [
    # (onnx attrs, torch interpolate kwargs, integer scale only)
    (
        {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        {"mode": "nearest"},
        False,
    ),
    ({"mode": "linear"}, {"mode": "bilinear", "align_corners": False}, False),
    (
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        {"mode": "bilinear", "align_corners": True},
        False,
    ),
    # torch's bicubic weights differ from ONNX's by ~1e-6 at non-integer ratios (float32 inside torch)
    ({"mode": "cubic", "cubic_coeff_a": -0.75}, {"mode": "bicubic", "align_corners": False}, True),
]


@pytest.mark.parametrize("row", range(len(TORCH_RESIZE)))
@pytest.mark.parametrize("seed", range(2))
def test_resize_vs_torch(row, seed):
    attrs, tkw, integer = TORCH_RESIZE[row]
    rng = np.random.default_rng(150 + 10 * row + seed)
    h, w = _shape(rng, 2, lo=2, hi=5)
    if integer:
        oh, ow = h * int(rng.integers(1, 3)), w * int(rng.integers(2, 3))
    else:
        oh, ow = int(rng.integers(1, 9)), int(rng.integers(2, 9))
    x = rng.standard_normal((1, 2, h, w))
    _check_resize(
        _resize_inputs(x, sizes=[1, 2, oh, ow]),
        ["x"],
        attrs=attrs,
        torch_fn=lambda x, **_: F.interpolate(x, size=(oh, ow), **tkw),
    )


def test_resize_scales_vs_torch():
    rng = np.random.default_rng(170)
    x = rng.standard_normal((2, 3, 3, 4))
    _check_resize(
        _resize_inputs(x, scales=[1, 1, 2, 3]),
        ["x"],
        attrs={"mode": "nearest"},
        torch_fn=lambda x, **_: F.interpolate(x, scale_factor=(2, 3), mode="nearest"),
    )
    _check_resize(
        _resize_inputs(x, scales=[1, 1, 2, 2]),
        ["x"],
        attrs={"mode": "linear"},
        torch_fn=lambda x, **_: F.interpolate(x, scale_factor=2, mode="bilinear"),
    )


FD_RESIZE = [
    {"mode": "nearest"},  # half_pixel + round_prefer_floor
    {"mode": "nearest", "nearest_mode": "round_prefer_ceil", "coordinate_transformation_mode": "align_corners"},
    {"mode": "nearest", "nearest_mode": "ceil", "coordinate_transformation_mode": "pytorch_half_pixel"},
    {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
    {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
    {"mode": "linear", "antialias": 1},
    {"mode": "cubic", "antialias": 1, "coordinate_transformation_mode": "asymmetric"},
    {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5},
    {"mode": "cubic", "coordinate_transformation_mode": "pytorch_half_pixel", "cubic_coeff_a": -0.6},
    {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"},
    {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 2.0},
    {"mode": "cubic", "coordinate_transformation_mode": "tf_crop_and_resize"},
    {"mode": "cubic", "coordinate_transformation_mode": "align_corners"},  # torch's differs by ~1e-6 (float32)
]


@pytest.mark.parametrize("row", range(len(FD_RESIZE)))
def test_resize_modes_fd(row):
    """Modes with no torch twin: finite differences on the reference Resize, and onnxruntime float32."""
    attrs = FD_RESIZE[row]
    rng = np.random.default_rng(180 + row)
    h, w = _shape(rng, 2, lo=2, hi=6)
    x = rng.standard_normal((1, 2, h, w))
    crop = (
        attrs["coordinate_transformation_mode"] == "tf_crop_and_resize"
        if "coordinate_transformation_mode" in attrs
        else False
    )
    roi = [0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3] if crop else None
    opset = 19 if attrs.get("coordinate_transformation_mode") == "half_pixel_symmetric" else 18
    if row % 2:
        sc = [1, 1, float(rng.choice([0.5, 0.75, 1.5, 2.0, 2.5])), float(rng.choice([0.6, 1.0, 1.7, 3.0]))]
        ins = _resize_inputs(x, scales=sc, roi=roi)
    else:
        ins = _resize_inputs(x, sizes=[1, 2, int(rng.integers(1, 9)), int(rng.integers(1, 9))], roi=roi)
    _check_resize(ins, ["x"], attrs=attrs, opset=opset)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_axes_and_aspect_policy(policy):
    """Opset 18: sizes on a subset of axes (given in a permuted order) under each keep_aspect_ratio_policy."""
    rng = np.random.default_rng(190)
    x = rng.standard_normal((1, 3, 5, 2))
    _check_resize(
        _resize_inputs(x, sizes=[4, 7]),
        ["x"],
        opset=18,
        attrs={"mode": "linear", "axes": [3, 2], "keep_aspect_ratio_policy": policy},
    )


def test_resize_rank3_and_axis_one():
    """A 1-D resize of a (N, L, C) tensor: the carrier axis follows the resized one."""
    rng = np.random.default_rng(191)
    x = rng.standard_normal((2, 5, 3))
    _check_resize(
        _resize_inputs(x, sizes=[2, 8, 3]),
        ["x"],
        attrs={"mode": "linear"},
        torch_fn=lambda x, **_: F.interpolate(x.transpose(1, 2), size=8, mode="linear").transpose(1, 2),
    )


def test_resize_identity_and_rejections():
    rng = np.random.default_rng(192)
    x = rng.standard_normal((1, 2, 3, 4))
    _check_resize(_resize_inputs(x, scales=[1, 1, 1, 1]), ["x"], attrs={"mode": "linear"}, torch_fn=lambda x, **_: x)
    with pytest.raises(UnsupportedModelError, match="spatial"):
        _check_resize(_resize_inputs(x, scales=[2, 2, 2, 2]), ["x"], attrs={"mode": "nearest"}, fd=False, ort=False)


# ------------------------------------------------------------------------- dynamic (symbolic) batch


def _dynamic_check(nodes, x_shape, inits, out, torch_fn, batches=(2, 3), opset=17, seed=0):
    """Graph ``x[N, ...] -> nodes -> out`` with a symbolic N: ORT float32 gradient vs torch float64."""
    dims = ["N", *x_shape[1:]]
    graph = helper.make_graph(
        nodes,
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    vi = {v.name: v for v in model.graph.value_info}
    model.graph.output.append(vi[out] if out in vi else helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    gm, seeds, _ = gradient_model(model, ["x"], [out])
    sess = ort_session(gm)
    rng = np.random.default_rng(seed)
    for n in batches:
        x = rng.standard_normal((n, *x_shape[1:]))
        ort_grad_vs_torch(sess, {"x": x}, seeds[out], torch_fn, rng)


def _n(op, ins, out, **attrs):
    return helper.make_node(op, ins, [out], **attrs)


DYNAMIC = {
    "reshape_flatten": (
        [_n("Flatten", ["x"], "f", axis=1), _n("Reshape", ["f", "s"], "y")],
        (0, 2, 3, 4),
        {"s": _i(0, 4, 6)},
        lambda x: x.reshape(x.shape[0], 4, 6),
    ),
    "transpose_squeeze": (
        [
            _n("Unsqueeze", ["x", "a"], "u"),
            _n("Transpose", ["u"], "t", perm=[1, 0, 3, 2]),
            _n("Squeeze", ["t", "a1"], "y"),
        ],
        (0, 3, 4),
        {"a": _i(1), "a1": _i(0)},
        lambda x: x.transpose(1, 2),
    ),
    "concat_batch_axis": (
        [_n("Neg", ["x"], "m"), _n("Concat", ["x", "m", "x"], "y", axis=0)],
        (0, 2, 3),
        {},
        lambda x: torch.cat([x, -x, x], 0),
    ),
    "concat_channels": (
        [_n("Neg", ["x"], "m"), _n("Concat", ["x", "m"], "y", axis=-1)],
        (0, 2, 3),
        {},
        lambda x: torch.cat([x, -x], -1),
    ),
    "split_batch_free_axis": (
        [helper.make_node("Split", ["x", "s"], ["a", "b"], axis=1), _n("Mul", ["b", "c"], "y")],
        (0, 5, 2),
        {"s": _i(2, 3), "c": np.float32([3.0])},
        lambda x: x[:, 2:] * 3,
    ),
    "slice_pad_path": (
        [_n("Slice", ["x", "st", "en", "ax"], "y")],
        (0, 4, 5),
        {"st": _i(1, -4), "en": _i(3, 100), "ax": _i(1, 2)},
        lambda x: x[:, 1:3, 1:],
    ),
    "slice_batch_axis_strided": (
        [_n("Slice", ["x", "st", "en", "ax", "sp"], "y")],
        (0, 4, 3),
        {"st": _i(-1, 0), "en": _i(-100, 100), "ax": _i(0, 1), "sp": _i(-1, 2)},
        lambda x: x.flip(0)[:, ::2],
    ),
    "gather": (
        [_n("Gather", ["x", "i"], "y", axis=-1)],
        (0, 2, 4),
        {"i": _i(3, -1, 0, 0)},
        lambda x: x[..., [3, 3, 0, 0]],
    ),
    "pad_constant_and_reflect": (
        [_n("Pad", ["x", "p"], "q"), _n("Pad", ["q", "p2"], "y", mode="reflect")],
        (0, 2, 3, 3),
        {"p": _i(0, 0, 1, 0, 0, 0, 0, 2), "p2": _i(0, 0, 2, 1, 0, 0, 1, 0)},
        lambda x: F.pad(F.pad(x, (0, 2, 1, 0)), (1, 0, 2, 1), mode="reflect"),
    ),
    "pad_runtime_pads": (
        [
            _n("Concat", ["p0", "p1"], "p", axis=0),
            _n("Pad", ["x", "p"], "q", mode="edge"),
            _n("Concat", ["p1", "p0"], "pc", axis=0),
            _n("Pad", ["q", "pc", "v"], "y"),
        ],
        (0, 2, 3),
        {"p0": _i(0, 1, 2), "p1": _i(0, 2, 0), "v": np.float32(1.5)},
        lambda x: F.pad(F.pad(x, (2, 0, 1, 2), mode="replicate"), (0, 2, 2, 1), value=1.5),
    ),
    "slice_runtime_ends": (
        [_n("Shape", ["x"], "sh", start=1), _n("Sub", ["sh", "one"], "en"), _n("Slice", ["x", "st", "en", "ax"], "y")],
        (0, 4, 5),
        {"one": _i(1), "st": _i(1, 0), "ax": _i(1, 2)},
        lambda x: x[:, 1:3, :4],
    ),
    "tile_expand": (
        [_n("Tile", ["x", "r"], "t"), _n("Expand", ["t", "e"], "y")],
        (0, 1, 3),
        {"r": _i(1, 2, 2), "e": _i(1, 2, 6)},
        lambda x: x.repeat(1, 2, 2),
    ),
    "resize_scales": (
        [_n("Resize", ["x", "", "sc"], "y", mode="linear")],
        (0, 2, 3, 4),
        {"sc": np.float32([1, 1, 2, 1.5])},
        lambda x: F.interpolate(x, size=(6, 6), mode="bilinear"),
    ),
    # the usual dynamic-batch export of interpolate(size=...): sizes = Concat(Shape(x)[:2], [h, w])
    "resize_runtime_sizes": (
        [
            _n("Shape", ["x"], "sh", start=0, end=2),
            _n("Concat", ["sh", "hw"], "sz", axis=0),
            _n("Resize", ["x", "", "", "sz"], "y", mode="cubic", cubic_coeff_a=-0.75),
        ],
        (0, 2, 3, 4),
        {"hw": _i(6, 8)},
        lambda x: F.interpolate(x, size=(6, 8), mode="bicubic"),
    ),
}


@pytest.mark.parametrize("name", sorted(DYNAMIC))
def test_dynamic_batch(name):
    nodes, shape, inits, fn = DYNAMIC[name]
    _dynamic_check(nodes, shape, inits, "y", fn)


def test_negative_pads_crop():
    """Negative Pad widths crop (the reference evaluator refuses them, so ORT float32 is checked against torch)."""
    nodes = [_n("Pad", ["x", "p"], "y")]
    _dynamic_check(nodes, (0, 3, 5), {"p": _i(0, -1, 2, 0, 1, -2)}, "y", lambda x: F.pad(x, (2, -2, -1, 1)))


SHAPE_OPS = {
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "Cast",
    "Expand",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "Pad",
    "Resize",
    "Tile",
}


def test_every_shape_op_rule_has_a_checked_row_here():
    """The rules module and this file agree: each rule it registers is listed, and checked by a row above.

    (It only asserted ``op in VJP_RULES``, which every row above already proves by running.) Now a rule added to
    shape_ops.py without a row here, or a row whose rule moved away, fails.
    """
    registered = {op for op, rule in VJP_RULES.items() if rule.__module__ == "onnxcam.autodiff.rules.shape_ops"}
    assert registered == SHAPE_OPS
    source = Path(__file__).read_text()
    unchecked = sorted(  # a call may be split over lines (ruff format): "check_vjp(\n    "Op", ..."
        op
        for op in SHAPE_OPS
        if not re.search(rf'(check_vjp|_n|make_node)\(\s*"{re.escape(op)}"', source) and op != "Resize"
    )
    assert unchecked == [] and "_check_resize(" in source

"""Float16 graphs through the rules that scatter-add gradients (MaxPool, Pad, Gather with repeats).

ONNX Runtime's CPU ScatterElements(reduction="add") has no float16 kernel, so
these rules accumulate in float32 and cast back (``rules/_scatter.py``). Each
row builds the node in float16, runs the engine's gradient graph in
onnxruntime, and compares it with the same rule's float64 gradient (also run
by onnxruntime), which
``check_vjp`` has already tied to finite differences and torch for these ops
(``test_vjp_norm_pool.py``, ``test_vjp_shape_ops.py``). Tolerance: float16
keeps 11 significant bits (unit roundoff 4.9e-4); the gradients here are sums
of at most a few float16 cotangents, so 1e-2 relative is far above rounding
and far below any routing error (a misplaced element is off by 100 %).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tests.vjp_check import gradient_model, ort_session

CASES = {
    # overlapping windows (stride 1 < kernel 3): one input element collects several cotangents
    "MaxPool": ({"kernel_shape": [3, 3], "strides": [1, 1]}, {}),
    "Pad": ({"mode": "reflect"}, {"pads": np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64)}),
    "Gather": ({"axis": 2}, {"idx": np.array([0, 3, 3, 1, 0], np.int64)}),
}


def _model(op: str, dtype: int, x_shape, attrs: dict, extra: dict):
    node = helper.make_node(op, ["x", *extra], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", dtype, x_shape)],
        [],
        [numpy_helper.from_array(v, k) for k, v in extra.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    from tests.vjp_check import with_inferred_outputs  # noqa: PLC0415

    return with_inferred_outputs(model, ["y"], strict_mode=True)


@pytest.mark.parametrize("op", sorted(CASES))
def test_float16_gradient_matches_float64(op):
    attrs, extra = CASES[op]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float16).astype(np.float64)  # same maxima in both
    m64 = _model(op, TensorProto.DOUBLE, x.shape, attrs, extra)
    g64_model, seeds64, _ = gradient_model(m64, ["x"], ["y"])
    y = ReferenceEvaluator(m64).run(None, {"x": x})[0]
    seed = rng.standard_normal(y.shape)
    # onnxruntime, not the reference evaluator: the latter's MaxPool returns wrong argmax indices
    want = ort_session(g64_model).run(None, {"x": x, seeds64["y"]: seed})[1]

    m16 = _model(op, TensorProto.FLOAT16, x.shape, attrs, extra)
    g16_model, seeds16, _ = gradient_model(m16, ["x"], ["y"])
    got = ort_session(g16_model).run(None, {"x": x.astype(np.float16), seeds16["y"]: seed.astype(np.float16)})[1]
    assert got.dtype == np.float16 and got.shape == x.shape
    err = np.abs(got.astype(np.float64) - want).max() / np.abs(want).max()
    assert err < 1e-2, f"{op}: float16 gradient differs from float64 by {err:.2e} (relative to max)"

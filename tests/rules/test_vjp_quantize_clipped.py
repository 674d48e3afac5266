"""QuantizeLinear's gradient below a folded ReLU is 0; every other clamp passes straight through.

Quantizers fold a ReLU into the QuantizeLinear after it by putting the zero
point at the bottom of the integer range (uint8 with z = 0, int8 with
z = -128), so DQ(Q(x)) is relu(x) rounded and clamped above at the calibrated
maximum. The rule must then give torch's ``relu`` gradient, ``g * (x > 0)``
(rounding aside). With the zero point anywhere else, the bottom clamp is a
calibration limit like the top one, and the gradient is ``g`` everywhere (the
plain straight-through estimator). Inputs span about five times the
representable range, so many elements clamp at both ends; values sit a
quarter step off the grid, never on a rounding tie or at 0.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxcam.graph.prepare import emitted_ir_version
from tests.vjp_check import gradient_model, ort_session

CASES = {
    # name: (shape, axis or None, zero point dtype, zero point value or None for no zp input, folds a ReLU)
    "uint8_zp0_relu": ((2, 3, 4), None, np.uint8, 0, True),
    "int8_zp-128_relu_per_channel": ((2, 3, 4, 5), 1, np.int8, -128, True),
    "no_zero_point_uint8_relu": ((3, 5), None, np.uint8, None, True),
    "int8_zp0_symmetric": ((2, 3, 4), None, np.int8, 0, False),
    "uint8_zp128_per_channel": ((3, 4, 2), 1, np.uint8, 128, False),
    # per channel, some zero points at the bottom of the range (a folded ReLU there) and some not
    "uint8_mixed_per_channel": ((2, 3, 4), 1, np.uint8, (0, 128, 0), (True, False, True)),
}


def _qdq(shape, axis, zp_dtype, zp_value, rng):
    shape_s = (shape[axis],) if axis is not None else ()
    scale = rng.uniform(0.02, 0.1, size=shape_s).astype(np.float32)
    inits = [numpy_helper.from_array(scale, "s")]
    q_in = ["x", "s"]
    if zp_value is not None:
        inits.append(numpy_helper.from_array(np.full(shape_s, zp_value, zp_dtype), "zp"))
        q_in.append("zp")
    attrs = {"axis": axis} if axis is not None else {}
    nodes = [
        helper.make_node("QuantizeLinear", q_in, ["q"], **attrs),
        helper.make_node("DequantizeLinear", ["q", *q_in[1:]], ["y"], **attrs),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = emitted_ir_version(19, 8)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True), scale


@pytest.mark.parametrize("case", sorted(CASES))
def test_folded_relu_masks_and_calibration_clamps_pass(case):
    shape, axis, zp_dtype, zp_value, relu = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    model, scale = _qdq(shape, axis, zp_dtype, zp_value, rng)
    gm, seeds, _ = gradient_model(model, ["x"], ["y"])
    along = [1] * len(shape)
    if axis is not None:
        along[axis] = -1
    steps = rng.integers(-600, 600, size=shape) + 0.25
    x = (steps * scale.reshape(along)).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    info = np.iinfo(zp_dtype)
    zero = np.asarray(zp_value if zp_value is not None else 0, np.float64)
    level = np.round(steps) + (zero.reshape(along) if zero.ndim else zero)
    assert (level < info.min).any() and (level > info.max).any(), "both ends of the range must clamp"

    tx = torch.tensor(x, requires_grad=True)
    relu_mask = torch.tensor(np.asarray(relu).reshape(along) if np.ndim(relu) else bool(relu))
    (want,) = torch.autograd.grad(torch.where(relu_mask, torch.relu(tx), tx), tx, torch.tensor(g))
    got = ort_session(gm).run(None, {"x": x, seeds["y"]: g})[1]
    ref = ReferenceEvaluator(gm).run(None, {"x": x, seeds["y"]: g})[1]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ref, want.numpy(), rtol=1e-6, atol=1e-7)

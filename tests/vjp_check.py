"""Check one VJP rule three ways: float64 finite differences, torch autograd, and ONNX Runtime.

A test row builds a one-node ONNX model, lets the engine append its gradient
subgraph for a random cotangent, and compares

* the float64 gradient (onnx's reference evaluator) with central finite
  differences of ``<seed, f(x)>``;
* the same gradient with ``torch.autograd.grad`` of a torch twin of the op;
* the float32 gradient computed by onnxruntime with the float64 one, which
  proves onnxruntime accepts every op the rule emits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxcam.autodiff import build_vjp
from onnxcam.graph.builder import GraphBuilder
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.prepare import WORKING_OPSET, emitted_ir_version

FLOAT = {np.dtype(np.float64): TensorProto.DOUBLE, np.dtype(np.float32): TensorProto.FLOAT}


def _as(arr: np.ndarray, dtype) -> np.ndarray:
    return arr.astype(dtype) if np.issubdtype(arr.dtype, np.floating) else arr


def build_single_node(
    op_type: str,
    inputs: dict[str, np.ndarray],
    wrt: Sequence[str],
    attrs: dict,
    n_outputs: int,
    dtype,
    opset: int,
    domain: str = "",
    float_outputs: Sequence[int] | None = None,
    keep_dtype: Sequence[str] = (),
):
    """Model ``wrt`` -> node -> outputs; non-``wrt`` inputs become initializers. Returns (model, out names).

    Float inputs take ``dtype`` except those named in ``keep_dtype`` (e.g. Resize's float32 scales).
    """
    ins, inits = [], []
    node_inputs = []
    for name, arr in inputs.items():
        if arr is None:
            node_inputs.append("")
            continue
        node_inputs.append(name)
        arr = np.asarray(arr) if name in keep_dtype else _as(np.asarray(arr), dtype)
        if name in wrt:
            ins.append(helper.make_tensor_value_info(name, FLOAT[np.dtype(dtype)], arr.shape))
        else:
            inits.append(numpy_helper.from_array(arr, name))
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, node_inputs, outs, name="node_under_test", domain=domain, **attrs)
    graph = helper.make_graph([node], "single", ins, [], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = emitted_ir_version(opset, 8)
    return with_inferred_outputs(model, outs, strict_mode=True, data_prop=True), outs


def with_inferred_outputs(model: onnx.ModelProto, outs: Sequence[str], **infer_kwargs) -> onnx.ModelProto:
    """``model`` shape-inferred afresh (its value_info and outputs dropped), declaring ``outs`` as outputs.

    ``infer_kwargs`` go to ``onnx.shape_inference.infer_shapes``; ``model`` itself is emptied of both lists.
    """
    del model.graph.value_info[:]
    del model.graph.output[:]
    model = onnx.shape_inference.infer_shapes(model, **infer_kwargs)
    inferred = {vi.name: vi for vi in model.graph.value_info}
    model.graph.output.extend(inferred[o] for o in outs)
    return model


def ort_session(model: onnx.ModelProto):
    """A CPU onnxruntime session for ``model`` that logs errors only."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_grad_vs_torch(
    sess,
    inputs: dict[str, np.ndarray],
    seed_name: str,
    torch_fn: Callable,
    rng: np.random.Generator,
    check_forward: bool = True,
) -> None:
    """Run a gradient model (outputs: y, then d/d each input) in onnxruntime against torch autograd.

    ``inputs`` (float64, fed to onnxruntime as float32) are all differentiated, in order; the
    cotangent fed as ``seed_name`` is drawn from ``rng`` once torch has the output's shape.
    """
    import torch

    tin = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
    ty = torch_fn(**tin)
    seed = rng.standard_normal(tuple(ty.shape))
    tgrads = torch.autograd.grad(ty, list(tin.values()), torch.tensor(seed))
    feeds = {k: v.astype(np.float32) for k, v in inputs.items()}
    y, *grads = sess.run(None, {**feeds, seed_name: seed.astype(np.float32)})
    if check_forward:
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    for g, tg in zip(grads, tgrads):
        np.testing.assert_allclose(g, tg.numpy(), rtol=1e-4, atol=1e-4)


def gradient_model(model: onnx.ModelProto, wrt: Sequence[str], seeded: Sequence[str], rules=None):
    """Append the engine's gradient subgraph; outputs are the forward outputs then d/d wrt."""
    index = GraphIndex(model)
    opset = model.opset_import[0].version
    b = GraphBuilder(opset, taken_names=index.names)
    seeds = {}
    new_inputs = []
    for out in seeded:
        t = index.type_of(out)
        seed = b.reserve(f"seed_{out}")
        seeds[out] = seed
        new_inputs.append(helper.make_tensor_value_info(seed, t.elem_type, t.shape))
    grads = build_vjp(index, b, wrt, seeds, rules=rules)
    g = onnx.GraphProto()
    g.CopyFrom(model.graph)
    g.node.extend(b.nodes)
    g.initializer.extend(b.initializers)
    g.input.extend(new_inputs)
    del g.output[:]
    for out in seeded:
        t = index.type_of(out)
        g.output.append(helper.make_tensor_value_info(out, t.elem_type, t.shape))
    for w in wrt:
        t = index.type_of(w)
        g.output.append(helper.make_tensor_value_info(grads[w], t.elem_type, t.shape))
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    onnx.checker.check_model(m, full_check=True)
    return m, seeds, [grads[w] for w in wrt]


def check_vjp(
    op_type: str,
    inputs: dict[str, np.ndarray],
    wrt: Sequence[str],
    attrs: dict | None = None,
    torch_fn: Callable | None = None,
    n_outputs: int = 1,
    seeded: Sequence[int] = (0,),
    fd: bool = True,
    opset: int = WORKING_OPSET,
    rng_seed: int = 0,
    fd_eps: float = 1e-6,
    atol: float = 1e-6,
    ort: bool = True,
    rules=None,
    keep_dtype: Sequence[str] = (),
) -> None:
    """Assert that the engine's gradient of ``op_type`` matches finite differences, torch and ORT."""
    attrs = attrs or {}
    rng = np.random.default_rng(rng_seed)
    model64, outs = build_single_node(op_type, inputs, wrt, attrs, n_outputs, np.float64, opset, keep_dtype=keep_dtype)
    seeded_names = [outs[i] for i in seeded]
    gm64, seeds, grad_names = gradient_model(model64, wrt, seeded_names, rules=rules)

    feeds = {w: np.asarray(inputs[w], dtype=np.float64) for w in wrt}
    fwd = ReferenceEvaluator(model64).run(None, feeds)
    seed_vals = {seeds[outs[i]]: rng.standard_normal(np.shape(fwd[i])) for i in seeded}
    res = ReferenceEvaluator(gm64).run(None, {**feeds, **seed_vals})
    grads64 = res[len(seeded_names) :]
    for w, g in zip(wrt, grads64):
        assert g.shape == feeds[w].shape, f"gradient of {w} has shape {g.shape}, input has {feeds[w].shape}"

    if fd:
        fmodel = ReferenceEvaluator(model64)

        def score(fe):
            ys = fmodel.run(None, fe)
            return sum(float(np.sum(ys[i] * seed_vals[seeds[outs[i]]])) for i in seeded)

        for w, g in zip(wrt, grads64):
            x = feeds[w]
            num = np.zeros_like(x)
            flat = x.reshape(-1)
            for k in range(flat.size):
                xp, xm = flat.copy(), flat.copy()
                xp[k] += fd_eps
                xm[k] -= fd_eps
                num.reshape(-1)[k] = (
                    score({**feeds, w: xp.reshape(x.shape)}) - score({**feeds, w: xm.reshape(x.shape)})
                ) / (2 * fd_eps)
            np.testing.assert_allclose(
                g,
                num,
                rtol=1e-5,
                atol=atol * max(1.0, np.abs(num).max()),
                err_msg=f"{op_type}: d/d{w} differs from finite differences",
            )

    if torch_fn is not None:
        import torch

        tin = {
            k: (
                torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=k in wrt)
                if v is not None and np.issubdtype(np.asarray(v).dtype, np.floating)
                else (torch.tensor(np.asarray(v)) if v is not None else None)
            )
            for k, v in inputs.items()
        }
        touts = torch_fn(**tin)
        if not isinstance(touts, (tuple, list)):
            touts = (touts,)
        ys = [touts[i] for i in seeded]
        gs = [torch.tensor(seed_vals[seeds[outs[i]]]) for i in seeded]
        tgrads = torch.autograd.grad(ys, [tin[w] for w in wrt], gs, allow_unused=True)
        for w, g, tg in zip(wrt, grads64, tgrads):
            tg = np.zeros_like(g) if tg is None else tg.detach().numpy()
            np.testing.assert_allclose(
                g,
                tg,
                rtol=1e-7,
                atol=1e-9 * max(1.0, np.abs(tg).max()),
                err_msg=f"{op_type}: d/d{w} differs from torch autograd",
            )

    if ort:
        model32, _ = build_single_node(op_type, inputs, wrt, attrs, n_outputs, np.float32, opset, keep_dtype=keep_dtype)
        gm32, seeds32, _ = gradient_model(model32, wrt, seeded_names, rules=rules)
        sess = ort_session(gm32)
        feeds32 = {w: feeds[w].astype(np.float32) for w in wrt}
        feeds32.update({seeds32[o]: seed_vals[seeds[o]].astype(np.float32) for o in seeded_names})
        out32 = sess.run(None, feeds32)[len(seeded_names) :]
        for w, g32, g64 in zip(wrt, out32, grads64):
            scale = max(1.0, float(np.abs(g64).max()))
            np.testing.assert_allclose(
                g32, g64, rtol=1e-4, atol=1e-4 * scale, err_msg=f"{op_type}: onnxruntime float32 gradient of {w} is off"
            )

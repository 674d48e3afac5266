"""Fill in the sizes shape inference leaves unknown, by running the model on a few small batches.

Transformer exports (Hugging Face, timm, torchvision's ViT and Swin) compute
their sizes at run time: ``Shape -> Gather -> Concat -> Reshape`` chains, an
``Expand`` of the class token, ``Pad`` amounts for shifted windows. ONNX's
shape inference with data propagation leaves many of those symbolic, and so
does onnxscript's constant folder even with the batch fixed (measured on a
torchvision Swin-T: 350 of 618 tensors still unsized); both are static
analyses that stop at the first op they do not evaluate. ONNX Runtime
evaluates every op. So where shape inference leaves a gap and the inputs'
non-batch sizes are static, the model runs on a zero batch of one image, on
a zero batch of two, and on one random image, with a ``Shape`` node on every
gap tensor: a dim equal in every run is static, one equal to the batch size
in the zero runs is the batch axis, and anything else (a size that changed
with the pixel values included) stays unknown. Only sizes come back, and the
session runs in priority order so that each tensor is freed once its
consumers and its ``Shape`` have run (in ONNX Runtime's default order the
appended ``Shape`` nodes run last and every probed tensor stays alive: 7x the
peak memory of one inference, measured on a chain of 12 MB tensors, against
below one inference in priority order). It costs three small inferences,
once per model load, paid by any command that loads a model with gaps.

Sizes after data-dependent ops (``NonZero``, ``NonMaxSuppression``, ``TopK``
and friends) keep what shape inference said: their size on a zero image says
nothing about a real one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxcam.errors import OnnxcamError
from onnxcam.graph.index import Dim, GraphIndex, Shape
from onnxcam.graph.weights import WeightFolder

#: Ops whose output sizes depend on the values of their inputs, not only on their sizes.
DATA_DEPENDENT_OPS = {
    "NonZero",
    "NonMaxSuppression",
    "Unique",
    "Compress",
    "TopK",
    "Loop",
    "If",
    "Scan",
    "StringSplit",
    "RandomUniformLike",
    "RandomNormalLike",
    "Multinomial",
}
#: The two batch sizes the model is probed at; a dim that equals them in both runs is the batch axis.
PROBE_BATCHES = (1, 2)


def fill_unknown_shapes(model: onnx.ModelProto, weights: WeightFolder | None) -> onnx.ModelProto:
    """``model`` with the gaps shape inference left filled in from a probe run, or unchanged.

    Unchanged when there is no gap, when an input has a dynamic non-batch size
    (there is then no one size to probe), or when ONNX Runtime is missing or
    fails on a zero batch: static shapes are a help to the rest of onnxcam,
    not a requirement, and a model that fails here fails later with a clear
    error. ``model`` itself is not changed.
    """
    index = GraphIndex(model, weights)
    batch = _input_batch_dim(index)
    gaps = _gaps(index, batch)
    if not gaps or batch is False:
        return model
    probed = _probe(index, gaps, weights, batch)
    if not probed:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    by_name = {vi.name: vi for vi in copy.graph.value_info}
    outputs = {vi.name: vi for vi in copy.graph.output}
    for name, shape in probed.items():
        elem_type = index.known_type(name).elem_type
        fresh = helper.make_tensor_value_info(name, elem_type, list(shape))
        target = outputs.get(name) or by_name.get(name)
        if target is None:
            copy.graph.value_info.append(fresh)
        else:
            target.type.CopyFrom(fresh.type)
    return copy


def _input_batch_dim(index: GraphIndex) -> Dim | bool:
    """The batch dim every input shares (an int, a symbol, or None); False when some non-batch size is dynamic."""
    batch: Dim = None
    for name in index.inputs:
        shape = index.shape(name)
        if shape is None or not shape or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            return False
        batch = shape[0]
    return batch


def _gaps(index: GraphIndex, batch: Dim | bool) -> list[str]:
    """Tensors with a dim shape inference did not pin down (other than a dim named like the inputs' batch)."""
    tainted = _data_dependent(index)
    gaps = []
    for node in index.nodes:
        for out in node.output:
            t = index.type_of(out)
            if not out or out in tainted or t is None or t.elem_type == TensorProto.UNDEFINED:
                continue
            if t.shape is None or any(not (isinstance(d, int) and d > 0) and d != batch for d in t.shape):
                gaps.append(out)
    return gaps


def _data_dependent(index: GraphIndex) -> set[str]:
    """Every tensor computed (by value or by size) from the output of a data-dependent op."""
    tainted: set[str] = set()
    for node in index.nodes:
        if node.op_type in DATA_DEPENDENT_OPS or any(i in tainted for i in node.input if i):
            tainted.update(o for o in node.output if o)
    return tainted


def _probe(index: GraphIndex, tensors: list[str], weights: WeightFolder | None, batch: Dim) -> dict[str, Shape]:
    """The sizes of ``tensors`` from runs at :data:`PROBE_BATCHES` (one run when the batch is static)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(index.model)
    del probe.graph.output[:]
    shape_names = [f"onnxcam_probe_shape_{i}" for i in range(len(tensors))]
    for tensor, name in zip(tensors, shape_names):
        probe.graph.node.append(helper.make_node("Shape", [tensor], [name]))
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.INT64, [None]))
    batches = PROBE_BATCHES if not isinstance(batch, int) else (batch,)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED  # see the module docstring: memory
    try:
        if weights is not None:
            session = ort.InferenceSession(
                str(weights.save(probe, "shape_probe.onnx")), options, ["CPUExecutionProvider"]
            )
        else:
            session = ort.InferenceSession(probe.SerializeToString(), options, ["CPUExecutionProvider"])
        zeros = [session.run(shape_names, sample_feeds(index, n)) for n in batches]
        noise = session.run(shape_names, sample_feeds(index, batches[0], np.random.default_rng(0)))
    except Exception:  # onnxruntime's own exception types; a model that fails here fails later, with a clear error
        return {}
    return {tensor: _merged(batches, [run[i] for run in zeros], batch, noise[i]) for i, tensor in enumerate(tensors)}


def sample_feeds(index: GraphIndex, batch: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """A batch for every model input, whose non-batch sizes must be static: zeros, or standard normal with ``rng``."""
    feeds = {}
    for name in index.inputs:
        t = index.known_type(name)
        shape = (batch, *(d for d in t.dims[1:] if isinstance(d, int) and d > 0))
        if len(shape) != len(t.dims):
            raise OnnxcamError(f"input {name!r} has a dynamic size {t.dims}; onnxcam cannot make a sample of it")
        feeds[name] = np.zeros(shape, t.np_dtype) if rng is None else rng.standard_normal(shape).astype(t.np_dtype)
    return feeds


def _merged(batches: Iterable[int], shapes: list[np.ndarray], batch: Dim, other: np.ndarray) -> Shape:
    """One shape from a tensor's shapes at several batch sizes (zero images) and on one random image.

    Ints where all agree, the batch dim where the zero runs follow the batch
    size, None where anything else differs (the pixel values changed it).
    """
    if len({len(s) for s in [*shapes, other]}) != 1:  # the rank itself changed: say nothing
        return tuple(None for _ in shapes[0])
    merged: list[Dim] = []
    for k, dims in enumerate(zip(*(s.tolist() for s in shapes))):
        if int(other[k]) != dims[0]:
            merged.append(None)
        elif len(set(dims)) == 1:
            merged.append(int(dims[0]))
        elif list(dims) == list(batches):
            merged.append(batch)
        else:
            merged.append(None)
    return tuple(merged)

"""Assemble the explainer graph: the model, its gradient tail and the CAM head, in one ONNX graph.

The target enters as a *seed* over one tensor: ``score = sum(tensor * seed)``,
so ``dScore/dtensor = seed`` and every kind of target (a class, one output
element, later a region or a reference embedding) uses the same mechanism.
Two graph inputs feed the seed:

* ``class`` mode: ``target_class`` (int64, one per image; -1 means the
  image's top-1 class) becomes a one-hot seed inside the graph, so an
  exported file is servable with nothing but a class id;
* ``seed`` mode: ``target_seed`` is the seed tensor itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxcam.autodiff import build_vjp
from onnxcam.explain.rollout import attention_maps, rolled_out
from onnxcam.graph.builder import GraphBuilder
from onnxcam.errors import OnnxcamError, TargetError
from onnxcam.graph.index import Dim, GraphIndex, static_dims
from onnxcam.graph.layers import CandidateLayer, image_axes, image_input, image_size
from onnxcam.graph.load import default_opset
from onnxcam.graph.tokens import token_map
from onnxcam.graph.prepare import emitted_ir_version
from onnxcam.methods import channel_sum, method_spec
from onnxcam.methods.guided import GUIDED_RULES
from onnxcam.methods.upsampling import extreme_samples, fits_matrices, interpolation_matrix

#: Ops after which the paper's score is the op's *input* (the logit), not its output.
_SQUASHING_OPS = {"Softmax", "LogSoftmax", "Sigmoid"}
_PASS_THROUGH = {"Identity"}
#: Modes whose target input is an int64 class id per image: "class" (-1 = top-1) and "rank" (-r = rank r).
_CLASS_MODES = ("class", "rank")


@dataclass(frozen=True)
class ScoreSpec:
    """Which tensor the seed multiplies, and where its classes are."""

    output: str  # the model output the user targets
    tensor: str  # the seeded tensor: the output itself, or the logit before a Softmax/LogSoftmax/Sigmoid
    from_logit: bool
    class_axis: int | None  # axis 1 when the tensor is (N, K) or (N, K, 1, ...), else None
    squash: str | None = None  # the final Softmax/LogSoftmax/Sigmoid producing the output, if any

    def describe(self) -> str:
        if self.from_logit:
            return f"the logit {self.tensor!r} feeding output {self.output!r}"
        return f"output {self.output!r}"


def resolve_score(index: GraphIndex, output: str | int, use_logit: bool = True) -> ScoreSpec:
    """Find the tensor to seed for ``output`` (a name or position among the model outputs)."""
    if isinstance(output, (int, np.integer)):
        if not 0 <= int(output) < len(index.outputs):
            raise TargetError(
                f"output index {output} is out of range: the model has {len(index.outputs)} output(s): {index.outputs}"
            )
        name = index.outputs[int(output)]
    else:
        if output not in index.outputs:
            raise TargetError(f"the model has no output {output!r}; its outputs are {index.outputs}")
        name = output
    tensor, from_logit = name, False
    node = index.producer.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = index.producer.get(node.input[0])
    squash = node.op_type if node is not None and node.op_type in _SQUASHING_OPS else None
    if use_logit and squash is not None and node is not None:
        tensor, from_logit = node.input[0], True
    t = index.type_of(tensor)
    if t is None or not t.is_float:
        raise TargetError(f"output {name!r} is not a floating-point tensor, so it has no gradient to explain")
    class_axis = None
    if t.shape is not None and len(t.shape) >= 2 and all(d == 1 for d in t.shape[2:]):
        class_axis = 1
    return ScoreSpec(name, tensor, from_logit, class_axis, squash)


@dataclass
class ExplainerGraph:
    """The built model and the names a runner needs to feed and fetch."""

    model: onnx.ModelProto
    mode: str  # "class", "rank" or "seed" (see build_explainer)
    model_inputs: list[str]
    target_input: str
    model_outputs: list[str]
    cam: str
    cam_lowres: list[str]
    target_output: str | None
    layers: list[CandidateLayer]
    score: ScoreSpec
    method: str
    guided_backprop: str | None = None
    guided_gradcam: str | None = None
    exposed: list[tuple[str, str]] = field(default_factory=list)  # (activation, gradient) per layer, as maps
    image: str = ""  # the model input the heatmap covers (see image_input)
    exposed_tokens: dict[int, str] = field(default_factory=dict)  # token layer i's activations, (N, T, C)


def build_explainer(
    index: GraphIndex,
    layers: Sequence[CandidateLayer],
    score: ScoreSpec,
    method: str = "gradcam",
    mode: str = "class",
    guided: bool = False,
    expose: bool = False,
    portable: bool = False,
) -> ExplainerGraph:
    """Return a new model computing the original outputs plus ``cam``, ``cam_lowres`` and the target.

    ``mode`` says what the extra input is: "class", an int64 class id per
    image (-1: its top-1 class); "rank", the same but -r explains each image's
    rank-r class (what a top-k run feeds); "seed", a tensor shaped like the
    score that weights its elements (any other target). ``expose`` adds each layer's ``activation_i`` and
    ``gradient_i`` (float32)
    for methods that finish on the host. ``guided`` adds ``guided_backprop`` (the input gradient under guided-ReLU
    rules) and ``guided_gradcam`` (that times the upsampled ``cam``). The
    model shares ``index``'s external weights; the caller saves it beside them
    and runs the ONNX checker on the file. ``portable`` computes the same with
    ops every execution provider has: the registry's portable rules (MaxPool's
    gradient as a mask, no Indices or scatter), no attribute equal to its
    default, and ``Shape``/``Size`` of static tensors as constants (see
    :attr:`GraphBuilder.portable`).
    """
    rollout = method_spec(method).kind == "attention"
    if method_spec(method).formula is None and not rollout:
        raise OnnxcamError(f"method {method!r} has no in-graph formula; build {method_spec(method).graph_method!r}")
    if rollout and (expose or len(layers) != 1):
        raise OnnxcamError(
            f"method {method!r} rolls out a transformer's attention maps over one token layer's grid: pass one layer, "
            "without eigen_smooth or host-side methods"
        )
    if mode in _CLASS_MODES and score.class_axis is None:
        raise TargetError(
            f"{score.describe()} has shape {index.shape(score.tensor)}, not (batch, classes); "
            "explain one element of it with onnxcam.OutputTarget(output, index) instead"
        )
    opset = max(default_opset(index.model), 17)
    b = GraphBuilder(
        opset, taken_names=index.names | set(index.outputs), portable_shapes=index.shape if portable else None
    )
    image = image_input(index, layers)
    batch_dim = (index.shape(image) or ("N",))[0]
    batch_dim = batch_dim if batch_dim is not None else "N"
    score_type = index.known_type(score.tensor)
    new_inputs, new_outputs = [], []

    one_hot: dict[str, str] = {}
    if mode in _CLASS_MODES:
        target_input = b.reserve("target_class")
        new_inputs.append(helper.make_tensor_value_info(target_input, TensorProto.INT64, [batch_dim]))
        score_shape = index.shape(score.tensor)
        rank2 = score_shape is not None and len(score_shape) == 2  # (N, K): no reshaping around the one-hot
        flat = score.tensor if rank2 else b.op("Flatten", score.tensor, axis=1, hint="scores")
        classes = score_shape[1] if score_shape is not None and len(score_shape) >= 2 else None
        if isinstance(classes, int) and classes > 0:  # trailing axes are 1 (class_axis), so flat has K too
            depth = b.ints([classes])
        else:
            depth = b.shape_of(flat, start=1, end=2)
        target_output = b.reserve("target")
        if mode == "rank":
            picked = _ranked_class(b, flat, target_input, depth)
        else:  # a sort of every class costs more than the rest of the target selection together
            picked = b.op("ArgMax", flat, axis=1, keepdims=0, hint="top1")
        b.op("Where", b.op("Less", target_input, b.ints(0)), picked, target_input, outputs=[target_output])
        new_outputs.append(helper.make_tensor_value_info(target_output, TensorProto.INT64, [batch_dim]))
        if portable and isinstance(classes, int) and classes > 0:  # TensorRT, WebNN, WebGPU have no OneHot
            hit = b.op("Equal", b.op("Unsqueeze", target_output, b.ints([1])), b.ints(list(range(classes))))
            onehot = b.op("Cast", hit, to=score_type.elem_type, hint="onehot")
        else:
            on_off = b.const([0.0, 1.0], score_type.np_dtype)
            onehot = b.op("OneHot", target_output, depth, on_off, axis=-1, hint="onehot")
        if rank2:
            seed, one_hot = onehot, {onehot: target_output}
        else:
            seed = b.op("Reshape", onehot, b.shape_of(score.tensor), hint="seed")
    elif mode == "seed":
        target_input = b.reserve("target_seed")
        shape = list(score_type.shape) if score_type.shape is not None else None
        if shape:
            shape[0] = batch_dim
        new_inputs.append(helper.make_tensor_value_info(target_input, score_type.elem_type, shape))
        target_output = None
        seed = target_input
    else:
        raise ValueError(f"unknown mode {mode!r}")

    sources = attention_maps(index, layers[0], score.tensor) if rollout else [layer.name for layer in layers]
    grads = build_vjp(index, b, sources, {score.tensor: seed}, one_hot=one_hot)

    hw = _input_hw(index, b, image)
    H, W = in_hw = image_size(index, image)
    cam = b.reserve("cam")
    cams_lowres, cams = [], []
    exposed = []
    tokens: dict[int, str] = {}  # token layers' raw activations, for a host method that feeds them back
    for i, layer in enumerate(layers):
        if rollout:
            maps = {name: _as_float32(index, b, name) for name in sources}
            weights = {maps[name]: _as_float32(index, b, grads[name], like=name) for name in sources}
            ranks = [len(index.known_type(name).dims) for name in sources]
            summed = rolled_out(b, list(maps.values()), weights, ranks, layer)
            cams_lowres.append(b.reserve("cam_lowres"))
            b.op("Relu", summed, outputs=[cams_lowres[-1]])
            h, w = layer.spatial_size
            new_outputs.append(helper.make_tensor_value_info(cams_lowres[-1], TensorProto.FLOAT, [batch_dim, h, w]))
            cams.append(_upsampled_cam(b, cams_lowres[-1], (h, w), in_hw, hw, out=cam))
            continue
        A, G = _as_float32(index, b, layer.name), _as_float32(index, b, grads[layer.name], like=layer.name)
        if layer.tokens is not None:  # the CAM head reads the patch tokens as an (N, C, h, w) map
            if expose:  # batch first, as every output is, whatever the layer's own order
                tokens[i] = b.reserve(f"tokens_{i}")
                b.op("Transpose", A, perm=[layer.tokens.batch_axis, layer.tokens.token_axis, 2], outputs=[tokens[i]])
                shape = [batch_dim, _dim(layer.shape[layer.tokens.token_axis]), _dim(layer.shape[2])]
                new_outputs.append(helper.make_tensor_value_info(tokens[i], TensorProto.FLOAT, shape))
            A, G = token_map(b, A, layer.tokens), token_map(b, G, layer.tokens)
        if expose:
            pair = (b.reserve(f"activation_{i}"), b.reserve(f"gradient_{i}"))
            shape = [batch_dim, *(_dim(d) for d in layer.map_shape[1:])]
            for src, name in zip((A, G), pair):
                b.op("Identity", src, outputs=[name])
                new_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
            exposed.append(pair)
        summed = channel_sum(b, method, A, G, layer.channel_axis, layer.spatial_size)
        name = b.reserve("cam_lowres" if len(layers) == 1 else f"cam_lowres_{i}")
        b.op("Relu", summed, outputs=[name])
        cams_lowres.append(name)
        h, w = layer.spatial_size
        new_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch_dim, h, w]))
        cams.append(_upsampled_cam(b, name, (h, w), in_hw, hw, out=cam if len(layers) == 1 else None))
    if len(cams) > 1:
        _normalise(b, b.op("Mean", *cams, hint="fused"), out=cam)
    new_outputs.insert(0, helper.make_tensor_value_info(cam, TensorProto.FLOAT, [batch_dim, _dim(H), _dim(W)]))

    guided_names = _guided_outputs(index, b, image, score, seed, one_hot, cam, batch_dim, new_outputs) if guided else ()

    model = _assemble(index, b, new_inputs, new_outputs)
    guided_backprop, guided_gradcam = guided_names or (None, None)
    return ExplainerGraph(
        model,
        mode,
        list(index.inputs),
        target_input,
        list(index.outputs),
        cam,
        cams_lowres,
        target_output,
        list(layers),
        score,
        method,
        guided_backprop,
        guided_gradcam,
        exposed=exposed,
        image=image,
        exposed_tokens=tokens,
    )


def _ranked_class(b: GraphBuilder, flat: str, target: str, depth: str) -> str:
    """The class of rank ``-target`` (-1: top-1, -2: second, ...), so one batch can explain each image's top k.

    TopK puts the lower index first among equal scores, the same tie-break as ArgMax. It keeps only
    as many classes as the deepest rank asked for, so the usual top-1 batch costs what an ArgMax does
    instead of sorting every class.
    """
    last = b.op("Sub", depth, b.ints(1), hint="last_rank")
    rank = b.op("Max", b.op("Min", b.op("Sub", b.ints(-1), target), last), b.ints(0), hint="rank")
    k = b.op("Add", b.reduce("ReduceMax", rank, [0], keepdims=True, hint="deepest_rank"), b.ints(1), hint="k")
    ranked = b.op("TopK", flat, k, axis=1, largest=1, sorted=1, outputs=2, hint="ranked")[1]
    picked = b.op("GatherElements", ranked, b.op("Unsqueeze", rank, b.ints([1])), axis=1, hint="picked")
    return b.op("Squeeze", picked, b.ints([1]), hint="ranked_class")


def _guided_outputs(
    index: GraphIndex,
    b: GraphBuilder,
    image: str,
    score: ScoreSpec,
    seed: str,
    one_hot: dict[str, str],
    cam: str,
    batch_dim: Dim,
    new_outputs: list[onnx.ValueInfoProto],
) -> tuple[str, str]:
    """Guided backprop down to the image input, and Guided Grad-CAM (its product with ``cam``)."""
    grad = build_vjp(index, b, [image], {score.tensor: seed}, rules=GUIDED_RULES, one_hot=one_hot)[image]
    guided = b.reserve("guided_backprop")
    b.op("Identity", _as_float32(index, b, grad, like=image), outputs=[guided])
    channel_axis = 1 if image_axes(index, image) == (2, 3) else 3
    product = b.reserve("guided_gradcam")
    b.op("Mul", guided, b.op("Unsqueeze", cam, b.ints([channel_axis]), hint="cam_c"), outputs=[product])
    shape = [batch_dim, *index.known_type(image).dims[1:]]
    for name in (guided, product):
        new_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [_dim(d) for d in shape]))
    return guided, product


def _dim(d: Dim) -> int | str | None:
    """A dimension as a value-info shape takes it: an int or a symbol, None when unknown (0 included)."""
    return d if isinstance(d, (int, str)) and d != 0 else None


def _as_float32(index: GraphIndex, b: GraphBuilder, name: str, like: str | None = None) -> str:
    """The CAM head always computes in float32, whatever precision the model runs at.

    ``like``: a model tensor of ``name``'s type, for emitted tensors (gradients) the index does not know.
    """
    src = name
    t = index.type_of(like or name)
    if t is not None and t.elem_type != TensorProto.FLOAT:
        return b.op("Cast", src, to=TensorProto.FLOAT, hint="f32")
    return src


def _input_hw(index: GraphIndex, b: GraphBuilder, image: str) -> str | None:
    """int64 [H, W] of the image input read at run time; None when static (the head then needs no shape arithmetic)."""
    if all(isinstance(d, int) and d > 0 for d in image_size(index, image)):
        return None
    axes = image_axes(index, image)
    return b.op("Gather", b.shape_of(image), b.ints(list(axes)), axis=0, hint="input_hw")


def _upsampled_cam(
    b: GraphBuilder,
    cam_lowres: str,
    low_hw: tuple[Dim, ...],
    in_hw: tuple[Dim, Dim],
    hw: str | None,
    out: str | None = None,
) -> str:
    """``cam_lowres`` resized to the input's (H, W) (bilinear, half-pixel: cv2.resize's), then min-max normalised.

    Static sizes: the resize is ``R_h @ cam @ R_w^T`` with constant
    interpolation matrices (see :mod:`onnxcam.methods.upsampling` for why not
    Resize), and the normalisation happens *before* it: the rows of ``R`` sum
    to one, so ``R_h ((L - lo) / s) R_w^T = (R_h L R_w^T - lo) / s``. The extremes
    ``lo``, ``hi`` of the full-size map are read from the few rows and columns
    that can hold them (:func:`extreme_samples`), and a final Clip absorbs the
    rounding of the last product. Nothing but that product and the Clip touches
    H x W values, which matters on small models whose whole inference costs a
    few such passes. Dynamic sizes, and matrices too large to embed: a Resize to
    the input's [H, W], then the min-max over every pixel.
    """
    low, full = static_dims(low_hw), static_dims(in_hw)
    if hw is None and low is not None and full is not None and fits_matrices(low, full):
        rows, cols = (interpolation_matrix(n, size) for n, size in zip(low, full))
        probe_rows = b.const(rows[extreme_samples(low[0], full[0])], np.float32)
        probe_cols = b.const(cols[extreme_samples(low[1], full[1])].T, np.float32)
        probe = b.op("MatMul", probe_rows, b.op("MatMul", cam_lowres, probe_cols, hint="probe_cols"), hint="cam_probe")
        normalised = _normalise(b, cam_lowres, extremes_of=probe)
        upsampled = b.op(
            "MatMul",
            b.const(rows, np.float32),
            b.op("MatMul", normalised, b.const(cols.T, np.float32), hint="cam_cols"),
            hint="cam_hw",
        )
        return b.op_outputs(
            "Clip",
            upsampled,
            b.const(0.0, np.float32),
            b.const(1.0, np.float32),
            hint="cam_norm",
            outputs=[out] if out else 1,
        )[0]
    c4 = b.op("Unsqueeze", cam_lowres, b.ints([1]), hint="cam4")
    if hw is None:  # the input's size is static (see _input_hw), but the matrices would be too large
        hw = b.ints([d for d in full or () if isinstance(d, int)])
    size = b.op("Concat", b.shape_of(c4, start=0, end=2), hw, axis=0, hint="cam_sizes")
    up = b.op("Resize", c4, "", "", size, mode="linear", coordinate_transformation_mode="half_pixel", hint="cam_up")
    return _normalise(b, b.op("Squeeze", up, b.ints([1]), hint="cam_hw"), out=out)


def _normalise(b: GraphBuilder, cam: str, out: str | None = None, extremes_of: str | None = None) -> str:
    """Per-image min-max of (N, h, w) maps to [0, 1] (into ``out`` if given); an all-zero map stays zero, not 0/0.

    ``extremes_of``: take the minimum and maximum from this tensor instead of ``cam`` itself.
    """
    probe = extremes_of or cam
    lo = b.reduce("ReduceMin", probe, [1, 2], keepdims=True, hint="cam_min")
    hi = b.reduce("ReduceMax", probe, [1, 2], keepdims=True, hint="cam_max")
    span = b.op("Max", b.op("Sub", hi, lo), b.const(1e-7, np.float32), hint="cam_span")
    return b.op_outputs("Div", b.op("Sub", cam, lo), span, hint="cam_norm", outputs=[out] if out else 1)[0]


def _assemble(
    index: GraphIndex, b: GraphBuilder, new_inputs: list[onnx.ValueInfoProto], new_outputs: list[onnx.ValueInfoProto]
) -> onnx.ModelProto:
    nodes, read = _read_nodes(b.nodes, {vi.name for vi in new_outputs})
    graph = onnx.GraphProto()
    graph.CopyFrom(index.graph)
    graph.node.extend(nodes)
    graph.initializer.extend(t for t in b.initializers if t.name in read)
    graph.input.extend(new_inputs)
    graph.output.extend(new_outputs)
    model = onnx.ModelProto()
    model.CopyFrom(index.model)
    model.graph.CopyFrom(graph)
    opset = default_opset(model)
    model.ir_version = emitted_ir_version(opset, model.ir_version)
    model.producer_name = "onnxcam"
    return model


def _read_nodes(nodes: Sequence[onnx.NodeProto], outputs: set[str]) -> tuple[list[onnx.NodeProto], set[str]]:
    """The emitted nodes that some new output depends on, and every tensor they read.

    Rules emit what a general caller needs (a full-size gradient, say); when
    the CAM head reads only a cheaper equivalent, the rest is dropped here
    rather than left for the runtime to compute.
    """
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    return kept[::-1], needed

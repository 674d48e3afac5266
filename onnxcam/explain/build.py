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
from onnxcam.autodiff.builder import GraphBuilder
from onnxcam.errors import OnnxcamError, TargetError
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.layers import CandidateLayer, input_spatial_axes
from onnxcam.graph.load import default_opset
from onnxcam.graph.prepare import emitted_ir_version
from onnxcam.methods import CAM_METHODS
from onnxcam.methods.guided import GUIDED_RULES

#: Ops after which the paper's score is the op's *input* (the logit), not its output.
_SQUASHING_OPS = {"Softmax", "LogSoftmax", "Sigmoid"}
_PASS_THROUGH = {"Identity"}


@dataclass(frozen=True)
class ScoreSpec:
    """Which tensor the seed multiplies, and where its classes are."""

    output: str  # the model output the user targets
    tensor: str  # the seeded tensor: the output itself, or the logit before a Softmax/LogSoftmax/Sigmoid
    from_logit: bool
    class_axis: int | None  # axis 1 when the tensor is (N, K) or (N, K, 1, ...), else None

    def describe(self) -> str:
        if self.from_logit:
            return f"the logit {self.tensor!r} feeding output {self.output!r}"
        return f"output {self.output!r}"


def resolve_score(index: GraphIndex, output: str | int, use_logit: bool = True) -> ScoreSpec:
    """Find the tensor to seed for ``output`` (a name or position among the model outputs)."""
    if isinstance(output, (int, np.integer)):
        if not 0 <= int(output) < len(index.outputs):
            raise TargetError(f"output index {output} is out of range: the model has {len(index.outputs)} "
                              f"output(s): {index.outputs}")
        name = index.outputs[int(output)]
    else:
        if output not in index.outputs:
            raise TargetError(f"the model has no output {output!r}; its outputs are {index.outputs}")
        name = output
    tensor, from_logit = name, False
    if use_logit:
        cur = name
        node = index.producer.get(cur)
        while node is not None and node.op_type in _PASS_THROUGH:
            cur = node.input[0]
            node = index.producer.get(cur)
        if node is not None and node.op_type in _SQUASHING_OPS:
            tensor, from_logit = node.input[0], True
    t = index.type_of(tensor)
    if t is None or not t.is_float:
        raise TargetError(f"output {name!r} is not a floating-point tensor, so it has no gradient to explain")
    class_axis = None
    if t.shape is not None and len(t.shape) >= 2 and all(d == 1 for d in t.shape[2:]):
        class_axis = 1
    return ScoreSpec(name, tensor, from_logit, class_axis)


@dataclass
class ExplainerGraph:
    """The built model and the names a runner needs to feed and fetch."""

    model: onnx.ModelProto
    mode: str  # "class" or "seed"
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
    exposed: list[tuple[str, str]] = field(default_factory=list)  # (activation, gradient) per layer


def build_explainer(index: GraphIndex, layers: Sequence[CandidateLayer], score: ScoreSpec,
                    method: str = "gradcam", mode: str = "class", guided: bool = False,
                    expose: bool = False) -> ExplainerGraph:
    """Return a new model computing the original outputs plus ``cam``, ``cam_lowres`` and the target.

    ``expose`` adds each layer's ``activation_i`` and ``gradient_i`` (float32)
    for methods that finish on the host. ``guided`` adds ``guided_backprop`` (the input gradient under guided-ReLU
    rules) and ``guided_gradcam`` (that times the upsampled ``cam``). The
    model shares ``index``'s external weights; the caller saves it beside them
    and runs the ONNX checker on the file.
    """
    if method not in CAM_METHODS:
        raise OnnxcamError(f"unknown method {method!r}; available: {', '.join(sorted(CAM_METHODS))}")
    if mode == "class" and score.class_axis is None:
        raise TargetError(f"{score.describe()} has shape {index.shape(score.tensor)}, not (batch, classes); "
                          "explain one element of it with onnxcam.OutputTarget(output, index) instead")
    opset = max(default_opset(index.model), 17)
    b = GraphBuilder(opset, taken_names=index.names | set(index.outputs))
    image = index.inputs[0]
    batch_dim = (index.shape(image) or ("N",))[0]
    batch_dim = batch_dim if batch_dim is not None else "N"
    score_type = index.type_of(score.tensor)
    new_inputs, new_outputs = [], []

    if mode == "class":
        target_input = b.reserve("target_class")
        new_inputs.append(helper.make_tensor_value_info(target_input, TensorProto.INT64, [batch_dim]))
        flat = b.op("Flatten", score.tensor, axis=1, hint="scores")
        top1 = b.op("ArgMax", flat, axis=1, keepdims=0, hint="top1")
        target_output = b.reserve("target")
        b.op("Where", b.op("Less", target_input, b.ints(0)), top1, target_input, outputs=[target_output])
        new_outputs.append(helper.make_tensor_value_info(target_output, TensorProto.INT64, [batch_dim]))
        depth = b.shape_of(flat, start=1, end=2)
        on_off = b.const([0.0, 1.0], score_type.np_dtype)
        onehot = b.op("OneHot", target_output, depth, on_off, axis=-1, hint="onehot")
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

    grads = build_vjp(index, b, [layer.name for layer in layers], {score.tensor: seed})

    hw = _input_hw(index, b, image)
    cams_lowres, cams = [], []
    exposed = []
    for i, layer in enumerate(layers):
        A, G = _as_float32(index, b, layer.name), _as_float32(index, b, grads[layer.name])
        if expose:
            pair = (b.reserve(f"activation_{i}"), b.reserve(f"gradient_{i}"))
            shape = [batch_dim, *(_dim(d) for d in layer.shape[1:])]
            for src, name in zip((A, G), pair):
                b.op("Identity", src, outputs=[name])
                new_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
            exposed.append(pair)
        contributions = CAM_METHODS[method](b, A, G, layer.spatial_axes)
        summed = b.reduce("ReduceSum", contributions, [layer.channel_axis], keepdims=False, hint="cam_sum")
        name = b.reserve("cam_lowres" if len(layers) == 1 else f"cam_lowres_{i}")
        b.op("Relu", summed, outputs=[name])
        cams_lowres.append(name)
        h, w = layer.spatial_size
        new_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch_dim, h, w]))
        cams.append(_normalise(b, _upsample(b, name, hw)))
    cam = b.reserve("cam")
    if len(cams) == 1:
        b.op("Identity", cams[0], outputs=[cam])
    else:
        fused = b.op("Mean", *cams, hint="fused")
        b.op("Identity", _normalise(b, fused), outputs=[cam])
    H, W = (index.shape(image)[a] for a in input_spatial_axes(index, image))
    new_outputs.insert(0, helper.make_tensor_value_info(cam, TensorProto.FLOAT, [batch_dim, _dim(H), _dim(W)]))

    guided_names = _guided_outputs(index, b, image, score, seed, cam, batch_dim, new_outputs) if guided else ()

    model = _assemble(index, b, new_inputs, new_outputs)
    return ExplainerGraph(model, mode, list(index.inputs), target_input, list(index.outputs), cam, cams_lowres,
                          target_output, list(layers), score, method, *guided_names, exposed=exposed)


def _guided_outputs(index: GraphIndex, b: GraphBuilder, image: str, score: ScoreSpec, seed: str, cam: str,
                    batch_dim, new_outputs: list) -> tuple[str, str]:
    """Guided backprop down to the image input, and Guided Grad-CAM (its product with ``cam``)."""
    grad = build_vjp(index, b, [image], {score.tensor: seed}, rules=GUIDED_RULES)[image]
    guided = b.reserve("guided_backprop")
    b.op("Identity", _as_float32(index, b, grad), outputs=[guided])
    channel_axis = 1 if input_spatial_axes(index, image) == (2, 3) else 3
    product = b.reserve("guided_gradcam")
    b.op("Mul", guided, b.op("Unsqueeze", cam, b.ints([channel_axis]), hint="cam_c"), outputs=[product])
    shape = [batch_dim, *index.shape(image)[1:]]
    for name in (guided, product):
        new_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [_dim(d) for d in shape]))
    return guided, product


def _dim(d):
    return d if isinstance(d, (int, str)) and d != 0 else None


def _as_float32(index: GraphIndex, b: GraphBuilder, name: str) -> str:
    """The CAM head always computes in float32, whatever precision the model runs at."""
    src = name
    t = index.type_of(name)
    if t is not None and t.elem_type != TensorProto.FLOAT:
        return b.op("Cast", src, to=TensorProto.FLOAT, hint="f32")
    return src


def _input_hw(index: GraphIndex, b: GraphBuilder, image: str) -> str:
    """int64 [H, W] of the image input: a constant when static, else read from the input at run time."""
    axes = input_spatial_axes(index, image)
    if axes is None:
        raise OnnxcamError(f"model input {image!r} is not a 4-D image tensor (shape {index.shape(image)}); "
                           "onnxcam explains image models with NCHW or NHWC inputs")
    dims = [index.shape(image)[a] for a in axes]
    if all(isinstance(d, int) and d > 0 for d in dims):
        return b.ints(dims)
    return b.op("Gather", b.shape_of(image), b.ints(list(axes)), axis=0, hint="input_hw")


def _upsample(b: GraphBuilder, cam_lowres: str, hw: str) -> str:
    """Bilinear, half-pixel resize of (N, h, w) to (N, H, W): the same sampling as cv2.resize."""
    c4 = b.op("Unsqueeze", cam_lowres, b.ints([1]), hint="cam4")
    sizes = b.op("Concat", b.shape_of(c4, start=0, end=2), hw, axis=0, hint="cam_sizes")
    up = b.op("Resize", c4, "", "", sizes, mode="linear", coordinate_transformation_mode="half_pixel",
              hint="cam_up")
    return b.op("Squeeze", up, b.ints([1]), hint="cam_hw")


def _normalise(b: GraphBuilder, cam: str) -> str:
    """Per-image min-max to [0, 1]; an all-zero map stays zero instead of dividing by zero."""
    lo = b.reduce("ReduceMin", cam, [1, 2], keepdims=True, hint="cam_min")
    hi = b.reduce("ReduceMax", cam, [1, 2], keepdims=True, hint="cam_max")
    span = b.op("Max", b.op("Sub", hi, lo), b.const(1e-7, np.float32), hint="cam_span")
    return b.op("Div", b.op("Sub", cam, lo), span, hint="cam_norm")


def _assemble(index: GraphIndex, b: GraphBuilder, new_inputs, new_outputs) -> onnx.ModelProto:
    graph = onnx.GraphProto()
    graph.CopyFrom(index.graph)
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)
    graph.input.extend(new_inputs)
    graph.output.extend(new_outputs)
    model = onnx.ModelProto()
    model.CopyFrom(index.model)
    model.graph.CopyFrom(graph)
    opset = default_opset(model)
    model.ir_version = emitted_ir_version(opset, model.ir_version)
    model.producer_name = "onnxcam"
    return model

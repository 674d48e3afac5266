"""Find the spatial feature maps a CAM can be computed on, and pick one automatically.

ONNX convolutions are always channels-first, but tf2onnx and Keras exports
wrap them in Transposes (or, with one channel, Reshapes) so that the tensors
between them are channels-last. Layout is therefore propagated through the
graph from the ops that fix it (Conv, pooling, normalisation) instead of being
guessed from shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from onnxcam.errors import LayerError, OnnxcamError
from onnxcam.graph.index import Dim, GraphIndex, Shape

#: Ops whose 4-D inputs and outputs are channels-first by the ONNX spec.
_CHANNELS_FIRST_OPS = {
    "Conv",
    "ConvTranspose",
    "ConvInteger",
    "QLinearConv",
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
    "BatchNormalization",
    "InstanceNormalization",
    "LRN",
    "DepthToSpace",
    "SpaceToDepth",
    "MaxRoiPool",
    "RoiAlign",
}
#: Ops whose 4-D inputs and outputs all share one layout (broadcast operands included).
_LAYOUT_PRESERVING_OPS = {
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Softplus",
    "Softsign",
    "Erf",
    "Gelu",
    "Mish",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "Mean",
    "Max",
    "Min",
    "Pow",
    "Sqrt",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Identity",
    "Dropout",
    "Cast",
    "Concat",
    "Pad",
    "Slice",
    "Split",
    "Resize",
    "Upsample",
    "QuantizeLinear",
    "DequantizeLinear",
    "Where",
    "Reciprocal",
}


@dataclass(frozen=True)
class CandidateLayer:
    """A 4-D feature map: the tensor, the node that makes it, its shape and channel axis."""

    name: str
    node_name: str
    op_type: str
    shape: Shape
    channel_axis: int
    position: int

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return (2, 3) if self.channel_axis == 1 else (1, 2)

    @property
    def spatial_size(self) -> tuple[Dim, ...]:
        return tuple(self.shape[a] for a in self.spatial_axes)

    @property
    def channels(self) -> Dim:
        return self.shape[self.channel_axis]

    def describe(self) -> str:
        dims = "x".join(str(d) if isinstance(d, int) else "?" for d in self.spatial_size)
        layout = "NCHW" if self.channel_axis == 1 else "NHWC"
        return f"{self.name!r} ({self.op_type} node {self.node_name!r}, {self.channels} channels, {dims}, {layout})"


def _spatial_above_one(c: CandidateLayer) -> bool:
    return any(not isinstance(d, int) or d > 1 for d in c.spatial_size)


def infer_channel_axes(index: GraphIndex) -> dict[str, int]:
    """Channel axis (1 or 3) of every 4-D tensor whose layout the graph pins down."""
    axis: dict[str, int] = {}

    def rank4(name: str) -> bool:
        s = index.shape(name)
        return s is not None and len(s) == 4

    for _ in range(4):  # forward and backward sweeps until nothing changes
        before = len(axis)
        for node in index.nodes:
            op = node.op_type
            data_in = [i for i in node.input if i and rank4(i)]
            outs = [o for o in node.output if o and rank4(o)]
            if op in _CHANNELS_FIRST_OPS:
                for t in data_in[:1] + outs[:1]:
                    axis.setdefault(t, 1)
            elif op == "Transpose":
                perm = _perm(node)
                if perm is None or len(perm) != 4 or not node.input or not rank4(node.input[0]):
                    continue
                src, dst = node.input[0], node.output[0]
                if src in axis:
                    axis.setdefault(dst, perm.index(axis[src]))
                elif dst in axis:
                    axis.setdefault(src, perm[axis[dst]])
            elif op in _LAYOUT_PRESERVING_OPS and outs:
                known = next((axis[t] for t in data_in + outs if t in axis), None)
                if known is not None:
                    for t in data_in + outs:
                        axis.setdefault(t, known)
            elif op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze") and outs and data_in:
                # tf2onnx swaps NHWC<->NCHW with a Reshape when there is one channel
                src, dst = data_in[0], outs[0]
                s_src, s_dst = index.shape(src), index.shape(dst)
                assert s_src is not None and s_dst is not None  # both rank 4
                if dst in axis and src not in axis and axis[dst] == 1 and s_dst[1] == 1 and s_src[3] == 1:
                    axis[src] = 3
                elif src in axis and dst not in axis and axis[src] == 3 and s_src[3] == 1 and s_dst[1] == 1:
                    axis[dst] = 1
        if len(axis) == before:
            break
    return axis


def _perm(node: onnx.NodeProto) -> list[int] | None:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None


_FEATURE_OPS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"}


def candidate_layers(index: GraphIndex) -> list[CandidateLayer]:
    """Every 4-D floating-point activation with a known layout and spatial size above 1x1, in graph order.

    Only tensors computed by some convolution count: the input image and its
    in-graph preprocessing (transposes, mean subtraction) are not feature maps.
    """
    axes = infer_channel_axes(index)
    learned: set[str] = set()
    found = []
    for pos, node in enumerate(index.nodes):
        if node.op_type in _FEATURE_OPS or any(i in learned for i in node.input):
            learned.update(node.output)
        for out in node.output:
            t = index.type_of(out)
            if not out or out not in axes or out not in learned or t is None or not t.is_float or t.shape is None:
                continue
            cand = CandidateLayer(out, node.name, node.op_type, t.shape, axes[out], pos)
            if _spatial_above_one(cand):
                found.append(cand)
    return found


def input_spatial_axes(index: GraphIndex, input_name: str) -> tuple[int, int] | None:
    """Spatial axes of a 4-D model input, from the layout the graph implies, else from its shape."""
    shape = index.shape(input_name)
    if shape is None or len(shape) != 4:
        return None
    axis = infer_channel_axes(index).get(input_name)
    if axis is None:
        small = {1, 2, 3, 4}
        if shape[1] in small and shape[3] not in small:
            axis = 1
        elif shape[3] in small and shape[1] not in small:
            axis = 3
        else:
            axis = 1
    return (2, 3) if axis == 1 else (1, 2)


def image_axes(index: GraphIndex, image: str) -> tuple[int, int]:
    """The (height, width) axes of ``image``, an input :func:`image_input` picked (so it is 4-D)."""
    axes = input_spatial_axes(index, image)
    if axes is None:
        raise OnnxcamError(f"input {image!r} is not a 4-D image, so it has no height and width to map a heatmap on")
    return axes


def image_size(index: GraphIndex, image: str) -> tuple[Dim, Dim]:
    """The (height, width) of ``image``, an input :func:`image_input` picked: ints where static."""
    shape = index.known_type(image).dims
    height, width = image_axes(index, image)
    return shape[height], shape[width]


def image_input(index: GraphIndex, layers: Sequence[CandidateLayer | str] | None = None) -> str:
    """The model input the heatmap covers: the 4-D input the layers are computed from.

    The one picker for the explainer graph and for preprocessing, so the image
    is sized and fed for the input its heatmap is drawn over. Input 0 need not
    be the image: a model may take a vector, a scalar or another 4-D tensor
    beside it (metadata, a mask, a timestep). Several image inputs of one
    static size (RGB + depth) share one heatmap size and the first is used; of
    different sizes there is no single image to draw over. Without ``layers``
    (preprocessing before a layer is chosen) the image is the first 4-D input
    some feature map is computed from, else the first 4-D input.
    """
    if layers is None:
        return _default_image_input(index)
    names = [layer if isinstance(layer, str) else layer.name for layer in layers]
    images = _image_inputs_of(index, names)
    shown = ", ".join(map(repr, names))
    if not images:
        shapes = ", ".join(f"{n!r} {index.shape(n)}" for n in index.inputs)
        raise OnnxcamError(
            f"layer {shown} is not computed from a 4-D image input (model inputs: {shapes}); "
            "onnxcam explains image models with NCHW or NHWC inputs"
        )
    sizes = set()
    for n in images:
        shape, spatial = index.shape(n), input_spatial_axes(index, n)
        assert shape is not None and spatial is not None  # _image_inputs_of returns 4-D inputs only
        sizes.add(tuple(shape[a] for a in spatial))
    if len(images) > 1 and (len(sizes) > 1 or not all(isinstance(d, int) and d > 0 for hw in sizes for d in hw)):
        raise OnnxcamError(
            f"layer {shown} is computed from several image inputs of different or dynamic sizes "
            f"({', '.join(map(repr, images))}), so the heatmap has no single image to cover; "
            "choose a layer computed from one of them"
        )
    return images[0]


def _default_image_input(index: GraphIndex) -> str:
    """The first 4-D input a feature map is computed from, else the first 4-D input: never a side input."""
    images = _image_inputs_of(index, [c.name for c in candidate_layers(index)])
    images = images or [n for n in index.inputs if input_spatial_axes(index, n) is not None]
    if not images:
        raise OnnxcamError(f"the model has no 4-D image input (inputs: {[(n, index.shape(n)) for n in index.inputs]})")
    return images[0]


def _image_inputs_of(index: GraphIndex, tensors: Sequence[str]) -> list[str]:
    """The 4-D model inputs that any of ``tensors`` is computed from, in input order."""
    upstream = index.upstream(tensors)
    return [name for name in index.inputs if name in upstream and input_spatial_axes(index, name) is not None]


def resolve_layer(index: GraphIndex, spec: str, candidates: list[CandidateLayer]) -> CandidateLayer:
    """Map a tensor name or node name to a candidate, with an error that lists what exists."""
    by_name = {c.name: c for c in candidates}
    if spec in by_name:
        return by_name[spec]
    node = index.node_by_name(spec)
    if node is not None:
        for out in node.output:
            if out in by_name:
                return by_name[out]
        spec_tensor = node.output[0] if node.output else spec
    else:
        spec_tensor = spec
    if spec_tensor in index.inputs:
        raise LayerError(
            f"layer {spec!r} is the model's input, not a feature map inside it: a CAM weighs the channels of an "
            f"inner layer; pick one of `onnxcam layers MODEL`, e.g. {_examples(candidates)}, or use layer='auto'"
        )
    if spec_tensor in index.types or spec_tensor in index.producer or node is not None:
        shape = index.shape(spec_tensor)
        raise LayerError(
            f"layer {spec!r} is not a spatial feature map (shape {shape}); "
            f"pick a 4-D activation with height and width above 1, e.g. {_examples(candidates)}"
        )
    raise LayerError(
        f"layer {spec!r} is neither a tensor nor a node of the model; candidates include {_examples(candidates)}"
    )


def _examples(candidates: list[CandidateLayer]) -> str:
    names = [repr(c.name) for c in candidates[-3:]]
    return ", ".join(names) if names else "(none found)"

"""A read-only view of a graph: who produces and consumes each tensor, and its type.

Every later stage (layer search, gradient engine, CAM head) asks the same
questions of the graph, so they are answered once here from the protos and
shape inference's ``value_info``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from onnxcam.errors import UnsupportedModelError
from onnxcam.graph.weights import WeightFolder

#: A dimension: an int when static, a symbol name or None when dynamic.
Dim: TypeAlias = int | str | None
#: A tensor's dims as shape inference gives them.
Shape: TypeAlias = tuple[Dim, ...]


def static_dims(dims: Sequence[Dim]) -> tuple[int, ...] | None:
    """``dims`` if every one is a known positive int, else None."""
    known = tuple(d for d in dims if isinstance(d, int) and d > 0)
    return known if len(known) == len(dims) else None


@dataclass(frozen=True)
class TensorType:
    elem_type: int
    shape: Shape | None  # None if the rank is unknown

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def dims(self) -> Shape:
        """The shape, for tensors whose rank is known by construction (an image input, a chosen layer)."""
        if self.shape is None:
            raise UnsupportedModelError(
                "the rank of a tensor the explanation needs is unknown after shape "
                "inference; re-export the model with static ranks"
            )
        return self.shape

    @property
    def np_dtype(self) -> np.dtype[Any]:
        try:
            return helper.tensor_dtype_to_np_dtype(self.elem_type)
        except KeyError:  # 0 (UNDEFINED) or a number no ONNX version defines
            raise UnsupportedModelError(
                f"a tensor of the model has element type {self.elem_type}, which is no "
                "ONNX data type; the file is damaged or not from an ONNX exporter"
            ) from None

    @property
    def is_float(self) -> bool:
        return self.elem_type in _FLOAT_TYPES

    def static_shape(self) -> tuple[int, ...] | None:
        """The shape if every dim is a known positive int, else None."""
        return None if self.shape is None else static_dims(self.shape)


_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}


def _tensor_type(type_proto: onnx.TypeProto) -> TensorType | None:
    if not type_proto.HasField("tensor_type"):
        return None
    tt = type_proto.tensor_type
    shape = None
    if tt.HasField("shape"):
        dims: list[Dim] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorType(tt.elem_type, shape)


class GraphIndex:
    """Producers, consumers, types and constants of one (prepared) model's main graph."""

    def __init__(self, model: onnx.ModelProto, weights: WeightFolder | None = None):
        self.model = model
        self.weights = weights
        self.graph = model.graph
        self.nodes: list[onnx.NodeProto] = list(self.graph.node)
        self.producer: dict[str, onnx.NodeProto] = {}
        self.node_position: dict[int, int] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for pos, node in enumerate(self.nodes):
            self.node_position[id(node)] = pos
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in self.graph.initializer}
        self.inputs: list[str] = [i.name for i in self.graph.input if i.name not in self.initializers]
        self.outputs: list[str] = [o.name for o in self.graph.output]
        self.types: dict[str, TensorType] = {}
        for vi in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            t = _tensor_type(vi.type)
            if t is not None:
                self.types[vi.name] = t
        for name, init in self.initializers.items():
            self.types[name] = TensorType(init.data_type, tuple(int(d) for d in init.dims))
        self.names: set[str] = set(self.producer) | set(self.initializers) | set(self.inputs)
        self.names |= {n.name for n in self.nodes if n.name}

    def type_of(self, name: str) -> TensorType | None:
        return self.types.get(name)

    def known_type(self, name: str) -> TensorType:
        """The type of ``name``, for tensors whose element type is known by construction (a chosen layer, the score)."""
        t = self.types.get(name)
        if t is None:
            raise UnsupportedModelError(
                f"the type of tensor {name!r} is unknown after shape inference; re-export the "
                "model with typed inputs and outputs"
            )
        return t

    def shape(self, name: str) -> Shape | None:
        t = self.types.get(name)
        return None if t is None else t.shape

    def constant_value(self, name: str) -> NDArray[Any] | None:
        """The value of ``name`` if it is an initializer or a ``Constant`` node output."""
        if name in self.initializers:
            tensor = self.initializers[name]
            if tensor.data_location == onnx.TensorProto.EXTERNAL and self.weights is not None:
                return self.weights.array(tensor)
            return numpy_helper.to_array(tensor)
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
                if attr.name == "value_float":
                    return np.array(attr.f, dtype=np.float32)
                if attr.name == "value_floats":
                    return np.array(list(attr.floats), dtype=np.float32)
                if attr.name == "value_int":
                    return np.array(attr.i, dtype=np.int64)
                if attr.name == "value_ints":
                    return np.array(list(attr.ints), dtype=np.int64)
        return None

    def position(self, node: onnx.NodeProto) -> int:
        return self.node_position[id(node)]

    def node_by_name(self, name: str) -> onnx.NodeProto | None:
        return next((n for n in self.nodes if n.name == name), None)

    def upstream(
        self,
        sinks: Iterable[str],
        through_output: Callable[[onnx.NodeProto, str], bool] | None = None,
        into_input: Callable[[onnx.NodeProto, str], bool] | None = None,
    ) -> set[str]:
        """``sinks`` and every tensor they are computed from, walking the graph backwards.

        ``through_output(node, output)`` and ``into_input(node, input)``, where
        given, limit the walk to the edges they accept (the gradient engine
        follows only edges that carry a gradient).
        """
        needed = set(sinks)
        for node in reversed(self.nodes):
            if any(o in needed and (through_output is None or through_output(node, o)) for o in node.output):
                needed.update(i for i in node.input if i and (into_input is None or into_input(node, i)))
        return needed

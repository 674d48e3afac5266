"""Emit new nodes and constants into a graph under construction.

Rules and CAM heads never touch protos directly; they call :class:`GraphBuilder`,
which hands out collision-free names and hides the few places where the form
of an op depends on the opset (``axes`` as attribute or input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal, TypeAlias, overload

import numpy as np
import onnx
from numpy.typing import ArrayLike, DTypeLike
from onnx import defs, helper, numpy_helper

#: Reductions whose ``axes`` became an input at opset 18 (ReduceSum did at 13).
_AXES_INPUT_SINCE = {"ReduceSum": 13}
_AXES_INPUT_DEFAULT = 18
#: Reductions that return the value itself when every reduced element is the same.
_IDEMPOTENT_REDUCTIONS = frozenset({"ReduceMean", "ReduceMax", "ReduceMin"})

#: Attributes whose schema gives no default but whose absence means the same as these values (per spatial axis).
_IMPLIED_LIST_DEFAULTS = {"dilations": 1, "strides": 1, "pads": 0, "output_padding": 0}
#: What a portable emission needs to know of the graph: a tensor's static dims (None where unknown).
StaticShapeFn: TypeAlias = Callable[[str], Sequence[object] | None]

#: A node attribute as :func:`onnx.helper.make_node` takes it; None leaves the attribute out.
AttrValue: TypeAlias = (
    int
    | float
    | str
    | bytes
    | onnx.TensorProto
    | onnx.GraphProto
    | Sequence[float]
    | Sequence[str]
    | Sequence[onnx.TensorProto]
    | None
)


class GraphBuilder:
    """Collects the nodes and initializers a transformation adds to a graph."""

    def __init__(
        self,
        opset: int,
        taken_names: Iterable[str] = (),
        prefix: str = "onnxcam",
        portable_shapes: StaticShapeFn | None = None,
    ):
        """``portable_shapes``: emit for a portable export (see :attr:`portable`), reading static dims from it."""
        self.opset = opset
        self.prefix = prefix
        self.portable_shapes = portable_shapes
        self._shape_like: dict[str, str] = {}  # emitted tensor -> a graph tensor of the same static shape
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._taken: set[str] = set(taken_names)
        self._counter = 0
        self._const_cache: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self._broadcast_of: dict[str, tuple[str, frozenset[int]]] = {}  # expanded -> (source, constant axes)

    @property
    def portable(self) -> bool:
        """Whether nodes are emitted for every execution provider (``Explainer.export(portable=True)``).

        Then no attribute is written that equals its default (OpenVINO's EP refuses a
        MaxPool that merely names ``dilations``), and ``Shape``/``Size`` of a tensor
        whose dims are static become constants (onnxruntime pins those ops to the CPU
        EP, a device-to-host copy in the middle of an accelerated graph).
        """
        return self.portable_shapes is not None

    def fresh(self, hint: str) -> str:
        """A tensor or node name that exists nowhere in the graph yet."""
        hint = hint.replace("/", "_").replace(":", "_")[-48:] or "t"
        while True:
            self._counter += 1
            name = f"{self.prefix}/{hint}_{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def reserve(self, name: str) -> str:
        """Claim an exact name (for graph inputs/outputs); add a prefix if it is taken."""
        candidate = name
        while candidate in self._taken:
            candidate = f"{self.prefix}_{candidate}"
        self._taken.add(candidate)
        return candidate

    @overload
    def op(
        self,
        op_type: str,
        *inputs: str,
        outputs: Literal[1] = 1,
        hint: str | None = None,
        domain: str = "",
        **attrs: AttrValue,
    ) -> str: ...

    @overload
    def op(
        self,
        op_type: str,
        *inputs: str,
        outputs: int | Sequence[str],
        hint: str | None = None,
        domain: str = "",
        **attrs: AttrValue,
    ) -> str | list[str]: ...

    def op(
        self,
        op_type: str,
        *inputs: str,
        outputs: int | Sequence[str] = 1,
        hint: str | None = None,
        domain: str = "",
        **attrs: AttrValue,
    ) -> str | list[str]:
        """Append one node; return its output name (or names when ``outputs`` > 1: see :meth:`op_outputs`)."""
        out_names = self.op_outputs(op_type, *inputs, outputs=outputs, hint=hint, domain=domain, **attrs)
        return out_names[0] if len(out_names) == 1 else out_names

    def op_outputs(
        self,
        op_type: str,
        *inputs: str,
        outputs: int | Sequence[str],
        hint: str | None = None,
        domain: str = "",
        **attrs: AttrValue,
    ) -> list[str]:
        """Append one node; return the names of all its outputs (a list even when there is one)."""
        base = hint or op_type.lower()
        if self.portable:
            folded = self._folded_shape(op_type, inputs, attrs)
            if folded is not None:
                if isinstance(outputs, int):
                    return [folded]
                self.nodes.append(helper.make_node("Identity", [folded], list(outputs), name=self.fresh("Identity")))
                return list(outputs)
            attrs = {k: v for k, v in attrs.items() if not self._is_default(op_type, domain, inputs, k, v)}
        out_names = list(outputs) if not isinstance(outputs, int) else [self.fresh(base) for _ in range(outputs)]
        node = helper.make_node(op_type, list(inputs), out_names, name=self.fresh(f"{op_type}"), domain=domain)
        # the attributes as make_node(**attrs) adds them; passed apart so that none is taken for a node field
        node.attribute.extend(helper.make_attribute(k, v) for k, v in sorted(attrs.items()) if v is not None)
        self.nodes.append(node)
        return out_names

    def same_shape(self, emitted: str, like: str) -> str:
        """Note that ``emitted`` has graph tensor ``like``'s shape (a portable build reads it); returns ``emitted``."""
        self._shape_like[emitted] = like
        return emitted

    def _is_default(self, op_type: str, domain: str, inputs: Sequence[str], name: str, value: AttrValue) -> bool:
        """Whether the attribute says what its absence says; a conv's ``kernel_shape`` is implied by its weight."""
        if name == "kernel_shape" and op_type in ("Conv", "ConvTranspose") and len(inputs) > 1 and self.portable_shapes:
            weight = self.portable_shapes(self._shape_like.get(inputs[1], inputs[1]))
            return weight is not None and list(weight[2:]) == list(value or ())  # type: ignore[arg-type]
        return _is_default(op_type, domain, self.opset, name, value)

    def _folded_shape(self, op_type: str, inputs: Sequence[str], attrs: dict[str, AttrValue]) -> str | None:
        """A constant for ``Shape``/``Size`` of a tensor whose (selected) dims are all static, else None."""
        if op_type not in ("Shape", "Size") or self.portable_shapes is None or not inputs:
            return None
        shape = self.portable_shapes(inputs[0])
        if shape is None:
            return None
        dims = list(shape)
        if op_type == "Shape":
            start, end = attrs.get("start"), attrs.get("end")
            dims = dims[slice(start if isinstance(start, int) else None, end if isinstance(end, int) else None)]
        if not all(isinstance(d, int) and d > 0 for d in dims):
            return None
        static = [int(d) for d in dims if isinstance(d, int)]
        return self.ints(static) if op_type == "Shape" else self.ints(int(np.prod(static)))

    def const(self, value: ArrayLike, dtype: DTypeLike) -> str:
        """An initializer holding ``value`` cast to ``dtype``; identical small constants are shared."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 64 else None
        if key is not None and key in self._const_cache:
            return self._const_cache[key]
        name = self.fresh("const")
        self.initializers.append(numpy_helper.from_array(arr, name))
        if key is not None:
            self._const_cache[key] = name
        return name

    def add_all(self, *terms: str, hint: str = "sum") -> str:
        """The sum of ``terms``: one ``Sum`` node, or in a portable build a chain of ``Add`` (WebNN and WebGPU
        have no ``Sum``)."""
        if len(terms) == 1:
            return terms[0]
        if not self.portable:
            return self.op("Sum", *terms, hint=hint)
        total = terms[0]
        for term in terms[1:]:
            total = self.op("Add", total, term, hint=hint)
        return total

    def ints(self, values: Sequence[int] | int) -> str:
        """An int64 constant, the type every shape/axes/index input wants."""
        return self.const(values, np.int64)

    def reduce(
        self, op_type: str, x: str, axes: Sequence[int] | str | None, keepdims: bool = True, hint: str | None = None
    ) -> str:
        """``op_type`` (ReduceSum, ReduceMean, ReduceMax, ...) over ``axes`` in this opset's form.

        ``axes`` may be a constant list or the name of a runtime int64 tensor
        (the latter only where the opset takes axes as an input).
        """
        source = self._broadcast_of.get(x)
        if (
            source is not None
            and keepdims
            and op_type in _IDEMPOTENT_REDUCTIONS
            and not isinstance(axes, str)
            and axes is not None
            and frozenset(axes) == source[1]
        ):
            return source[0]  # the mean (max, min) of copies is the value copied
        since = _AXES_INPUT_SINCE.get(op_type, _AXES_INPUT_DEFAULT)
        if axes is None:
            return self.op(op_type, x, keepdims=int(keepdims), hint=hint)
        if self.opset >= since:
            axes_name = axes if isinstance(axes, str) else self.ints(list(axes))
            return self.op(op_type, x, axes_name, keepdims=int(keepdims), hint=hint)
        if isinstance(axes, str):
            raise ValueError(f"{op_type} takes runtime axes only from opset {since}")
        return self.op(op_type, x, axes=list(axes), keepdims=int(keepdims), hint=hint)

    def expand(self, x: str, shape: str, constant_axes: Iterable[int], hint: str | None = None) -> str:
        """``Expand(x, shape)`` where ``x`` has size 1 on ``constant_axes`` and the full size elsewhere.

        The result is remembered as constant along those axes, so a later
        ReduceMean/Max/Min over exactly them returns ``x`` itself. Grad-CAM's
        channel weights are such a mean of a gradient that is often such an
        expansion (a GlobalAveragePool after the layer), and the full-size
        tensor is then never computed (see ``_assemble`` in explain/build.py,
        which drops nodes nothing reads).
        """
        out = self.op("Expand", x, shape, hint=hint)
        self._broadcast_of[out] = (x, frozenset(constant_axes))
        return out

    def shape_of(self, x: str, start: int | None = None, end: int | None = None) -> str:
        return self.op("Shape", x, start=start, end=end, hint="shape")


def _is_default(op_type: str, domain: str, opset: int, name: str, value: AttrValue) -> bool:
    """Whether attribute ``name`` = ``value`` of ``op_type`` says what its absence says (schema or implied default)."""
    if value is None:
        return True
    implied = _IMPLIED_LIST_DEFAULTS.get(name)
    if implied is not None and isinstance(value, (list, tuple)):
        return all(v == implied for v in value)
    try:
        schema = defs.get_schema(op_type, opset, domain)
    except defs.SchemaError:
        return False
    spec = schema.attributes.get(name)
    if spec is None or not spec.default_value.HasField("type"):
        return False
    given = helper.make_attribute(name, value)
    return bool(helper.get_attribute_value(given) == helper.get_attribute_value(spec.default_value))

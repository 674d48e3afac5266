"""The table of vector-Jacobian-product rules, keyed by op type.

A rule is a small pure function, like an entry of PyTorch's
``derivatives.yaml`` or a JAX ``primitive_transposes`` entry::

    @vjp_rule("Relu")
    def vjp_relu(ctx):
        x, = ctx.inputs
        return [ctx.b.op("Where", ctx.b.op("Greater", x, ctx.zero(x)), ctx.grad_out, ctx.zero(x))]

It reads the forward node through :class:`VJPContext`, emits standard ONNX
nodes through ``ctx.b`` and returns one gradient name (or None) per forward
input. The engine knows no op by name; adding an op means adding a rule in
``rules/`` (the module of its op family) and a row to the matching
``tests/rules/test_vjp_*.py`` table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import numpy as np
import onnx
from numpy.typing import ArrayLike, NDArray
from onnx import helper

from onnxcam.autodiff.bands import Band
from onnxcam.errors import UnsupportedModelError
from onnxcam.graph.builder import GraphBuilder
from onnxcam.graph.index import GraphIndex, Shape

_T = TypeVar("_T")


@dataclass
class VJPContext:
    """Everything a rule may look at: the forward node, its types, and the builder."""

    node: onnx.NodeProto
    grads_out: list[str | None]  # cotangent of each output, None where no gradient flows
    wants: list[bool]  # per input: does the engine need this input's gradient?
    b: GraphBuilder
    index: GraphIndex
    one_hot: Mapping[str, str] = field(default_factory=dict)  # cotangent name -> int64 (N,) row index
    bands: dict[str, Band] = field(default_factory=dict)  # input gradients this rule returned as rows (rows())

    @property
    def inputs(self) -> list[str]:
        return list(self.node.input)

    @property
    def outputs(self) -> list[str]:
        return list(self.node.output)

    @property
    def grad_out(self) -> str:
        """The cotangent of the first output (the only one for most ops)."""
        g = self.grads_out[0]
        if g is None:
            raise AssertionError(f"{self.node.op_type}: no gradient reached output 0")
        return g

    def one_hot_rows(self, i: int = 0) -> str | None:
        """The int64 (N,) class ids when output ``i``'s cotangent is one-hot along axis 1 of an (N, K) tensor.

        A class target seeds the logits with such a one-hot; a rule that
        contracts the class axis (a classifier's Gemm) then gathers one weight
        row per image instead of multiplying by the whole matrix, which would
        re-read the classifier's weights for nothing.
        """
        g = self.grads_out[i]
        return self.one_hot.get(g) if g else None

    def rows(self, part: str, x: str, axis: int, start: int, length: int) -> str:
        """``part``: rows ``[start, start + length)`` on ``axis`` of input ``x``'s gradient, zero elsewhere.

        A rule whose input gradient is a read-out window written back into
        zeros (a Gather of the class token, a Slice) returns this instead of
        the full tensor: the engine carries the window through the row-wise
        nodes before it and pads it only where it must (see
        :mod:`onnxcam.autodiff.bands`). ``x``'s size on ``axis`` must be static.
        """
        shape = self.require_shape(x)
        size = shape[axis]
        if not isinstance(size, int):
            raise AssertionError(f"rows(): axis {axis} of {x!r} has no static size")
        self.bands[part] = Band(axis, start, length, size, len(shape))
        return part

    def attr(self, name: str, default: object = None) -> object:
        """The value of attribute ``name`` as ONNX stores it (int, float, bytes, a list, a proto), else ``default``.

        Rules read attributes through the typed :meth:`attr_int`, :meth:`attr_float`,
        :meth:`attr_ints` and :meth:`attr_str`.
        """
        for a in self.node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def attr_int(self, name: str, default: int | None = None) -> int:
        """An int attribute; ``default`` when it is absent (required when there is no default)."""
        return self._attr_as(name, int, "an int", default)

    def attr_float(self, name: str, default: float) -> float:
        """A float attribute; ``default`` when it is absent."""
        return float(self._attr_as(name, (int, float), "a float", default))

    @overload
    def attr_ints(self, name: str) -> list[int] | None: ...

    @overload
    def attr_ints(self, name: str, default: list[int]) -> list[int]: ...

    def attr_ints(self, name: str, default: list[int] | None = None) -> list[int] | None:
        """An ints attribute (an empty list if it is given empty); ``default`` when it is absent."""
        if self.attr(name) is None:
            return default
        v = self._attr_as(name, list, "a list of ints", None)
        if not all(isinstance(i, int) for i in v):
            raise self._bad_attr(name, "a list of ints", v)
        return [int(i) for i in v]

    def attr_str(self, name: str, default: str) -> str:
        """A string attribute (ONNX stores bytes), decoded; ``default`` when it is absent."""
        if self.attr(name) is None:
            return default
        return self._attr_as(name, bytes, "a string", None).decode()

    def _attr_as(self, name: str, kind: type[_T] | tuple[type[_T], ...], expected: str, default: _T | None) -> _T:
        """Attribute ``name`` if it is a ``kind``; ``default`` when it is absent; else raise, naming ``expected``."""
        v = self.attr(name)
        if v is None and default is not None:
            return default
        if not isinstance(v, kind):
            raise self._bad_attr(name, expected, v)
        return v

    def _bad_attr(self, name: str, expected: str, value: object) -> UnsupportedModelError:
        what = "is missing" if value is None else f"is {value!r}"
        return UnsupportedModelError(
            f"{self.node.op_type} node {self.node.name!r}: attribute {name!r} {what}, "
            f"where ONNX has {expected}; the model is invalid, re-export it"
        )

    @property
    def portable(self) -> bool:
        """Whether the graph is built for every execution provider (see :attr:`GraphBuilder.portable`)."""
        return self.b.portable

    def reshape_target(self, name: str) -> str:
        """A Reshape's ``shape`` input that gives a tensor the shape of ``name``: ``Shape(name)``, or in a
        portable build the constant ``[-1, d1, d2, ...]`` where all but the batch are static (some EPs take
        Reshape only with a constant shape)."""
        rest = self._static_rest(name)
        return self.b.ints([-1, *rest]) if rest is not None else self.b.op("Shape", name)

    def expand_target(self, name: str) -> str:
        """An Expand's ``shape`` input broadcasting a tensor that already has ``name``'s batch to ``name``'s
        shape: ``Shape(name)``, or in a portable build the constant ``[1, d1, d2, ...]`` where all but the
        batch are static."""
        rest = self._static_rest(name)
        return self.b.ints([1, *rest]) if rest is not None else self.b.op("Shape", name)

    def _static_rest(self, name: str) -> list[int] | None:
        """In a portable build, ``name``'s dims after the batch where all are static; else None."""
        dims = self.index.shape(name)
        rest = [d for d in (dims or ())[1:] if isinstance(d, int) and d > 0]
        return rest if self.portable and dims and len(rest) == len(dims) - 1 else None

    def own_constant(self, name: str) -> str:
        """A weight the forward also reads, as this rule's own constant in a portable build.

        OpenVINO 2026.4 (its runtime and its onnxruntime EP) computes a ConvTranspose wrong when
        its weight is also a Conv's weight (measured: relative error 1.1-1.3 on square 3x3
        kernels): a portable build reads ``Neg(Neg(W))`` instead, exact, and folded into a separate
        constant at load (OpenVINO's own runtime folds ``Mul(W, 1)``, ``Add(W, 0)`` and a pair of
        Transposes back into the shared one). Default builds read ``name`` itself.
        """
        if not self.portable:
            return name
        return self.b.same_shape(self.b.op("Neg", self.b.op("Neg", name, hint="own_weight"), hint="own_weight"), name)

    def shape(self, name: str) -> Shape | None:
        return self.index.shape(name)

    def rank(self, name: str) -> int | None:
        s = self.index.shape(name)
        return None if s is None else len(s)

    def require_shape(self, name: str) -> Shape:
        """The shape of ``name`` (dims may be symbolic); raise when not even its rank is known."""
        s = self.index.shape(name)
        if s is None:
            raise UnsupportedModelError(
                f"the rank of tensor {name!r} (input of {self.node.op_type} node {self.node.name!r}) is unknown "
                "after shape inference; re-export the model with static ranks"
            )
        return s

    def require_rank(self, name: str) -> int:
        return len(self.require_shape(name))

    def dtype(self, name: str) -> np.dtype[Any]:
        t = self.index.type_of(name)
        return np.dtype(np.float32) if t is None else t.np_dtype

    def const(self, value: ArrayLike, like: str) -> str:
        """A constant with the element type of tensor ``like`` (fp16 graphs stay fp16)."""
        return self.b.const(value, self.dtype(like))

    def zero(self, like: str) -> str:
        return self.const(0.0, like)

    def one(self, like: str) -> str:
        return self.const(1.0, like)

    def constant_value(self, name: str) -> NDArray[Any] | None:
        return self.index.constant_value(name) if name else None


VJPRule = Callable[[VJPContext], Sequence[str | None]]

#: op type -> rule. Filled by the modules in ``onnxcam.autodiff.rules``.
VJP_RULES: dict[str, VJPRule] = {}

#: op type -> the rule a portable export uses instead of the one in :data:`VJP_RULES`: the same
#: gradient written with ops every execution provider has. Filled by ``rules/portable.py``.
PORTABLE_RULES: dict[str, VJPRule] = {}

#: Ops whose outputs carry no gradient (index arithmetic, shapes, comparisons,
#: and piecewise-constant functions whose derivative is zero almost everywhere).
NON_DIFFERENTIABLE_OPS: frozenset[str] = frozenset(
    {
        "Shape",
        "Size",
        "Constant",
        "ConstantOfShape",
        "Range",
        "EyeLike",
        "OneHot",
        "NonZero",
        "ArgMax",
        "ArgMin",
        "TopK_indices",
        "Equal",
        "Greater",
        "GreaterOrEqual",
        "Less",
        "LessOrEqual",
        "Not",
        "And",
        "Or",
        "Xor",
        "IsNaN",
        "IsInf",
        "Sign",
        "Floor",
        "Ceil",
        "Round",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)

#: Ops whose integer outputs/inputs still carry a (straight-through) gradient:
#: the engine lets a gradient flow along the int8/uint8 tensor between a
#: QuantizeLinear and a DequantizeLinear, whose rules treat rounding as identity.
STRAIGHT_THROUGH_OPS: frozenset[str] = frozenset({"QuantizeLinear", "DequantizeLinear"})


def vjp_rule(*op_types: str, portable: bool = False) -> Callable[[VJPRule], VJPRule]:
    """Register ``fn`` as the VJP rule of each op type in ``op_types`` (``portable``: its portable-export override)."""
    table = PORTABLE_RULES if portable else VJP_RULES

    def register(fn: VJPRule) -> VJPRule:
        for op_type in op_types:
            if op_type in table:
                raise ValueError(f"two {'portable ' if portable else ''}VJP rules registered for {op_type}")
            table[op_type] = fn
        return fn

    return register

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

import numpy as np
import onnx
from onnx import helper

from onnxcam.graph.builder import GraphBuilder
from onnxcam.graph.index import GraphIndex


@dataclass
class VJPContext:
    """Everything a rule may look at: the forward node, its types, and the builder."""

    node: onnx.NodeProto
    grads_out: list[str | None]  # cotangent of each output, None where no gradient flows
    wants: list[bool]  # per input: does the engine need this input's gradient?
    b: GraphBuilder
    index: GraphIndex
    one_hot: Mapping[str, str] = field(default_factory=dict)  # cotangent name -> int64 (N,) row index

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

    def attr(self, name: str, default=None):
        for a in self.node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def attr_str(self, name: str, default: str) -> str:
        v = self.attr(name, None)
        return default if v is None else (v.decode() if isinstance(v, bytes) else v)

    def shape(self, name: str) -> tuple | None:
        return self.index.shape(name)

    def rank(self, name: str) -> int | None:
        s = self.index.shape(name)
        return None if s is None else len(s)

    def require_rank(self, name: str) -> int:
        r = self.rank(name)
        if r is None:
            from onnxcam.errors import UnsupportedModelError

            raise UnsupportedModelError(
                f"the rank of tensor {name!r} (input of {self.node.op_type} node {self.node.name!r}) is unknown "
                "after shape inference; re-export the model with static ranks"
            )
        return r

    def dtype(self, name: str) -> np.dtype:
        t = self.index.type_of(name)
        return np.dtype(np.float32) if t is None else t.np_dtype

    def const(self, value, like: str) -> str:
        """A constant with the element type of tensor ``like`` (fp16 graphs stay fp16)."""
        return self.b.const(value, self.dtype(like))

    def zero(self, like: str) -> str:
        return self.const(0.0, like)

    def one(self, like: str) -> str:
        return self.const(1.0, like)

    def constant_value(self, name: str) -> np.ndarray | None:
        return self.index.constant_value(name) if name else None


VJPRule = Callable[[VJPContext], Sequence[str | None]]

#: op type -> rule. Filled by the modules in ``onnxcam.autodiff.rules``.
VJP_RULES: dict[str, VJPRule] = {}

#: Ops whose outputs carry no gradient (index arithmetic, shapes, comparisons,
#: and piecewise-constant functions whose derivative is zero almost everywhere).
NON_DIFFERENTIABLE_OPS: frozenset[str] = frozenset({
    "Shape", "Size", "Constant", "ConstantOfShape", "Range", "EyeLike", "OneHot", "NonZero",
    "ArgMax", "ArgMin", "TopK_indices", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual",
    "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Sign", "Floor", "Ceil", "Round",
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
})

#: Ops whose integer outputs/inputs still carry a (straight-through) gradient:
#: the engine lets a gradient flow along the int8/uint8 tensor between a
#: QuantizeLinear and a DequantizeLinear, whose rules treat rounding as identity.
STRAIGHT_THROUGH_OPS: frozenset[str] = frozenset({"QuantizeLinear", "DequantizeLinear"})


def vjp_rule(*op_types: str) -> Callable[[VJPRule], VJPRule]:
    """Register ``fn`` as the VJP rule of each op type in ``op_types``."""

    def register(fn: VJPRule) -> VJPRule:
        for op_type in op_types:
            if op_type in VJP_RULES:
                raise ValueError(f"two VJP rules registered for {op_type}")
            VJP_RULES[op_type] = fn
        return fn

    return register

"""Reverse-mode differentiation of the slice of a graph between some tensors and a score.

Only the nodes that lie on a path from a ``wrt`` tensor to a seeded tensor
are differentiated: everything upstream of the layer, and every weight, is
left alone. This is what makes an explanation cost about one inference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from onnxcam.graph.builder import GraphBuilder
from onnxcam.autodiff.registry import NON_DIFFERENTIABLE_OPS, STRAIGHT_THROUGH_OPS, VJP_RULES, VJPContext, VJPRule
from onnxcam.errors import UnsupportedModelError, UnsupportedOpError
from onnxcam.graph.index import GraphIndex

_CONTROL_FLOW = {"If", "Loop", "Scan"}


def carries_gradient(index: GraphIndex, node: onnx.NodeProto, tensor: str) -> bool:
    if node.op_type in NON_DIFFERENTIABLE_OPS:
        return False
    if node.op_type in STRAIGHT_THROUGH_OPS:
        return True
    t = index.type_of(tensor)
    return t is None or t.is_float


def forward_reachable(index: GraphIndex, sources: Sequence[str]) -> set[str]:
    """Tensors that depend differentiably on any of ``sources``."""
    reached = set(sources)
    for node in index.nodes:
        if any(i in reached for i in node.input if i):
            reached.update(o for o in node.output if o and carries_gradient(index, node, o))
    return reached


def backward_reachable(index: GraphIndex, sinks: Sequence[str], differentiable: bool = False) -> set[str]:
    """Tensors that any of ``sinks`` depends on (only through gradient-carrying edges if ``differentiable``)."""
    if not differentiable:
        return index.upstream(sinks)
    return index.upstream(
        sinks, lambda node, o: carries_gradient(index, node, o), lambda node, i: _input_is_float(index, i, node)
    )


def active_nodes(index: GraphIndex, wrt: Sequence[str], sinks: Sequence[str]) -> list[onnx.NodeProto]:
    """Nodes on some differentiable path from ``wrt`` to ``sinks``, in forward order."""
    fwd = forward_reachable(index, wrt)
    bwd = backward_reachable(index, sinks)
    return [
        n
        for n in index.nodes
        if any(o in fwd and o in bwd for o in n.output if o) and any(i in fwd for i in n.input if i)
    ]


def describe_path(index: GraphIndex, start: str, through: onnx.NodeProto, sinks: Sequence[str]) -> str:
    """Op types on one path ``start`` -> ``through`` -> sink, for error messages."""

    def chain(src: str, dst_nodes: set[int]) -> list[onnx.NodeProto]:
        parent: dict[str, tuple[str, onnx.NodeProto] | None] = {src: None}
        for node in index.nodes:
            hit = next((i for i in node.input if i in parent), None)
            if hit is None:
                continue
            for o in node.output:
                parent.setdefault(o, (hit, node))
            if id(node) in dst_nodes:
                path, step = [], parent.get(node.output[0])
                while step:
                    prev, n = step
                    path.append(n)
                    step = parent.get(prev)
                return path[::-1]
        return []

    head = chain(start, {id(through)})
    sink_nodes = {id(index.producer[s]) for s in sinks if s in index.producer}
    tail = chain(through.output[0], sink_nodes) if through.output else []
    ops = [n.op_type for n in head + tail]
    return " -> ".join(ops) if ops else through.op_type


def build_vjp(
    index: GraphIndex,
    builder: GraphBuilder,
    wrt: Sequence[str],
    cotangents: Mapping[str, str],
    rules: Mapping[str, VJPRule] | None = None,
    one_hot: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Emit nodes computing ``d(sum_t <cotangents[t], t>) / d w`` for every ``w`` in ``wrt``.

    ``cotangents`` maps forward tensors (the score's inputs, e.g. logits) to
    the names of same-shaped seed tensors. ``rules`` overrides entries of the
    registry (guided backprop swaps in its own ReLU rule this way). ``one_hot``
    marks seeds that are one-hot rows of an (N, K) tensor, mapped to their
    int64 (N,) class ids (see :meth:`VJPContext.one_hot_rows`). Returns
    ``wrt`` name -> gradient name. Raises :class:`UnsupportedOpError` for an op
    with no rule on the path.
    """
    table = dict(VJP_RULES)
    if rules:
        table.update(rules)
    sinks = list(cotangents)
    nodes = active_nodes(index, wrt, sinks)
    fwd = forward_reachable(index, wrt)

    pending: dict[str, list[str]] = {t: [g] for t, g in cotangents.items()}

    def total(tensor: str) -> str | None:
        parts = pending.get(tensor)
        if not parts:
            return None
        if len(parts) > 1:
            parts[:] = [builder.op("Sum", *parts, hint="grad_sum")]
        return parts[0]

    for node in reversed(nodes):
        grads_out = [total(o) if o else None for o in node.output]
        if all(g is None for g in grads_out):
            continue
        if node.op_type in _CONTROL_FLOW:
            raise UnsupportedModelError(
                f"control flow ({node.op_type} node {node.name!r}) lies between the layer and the score; "
                "choose a layer after it"
            )
        rule = table.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is None:
            where = describe_path(index, wrt[0], node, sinks)
            domain = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
            raise UnsupportedOpError(
                f"no gradient rule for op {domain}{node.op_type} (node {node.name!r}) on the path from the layer "
                f"to the score ({where}); choose a layer after this node, or open an issue asking for the rule"
            )
        wants = [bool(i) and i in fwd and _input_is_float(index, i, node) for i in node.input]
        ctx = VJPContext(node=node, grads_out=grads_out, wants=wants, b=builder, index=index, one_hot=one_hot or {})
        grads_in = list(rule(ctx))
        if len(grads_in) < len(node.input):
            grads_in += [None] * (len(node.input) - len(grads_in))
        for name, want, g in zip(node.input, wants, grads_in):
            if want and g is not None:
                pending.setdefault(name, []).append(g)

    result = {}
    for w in wrt:
        g = total(w)
        if g is None:
            raise UnsupportedModelError(
                f"the score does not depend on tensor {w!r} through any differentiable path; "
                "choose a layer that feeds the explained output"
            )
        result[w] = g
    return result


def _input_is_float(index: GraphIndex, name: str, consumer: onnx.NodeProto | None = None) -> bool:
    """Whether gradient may flow into ``name``: a float tensor, or the data input of a straight-through op."""
    if consumer is not None and consumer.op_type in STRAIGHT_THROUGH_OPS and consumer.input[0] == name:
        return True
    t = index.type_of(name)
    return t is None or t.is_float

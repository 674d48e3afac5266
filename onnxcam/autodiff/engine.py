"""Reverse-mode differentiation of the slice of a graph between some tensors and a score.

Only the nodes that lie on a path from a ``wrt`` tensor to a seeded tensor
are differentiated: everything upstream of the layer, and every weight, is
left alone. This is what makes an explanation cost about one inference.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import onnx

from onnxcam.autodiff.bands import Band, band_axes, densify
from onnxcam.graph.builder import GraphBuilder
from onnxcam.autodiff.registry import (
    NON_DIFFERENTIABLE_OPS,
    PORTABLE_RULES,
    STRAIGHT_THROUGH_OPS,
    VJP_RULES,
    VJPContext,
    VJPRule,
)
from onnxcam.errors import UnsupportedModelError, UnsupportedOpError
from onnxcam.graph.index import GraphIndex, TensorType

_CONTROL_FLOW = {"If", "Loop", "Scan"}
#: One part of a cotangent: its name, and the rows it holds (None: all of them).
Part = tuple[str, Band | None]


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
    registry (guided backprop swaps in its own ReLU rule this way); a builder
    emitting for a portable export (``builder.portable``) first swaps in the
    registry's :data:`PORTABLE_RULES`. ``one_hot``
    marks seeds that are one-hot rows of an (N, K) tensor, mapped to their
    int64 (N,) class ids (see :meth:`VJPContext.one_hot_rows`). Returns
    ``wrt`` name -> gradient name. Raises :class:`UnsupportedOpError` for an op
    with no rule on the path.
    """
    table = dict(VJP_RULES)
    if builder.portable:
        table.update(PORTABLE_RULES)
    if rules:
        table.update(rules)
    sinks = list(cotangents)
    nodes = active_nodes(index, wrt, sinks)
    fwd = forward_reachable(index, wrt)

    # Each part of a tensor's cotangent with the rows it holds: None for all of them, else a Band (see
    # onnxcam.autodiff.bands). The band belongs to the part, not to its name: rules pass names through (an Add
    # hands both inputs its g), and one name may be a band for one tensor and the whole gradient of another.
    pending: dict[str, list[Part]] = {t: [(g, None)] for t, g in cotangents.items()}
    rows = _RowViews(index, builder)

    def dense(part: Part) -> str:
        name, band = part
        return name if band is None else densify(builder, name, band)

    def total(tensor: str) -> Part | None:
        """The tensor's whole cotangent: a band while every part is the same band, else dense."""
        parts = pending.get(tensor)
        if not parts:
            return None
        if len(parts) > 1:
            by_band: dict[Band | None, list[str]] = {}
            for name, band in parts:
                by_band.setdefault(band, []).append(name)
            summed = [(builder.add_all(*same, hint="grad_sum"), band) for band, same in by_band.items()]
            if len(summed) > 1:  # rows of several bands, or a band and a dense part: each band padded once
                summed = [(builder.add_all(*map(dense, summed), hint="grad_sum"), None)]
            parts[:] = summed
        return parts[0]

    for node in reversed(nodes):
        parts_out = [total(o) if o else None for o in node.output]
        if all(part is None for part in parts_out):
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
        view = rows.view(node, parts_out)
        if view is None:
            grads_out = [part and dense(part) for part in parts_out]
            input_bands: list[Band | None] = [None] * len(node.input)
            seen, seen_index = node, index
        else:
            grads_out = [part and part[0] for part in parts_out]
            seen, seen_index, input_bands = view
        ctx = VJPContext(
            node=seen, grads_out=grads_out, wants=wants, b=builder, index=seen_index, one_hot=one_hot or {}
        )
        grads_in = list(rule(ctx))
        if len(grads_in) < len(node.input):
            grads_in += [None] * (len(node.input) - len(grads_in))
        for name, want, g, band in zip(node.input, wants, grads_in, input_bands):
            if want and g is not None:  # a band the node's rows gave, or one the rule declared (ctx.rows)
                pending.setdefault(name, []).append((g, band or ctx.bands.get(g)))
    rows.drop_unused()

    result = {}
    for w in wrt:
        part = total(w)
        g = part and dense(part)
        if g is None:
            raise UnsupportedModelError(
                f"the score does not depend on tensor {w!r} through any differentiable path; "
                "choose a layer that feeds the explained output"
            )
        result[w] = g
    return result


class _RowViews:
    """A node seen on the band's rows only: its inputs and output sliced there, their types in a view of the index."""

    def __init__(self, index: GraphIndex, builder: GraphBuilder):
        self.index, self.b = index, builder
        self._slices: dict[tuple[str, int, int, int], str] = {}

    def view(
        self, node: onnx.NodeProto, parts_out: Sequence[Part | None]
    ) -> tuple[onnx.NodeProto, GraphIndex, list[Band | None]] | None:
        """(node on the rows, index knowing their types, per input its band) or None: use the node whole."""
        band = parts_out[0][1] if parts_out[0] else None
        if band is None or sum(1 for o in node.output if o) != 1 or any(parts_out[1:]):
            return None
        axes = band_axes(node, self.index, band.axis)
        if axes is None or self.index.type_of(node.output[0]) is None:
            return None
        if any(a is not None and self.index.type_of(n) is None for n, a in zip(node.input, axes)):
            return None
        types: dict[str, TensorType] = {}
        inputs = [name if axis is None else self._rows(name, axis, band, types) for name, axis in zip(node.input, axes)]
        seen = onnx.NodeProto()
        seen.CopyFrom(node)
        seen.input[:] = inputs
        seen.output[:] = [self._rows(node.output[0], band.axis, band, types), *node.output[1:]]
        seen_index = copy.copy(self.index)
        seen_index.types = {**self.index.types, **types}
        input_bands = [
            None if axis is None else band.on(axis, len(self.index.known_type(name).dims))
            for name, axis in zip(node.input, axes)
        ]
        return seen, seen_index, input_bands

    def _rows(self, name: str, axis: int, band: Band, types: dict[str, TensorType]) -> str:
        key = (name, axis, band.start, band.length)
        if key not in self._slices:
            b = self.b
            ends = b.ints([band.start + band.length])
            self._slices[key] = b.op("Slice", name, b.ints([band.start]), ends, b.ints([axis]), hint="rows")
        t = self.index.known_type(name)
        dims = list(t.dims)
        dims[axis] = band.length
        types[self._slices[key]] = TensorType(t.elem_type, tuple(dims))
        return self._slices[key]

    def drop_unused(self) -> None:
        """Remove the slices no rule read (a forward output that its rule does not use)."""
        made = set(self._slices.values())
        used = {i for n in self.b.nodes for i in n.input}
        unused = made - used
        self.b.nodes[:] = [n for n in self.b.nodes if not (n.output and n.output[0] in unused)]


def _input_is_float(index: GraphIndex, name: str, consumer: onnx.NodeProto | None = None) -> bool:
    """Whether gradient may flow into ``name``: a float tensor, or the data input of a straight-through op."""
    if consumer is not None and consumer.op_type in STRAIGHT_THROUGH_OPS and consumer.input[0] == name:
        return True
    t = index.type_of(name)
    return t is None or t.is_float

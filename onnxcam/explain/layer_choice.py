"""Pick the layer to explain when the user says ``layer="auto"``.

This needs to know which edges carry a gradient, so it lives above the
autodiff layer rather than in ``graph/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onnxcam.autodiff.engine import backward_reachable, carries_gradient
from onnxcam.errors import LayerError, OnnxcamError, UnsupportedOpError
from onnxcam.explain.build import _PASS_THROUGH, _SQUASHING_OPS
from onnxcam.explain.token_reach import last_reaching
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.layers import CandidateLayer, candidate_layers, resolve_layer
from onnxcam.graph.tokens import TokenOverrides


#: Ops between a logit and the output that keep its shape: the squashing ops and pass-throughs of resolve_score.
_SAME_SHAPE_HEADS = _SQUASHING_OPS | _PASS_THROUGH


@dataclass(frozen=True)
class LayerChoice:
    layer: CandidateLayer
    reason: str


def choose_layer(index: GraphIndex, score: str, candidates: list[CandidateLayer] | None = None) -> LayerChoice:
    """The last feature map the score depends on, preferring one that every input-to-score path crosses.

    "The last Conv node" is the wrong rule: PP-LCNet and Keras mini-Xception
    heads put a 1x1 Conv *after* global pooling, where the map is 1x1. And in
    a multi-branch block (Inception, DenseNet) a branch output explains only
    part of the score, so a tensor on every path (a cut) is preferred.
    """
    candidates = candidate_layers(index) if candidates is None else candidates
    upstream = backward_reachable(index, [score], differentiable=True)
    usable = _drop_score_maps(index, [c for c in candidates if c.name in upstream], score)
    if not usable:
        raise LayerError(
            "found no spatial feature map (a 4-D tensor with height and width above 1) that the score depends on; "
            "pass layer=<tensor name> explicitly (list candidates with onnxcam.Explainer(...).candidates)"
        )
    cuts = [c for c in usable if _is_cut(index, c.name, score)]
    if any(c.tokens is not None for c in cuts):
        return _token_choice(index, score, cuts)
    if cuts:
        return LayerChoice(
            cuts[-1],
            f"auto: {cuts[-1].describe()} is the last spatial feature map on every path from the input to the score",
        )
    cand = usable[-1]
    return LayerChoice(
        cand,
        f"auto: {cand.describe()} is the last spatial feature map the score depends on "
        f"(no single feature map lies on every path from the input to the score)",
    )


def _token_choice(index: GraphIndex, score: str, cuts: list[CandidateLayer]) -> LayerChoice:
    """The last cut whose patch tokens reach the score: in a class-token ViT, the input of the last block.

    pytorch-grad-cam's ViT tutorial picks that block's first LayerNorm by hand;
    that LayerNorm's output is not a cut (the residual bypasses it), its input is.
    Models that pool every token (DINOv2's mean, Swin) keep their last layer.
    """
    try:
        cand = last_reaching(index, score, cuts)
    except OnnxcamError as e:  # an op without a rule on some candidate's tail: fall back to the plain rule
        return LayerChoice(
            cuts[-1],
            f"auto: {cuts[-1].describe()} is the last layer on every path from the input to the score (whether "
            f"patch tokens reach the score could not be measured: {e})",
        )
    if cand is None:
        raise LayerError(
            "no token layer on every path to the score has patch tokens that reach it (their gradient is zero); "
            "pass layer=<tensor name> explicitly (list candidates with `onnxcam layers MODEL`)"
        )
    skipped = len(cuts) - cuts.index(cand) - 1
    why = f"auto: {cand.describe()} is the last layer on every path from the input to the score"
    if skipped:
        why += (
            f" whose patch tokens reach the score (the {skipped} later layer(s) on every path reach it only through "
            "prefix tokens: their patch-token gradient is zero)"
        )
    return LayerChoice(cand, why)


def pick_layers(
    index: GraphIndex,
    layer: str | Sequence[str],
    score: str,
    candidates: list[CandidateLayer],
    tokens: TokenOverrides | None = None,
) -> tuple[list[CandidateLayer], str]:
    """The layers ``layer`` asks for ("auto", a tensor or node name, or a list of those), and why them.

    ``tokens``: the user's token grid and prefix count, applied to every chosen layer.
    """
    tokens = tokens or TokenOverrides()
    if isinstance(layer, str) and layer == "auto":
        choice = choose_layer(index, score, candidates)
        return [choice.layer.with_tokens(tokens)], choice.reason
    if not isinstance(layer, (str, list, tuple)) or not all(isinstance(s, str) for s in layer):
        raise LayerError(f"layer must be 'auto', a tensor or node name, or a list of names; got {layer!r}")
    specs = [layer] if isinstance(layer, str) else list(layer)
    if not specs:
        raise LayerError("layer list is empty; pass 'auto', a tensor name, or a list of names")
    chosen = [resolve_layer(index, s, candidates, tokens) for s in specs]
    return chosen, "requested: " + ", ".join(c.describe() for c in chosen)


def with_later_layers(
    error: UnsupportedOpError, layers: Sequence[CandidateLayer], candidates: Sequence[CandidateLayer]
) -> UnsupportedOpError:
    """``error`` naming the candidate layers after ``layers``: a later layer's gradient tail may avoid the op."""
    later = [c.name for c in candidates if c.position > max(layer.position for layer in layers)]
    hint = f"; later candidate layers: {', '.join(map(repr, later[-3:]))}" if later else ""
    return UnsupportedOpError(f"{error}{hint}")


def _drop_score_maps(index: GraphIndex, usable: list[CandidateLayer], score: str) -> list[CandidateLayer]:
    """Without the per-pixel class scores a segmentation score ends with: they explain nothing but themselves.

    A segmentation score is itself a feature map; the trailing run of maps with
    its channel count (the classifier's output, its sum and upsampling) would
    only return the class's own score map, so the choice moves back into the
    network's features, where Grad-CAM for segmentation is usually taken.
    """
    by_name = {c.name: c for c in usable}
    while score not in by_name and score in index.producer and index.producer[score].op_type in _SAME_SHAPE_HEADS:
        score = index.producer[score].input[0]  # a probability map: its layout is the logits'
    own = by_name.get(score)
    if own is None:
        return usable
    kept = list(usable)
    while kept and kept[-1].channels == own.channels:
        kept.pop()
    return kept or usable


def _is_cut(index: GraphIndex, tensor: str, score: str) -> bool:
    """True when no differentiable path from a model input reaches ``score`` without crossing ``tensor``."""
    reached = set(index.inputs)
    for node in index.nodes:
        if any(i in reached and i != tensor for i in node.input if i):
            # a Shape of the input feeding a Resize's sizes is a path, but no gradient crosses it
            reached.update(o for o in node.output if o and o != tensor and carries_gradient(index, node, o))
    return score not in reached

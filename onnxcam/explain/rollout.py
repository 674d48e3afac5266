"""Gradient-weighted attention rollout (Chefer, Gur & Wolf, ICCV 2021), as ONNX nodes in the explainer graph.

A CAM weighs one layer's channels; a transformer also says, in its attention
probabilities ``P_b`` (one ``(N, heads, T, T)`` Softmax output per block),
which tokens each token read. Chefer et al.'s generic rule (eq. 5-6 of
"Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers") keeps the heads' positive gradient-weighted
attention and accumulates it over the blocks in order:

    R = I;  for each block b:  R = R + mean_heads(relu(dS/dP_b * P_b)) @ R

and the map is the class token's row of ``R`` over the patch tokens (the
mean of the rows when there are no prefix tokens, e.g. Swin-style pooling).
Every step is a standard op (Mul, Relu, ReduceMean, MatMul, Add, Gather,
Slice, Reshape), so an exported file carries the method and the batch axis
stays dynamic. The chosen token layer supplies the token count, grid and
prefix; the attention maps are the Softmax outputs over that many tokens
whose gradient reaches the score.
"""

from __future__ import annotations

import numpy as np

from onnxcam.autodiff.engine import backward_reachable
from onnxcam.errors import LayerError
from onnxcam.graph.builder import GraphBuilder
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.layers import CandidateLayer


def attention_maps(index: GraphIndex, layer: CandidateLayer, score: str) -> list[str]:
    """The attention probabilities over ``layer``'s tokens that the score depends on, in graph (block) order."""
    if layer.tokens is None:
        raise LayerError(
            f"gradient-rollout explains vision transformers through their attention maps, but layer "
            f"{layer.name!r} is not a token layer; pick a (batch, tokens, channels) layer (see `onnxcam layers`)"
        )
    tokens = layer.shape[layer.tokens.token_axis]
    batch = layer.shape[layer.tokens.batch_axis]
    # (N, T, T) only where the batch dim is known (a symbol or an int): an unknown one may be N*heads, whose heads
    # would be rolled out as images
    ranks = (3, 4) if isinstance(batch, (int, str)) else (4,)
    upstream = backward_reachable(index, [score], differentiable=True)
    found = []
    for node in index.nodes:
        out = node.output[0] if node.output else ""
        shape = index.shape(out)
        if node.op_type != "Softmax" or out not in upstream or shape is None or len(shape) not in ranks:
            continue
        if shape[0] == batch and shape[-2:] == (tokens, tokens):
            found.append(out)
    if not found:
        raise LayerError(
            f"found no attention map (a Softmax output of shape (batch, [heads,] {tokens}, {tokens})) that the score "
            f"depends on; gradient-rollout needs a transformer whose attention over layer {layer.name!r}'s "
            "tokens is computed with a Softmax"
        )
    return found


def rolled_out(
    b: GraphBuilder, maps: list[str], gradients: dict[str, str], ranks: list[int], layer: CandidateLayer
) -> str:
    """The (N, h, w) rollout over the patch tokens, from each map ``P`` and its gradient (both float32)."""
    assert layer.tokens is not None
    tokens = layer.shape[layer.tokens.token_axis]
    assert isinstance(tokens, int)
    relevance = None
    for name, rank in zip(maps, ranks):
        weighted = b.op("Relu", b.op("Mul", gradients[name], name, hint="grad_attention"), hint="positive")
        if rank == 4:  # (N, heads, T, T): the heads' mean
            weighted = b.reduce("ReduceMean", weighted, [1], keepdims=False, hint="heads_mean")
        if relevance is None:  # R = I + A I
            relevance = b.op("Add", weighted, b.const(np.eye(tokens), np.float32), hint="relevance")
        else:
            relevance = b.op("Add", relevance, b.op("MatMul", weighted, relevance, hint="rolled"), hint="relevance")
    assert relevance is not None
    prefix, (h, w) = layer.tokens.prefix, layer.tokens.grid
    if prefix:  # the class token's row
        row = b.op("Gather", relevance, b.ints(0), axis=1, hint="class_row")
    else:
        row = b.reduce("ReduceMean", relevance, [1], keepdims=False, hint="mean_row")
    patches = b.op("Slice", row, b.ints([prefix]), b.ints([prefix + h * w]), b.ints([1]), hint="patch_relevance")
    return b.op("Reshape", patches, b.ints([0, h, w]), hint="rollout")

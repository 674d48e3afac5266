"""Which token layers' patch tokens still reach the score, measured with one gradient run.

In a vision transformer whose head reads the class token, the last block's
patch tokens never reach the score: after the last attention every op is
token-wise, and the head gathers token 0, so their gradient is exactly zero
and a CAM there is blank. Telling that from the graph means following the
token axis through every Reshape, Transpose and Gather of the attention; a
gradient says it directly. So the candidates' gradients are computed once
(the same explainer graph onnxcam runs anyway, seeded with every score
element, on one random image) and the layers whose patch-token gradient is
all zero are set aside.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxcam.errors import OnnxcamError, first_line

from onnxcam.explain.build import ScoreSpec, build_explainer
from onnxcam.graph.index import GraphIndex, static_dims
from onnxcam.graph.layers import CandidateLayer
from onnxcam.graph.shapes import sample_feeds
from onnxcam.runtime.session import create_session


#: Candidates measured per gradient run, latest first: a ViT's answer is within the last block's few cuts, and a
#: small group keeps the gradient tail (and the graph built for it) to that block.
GROUP = 4


def last_reaching(index: GraphIndex, score: str, layers: Sequence[CandidateLayer]) -> CandidateLayer | None:
    """The last of ``layers`` (in graph order) whose patch tokens have a non-zero gradient of ``score``.

    A layer that is not a token layer counts as reaching (this only measures
    tokens). The layers are measured from the last, :data:`GROUP` at a time,
    until one reaches.
    """
    remaining = list(layers)
    while remaining:
        group, remaining = remaining[-GROUP:], remaining[:-GROUP]
        reaching = _patch_tokens_reaching(index, score, [c for c in group if c.tokens is not None])
        found = [c for c in group if c.tokens is None or c.name in reaching]
        if found:
            return found[-1]
    return None


def _patch_tokens_reaching(index: GraphIndex, score: str, tokens: Sequence[CandidateLayer]) -> set[str]:
    """The names of the token layers among ``tokens`` whose patch-token gradient is not all zero, on one image."""
    if not tokens:
        return set()
    graph = build_explainer(index, tokens, ScoreSpec(score, score, False, None), mode="seed", expose=True)
    assert index.weights is not None, "a prepared index keeps its weights in a folder"
    session = create_session(str(index.weights.check(graph.model, "token_reach.onnx", emitted=True)), threads=1)
    batch = index.known_type(index.inputs[0]).dims[0]
    batch = batch if isinstance(batch, int) and batch > 0 else 1
    score_dims = static_dims(index.known_type(score).dims[1:])
    if score_dims is None:  # no seed to build: measure nothing rather than guess
        return {c.name for c in tokens}
    feeds = sample_feeds(index, batch, np.random.default_rng(0))
    feeds[graph.target_input] = np.ones((batch, *score_dims), index.known_type(score).np_dtype)
    try:
        gradients = session.run([g for _, g in graph.exposed], feeds)
    except Exception as e:  # onnxruntime's own exception types: the caller falls back to the plain rule
        raise OnnxcamError(f"ONNX Runtime failed on a random image: {first_line(e)}") from None
    return {c.name for c, g in zip(tokens, gradients) if np.abs(g).max() > 0}

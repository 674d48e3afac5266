"""The graphs and ONNX Runtime sessions of one Explainer: each built once, saved under its own name, run in chunks.

An Explainer needs several sessions besides its explainer graph: the user's
model with the scored tensor exposed (``predict`` and the metrics), the model
from its inputs to the score (Score-CAM), the tail from a layer to the score
(Ablation-CAM), a small contributions model (eigen-smoothing). Each is keyed by a :class:`GraphKey` that says what it
computes, built on first use and then reused. One Explainer may be shared by
threads: a build happens once, under a lock, while lookups of what is already
built take no lock (ONNX Runtime's ``session.run`` is itself thread-safe).
Every graph is saved beside the model's detached weights (see
:mod:`onnxcam.graph.weights`) in a file named after its key.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx

from onnxcam.errors import OnnxcamError, first_line
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.layers import CandidateLayer
from onnxcam.graph.tail import tail_model
from onnxcam.methods.smoothing import contributions_model
from onnxcam.runtime.session import create_session

T = TypeVar("T")


@dataclass(frozen=True)
class GraphKey:
    """What one graph computes; equal keys share one graph, one file and one session.

    ``purpose`` is "explainer" (the model, its gradient tail and the CAM
    head), "forward" (the model with ``score`` exposed), "tail" (``score``
    from the tensors in ``start``, or from the model inputs when empty) or
    "contributions" (a method's ``M_k`` from a layer's A and G).
    """

    purpose: str
    score: str = ""  # the scored tensor (forward, tail) or the explained output (explainer)
    mode: str = ""  # explainer graphs: "class", "rank" or "seed"
    start: tuple[str, ...] = ()  # the layers (explainer, contributions), the tensors a tail starts from
    method: str = ""  # the in-graph formula (explainer, contributions)
    guided: bool = False  # explainer graphs: with the guided input gradient
    expose: bool = False  # explainer graphs: with each layer's activations and gradients as outputs

    @property
    def file_name(self) -> str:
        """A file name unique to the key (a digest: tensor names may hold any character)."""
        return f"{self.purpose}_{hashlib.sha256(repr(self).encode()).hexdigest()[:16]}.onnx"


class Runner:
    """Builds, caches and runs the sessions of one prepared model."""

    def __init__(self, index: GraphIndex, providers: Sequence[Any] | None, threads: int | None):
        if index.weights is None:
            raise ValueError("the runner saves its graphs beside the index's detached weights; the index has none")
        self.index, self.weights = index, index.weights
        self.providers, self.threads = providers, threads
        self._lock = threading.RLock()  # re-entrant: a session's build builds its graph
        self._built: dict[Any, Any] = {}

    def once(self, key: Any, build: Callable[[], T]) -> T:
        """The value built for ``key``, built by ``build()`` only once even when threads ask at the same time."""
        try:
            built: T = self._built[key]
            return built
        except KeyError:
            pass
        with self._lock:
            if key not in self._built:
                self._built[key] = build()
            built = self._built[key]
            return built

    def saved(self, key: GraphKey, model: Callable[[], onnx.ModelProto]) -> Path:
        """The file of ``key``'s graph, checked by the ONNX checker and saved once beside the weights."""
        return self.once(("file", key), lambda: self.weights.check(model(), key.file_name, emitted=True))

    def session(self, key: GraphKey, model: Callable[[], onnx.ModelProto]) -> Any:
        """The ONNX Runtime session of ``key``'s graph (``model()`` builds the graph the first time)."""
        return self.once(
            ("session", key), lambda: create_session(str(self.saved(key, model)), self.providers, self.threads)
        )

    def forward_session(self, score: str) -> Any:
        """The user's own model, with the scored tensor ``score`` as an extra output where it is an inner one."""
        return self.session(GraphKey("forward", score), lambda: _with_output(self.index, score))

    def tail_session(self, start: str | None, score: str) -> tuple[Any, list[str]]:
        """A session computing ``score`` from the tensor ``start`` (None: from the model inputs), and its inputs."""
        key = GraphKey("tail", score, start=(start,) if start else ())
        inputs = [start] if start else list(self.index.inputs)
        session = self.session(key, lambda: tail_model(self.index.model, inputs, [score]))
        return session, [i.name for i in session.get_inputs()]

    def contributions_session(self, method: str, layer: CandidateLayer) -> Any:
        """``(A, G) -> M``: the in-graph ``method``'s contributions at ``layer`` (what eigen-smoothing decomposes)."""
        key = GraphKey("contributions", start=(layer.name,), method=method)
        return self.session(key, lambda: contributions_model(method, layer, 17))

    def run(self, session: Any, fetch: list[str], feeds: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """Run ``session`` over a batch of ``n``, in chunks of the model's batch size where it is fixed.

        A last chunk short of that size is padded with copies of its last row,
        and the padding rows' results dropped (every output has the batch axis first).
        """
        fixed = self.static_batch()
        if fixed is None or fixed == n:
            return dict(zip(fetch, self._run_once(session, fetch, feeds)))
        parts = []
        for start in range(0, n, fixed):
            chunk = {k: v[start : start + fixed] for k, v in feeds.items()}
            rows = min(fixed, n - start)
            if rows < fixed:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], fixed - rows, axis=0)]) for k, v in chunk.items()}
            parts.append([out[:rows] for out in self._run_once(session, fetch, chunk)])
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(fetch)}

    @staticmethod
    def _run_once(session: Any, fetch: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            outs: list[np.ndarray] = session.run(fetch, feeds)
            return outs
        except Exception as e:  # onnxruntime's own exception types
            raise OnnxcamError(f"ONNX Runtime failed while explaining: {first_line(e)}") from None

    def static_batch(self) -> int | None:
        """The model's batch size where its first input fixes one, else None."""
        d = (self.index.shape(self.index.inputs[0]) or (None,))[0]
        return d if isinstance(d, int) and d > 0 else None


def _with_output(index: GraphIndex, tensor: str) -> onnx.ModelProto:
    """A copy of the prepared model with ``tensor`` as an extra output (its type where shape inference knows it)."""
    model = onnx.ModelProto()
    model.CopyFrom(index.model)
    if tensor not in index.outputs:
        out = model.graph.output.add()
        vi = next((v for v in model.graph.value_info if v.name == tensor), None)
        if vi is not None:
            out.CopyFrom(vi)
        else:
            out.name = tensor
    return model

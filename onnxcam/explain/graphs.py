"""The explainer graphs of one Explainer: one per target mode and explained output, each built once.

Any output of the model can be explained by one Explainer, in any target mode
("class", "rank", "seed"); each pair gets its own graph, whose layers are the
requested ones (with ``layer="auto"``, the automatic choice for that output's
score) and whose head computes the method's in-graph formula.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from onnxcam.errors import UnsupportedOpError
from onnxcam.explain.build import ExplainerGraph, ScoreSpec, build_explainer
from onnxcam.explain.layer_choice import choose_layer, with_later_layers
from onnxcam.explain.runner import GraphKey, Runner
from onnxcam.graph.layers import CandidateLayer
from onnxcam.graph.tokens import TokenOverrides
from onnxcam.methods.spec import MethodSpec


class ExplainerGraphs:
    """Builds and caches explainer graphs and their sessions, for one method and layer request."""

    def __init__(
        self,
        runner: Runner,
        spec: MethodSpec,
        eigen_smooth: bool,
        score: ScoreSpec,
        layers: list[CandidateLayer],
        auto_layer: bool,
        candidates: list[CandidateLayer],
        tokens: TokenOverrides | None = None,
    ):
        self.runner, self.spec, self.score = runner, spec, score
        self.layers, self.auto_layer, self.candidates = layers, auto_layer, candidates
        self.tokens = tokens or TokenOverrides()
        self.expose = spec.on_host or eigen_smooth  # the host finishes the map from each layer's A and G
        self._ready: dict[tuple[str, str], tuple[ExplainerGraph, Any]] = {}  # the hot path: no key to build

    def layers_for(self, score: ScoreSpec) -> list[CandidateLayer]:
        """The layers explained for ``score``'s output: the requested ones, or with "auto" that output's own choice."""
        if not self.auto_layer or score.output == self.score.output:
            return self.layers
        return self.runner.once(
            ("auto layer", score.output),
            lambda: [choose_layer(self.runner.index, score.tensor, self.candidates).layer.with_tokens(self.tokens)],
        )

    def _key(self, mode: str, score: ScoreSpec, layers: list[CandidateLayer]) -> GraphKey:
        return GraphKey(
            "explainer",
            score.output,
            mode,
            tuple(c.name for c in layers),
            self.spec.graph_method,
            self.spec.guided,
            self.expose,
        )

    def graph(self, mode: str, score: ScoreSpec, portable: bool = False) -> ExplainerGraph:
        """The explainer graph for ``mode`` and ``score`` (built, checked and saved on first use).

        ``portable``: the same numbers from ops every execution provider has (see ``build_explainer``).
        """
        layers = self.layers_for(score)
        key = self._key(mode, score, layers)
        if portable:
            key = replace(key, purpose="portable explainer")

        def build() -> ExplainerGraph:
            try:
                graph = build_explainer(
                    self.runner.index,
                    layers,
                    score,
                    key.method,
                    mode,
                    guided=key.guided,
                    expose=key.expose,
                    portable=portable,
                )
            except UnsupportedOpError as e:
                raise with_later_layers(e, layers, self.candidates) from None
            self.runner.saved(key, lambda: graph.model)  # the ONNX checker runs here, before any export
            return graph

        return self.runner.once(key, build)

    def ready(self, mode: str, score: ScoreSpec) -> tuple[ExplainerGraph, Any]:
        """The graph and its ONNX Runtime session (created on first use; later calls are one dict lookup)."""
        try:
            return self._ready[mode, score.output]
        except KeyError:
            pass
        graph = self.graph(mode, score)
        session = self.runner.session(self._key(mode, score, graph.layers), lambda: graph.model)
        self._ready[mode, score.output] = graph, session  # the same objects whichever thread stores them
        return graph, session

"""Finishing a CAM on the host: host-side and perturbation methods, eigen- and augmentation smoothing.

The explainer graph of such a method exposes each layer's activations ``A``
and gradients ``G``; here the method's row (:mod:`onnxcam.methods.table`)
turns them into per-channel contributions, given a
:class:`~onnxcam.methods.spec.MethodRun` whose scoring functions run the
model's own sessions, and the layers are fused as the in-graph head fuses
them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxcam.explain.build import ExplainerGraph
from onnxcam.explain.result import ExplainResult
from onnxcam.explain.runner import Runner
from onnxcam.graph.layers import CandidateLayer, image_axes
from onnxcam.graph.tokens import tokens_from_map
from onnxcam.methods.fusion import fuse_layers, mean_of_normalised
from onnxcam.methods.perturbation import BatchScorer
from onnxcam.methods.smoothing import augmentations, eigen_smooth
from onnxcam.methods.spec import MethodRun, MethodSpec, ProgressFn


@dataclass(frozen=True)
class HostFinish:
    """How an Explainer finishes its maps on the host: its method, options and sessions."""

    runner: Runner
    spec: MethodSpec
    eigen_smooth: bool
    batch_size: int
    progress: ProgressFn | None

    def cams(
        self, graph: ExplainerGraph, outs: dict[str, np.ndarray], feeds: dict[str, np.ndarray], target_feed: np.ndarray
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """The fused ``cam`` and each layer's raw map; ``outs`` gains the guided product of the new ``cam``."""
        scorer = _target_scorer(graph, outs, target_feed)
        lows = []
        for i, (layer, (a_name, g_name)) in enumerate(zip(graph.layers, graph.exposed)):
            tokens = outs[graph.exposed_tokens[i]] if i in graph.exposed_tokens else None
            run = self._method_run(graph, layer, outs[a_name], outs[g_name], tokens, feeds, scorer)
            contributions = self.spec.host(run) if self.spec.host else run.graph_contributions()
            if self.spec.reduce is not None:
                signed = self.spec.reduce(contributions)
            else:
                signed = eigen_smooth(contributions) if self.eigen_smooth else contributions.sum(axis=1)
            lows.append(np.maximum(signed, 0).astype(np.float32))
        _, height, width = outs[graph.cam].shape
        cam = fuse_layers(lows, (height, width))
        if graph.guided_gradcam and graph.guided_backprop:
            outs[graph.guided_gradcam] = self.guided_times(graph.image, outs[graph.guided_backprop], cam)
        return cam, lows

    def guided_times(self, image: str, guided: np.ndarray, cam: np.ndarray) -> np.ndarray:
        """Guided Grad-CAM from a host-side ``cam``: the guided gradient times the map, per input channel."""
        channel_axis = 1 if image_axes(self.runner.index, image) == (2, 3) else 3
        product: np.ndarray = (guided * np.expand_dims(cam, channel_axis)).astype(np.float32)
        return product

    def augmented(
        self,
        explain: Callable[[dict[str, np.ndarray], Any], ExplainResult],
        feeds: dict[str, np.ndarray],
        target: Any,
        image: str,
        base: ExplainResult,
    ) -> ExplainResult:
        """Test-time augmentation: ``base``'s targets on flipped and shifted copies, each map moved back, averaged.

        ``explain(feeds, target)`` explains one batch as given; ``image`` is the input the maps cover.
        """
        rows = base.image_index if base.image_index is not None else np.arange(len(base.cam))
        if not len(rows):  # e.g. no class above a multi-label threshold: nothing to smooth
            return base
        axes = image_axes(self.runner.index, image)
        identity, *others = augmentations(tuple(feeds[image].shape[a] for a in axes))
        same = target if base.targets.dtype == object else base.targets  # seed targets: the same seed
        row_feeds = {k: v[rows] for k, v in feeds.items()}
        cams = [identity.invert(base.cam)]
        for aug in others:
            cams.append(aug.invert(explain({**row_feeds, image: aug.apply(row_feeds[image], axes)}, same).cam))
        base.cam = mean_of_normalised(cams)
        if base.guided is not None:
            base.guided_gradcam = self.guided_times(image, base.guided, base.cam)
        return base

    def _method_run(
        self,
        graph: ExplainerGraph,
        layer: CandidateLayer,
        A: np.ndarray,
        G: np.ndarray,
        tokens: np.ndarray | None,
        feeds: dict[str, np.ndarray],
        target_score: BatchScorer,
    ) -> MethodRun:
        """The run context of one layer; ``A`` and ``G`` as the explainer graph exposes them.

        Those are a feature map in the model's layout, or a token layer's
        patch-token map (N, C, h, w), whose ``tokens`` (N, T, C) give the
        prefix tokens back when replaced activations are fed to the model.
        """
        runner, image, score = self.runner, graph.image, graph.score.tensor
        axes = image_axes(runner.index, image)

        def score_masked_inputs(row: int, masks: np.ndarray) -> np.ndarray:
            session, names = runner.tail_session(None, score)
            copies = {
                name: np.repeat(feeds[name][row : row + 1], len(masks), axis=0) for name in names if name != image
            }
            channel_axis = 1 if axes == (2, 3) else 3
            copies[image] = (feeds[image][row : row + 1] * np.expand_dims(masks, channel_axis)).astype(
                feeds[image].dtype
            )
            return target_score(row, runner.run(session, [score], copies, len(masks))[score])

        def score_layer(rows: np.ndarray, acts: np.ndarray) -> np.ndarray:
            session, names = runner.tail_session(layer.name, score)
            dtype = runner.index.known_type(layer.name).np_dtype
            copies = {name: feeds[name][rows] for name in names if name != layer.name}
            # the ablation value (min - 1e7) is -inf in float16: keep it the most negative finite value instead
            if np.issubdtype(dtype, np.floating):
                acts = np.clip(acts, np.finfo(dtype).min, np.finfo(dtype).max)
            replaced = _from_nchw(acts, layer) if tokens is None else tokens_from_map(acts, tokens[rows], layer.tokens)
            copies[layer.name] = replaced.astype(dtype)
            scored = runner.run(session, [score], copies, len(acts))[score]
            if len(rows) and (rows == rows[0]).all():
                return target_score(int(rows[0]), scored)
            return np.concatenate([target_score(int(r), scored[i : i + 1]) for i, r in enumerate(rows)])

        def graph_contributions() -> np.ndarray:
            session = runner.contributions_session(graph.method, layer)
            return _nchw(session.run(["M"], {"A": A, "G": G})[0], layer)

        size = tuple(feeds[image].shape[a] for a in axes)
        return MethodRun(
            _nchw(A, layer),
            _nchw(G, layer),
            size,
            self.batch_size,
            self.progress,
            score_masked_inputs,
            score_layer,
            graph_contributions,
        )


def _target_scorer(graph: ExplainerGraph, outs: dict[str, np.ndarray], target_feed: np.ndarray) -> BatchScorer:
    if graph.target_output:
        classes = outs[graph.target_output]
        return lambda row, s: s.reshape(len(s), -1)[:, classes[row]]
    return lambda row, s: s.reshape(len(s), -1).astype(np.float64) @ target_feed[row].reshape(-1)


def _nchw(a: np.ndarray, layer: CandidateLayer) -> np.ndarray:
    """A layer's tensor with channels on axis 1, whatever the model's layout."""
    return a.transpose(0, 3, 1, 2) if layer.channel_axis == 3 else a


def _from_nchw(a: np.ndarray, layer: CandidateLayer) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if layer.channel_axis == 3 else a

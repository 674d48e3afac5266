"""The public entry point: ``Explainer(model).explain(x)``.

An Explainer loads the model once, picks the layer, builds the explainer graph
and keeps one ONNX Runtime session per target mode, so repeated calls cost one
``session.run`` each.

One Explainer may be shared by threads: graphs and sessions built on first
use are built once, under a lock, each in its own file, and ONNX Runtime's
``session.run`` is itself thread-safe. Calls after the first take no lock.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxcam.errors import InputError, LayerError, OnnxcamError, TargetError, UnsupportedOpError, first_line
from onnxcam.explain.build import ExplainerGraph, ScoreSpec, build_explainer, image_input, resolve_score
from onnxcam.explain.layer_choice import choose_layer
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.layers import CandidateLayer, candidate_layers, input_spatial_axes, resolve_layer
from onnxcam.graph.load import read_model
from onnxcam.graph.prepare import prepare_model
from onnxcam.graph.tail import tail_model
from onnxcam.graph.weights import WeightFolder, save_model
from onnxcam.methods import CAM_METHODS
from onnxcam.methods.eigen import HOST_METHODS
from onnxcam.methods.fusion import fuse_layers, mean_of_normalised
from onnxcam.methods.guided import GUIDED_METHODS
from onnxcam.methods.perturbation import (
    DEFAULT_BATCH, PERTURBATION_METHODS, ProgressFn, ablation_cam_weights, score_cam_weights, weighted_activations,
)
from onnxcam.methods.smoothing import augmentations, contributions_model, eigen_smooth
from onnxcam.runtime.session import create_session, require_onnxruntime
from onnxcam.targets import MultiLabelTarget, SeedTarget, TopK

#: Every ``method=`` value: in-graph weightings, host-side (SVD) methods, guided methods, perturbation methods.
ALL_METHODS: tuple[str, ...] = (*CAM_METHODS, *HOST_METHODS, *GUIDED_METHODS, *PERTURBATION_METHODS)


@dataclass
class ExplainResult:
    """What one ``explain`` call returns (see the README for the exact formulas)."""

    cam: np.ndarray  # (N, H, W) float32 in [0, 1] at the input's spatial size
    cam_lowres: np.ndarray | list[np.ndarray]  # (N, h, w) per layer; a list when several layers
    targets: np.ndarray  # (rows,) explained class ids; None entries for a seed target (OutputTarget, ...)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    layer: str | list[str] = ""
    guided: np.ndarray | None = None  # guided backprop, shaped like the input (guided methods only)
    guided_gradcam: np.ndarray | None = None  # guided * cam, shaped like the input (guided methods only)
    image_index: np.ndarray | None = None  # (rows,) the input image each row explains (several with TopK)
    # The layer's float32 activations and dScore/dlayer in the model's layout (host-side methods only;
    # a list when several layers): what the gradient oracles in tools/ check.
    activations: np.ndarray | list[np.ndarray] | None = None
    gradients: np.ndarray | list[np.ndarray] | None = None


@dataclass
class Prediction:
    """What one ``predict`` call returns: a forward pass only, no gradients."""

    outputs: dict[str, np.ndarray]  # every model output, by name
    scores: np.ndarray  # the explained score tensor (the logit before a final Softmax/Sigmoid by default)


class Explainer:
    """Grad-CAM for an ONNX model, computed inside one ONNX Runtime session.

    ``model`` is a path or an ``onnx.ModelProto`` (never modified). ``layer`` is
    ``"auto"``, a tensor or node name, or a list of those. ``score="logit"``
    explains the logit before a final Softmax/LogSoftmax/Sigmoid, as in the
    paper; ``score="probability"`` explains the output itself. ``providers``
    follows onnxruntime (None: CUDA if it really runs, else CPU).

    Options that finish on the host (the exported file carries the plain
    method): ``aug_smooth`` averages the maps of flipped and shifted copies,
    ``eigen_smooth`` takes the first principal component of the per-channel
    contributions instead of their sum. ``perturbation_batch`` is how many
    masked or ablated copies Score-CAM and Ablation-CAM send through one
    session run; ``progress(done, total)`` is called after each such run.
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, layer: str | Sequence[str] = "auto",
                 method: str = "gradcam", providers: Sequence | None = None, output: str | int = 0,
                 score: str = "logit", threads: int | None = None, *, aug_smooth: bool = False,
                 eigen_smooth: bool = False, perturbation_batch: int = DEFAULT_BATCH,
                 progress: ProgressFn | None = None):
        require_onnxruntime()  # say which extra to install before any work
        if method not in ALL_METHODS:
            raise OnnxcamError(f"unknown method {method!r}; available: {', '.join(ALL_METHODS)}")
        if score not in ("logit", "probability"):
            raise OnnxcamError(f"score must be 'logit' or 'probability', not {score!r}")
        if not isinstance(perturbation_batch, int) or perturbation_batch < 1:
            raise OnnxcamError(f"perturbation_batch must be a positive int, not {perturbation_batch!r}")
        self.method = method
        self.aug_smooth, self.eigen_smooth = bool(aug_smooth), bool(eigen_smooth)
        self.perturbation_batch, self.progress = perturbation_batch, progress
        self.providers = providers
        self.threads = threads
        self._source = Path(model).resolve() if isinstance(model, (str, os.PathLike)) else None
        loaded, self.source_files = read_model(model)  # never written over: see export() and the CLI
        self._weights = WeightFolder()
        self._weights.detach(loaded)
        self._weights.check(loaded, "model.onnx")
        self._index = GraphIndex(prepare_model(loaded), self._weights)
        del loaded
        if not self._index.inputs:
            raise OnnxcamError("the model has no inputs to feed")
        self._use_logit = score == "logit"
        self._score = resolve_score(self._index, output, use_logit=self._use_logit)
        self.candidates: list[CandidateLayer] = candidate_layers(self._index)
        self._layers, self.layer_reason = self._pick_layers(layer)
        self._auto_layer = isinstance(layer, str) and layer == "auto"
        self._layers_by_output: dict[str, list[CandidateLayer]] = {self._score.output: self._layers}
        self._build_lock = threading.RLock()  # see _once
        self._graphs: dict[str, ExplainerGraph] = {}
        self._graph_files: dict[str, Path] = {}
        self._sessions: dict[str, object] = {}
        self._accepted: tuple = ()  # (dtype, shape after the batch axis) of the last array input that passed checks
        self._graph(self._default_mode())  # fail early on unsupported graphs, before the first image

    # -- layer selection -------------------------------------------------------------------------

    def _pick_layers(self, layer) -> tuple[list[CandidateLayer], str]:
        if isinstance(layer, str) and layer == "auto":
            choice = choose_layer(self._index, self._score.tensor, self.candidates)
            return [choice.layer], choice.reason
        specs = [layer] if isinstance(layer, str) else list(layer)
        if not specs:
            raise LayerError("layer list is empty; pass 'auto', a tensor name, or a list of names")
        chosen = [resolve_layer(self._index, s, self.candidates) for s in specs]
        return chosen, "requested: " + ", ".join(c.describe() for c in chosen)

    @property
    def layer(self) -> str | list[str]:
        names = [c.name for c in self._layers]
        return names[0] if len(names) == 1 else names

    @property
    def session(self):
        """The onnxruntime session of the default target mode (created on first use)."""
        return self._session(self._default_mode())

    @property
    def providers_in_use(self) -> list[str]:
        """Execution providers the session really uses (onnxruntime-gpu may silently fall back to CPU)."""
        return list(self.session.get_providers())

    # -- graphs and sessions ---------------------------------------------------------------------

    def _default_mode(self, score: ScoreSpec | None = None) -> str:
        return "class" if (score or self._score).class_axis is not None else "seed"

    def _score_for(self, output: str | int | None) -> ScoreSpec:
        """The score of ``output`` (None: the Explainer's own), resolved with the Explainer's score= rule."""
        if output is None:
            return self._score
        score = resolve_score(self._index, output, use_logit=self._use_logit)
        return self._score if score.output == self._score.output else score

    def _layers_for(self, score: ScoreSpec) -> list[CandidateLayer]:
        """The requested layers; with layer="auto", the automatic choice for this output's score."""
        def choose() -> list[CandidateLayer]:
            if not self._auto_layer:
                return self._layers
            return [choose_layer(self._index, score.tensor, self.candidates).layer]

        return self._once(self._layers_by_output, score.output, choose)

    def _graph_key(self, mode: str, score: ScoreSpec | None) -> str:
        """One graph per target mode and explained output: any output can be explained by one Explainer."""
        if score is None or score.output == self._score.output:
            return mode
        return f"{mode}_{self._index.outputs.index(score.output)}"

    def _once(self, cache: dict, key, build):
        """``cache[key]``, built by ``build()`` only once even when several threads ask for it at the same time.

        The lookup takes no lock (the hot path); a miss builds under one
        re-entrant lock, so a session's build may build its graph.
        """
        try:
            return cache[key]
        except KeyError:
            pass
        with self._build_lock:
            if key not in cache:
                cache[key] = build()
            return cache[key]

    def _graph(self, mode: str, score: ScoreSpec | None = None) -> ExplainerGraph:
        key = self._graph_key(mode, score)

        def build() -> ExplainerGraph:
            scored = score or self._score
            layers = self._layers_for(scored)
            try:
                guided, on_host = self.method in GUIDED_METHODS, self._on_host
                graph = build_explainer(self._index, layers, scored, self._weighting, mode, guided=guided,
                                        expose=on_host)
            except UnsupportedOpError as e:
                later = [c.name for c in self.candidates if c.position > max(lay.position for lay in layers)]
                hint = f"; later candidate layers: {', '.join(map(repr, later[-3:]))}" if later else ""
                raise UnsupportedOpError(f"{e}{hint}") from None
            self._graph_files[key] = self._weights.check(graph.model, f"explainer_{key}.onnx", emitted=True)
            return graph

        return self._once(self._graphs, key, build)

    def _session(self, mode: str, score: ScoreSpec | None = None):
        key = self._graph_key(mode, score)

        def build():
            self._graph(mode, score)
            return create_session(str(self._graph_files[key]), self.providers, self.threads)

        return self._once(self._sessions, key, build)

    @property
    def explainer_model(self) -> onnx.ModelProto:
        """The standalone explainer graph (class mode where the output has classes), weights included."""
        return self._weights.materialize(self._graph(self._default_mode()).model)

    def export(self, path: str | os.PathLike, output: str | int | None = None, mode: str | None = None) -> None:
        """Write the explainer graph: model inputs (+ target) -> model outputs + cam + cam_lowres (+ target).

        ``output`` picks the explained output (default: the Explainer's). ``mode="seed"`` replaces the
        ``target_class`` input by ``target_seed``, shaped like the scored tensor (``seed_for`` makes it from
        a RegionTarget, SimilarityTarget or OutputTarget); the default is "class" where the output is
        (batch, classes), else "seed". In "class" files ``target_class = -1`` means each image's top-1;
        ``mode="rank"`` files also take ``-r`` for the rank-r class (a TopK over the scores, a little slower).
        """
        if mode not in (None, "class", "rank", "seed"):
            raise OnnxcamError(f"export mode must be 'class', 'rank' or 'seed', not {mode!r}")
        score = self._score_for(output)
        target = Path(path).resolve()
        if target in self.source_files:
            raise OnnxcamError(f"refusing to overwrite {path}: the model being explained reads it; "
                               "choose another file name")
        model = self._weights.materialize(self._graph(mode or self._default_mode(score), score).model)
        try:
            save_model(model, target)
        except OSError as e:
            raise OnnxcamError(f"cannot write {path}: {e.strerror or e}") from None

    # -- running ---------------------------------------------------------------------------------

    def predict(self, x: np.ndarray | Mapping[str, np.ndarray]) -> Prediction:
        """One forward pass of the original model, batched like ``explain``, with the explained score exposed.

        Perturbation methods (Score-CAM, Ablation-CAM) and the quality metrics
        run many of these; they go through a session of the user's own graph,
        plus one extra output where the score is an inner tensor (a logit).
        """
        feeds = self._validate_inputs(x)
        session = self._forward_session()
        fetch = [*self._index.outputs]
        if self._score.tensor not in fetch:
            fetch.append(self._score.tensor)
        outs = self._run_chunks(session, fetch, feeds, next(iter(feeds.values())).shape[0])
        return Prediction(outputs={name: outs[name] for name in self._index.outputs}, scores=outs[self._score.tensor])

    def _forward_session(self):
        def build():
            model = onnx.ModelProto()
            model.CopyFrom(self._index.model)
            if self._score.tensor not in self._index.outputs:
                vi = next((v for v in model.graph.value_info if v.name == self._score.tensor), None)
                out = model.graph.output.add()
                if vi is not None:
                    out.CopyFrom(vi)
                else:
                    out.name = self._score.tensor
            path = self._weights.check(model, "forward.onnx", emitted=True)
            return create_session(str(path), self.providers, self.threads)

        return self._once(self._sessions, "forward", build)

    def explain(self, x: np.ndarray | Mapping[str, np.ndarray], target=None) -> ExplainResult:
        """Explain a preprocessed batch.

        ``target``: None (each image's top-1), an int, one int per image; a SeedTarget on any output
        (OutputTarget, RegionTarget, SimilarityTarget); or several classes per image, one result row per
        (image, class) in one batched run: TopK(k), MultiLabelTarget(threshold) (see ``res.image_index``).
        """
        return self._explain_augmented(x, target) if self.aug_smooth else self._explain_once(x, target)

    def _explain_once(self, x: np.ndarray | Mapping[str, np.ndarray], target=None) -> ExplainResult:
        """One explanation of the batch as given (``explain`` without test-time augmentation)."""
        feeds = self._validate_inputs(x)
        n = next(iter(feeds.values())).shape[0]
        rows = np.arange(n)
        if isinstance(target, SeedTarget):
            score, graph_mode = self._score_for(target.output), "seed"
            target_feed = self.seed_for(target, n)
        else:
            score, graph_mode = self._score_for(getattr(target, "output", None)), "class"
            if score.class_axis is None:
                raise TargetError(f"{score.describe()} is not a (batch, classes) tensor; pass "
                                  "target=onnxcam.OutputTarget(output, index) or another seed target")
            if isinstance(target, (TopK, MultiLabelTarget)):
                graph_mode = "rank" if isinstance(target, TopK) else graph_mode
                rows, target_feed = self._class_rows(target, feeds, n, score)
                # no row at all (no label above the threshold): run one to learn the shapes, keep none
                feeds = {k: v[rows if len(rows) else [0]] for k, v in feeds.items()}
                target_feed = target_feed if len(rows) else np.zeros(1, np.int64)
            else:
                target_feed = self._class_ids(target, n)
        graph = self._graph(graph_mode, score)
        outs = self._run(graph_mode, graph, feeds, target_feed)
        if not len(rows):  # the one placeholder row run for its shapes
            outs = {k: v[:0] for k, v in outs.items()}
        cam = outs[graph.cam]
        lows = [outs[name] for name in graph.cam_lowres]
        if self._on_host:
            scorer = self._target_scorer(graph, outs, target_feed)
            cam, lows = self._host_cams(graph, outs, cam.shape[1:], feeds, scorer)
            if graph.guided_gradcam:
                outs[graph.guided_gradcam] = self._guided_times(outs[graph.guided_backprop], cam, graph.image)
        if graph_mode != "seed":
            targets = outs[graph.target_output]
        else:
            targets = np.array([None] * n, dtype=object)
        names = [layer.name for layer in graph.layers]
        return ExplainResult(
            cam=cam, cam_lowres=lows[0] if len(lows) == 1 else lows, targets=targets,
            outputs={name: outs[name] for name in graph.model_outputs}, layer=names[0] if len(names) == 1 else names,
            guided=outs.get(graph.guided_backprop), guided_gradcam=outs.get(graph.guided_gradcam),
            image_index=rows,
            activations=_per_layer([outs[a] for a, _ in graph.exposed]),
            gradients=_per_layer([outs[g] for _, g in graph.exposed]),
        )

    # -- host-side finishing: SVD methods, perturbation methods, smoothing --------------------------

    @property
    def _on_host(self) -> bool:
        """Whether the CAM is finished on the host from the exposed activations (and gradients)."""
        return self.method in HOST_METHODS or self.method in PERTURBATION_METHODS or self.eigen_smooth

    @property
    def _weighting(self) -> str:
        """The in-graph CAM method: the method itself, else Grad-CAM (what an exported file carries)."""
        return self.method if self.method in CAM_METHODS else "gradcam"

    def _host_cams(self, graph: ExplainerGraph, outs: dict, size, feeds: dict,
                   target_score) -> tuple[np.ndarray, list[np.ndarray]]:
        """Finish a host-side method per layer, then fuse the layers as the in-graph head does."""
        lows = []
        for layer, (a_name, g_name) in zip(graph.layers, graph.exposed):
            A, G = outs[a_name], outs[g_name]
            if self.method in HOST_METHODS:
                signed = HOST_METHODS[self.method](_nchw(A, layer), _nchw(G, layer))
            else:
                contributions = self._contributions(layer, A, G, feeds, target_score, graph.score, graph.image)
                signed = eigen_smooth(contributions) if self.eigen_smooth else contributions.sum(axis=1)
            lows.append(np.maximum(signed, 0).astype(np.float32))
        return fuse_layers(lows, tuple(size)), lows

    def _contributions(self, layer: CandidateLayer, A: np.ndarray, G: np.ndarray, feeds: dict, target_score,
                       score: ScoreSpec, image: str) -> np.ndarray:
        """(N, C, h, w) per-channel contributions ``M_k`` at ``layer``, whose channel sum is the raw CAM."""
        if self.method == "scorecam":
            weights = self._score_cam_weights(_nchw(A, layer), feeds, target_score, score, image)
        elif self.method == "ablationcam":
            weights = self._ablation_cam_weights(layer, _nchw(A, layer), feeds, target_score, score)
        else:  # an in-graph method under eigen_smooth: its own ONNX nodes on the exposed tensors
            session = self._once(self._sessions, f"contributions:{layer.name}", lambda: create_session(
                contributions_model(self._weighting, layer, 17).SerializeToString(), self.providers, self.threads))
            return _nchw(session.run(["M"], {"A": A, "G": G})[0], layer)
        return weighted_activations(weights, _nchw(A, layer))

    def _score_cam_weights(self, A: np.ndarray, feeds: dict, target_score, score: ScoreSpec,
                           image: str) -> np.ndarray:
        """Score-CAM's (N, C) weights: the model from its inputs to the score, on masked copies of each image."""
        axes = input_spatial_axes(self._index, image)
        channel_axis = 1 if axes == (2, 3) else 3
        session, names = self._cut_session(None, score)

        def masked(row: int, masks: np.ndarray) -> np.ndarray:
            copies = {name: np.repeat(feeds[name][row:row + 1], len(masks), axis=0) for name in names if name != image}
            copies[image] = (feeds[image][row:row + 1] * np.expand_dims(masks, channel_axis)).astype(feeds[image].dtype)
            return target_score(row, self._run_chunks(session, [score.tensor], copies, len(masks))[score.tensor])

        size = tuple(feeds[image].shape[a] for a in axes)
        return score_cam_weights(A, size, masked, self.perturbation_batch, self.progress)

    def _ablation_cam_weights(self, layer: CandidateLayer, A: np.ndarray, feeds: dict, target_score,
                              score: ScoreSpec) -> np.ndarray:
        """Ablation-CAM's (N, C) weights: the tail from the layer to the score, on ablated copies of ``A``."""
        session, names = self._cut_session(layer.name, score)
        dtype = self._index.type_of(layer.name).np_dtype

        def run_tail(rows, acts: np.ndarray) -> np.ndarray:
            copies = {name: feeds[name][rows] for name in names if name != layer.name}
            # the ablation value (min - 1e7) is -inf in float16: keep it the most negative finite value instead
            finite = np.finfo(dtype) if np.issubdtype(dtype, np.floating) else None
            acts = np.clip(acts, finite.min, finite.max) if finite is not None else acts
            copies[layer.name] = _from_nchw(acts, layer).astype(dtype)
            return self._run_chunks(session, [score.tensor], copies, len(acts))[score.tensor]

        unablated = run_tail(np.arange(len(A)), A)
        original = np.array([target_score(r, unablated[r:r + 1])[0] for r in range(len(A))])
        return ablation_cam_weights(A, original, lambda r, acts: target_score(r, run_tail([r] * len(acts), acts)),
                                    self.perturbation_batch, self.progress)

    def _cut_session(self, layer: str | None, score: ScoreSpec) -> tuple[object, list[str]]:
        """A session computing ``score`` from ``layer`` (None: from the model inputs), and its input names."""
        def build():
            cut = tail_model(self._index.model, [layer] if layer else list(self._index.inputs), [score.tensor])
            path = self._weights.check(cut, f"cut_{len(self._sessions)}.onnx", emitted=True)  # under the lock
            return create_session(str(path), self.providers, self.threads)

        session = self._once(self._sessions, f"cut:{layer or ''}->{score.tensor}", build)
        return session, [i.name for i in session.get_inputs()]

    @staticmethod
    def _target_scorer(graph: ExplainerGraph, outs: dict, target_feed: np.ndarray):
        """(row, scored tensor of a batch of copies of that row) -> the row's target score of each copy."""
        if graph.target_output:
            classes = outs[graph.target_output]
            return lambda row, s: s.reshape(len(s), -1)[:, classes[row]]
        return lambda row, s: s.reshape(len(s), -1).astype(np.float64) @ target_feed[row].reshape(-1)

    def _guided_times(self, guided: np.ndarray, cam: np.ndarray, image: str) -> np.ndarray:
        """Guided Grad-CAM from a host-side ``cam``: the guided gradient times the map, per input channel."""
        axes = input_spatial_axes(self._index, image)
        return (guided * np.expand_dims(cam, 1 if axes == (2, 3) else 3)).astype(np.float32)

    def _explain_augmented(self, x, target) -> ExplainResult:
        """Test-time augmentation: the same targets on flipped and shifted copies, each map moved back, averaged."""
        feeds = self._validate_inputs(x)
        image = image_input(self._index, self._layers_for(self._score_for(getattr(target, "output", None))))
        axes = input_spatial_axes(self._index, image)
        identity, *others = augmentations(tuple(feeds[image].shape[a] for a in axes))
        base = self._explain_once(feeds, target)
        rows = base.image_index if base.image_index is not None else np.arange(len(base.cam))
        if not len(rows):  # e.g. no class above a multi-label threshold: nothing to smooth
            return base
        same = target if base.targets.dtype == object else base.targets  # seed targets: the same seed
        row_feeds = {k: v[rows] for k, v in feeds.items()}
        cams = [identity.invert(base.cam)]
        for aug in others:
            moved = self._explain_once({**row_feeds, image: aug.apply(row_feeds[image], axes)}, same)
            cams.append(aug.invert(moved.cam))
        base.cam = mean_of_normalised(cams)
        if base.guided is not None:
            base.guided_gradcam = self._guided_times(base.guided, base.cam, image)
        return base

    def _run(self, mode: str, graph: ExplainerGraph, feeds: dict, target_feed: np.ndarray) -> dict:
        session = self._session(mode, graph.score)
        fetch = [*graph.model_outputs, graph.cam, *graph.cam_lowres]
        fetch += [n for n in (graph.target_output, graph.guided_backprop, graph.guided_gradcam) if n]
        fetch += [name for pair in graph.exposed for name in pair]
        return self._run_chunks(session, fetch, {**feeds, graph.target_input: target_feed}, target_feed.shape[0])

    def _run_chunks(self, session, fetch: list[str], feeds: dict, n: int) -> dict:
        """Run ``session`` over the batch, in chunks where the model's batch size is fixed."""
        step = self._static_batch() or n
        chunks = [feeds] if step >= n else [{k: v[i:i + step] for k, v in feeds.items()} for i in range(0, n, step)]
        parts = []
        for chunk in chunks:
            try:
                parts.append(session.run(fetch, chunk))
            except Exception as e:  # onnxruntime's own exception types
                raise OnnxcamError(f"ONNX Runtime failed while explaining: {first_line(e)}") from None
        if len(parts) == 1:
            return dict(zip(fetch, parts[0]))
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(fetch)}

    def _static_batch(self) -> int | None:
        d = (self._index.shape(self._index.inputs[0]) or (None,))[0]
        return d if isinstance(d, int) and d > 0 else None

    def _validate_inputs(self, x) -> dict[str, np.ndarray]:
        names = self._index.inputs
        if (type(x) is np.ndarray and x.ndim and x.shape[0] and (x.dtype, x.shape[1:]) == self._accepted
                and x.flags.c_contiguous):
            return {names[0]: x}  # what the last call accepted: the checks below would pass unchanged
        if isinstance(x, Mapping):
            missing = [n for n in names if n not in x]
            extra = [k for k in x if k not in names]
            if missing or extra:
                raise InputError(f"input dict keys {sorted(x)} do not match the model inputs {names}")
            raw = dict(x)
        else:
            if len(names) != 1:
                raise InputError(f"the model has {len(names)} inputs {names}; pass a dict name -> array")
            raw = {names[0]: x}
        feeds, batch = {}, None
        for name, arr in raw.items():
            arr = np.asarray(arr)
            t = self._index.type_of(name)
            if arr.dtype.kind not in "fiub":
                raise InputError(f"input {name!r} has dtype {arr.dtype}; pass a numeric array")
            if t is not None and t.is_float:
                if arr.dtype.kind != "f":
                    raise InputError(f"input {name!r} must be a floating-point array ({t.np_dtype}), not {arr.dtype}; "
                                     "preprocess the image to floats first")
                arr = np.ascontiguousarray(arr, dtype=t.np_dtype)
            elif t is not None:
                arr = np.ascontiguousarray(arr, dtype=t.np_dtype)
            if t is not None and t.shape is not None:
                if arr.ndim != len(t.shape):
                    raise InputError(f"input {name!r} has rank {arr.ndim} (shape {arr.shape}); the model expects rank "
                                     f"{len(t.shape)} ({_fmt_shape(t.shape)}). Add the batch axis with x[None] "
                                     "for a single image")
                for axis, (have, want) in enumerate(zip(arr.shape[1:], t.shape[1:]), start=1):
                    if isinstance(want, int) and want > 0 and have != want:
                        raise InputError(f"input {name!r} has shape {arr.shape}; the model expects "
                                         f"{_fmt_shape(t.shape)} (axis {axis} must be {want})")
            if arr.ndim == 0 or arr.shape[0] == 0:
                raise InputError(f"input {name!r} is an empty batch (shape {arr.shape}); pass at least one image")
            if batch is not None and arr.shape[0] != batch:
                raise InputError(f"inputs disagree on the batch size ({batch} vs {arr.shape[0]} for {name!r})")
            batch = arr.shape[0]
            feeds[name] = arr
        if len(feeds) == 1 and not isinstance(x, Mapping):
            self._accepted = (arr.dtype, arr.shape[1:])
        return feeds

    def _class_ids(self, target, n: int) -> np.ndarray:
        classes = self.num_classes
        if target is None:
            return _top1_ids(n)
        ids = np.atleast_1d(np.asarray(target))
        if ids.dtype.kind not in "iu" or ids.ndim != 1:
            raise TargetError(f"target must be None, an int, a list of ints, or an OutputTarget; got {target!r}")
        if ids.size == 1:
            ids = np.repeat(ids, n)
        if ids.size != n:
            raise TargetError(f"got {ids.size} targets for a batch of {n} images; pass one per image or a single int")
        if classes is not None and ((ids < 0) | (ids >= classes)).any():
            bad = ids[(ids < 0) | (ids >= classes)][0]
            raise TargetError(f"target class {bad} is out of range: {self._score.describe()} has {classes} classes "
                              f"(0..{classes - 1})")
        if classes is None and (ids < 0).any():
            raise TargetError(f"target class {ids[ids < 0][0]} is negative; class ids start at 0")
        return ids.astype(np.int64)

    @property
    def index(self) -> GraphIndex:
        """The prepared graph (weights detached): inputs, outputs, shapes, metadata."""
        return self._index

    @property
    def score_spec(self) -> ScoreSpec:
        """What the default target is scored on: the output, the seeded tensor, and the final squashing op if any."""
        return self._score

    @property
    def score_tensor(self) -> str:
        """The tensor whose seeded sum is differentiated: the logit before a final Softmax/Sigmoid, or the output."""
        return self._score.tensor

    @property
    def source(self) -> Path | None:
        """The model file this Explainer reads (None for an in-memory ModelProto)."""
        return self._source

    def class_scores(self, result: ExplainResult) -> np.ndarray:
        """(N, K) values of the explained output (probabilities after a Softmax), one row per image."""
        out = result.outputs[self._score.output]
        return out.reshape(out.shape[0], -1)

    @property
    def num_classes(self) -> int | None:
        """Classes of the explained output, when it is (batch, classes); else None."""
        return self._classes_of(self._score)

    def _classes_of(self, score: ScoreSpec) -> int | None:
        shape = self._index.shape(score.tensor)
        if shape is None or len(shape) < 2:
            return None
        d = shape[1]
        return d if isinstance(d, int) and d > 0 else None

    def seed_for(self, target: SeedTarget, batch: int) -> np.ndarray:
        """The seed ``target`` puts on its output's scored tensor: the ``target_seed`` feed of a seed-mode export."""
        score = self._score_for(target.output)
        shape = self._index.shape(score.tensor)
        if shape is None:
            raise TargetError(f"the rank of {score.describe()} is unknown, so no seed can be shaped for it")
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in shape[1:])
        return target.seed((batch, *dims), self._index.type_of(score.tensor).np_dtype)

    def _class_rows(self, target: TopK | MultiLabelTarget, feeds: dict, n: int,
                    score: ScoreSpec) -> tuple[np.ndarray, np.ndarray]:
        """(image of each row, class feed of each row) for targets that explain several classes per image."""
        if isinstance(target, TopK):
            return target.class_rows(n, self._classes_of(score))
        if score.squash in ("Softmax", "LogSoftmax"):
            raise TargetError(f"output {score.output!r} comes from a {score.squash}: its classes exclude each other, "
                              "so there are no multi-label probabilities; use onnxcam.TopK(k)")
        values = self.predict(feeds).outputs[score.output].reshape(n, -1).astype(np.float64)
        probabilities = values if score.squash == "Sigmoid" else 0.5 * (1 + np.tanh(values / 2))
        return target.class_rows(probabilities)


def _nchw(a: np.ndarray, layer: CandidateLayer) -> np.ndarray:
    """A layer's tensor with channels on axis 1, whatever the model's layout."""
    return a.transpose(0, 3, 1, 2) if layer.channel_axis == 3 else a


def _from_nchw(a: np.ndarray, layer: CandidateLayer) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if layer.channel_axis == 3 else a


@functools.lru_cache(maxsize=64)
def _top1_ids(n: int) -> np.ndarray:
    """The class feed meaning "each image's top-1" for a batch of ``n`` (shared, read-only: the hot path)."""
    ids = np.full(n, -1, dtype=np.int64)
    ids.flags.writeable = False
    return ids


def _per_layer(arrays: list[np.ndarray]):
    """None, one array, or a list (several layers), as ``cam_lowres`` is returned."""
    return None if not arrays else arrays[0] if len(arrays) == 1 else arrays


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + ")"

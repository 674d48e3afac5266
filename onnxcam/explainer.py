"""The public entry point: ``Explainer(model).explain(x)``.

An Explainer loads the model once, picks the layer and the method's row in
:mod:`onnxcam.methods.table`, and leaves the rest to :mod:`onnxcam.explain`:
the graphs and sessions (built once, thread-safe) to its runner, input checks
to its input checker, host-side finishing to :class:`~onnxcam.explain.host.HostFinish`.
Repeated calls cost one ``session.run`` each.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxcam.errors import LayerError, OnnxcamError
from onnxcam.explain.build import ScoreSpec, resolve_score
from onnxcam.explain.host import HostFinish
from onnxcam.explain.inputs import InputChecker
from onnxcam.explain.graphs import ExplainerGraphs
from onnxcam.explain.layer_choice import pick_layers
from onnxcam.explain.result import ExplainResult, Prediction, per_layer
from onnxcam.explain.runner import Runner
from onnxcam.explain.targeting import class_count, plan_target, seed_for
from onnxcam.graph.layers import (
    CandidateLayer,
    candidate_layers,
    image_axes,
    image_input,
    image_size,
    normalises_tokens,
)
from onnxcam.graph.prepare import prepared_index
from onnxcam.graph.tokens import TokenOverrides
from onnxcam.graph.weights import save_model
from onnxcam.methods import METHODS, method_spec
from onnxcam.methods.perturbation import DEFAULT_BATCH
from onnxcam.methods.spec import ProgressFn
from onnxcam.runtime.session import require_onnxruntime
from onnxcam.targets import SeedTarget

#: Every ``method=`` value, in the order of the method table.
ALL_METHODS: tuple[str, ...] = tuple(METHODS)

__all__ = ["ALL_METHODS", "ExplainResult", "Explainer", "Prediction"]


#: Explainers kept per image size by :meth:`Explainer.for_size` (a dynamic-size transformer), the least recently
#: used dropped first.
SIZES_KEPT = 8


class Explainer:
    """Grad-CAM for an ONNX model, computed inside one ONNX Runtime session.

    ``model`` is a path or an ``onnx.ModelProto`` (never modified). ``layer`` is
    ``"auto"``, a tensor or node name, or a list of those. ``method`` is any
    name of ``ALL_METHODS``. ``score="logit"`` explains the logit before a
    final Softmax/LogSoftmax/Sigmoid, as in the paper; ``score="probability"``
    explains the output itself. ``providers`` follows onnxruntime (None: CUDA
    if it really runs, else CPU).

    Options that finish on the host (the exported file carries the plain
    method): ``aug_smooth`` averages the maps of flipped and shifted copies,
    ``eigen_smooth`` takes the first principal component of the per-channel
    contributions instead of their sum. ``perturbation_batch`` is how many
    masked or ablated copies Score-CAM and Ablation-CAM send through one
    session run; ``progress(done, total)`` is called after each such run.

    Token layers (vision transformers' ``(N, T, C)`` activations) are
    explained over their patch tokens; their grid and prefix-token count are
    read from the graph, and ``token_grid=(h, w)`` / ``prefix_tokens=P`` set
    them where the graph does not say (see :mod:`onnxcam.graph.tokens`). A
    model exported with a dynamic image size says nothing about its tokens
    until the size is known: ``input_size=(H, W)`` pins it (the explainer then
    takes that size only; :attr:`dynamic_input_size` tells whether a model has
    a dynamic size). Without a pin, a transformer of dynamic size is explained
    by an Explainer built for each batch's image size, kept per size
    (:meth:`for_size`); a convolutional one runs at any size as it is.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | onnx.ModelProto,
        layer: str | Sequence[str] = "auto",
        method: str = "gradcam",
        providers: Sequence[Any] | None = None,
        output: str | int = 0,
        score: str = "logit",
        threads: int | None = None,
        *,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        perturbation_batch: int = DEFAULT_BATCH,
        progress: ProgressFn | None = None,
        token_grid: tuple[int, int] | None = None,
        prefix_tokens: int | None = None,
        input_size: tuple[int, int] | None = None,
    ):
        require_onnxruntime()  # say which extra to install before any work
        _arguments: dict[str, Any] = dict(
            layer=layer,
            method=method,
            providers=providers,
            output=output,
            score=score,
            threads=threads,
            aug_smooth=aug_smooth,
            eigen_smooth=eigen_smooth,
            perturbation_batch=perturbation_batch,
            progress=progress,
        )
        self.spec = method_spec(method)
        if score not in ("logit", "probability"):
            raise OnnxcamError(f"score must be 'logit' or 'probability', not {score!r}")
        if type(perturbation_batch) is not int or perturbation_batch < 1:  # True is an int, but not a count
            raise OnnxcamError(f"perturbation_batch must be a positive int, not {perturbation_batch!r}")
        self.method, self.aug_smooth, self.eigen_smooth = method, bool(aug_smooth), bool(eigen_smooth)
        self.index, self.source_files = prepared_index(model, input_size)  # source files are never written over
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))  # the pin, if any
        if not self.index.inputs:
            raise OnnxcamError("the model has no inputs to feed")
        self._use_logit = score == "logit"
        self.score_spec: ScoreSpec = resolve_score(self.index, output, use_logit=self._use_logit)
        self.candidates: list[CandidateLayer] = candidate_layers(self.index)
        tokens = TokenOverrides(token_grid, prefix_tokens)
        # A transformer of dynamic image size: its token layers exist only at a fixed size (see for_size).
        sized_apart = input_size is None and self.dynamic_input_size and normalises_tokens(self.index)
        try:
            self._layers, self.layer_reason = pick_layers(
                self.index, layer, self.score_spec.tensor, self.candidates, tokens
            )
        except LayerError:
            if not sized_apart:
                raise
            # A token layer named by the user exists only in the builds per size, which look for it again;
            # this unsized build takes the automatic layer.
            layer = "auto"
            self._layers, self.layer_reason = pick_layers(self.index, "auto", self.score_spec.tensor, self.candidates)
        # Only where the layer depends on the size: the automatic choice, or a layer this build does not have.
        self._per_size = sized_apart and isinstance(layer, str) and layer == "auto"
        self._runner = Runner(self.index, providers, threads)
        self._graphs = ExplainerGraphs(
            self._runner,
            self.spec,
            self.eigen_smooth,
            self.score_spec,
            self._layers,
            isinstance(layer, str) and layer == "auto",
            self.candidates,
            tokens,
        )
        self._inputs = InputChecker(self.index)
        self._host = HostFinish(self._runner, self.spec, self.eigen_smooth, perturbation_batch, progress)
        self._graphs.graph(self._default_mode(), self.score_spec)  # unsupported graphs fail here, before any image
        self._sized: OrderedDict[tuple[int, int], Explainer] = OrderedDict()  # the most recently used last
        self._sized_lock = threading.Lock()
        # what for_size builds from; no reference to the caller's ModelProto where it is not needed
        self._rebuild: tuple[Any, dict[str, Any]] = (None, {})
        if self._per_size:
            self._rebuild = (model, {**_arguments, "token_grid": token_grid, "prefix_tokens": prefix_tokens})

    @property
    def layer(self) -> str | list[str]:
        names = [c.name for c in self._layers]
        return names[0] if len(names) == 1 else names

    @property
    def session(self) -> Any:
        """The onnxruntime session of the default target mode (created on first use)."""
        return self._graphs.ready(self._default_mode(), self.score_spec)[1]

    @property
    def providers_in_use(self) -> list[str]:
        """Execution providers the session really uses (onnxruntime-gpu may silently fall back to CPU)."""
        return list(self.session.get_providers())

    @property
    def dynamic_input_size(self) -> bool:
        """Whether the image input's height or width is dynamic (then ``input_size=`` can pin it)."""
        return not all(isinstance(d, int) and d > 0 for d in image_size(self.index, image_input(self.index)))

    @property
    def sizes_explained_apart(self) -> bool:
        """Whether :meth:`explain` builds an Explainer per image size (a transformer of dynamic image size)."""
        return self._per_size

    def for_size(self, size: tuple[int, int]) -> Explainer:
        """The Explainer this one uses for images of ``size`` (H, W): itself, or one pinned to that size.

        A transformer exported with a dynamic height and width has no token grid
        until its size is fixed, so its token layers, the automatic layer among
        them, exist only in a build for one size. Such builds are made on first
        use and kept, the :data:`SIZES_KEPT` most recently used (each holds
        its sessions and a copy of the weights); every other model is
        explained at any size by this Explainer.
        """
        if not self._per_size:
            return self
        size = (int(size[0]), int(size[1]))
        with self._sized_lock:  # one build at a time: a build of another size waits
            if size not in self._sized:
                model, arguments = self._rebuild
                self._sized[size] = Explainer(model, **arguments, input_size=size)
                while len(self._sized) > SIZES_KEPT:
                    self._sized.popitem(last=False)
            self._sized.move_to_end(size)
            return self._sized[size]

    def _explainer_for(self, feeds: Mapping[str, np.ndarray]) -> Explainer:
        if not self._per_size:
            return self
        image = image_input(self.index)
        height, width = image_axes(self.index, image)
        shape = feeds[image].shape
        return self.for_size((shape[height], shape[width]))

    @property
    def source(self) -> Path | None:
        """The model file this Explainer reads (None for an in-memory ModelProto)."""
        return self.source_files[0] if self.source_files else None

    @property
    def score_tensor(self) -> str:
        """The tensor whose seeded sum is differentiated: the logit before a final Softmax/Sigmoid, or the output."""
        return self.score_spec.tensor

    @property
    def num_classes(self) -> int | None:
        """Classes of the explained output, when it is (batch, classes); else None."""
        return class_count(self.index, self.score_spec)

    # -- graphs ----------------------------------------------------------------------------------

    def _default_mode(self, score: ScoreSpec | None = None) -> str:
        return "class" if (score or self.score_spec).class_axis is not None else "seed"

    def _score_for(self, output: str | int | None) -> ScoreSpec:
        """The score of ``output`` (None: the Explainer's own), resolved with the Explainer's score= rule."""
        score = self.score_spec if output is None else resolve_score(self.index, output, use_logit=self._use_logit)
        return self.score_spec if score.output == self.score_spec.output else score

    def _refuse_unsized(self, to: str) -> None:
        if self._per_size:
            raise OnnxcamError(
                "this transformer's image size is dynamic, so its token layers are only known at a fixed size: "
                f"build the Explainer with input_size=(H, W) to {to} (command line: --size H W)"
            )

    @property
    def explainer_model(self) -> onnx.ModelProto:
        """The standalone explainer graph (class mode where the output has classes), weights included."""
        self._refuse_unsized("build its explainer graph")
        return self._runner.weights.materialize(self._graphs.graph(self._default_mode(), self.score_spec).model)

    def export(
        self,
        path: str | os.PathLike[str],
        output: str | int | None = None,
        mode: str | None = None,
        portable: bool = False,
    ) -> None:
        """Write the explainer graph: model inputs (+ target) -> model outputs + cam + cam_lowres (+ target).

        ``output`` picks the explained output (default: the Explainer's). ``mode="seed"`` replaces the
        ``target_class`` input by ``target_seed``, shaped like the scored tensor (``seed_for`` makes it from
        a RegionTarget, SimilarityTarget or OutputTarget); the default is "class" where the output is
        (batch, classes), else "seed". In "class" files ``target_class = -1`` means each image's top-1;
        ``mode="rank"`` files also take ``-r`` for the rank-r class (a TopK over the scores, a little slower).
        ``portable=True`` writes the same numbers with ops every execution provider takes (MaxPool's gradient
        as a mask instead of Indices and a scatter-add, no default-valued attributes, static shapes as
        constants); see docs/deployment.md, and ``onnxcam.runtime.ep_check`` to check a file against an EP.
        """
        if mode not in (None, "class", "rank", "seed"):
            raise OnnxcamError(f"export mode must be 'class', 'rank' or 'seed', not {mode!r}")
        self._refuse_unsized("export it")
        score = self._score_for(output)
        target = Path(path).resolve()
        if target in self.source_files:
            raise OnnxcamError(
                f"refusing to overwrite {path}: the model being explained reads it; choose another file name"
            )
        graph = self._graphs.graph(mode or self._default_mode(score), score, portable)
        model = self._runner.weights.materialize(graph.model)
        try:
            save_model(model, target)
        except OSError as e:
            raise OnnxcamError(f"cannot write {path}: {e.strerror or e}") from None

    # -- running ---------------------------------------------------------------------------------

    def predict(self, x: np.ndarray | Mapping[str, np.ndarray]) -> Prediction:
        """One forward pass of the original model, batched like ``explain``, with the explained score exposed.

        The quality metrics run many of these, through a session of the user's own
        graph plus the score where it is an inner tensor (a logit).
        """
        feeds = self._inputs.feeds(x)
        score = self.score_spec.tensor
        fetch = [*self.index.outputs, *([score] if score not in self.index.outputs else [])]
        outs = self._runner.run(self._runner.forward_session(score), fetch, feeds, next(iter(feeds.values())).shape[0])
        return Prediction(outputs={name: outs[name] for name in self.index.outputs}, scores=outs[score])

    def explain(self, x: np.ndarray | Mapping[str, np.ndarray], target: Any = None) -> ExplainResult:
        """Explain a preprocessed batch.

        ``target``: None (each image's top-1), an int, one int per image; a SeedTarget on any output
        (OutputTarget, RegionTarget, SimilarityTarget); or several classes per image, one result row per
        (image, class) in one batched run: TopK(k), MultiLabelTarget(threshold) (see ``res.image_index``).
        """
        feeds = self._inputs.feeds(x)
        sized = self._explainer_for(feeds)
        if sized is not self:
            return sized.explain(feeds, target)
        result = self._explain_once(feeds, target)
        if not self.aug_smooth:
            return result
        image = image_input(self.index, self._graphs.layers_for(self._score_for(getattr(target, "output", None))))
        return self._host.augmented(
            lambda moved, same: self._explain_once(self._inputs.feeds(moved), same), feeds, target, image, result
        )

    def _explain_once(self, feeds: dict[str, np.ndarray], target: Any) -> ExplainResult:
        """One explanation of the batch as given (``explain`` without test-time augmentation)."""
        run = plan_target(
            self.index,
            target,
            feeds,
            self._score_for(getattr(target, "output", None)),
            lambda feeds: self.predict(feeds).outputs,
        )
        graph, session = self._graphs.ready(run.mode, run.score)
        fetch = [*graph.model_outputs, graph.cam, *graph.cam_lowres, *(name for pair in graph.exposed for name in pair)]
        fetch += graph.exposed_tokens.values()
        fetch += [name for name in (graph.target_output, graph.guided_backprop, graph.guided_gradcam) if name]
        outs = self._runner.run(
            session, fetch, {**run.feeds, graph.target_input: run.target_feed}, len(run.target_feed)
        )
        if not len(run.rows):  # the one placeholder row run for its shapes
            outs = {k: v[:0] for k, v in outs.items()}
        cam, lows = outs[graph.cam], [outs[name] for name in graph.cam_lowres]
        if graph.exposed and len(run.rows):  # a host-side method or option (an empty batch keeps the graph's maps)
            cam, lows = self._host.cams(graph, outs, run.feeds, run.target_feed)
        names = [layer.name for layer in graph.layers]
        targets = outs[graph.target_output] if graph.target_output else np.array([None] * len(run.rows), object)
        return ExplainResult(
            cam=cam,
            cam_lowres=lows[0] if len(lows) == 1 else lows,
            targets=targets,
            outputs={name: outs[name] for name in graph.model_outputs},
            layer=names[0] if len(names) == 1 else names,
            guided=outs.get(graph.guided_backprop or ""),
            guided_gradcam=outs.get(graph.guided_gradcam or ""),
            image_index=run.rows,
            activations=per_layer([outs[a] for a, _ in graph.exposed]),
            gradients=per_layer([outs[g] for _, g in graph.exposed]),
        )

    def class_scores(self, result: ExplainResult) -> np.ndarray:
        """(N, K) values of the explained output (probabilities after a Softmax), one row per image."""
        out = result.outputs[self.score_spec.output]
        return out.reshape(out.shape[0], -1)

    def seed_for(self, target: SeedTarget, batch: int) -> np.ndarray:
        """The seed ``target`` puts on its output's scored tensor: the ``target_seed`` feed of a seed-mode export."""
        return seed_for(self.index, self._score_for(target.output), target, batch)

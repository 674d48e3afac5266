"""The public entry point: ``Explainer(model).explain(x)``.

An Explainer loads the model once, picks the layer, builds the explainer graph
and keeps one ONNX Runtime session per target mode, so repeated calls cost one
``session.run`` each.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxcam.errors import InputError, LayerError, OnnxcamError, TargetError, UnsupportedOpError
from onnxcam.explain.build import ExplainerGraph, build_explainer, resolve_score
from onnxcam.explain.layer_choice import choose_layer
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.layers import CandidateLayer, candidate_layers, resolve_layer
from onnxcam.graph.load import load_model
from onnxcam.graph.prepare import prepare_model
from onnxcam.graph.weights import WeightFolder, save_model
from onnxcam.methods import CAM_METHODS
from onnxcam.methods.eigen import HOST_METHODS, normalise, resize_half_pixel
from onnxcam.methods.guided import GUIDED_METHODS
from onnxcam.runtime.session import create_session, require_onnxruntime
from onnxcam.targets import OutputTarget

#: Every ``method=`` value: in-graph weightings, host-side (SVD) methods, guided methods.
ALL_METHODS: tuple[str, ...] = (*CAM_METHODS, *HOST_METHODS, *GUIDED_METHODS)


@dataclass
class ExplainResult:
    """What one ``explain`` call returns (see the README for the exact formulas)."""

    cam: np.ndarray  # (N, H, W) float32 in [0, 1] at the input's spatial size
    cam_lowres: np.ndarray | list[np.ndarray]  # (N, h, w) per layer; a list when several layers
    targets: np.ndarray  # (N,) explained class ids; None entries for an OutputTarget
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    layer: str | list[str] = ""
    guided: np.ndarray | None = None  # guided backprop, shaped like the input (guided methods only)
    guided_gradcam: np.ndarray | None = None  # guided * cam, shaped like the input (guided methods only)


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
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, layer: str | Sequence[str] = "auto",
                 method: str = "gradcam", providers: Sequence | None = None, output: str | int = 0,
                 score: str = "logit", threads: int | None = None):
        require_onnxruntime()  # say which extra to install before any work
        if method not in ALL_METHODS:
            raise OnnxcamError(f"unknown method {method!r}; available: {', '.join(ALL_METHODS)}")
        if score not in ("logit", "probability"):
            raise OnnxcamError(f"score must be 'logit' or 'probability', not {score!r}")
        self.method = method
        self.providers = providers
        self.threads = threads
        self._source = Path(model).resolve() if isinstance(model, (str, os.PathLike)) else None
        loaded = load_model(model)
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
        self._graphs: dict[str, ExplainerGraph] = {}
        self._graph_files: dict[str, Path] = {}
        self._sessions: dict[str, object] = {}
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

    def _default_mode(self) -> str:
        return "class" if self._score.class_axis is not None else "seed"

    def _graph(self, mode: str) -> ExplainerGraph:
        if mode not in self._graphs:
            try:
                guided, on_host = self.method in GUIDED_METHODS, self.method in HOST_METHODS
                weighting = "gradcam" if guided or on_host else self.method
                graph = build_explainer(self._index, self._layers, self._score, weighting, mode, guided=guided,
                                        expose=on_host)
            except UnsupportedOpError as e:
                later = [c.name for c in self.candidates if c.position > max(lay.position for lay in self._layers)]
                hint = f"; later candidate layers: {', '.join(map(repr, later[-3:]))}" if later else ""
                raise UnsupportedOpError(f"{e}{hint}") from None
            self._graph_files[mode] = self._weights.check(graph.model, f"explainer_{mode}.onnx", emitted=True)
            self._graphs[mode] = graph
        return self._graphs[mode]

    def _session(self, mode: str):
        if mode not in self._sessions:
            self._graph(mode)
            self._sessions[mode] = create_session(str(self._graph_files[mode]), self.providers, self.threads)
        return self._sessions[mode]

    @property
    def explainer_model(self) -> onnx.ModelProto:
        """The standalone explainer graph (class mode where the output has classes), weights included."""
        return self._weights.materialize(self._graph(self._default_mode()).model)

    def export(self, path: str | os.PathLike) -> None:
        """Write the explainer graph: model inputs (+ target) -> model outputs + cam + cam_lowres (+ target)."""
        target = Path(path).resolve()
        if self._source is not None and target == self._source:
            raise OnnxcamError(f"refusing to overwrite the model being explained ({path}); choose another file name")
        try:
            save_model(self.explainer_model, target)
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
        if "forward" not in self._sessions:
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
            self._sessions["forward"] = create_session(str(path), self.providers, self.threads)
        return self._sessions["forward"]

    def explain(self, x: np.ndarray | Mapping[str, np.ndarray], target=None) -> ExplainResult:
        """Explain a preprocessed batch. ``target``: None (top-1), an int, one int per image, or an OutputTarget."""
        feeds = self._validate_inputs(x)
        n = next(iter(feeds.values())).shape[0]
        if isinstance(target, OutputTarget):
            graph_mode = "seed"
            target_feed = self._output_target_seed(target, n)
        else:
            graph_mode = "class"
            if self._score.class_axis is None:
                raise TargetError(f"{self._score.describe()} is not a (batch, classes) tensor; "
                                  "pass target=onnxcam.OutputTarget(output, index)")
            target_feed = self._class_ids(target, n)
        graph = self._graph(graph_mode)
        outs = self._run(graph_mode, graph, feeds, target_feed)
        cam = outs[graph.cam]
        lows = [outs[name] for name in graph.cam_lowres]
        if self.method in HOST_METHODS:
            cam, lows = self._host_cams(graph, outs, cam.shape[1:])
        if graph_mode == "class":
            targets = outs[graph.target_output].astype(np.int64)
        else:
            targets = np.array([None] * n, dtype=object)
        return ExplainResult(
            cam=cam, cam_lowres=lows[0] if len(lows) == 1 else lows, targets=targets,
            outputs={name: outs[name] for name in graph.model_outputs}, layer=self.layer,
            guided=outs.get(graph.guided_backprop), guided_gradcam=outs.get(graph.guided_gradcam),
        )

    def _host_cams(self, graph: ExplainerGraph, outs: dict, size) -> tuple[np.ndarray, list[np.ndarray]]:
        """Finish a host-side method from the exposed activations and gradients, with the in-graph head's maths."""
        lows, cams = [], []
        for layer, (a_name, g_name) in zip(self._layers, graph.exposed):
            A, G = outs[a_name], outs[g_name]
            if layer.channel_axis == 3:
                A, G = A.transpose(0, 3, 1, 2), G.transpose(0, 3, 1, 2)
            low = np.maximum(HOST_METHODS[self.method](A, G), 0).astype(np.float32)
            lows.append(low)
            cams.append(normalise(resize_half_pixel(low, tuple(size))))
        cam = cams[0] if len(cams) == 1 else normalise(np.mean(cams, axis=0))
        return cam, lows

    def _run(self, mode: str, graph: ExplainerGraph, feeds: dict, target_feed: np.ndarray) -> dict:
        session = self._session(mode)
        fetch = [*graph.model_outputs, graph.cam, *graph.cam_lowres]
        fetch += [n for n in (graph.target_output, graph.guided_backprop, graph.guided_gradcam) if n]
        fetch += [name for pair in graph.exposed for name in pair]
        return self._run_chunks(session, fetch, {**feeds, graph.target_input: target_feed}, target_feed.shape[0])

    def _run_chunks(self, session, fetch: list[str], feeds: dict, n: int) -> dict:
        """Run ``session`` over the batch, in chunks where the model's batch size is fixed."""
        step = self._static_batch() or n
        parts = []
        for start in range(0, n, step):
            chunk = {k: v[start:start + step] for k, v in feeds.items()}
            try:
                parts.append(session.run(fetch, chunk))
            except Exception as e:  # onnxruntime's own exception types
                raise OnnxcamError(f"ONNX Runtime failed while explaining: {_first_line(e)}") from None
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(fetch)}

    def _static_batch(self) -> int | None:
        d = (self._index.shape(self._index.inputs[0]) or (None,))[0]
        return d if isinstance(d, int) and d > 0 else None

    def _validate_inputs(self, x) -> dict[str, np.ndarray]:
        names = self._index.inputs
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
        return feeds

    def _class_ids(self, target, n: int) -> np.ndarray:
        classes = self.num_classes
        if target is None:
            return np.full(n, -1, dtype=np.int64)
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
        shape = self._index.shape(self._score.tensor)
        if shape is None or len(shape) < 2:
            return None
        d = shape[1]
        return d if isinstance(d, int) and d > 0 else None

    def _output_target_seed(self, target: OutputTarget, n: int) -> np.ndarray:
        spec = resolve_score(self._index, target.output, use_logit=self._use_logit)
        if spec.tensor != self._score.tensor:
            raise TargetError(f"this Explainer scores {self._score.describe()}; create it with "
                              f"output={target.output!r} to explain that output")
        shape = self._index.shape(spec.tensor)
        if shape is None or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            raise TargetError(f"the shape of {spec.tensor!r} is not static; OutputTarget needs a static output shape")
        t = self._index.type_of(spec.tensor)
        return target.seed((n, *shape[1:]), t.np_dtype)


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + ")"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

"""What a CAM method is: one :class:`MethodSpec`, and the :class:`MethodRun` a host-side method is handed.

Every method ends the same way: per-channel contributions ``M_k`` of the
layer, summed over channels, ReLU, resized and normalised. Methods differ only
in how they get ``M_k`` (pytorch-grad-cam's ``get_cam_weights``):

* ``gradient``: ONNX nodes on the layer's activations ``A`` and gradients
  ``G`` (a :data:`CamFormula`), so the explainer graph and an exported file
  carry them;
* ``host``: numpy on ``A`` and ``G`` read out of the explainer graph (an
  SVD has no standard ONNX op), with its own reduction over channels;
* ``perturbation``: numpy weights measured with extra forward passes, which
  the :class:`MethodRun` runs through the model's own sessions;
* ``guided``: Grad-CAM plus the guided input gradient, both in the graph;
* ``attention``: not a CAM of one layer but of a transformer's attention maps
  and their gradients, rolled out over the blocks in the graph
  (:mod:`onnxcam.explain.rollout`); the chosen token layer gives the grid.

The table of every method is :mod:`onnxcam.methods.table`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from onnxcam.graph.builder import GraphBuilder

#: How a method gets its contributions (see the module docstring).
Kind = Literal["gradient", "host", "perturbation", "guided", "attention"]

#: (builder, A, G, spatial_axes) -> a tensor name: channel weights (spatial dims kept as 1) or contributions.
CamFormula = Callable[[GraphBuilder, str, str, Sequence[int]], str]

#: (passes done, passes in total), called after every batch of perturbation passes.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class MethodRun:
    """What a host-side method may read and run for one layer and one batch of images.

    Arrays have channels on axis 1 whatever the model's layout. The scoring
    functions return the explained target's score of each copy they are given
    (the same target as the explainer graph's row ``rows[i]``), running the
    model's own ONNX Runtime sessions in batches.
    """

    activations: np.ndarray  # (N, C, h, w) float32: the layer's A
    gradients: np.ndarray  # (N, C, h, w) float32: dScore/dA
    input_size: tuple[int, int]  # the image input's (H, W)
    batch_size: int  # perturbed copies per session run (``perturbation_batch``)
    progress: ProgressFn | None
    #: (image row, (B, H, W) masks in [0, 1]) -> (B,) scores of that image multiplied by each mask
    score_masked_inputs: Callable[[int, np.ndarray], np.ndarray]
    #: ((B,) image rows, (B, C, h, w) activations) -> (B,) scores of the model's tail run from those activations
    score_layer: Callable[[np.ndarray, np.ndarray], np.ndarray]
    #: () -> (N, C, h, w): the in-graph method's own contributions on A and G (what eigen-smoothing decomposes)
    graph_contributions: Callable[[], np.ndarray]


#: (run) -> (N, C, h, w) contributions ``M_k`` at the layer.
HostHook = Callable[[MethodRun], np.ndarray]
#: (N, C, h, w) contributions -> (N, h, w) signed map, before the ReLU.
ChannelReduction = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MethodSpec:
    """One CAM method: its names, where it runs, and the one hook that gives its contributions.

    ``formula`` (gradient methods) builds ``w_k`` (``per_channel``, the map is
    ``sum_k w_k A_k``) or ``M_k`` itself as ONNX nodes. ``host`` (host-side
    and perturbation methods) returns ``M_k`` from a :class:`MethodRun`;
    ``reduce`` replaces the sum over channels (the Eigen methods' principal
    component). Methods without a formula run Grad-CAM's in the graph, which
    is what an exported file of theirs carries.
    """

    name: str  # the ``method=`` / ``--method`` value
    title: str  # its name in papers and pictures
    paper: str  # where it comes from
    summary: str  # what weights the layer's channels, in a few words (the README's table)
    kind: Kind
    details: str  # the contribution ``M_k`` in symbols (the docs' table; ``A_k``, ``g_k``, sums over ``ij``)
    formula: CamFormula | None = None
    per_channel: bool = True
    host: HostHook | None = None
    reduce: ChannelReduction | None = None

    def __post_init__(self) -> None:
        wants = {
            "gradient": (True, False),
            "host": (False, True),
            "perturbation": (False, True),
            "guided": (False, False),
            "attention": (False, False),
        }[self.kind]  # (a formula, a host hook)
        if (self.formula is not None, self.host is not None) != wants:
            raise ValueError(
                f"method {self.name!r}: a {self.kind} method has {'a' if wants[0] else 'no'} formula "
                f"and {'a' if wants[1] else 'no'} host hook"
            )

    @property
    def graph_method(self) -> str:
        """The formula the explainer graph computes: the method's own, else Grad-CAM's."""
        return self.name if self.formula is not None or self.kind == "attention" else "gradcam"

    @property
    def on_host(self) -> bool:
        """Whether the map is finished in numpy from the activations (and gradients) the graph exposes."""
        return self.host is not None

    @property
    def exported(self) -> bool:
        """Whether an exported explainer file computes this method (else it carries Grad-CAM)."""
        return not self.on_host

    @property
    def served(self) -> bool:
        """Whether ``onnxcam serve`` offers it: one pass per request (no perturbation loops, no guided images)."""
        return self.kind in ("gradient", "host", "attention")

    @property
    def guided(self) -> bool:
        """Whether the graph adds the guided input gradient (``res.guided``, ``res.guided_gradcam``)."""
        return self.kind == "guided"

    @property
    def runs(self) -> str:
        """Where it runs, in a few words (the README's table)."""
        return {
            "gradient": "in the graph",
            "guided": "in the graph",
            "attention": "in the graph",
            "host": "host (SVD)",
            "perturbation": "host (one pass per channel)",
        }[self.kind]

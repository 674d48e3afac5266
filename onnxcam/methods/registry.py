"""The CAM method registry: a name -> a function that weights activations by gradients."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from onnxcam.autodiff.builder import GraphBuilder

#: (builder, A, G, spatial_axes) -> tensor of per-channel contributions, shaped like A.
CamMethod = Callable[[GraphBuilder, str, str, Sequence[int]], str]

CAM_METHODS: dict[str, CamMethod] = {}


def cam_method(name: str) -> Callable[[CamMethod], CamMethod]:
    """Register ``fn`` under ``name`` (the ``method=`` of ``Explainer`` and the CLI's ``--method``)."""

    def register(fn: CamMethod) -> CamMethod:
        CAM_METHODS[name] = fn
        return fn

    return register

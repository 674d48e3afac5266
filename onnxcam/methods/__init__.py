"""CAM methods. Each is only its weighting of activations by gradients; the pipeline is shared.

A method maps the layer's activations ``A`` and gradients ``G`` (both
``(N, C, h, w)`` or ``(N, h, w, C)``) to per-channel contributions whose sum
over channels, passed through ReLU, is the low-resolution CAM. Methods build
ONNX nodes, so the exported explainer file carries them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from onnxcam.autodiff.builder import GraphBuilder

#: (builder, A, G, spatial_axes) -> tensor of per-channel contributions, shaped like A.
CamMethod = Callable[[GraphBuilder, str, str, Sequence[int]], str]

CAM_METHODS: dict[str, CamMethod] = {}


def cam_method(name: str) -> Callable[[CamMethod], CamMethod]:
    def register(fn: CamMethod) -> CamMethod:
        CAM_METHODS[name] = fn
        return fn

    return register


@cam_method("gradcam")
def gradcam(b: GraphBuilder, A: str, G: str, spatial_axes: Sequence[int]) -> str:
    """Grad-CAM (Selvaraju et al., eq. 1-2): alpha_k = mean_ij dS/dA_k^ij; contribution alpha_k * A_k."""
    alpha = b.reduce("ReduceMean", G, list(spatial_axes), keepdims=True, hint="alpha")
    return b.op("Mul", alpha, A, hint="weighted")

"""CAM methods. Each is only its weighting of activations by gradients; the pipeline is shared.

A method maps the layer's activations ``A`` and gradients ``G`` (both
``(N, C, h, w)`` or ``(N, h, w, C)``) to per-channel contributions whose sum
over channels, passed through ReLU, is the low-resolution CAM. Methods build
ONNX nodes, so the exported explainer file carries them.

The registry lives in :mod:`onnxcam.methods.registry`; the gradient-based
methods (Grad-CAM and its relatives) in :mod:`onnxcam.methods.gradient_methods`.
"""

from __future__ import annotations

from onnxcam.methods.registry import CAM_METHODS, CamMethod, cam_method
from onnxcam.methods import gradient_methods  # noqa: F401 - registers the methods

__all__ = ["CAM_METHODS", "CamMethod", "cam_method"]

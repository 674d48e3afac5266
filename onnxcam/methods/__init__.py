"""CAM methods. Each is only its weighting of activations by gradients; the pipeline is shared.

A method maps the layer's activations ``A`` and gradients ``G`` (both
``(N, C, h, w)`` or ``(N, h, w, C)``) to channel weights ``w_k`` or, for the
element-wise methods, to contributions ``M_k^ij``; the shared pipeline sums
``w_k A_k`` (or ``M_k``) over channels and applies the ReLU, which gives the
low-resolution CAM. Methods build ONNX nodes, so the exported explainer file
carries them.

The registry lives in :mod:`onnxcam.methods.registry`; the gradient-based
methods (Grad-CAM and its relatives) in :mod:`onnxcam.methods.gradient_methods`.
"""

from __future__ import annotations

from onnxcam.methods.registry import (CAM_METHODS, CamMethod, channel_sum, channel_weighting, contributions,
                                      position_weighting)
from onnxcam.methods import gradient_methods  # noqa: F401 - registers the methods

__all__ = ["CAM_METHODS", "CamMethod", "channel_sum", "channel_weighting", "contributions", "position_weighting"]

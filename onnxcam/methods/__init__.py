"""CAM methods: each is one row of :mod:`onnxcam.methods.table`; the pipeline around them is shared.

A method maps the layer's activations ``A`` and gradients ``G`` to
per-channel contributions ``M_k``; the pipeline sums them over channels and
applies the ReLU, which gives the low-resolution CAM. Where a row lives:

* :mod:`~onnxcam.methods.spec`: what a method is (``MethodSpec``) and what a host-side one is handed (``MethodRun``);
* :mod:`~onnxcam.methods.table`: every method, one row each;
* :mod:`~onnxcam.methods.gradient_methods`: the gradient methods' formulas, as ONNX nodes;
* :mod:`~onnxcam.methods.in_graph`: the shared in-graph step (a formula, then the sum over channels);
* :mod:`~onnxcam.methods.eigen`, :mod:`~onnxcam.methods.perturbation`, :mod:`~onnxcam.methods.guided`: the maths
  of the host-side, perturbation and guided methods;
* :mod:`~onnxcam.methods.smoothing`, :mod:`~onnxcam.methods.fusion`, :mod:`~onnxcam.methods.upsampling`: options and
  steps that apply to every method.
"""

from __future__ import annotations

from onnxcam.methods.in_graph import channel_sum, contributions
from onnxcam.methods.spec import MethodRun, MethodSpec
from onnxcam.methods.table import METHODS, method_names, method_spec

__all__ = ["METHODS", "MethodRun", "MethodSpec", "channel_sum", "contributions", "method_names", "method_spec"]

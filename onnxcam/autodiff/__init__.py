"""Reverse-mode gradients as standard ONNX ops: the engine plus its table of rules."""

from onnxcam.autodiff import rules as _rules  # noqa: F401  (fills the registry)
from onnxcam.autodiff.engine import active_nodes, build_vjp
from onnxcam.autodiff.registry import NON_DIFFERENTIABLE_OPS, VJP_RULES, VJPContext, vjp_rule

__all__ = ["build_vjp", "active_nodes", "VJP_RULES", "NON_DIFFERENTIABLE_OPS", "VJPContext", "vjp_rule"]

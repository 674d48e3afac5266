"""ONNX Runtime sessions: provider choice, session options, and error translation."""

from onnxcam.runtime.session import create_session, require_onnxruntime, resolve_providers

__all__ = ["create_session", "require_onnxruntime", "resolve_providers"]

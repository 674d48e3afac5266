"""Create ONNX Runtime sessions that really run where the user thinks they run.

onnxruntime-gpu lists ``CUDAExecutionProvider`` even on a machine with no GPU
and then silently runs on the CPU, so the provider actually in use is read
back from the session, never assumed.
"""

from __future__ import annotations

import re
from types import ModuleType
import warnings
from collections.abc import Sequence

from onnxcam.errors import RuntimeFailure, RuntimeNotInstalledError, first_line

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def require_onnxruntime() -> ModuleType:
    """Import onnxruntime or explain which extra to install."""
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeNotInstalledError(
            "onnxcam needs ONNX Runtime to run explanations: pip install 'onnxcam[cpu]' "
            "(or 'onnxcam[gpu]' for CUDA; never both in one environment)"
        ) from None
    return onnxruntime


def resolve_providers(providers: Sequence | None) -> list:
    """``None`` means CUDA when onnxruntime offers it (checked after session creation), else CPU."""
    ort = require_onnxruntime()
    available = ort.get_available_providers()
    if providers is None:
        return [CUDA, CPU] if CUDA in available else [CPU]
    usable = [p for p in providers if _name(p) in available]
    missing = [_name(p) for p in providers if _name(p) not in available]
    if missing:
        hint = " (install onnxcam[gpu] for CUDA)" if CUDA in missing else ""
        warnings.warn(
            f"{', '.join(missing)} is not available in this onnxruntime build{hint}; "
            f"running on {', '.join(_name(p) for p in usable) or CPU}",
            RuntimeWarning,
            stacklevel=3,
        )
    return usable or [CPU]


def create_session(model: str | bytes, providers: Sequence | None = None, threads: int | None = None):
    """An InferenceSession on a model file (or serialized bytes); warns when requested CUDA fell back to CPU."""
    ort = require_onnxruntime()
    wanted = resolve_providers(providers)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(model, options, providers=wanted)
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        if "ValidateOpsetForDomain" in str(e):
            raise RuntimeFailure(
                f"the installed onnxruntime {ort.__version__} does not support the model's opset"
                f"{_supported_opset(str(e))}; upgrade onnxruntime, or re-export the model at an older opset"
            ) from None
        raise RuntimeFailure(
            f"ONNX Runtime could not load the explainer graph: {first_line(e)}. "
            "This is a bug in onnxcam or an op onnxruntime lacks; please report it with the model"
        ) from None
    explicit_cuda = any(_name(p) == CUDA for p in wanted) and providers is not None
    if explicit_cuda and session.get_providers()[0] != CUDA:
        warnings.warn(
            "CUDAExecutionProvider was requested but ONNX Runtime fell back to the CPU "
            "(no usable GPU or CUDA libraries)",
            RuntimeWarning,
            stacklevel=3,
        )
    return session


def _name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def _supported_opset(message: str) -> str:
    """' (it supports ai.onnx up to opset N)' from onnxruntime's opset error, or '' when it does not say."""
    found = re.search(r"support for domain (\S+) is till opset (\d+)", message)
    return f" (it supports {found.group(1)} up to opset {found.group(2)})" if found else ""

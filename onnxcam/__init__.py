"""onnxcam: Grad-CAM for any ONNX model, computed inside the model's own ONNX Runtime session."""

from onnxcam.errors import (
    ImageError,
    PreprocessError,
    InputError,
    LayerError,
    ModelLoadError,
    OnnxcamError,
    RuntimeFailure,
    RuntimeNotInstalledError,
    TargetError,
    UnsupportedModelError,
    UnsupportedOpError,
)
from onnxcam.detect import DetectionTarget
from onnxcam.explainer import ALL_METHODS, ExplainResult, Explainer, Prediction
from onnxcam.targets import MultiLabelTarget, OutputTarget, RegionTarget, SeedTarget, SimilarityTarget, TopK

__version__ = "0.1.0"

__all__ = [
    "Explainer",
    "ExplainResult",
    "Prediction",
    "OutputTarget",
    "RegionTarget",
    "SimilarityTarget",
    "TopK",
    "MultiLabelTarget",
    "SeedTarget",
    "DetectionTarget",
    "OnnxcamError",
    "ModelLoadError",
    "UnsupportedModelError",
    "UnsupportedOpError",
    "LayerError",
    "InputError",
    "TargetError",
    "RuntimeNotInstalledError",
    "RuntimeFailure",
    "ImageError",
    "PreprocessError",
    "ALL_METHODS",
]

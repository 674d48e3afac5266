"""What ``Explainer.explain`` and ``Explainer.predict`` return."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ExplainResult:
    """What one ``explain`` call returns (the formulas are in the docs' Methods page)."""

    cam: np.ndarray  # (N, H, W) float32 in [0, 1] at the input's spatial size
    cam_lowres: np.ndarray | list[np.ndarray]  # (N, h, w) per layer; a list when several layers
    targets: np.ndarray  # (rows,) explained class ids; None entries for a seed target (OutputTarget, ...)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    layer: str | list[str] = ""
    guided: np.ndarray | None = None  # guided backprop, shaped like the input (guided methods only)
    guided_gradcam: np.ndarray | None = None  # guided * cam, shaped like the input (guided methods only)
    image_index: np.ndarray | None = None  # (rows,) the input image each row explains (several with TopK)
    # The layer's float32 activations and dScore/dlayer in the model's layout (host-side methods only;
    # a list when several layers): what the gradient oracles in tools/ check.
    activations: np.ndarray | list[np.ndarray] | None = None
    gradients: np.ndarray | list[np.ndarray] | None = None


@dataclass
class Prediction:
    """What one ``predict`` call returns: a forward pass only, no gradients."""

    outputs: dict[str, np.ndarray]  # every model output, by name
    scores: np.ndarray  # the explained score tensor (the logit before a final Softmax/Sigmoid by default)


def per_layer(arrays: list[np.ndarray]) -> np.ndarray | list[np.ndarray] | None:
    """None, one array, or a list (several layers), as ``cam_lowres`` is returned."""
    return None if not arrays else arrays[0] if len(arrays) == 1 else arrays

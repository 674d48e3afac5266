"""Numbers about heatmaps: agreement between two maps, and (issue 5) explanation-quality metrics.

Maps are numpy (H, W) or (N, H, W) arrays. The perturbation metrics query the
model only through a :class:`ClassScorer` (``Explainer.predict`` in batches).
"""

from onnxcam.metrics.agreement import peak_distance, spearman, top_region_iou
from onnxcam.metrics.baselines import BASELINES, baseline_maps, center_maps, random_maps
from onnxcam.metrics.faithfulness import faithfulness, occlusion_maps
from onnxcam.metrics.localization import (
    box_iou,
    localization_error,
    localization_iou,
    peak_box_distance,
    pointing_hit,
)
from onnxcam.metrics.perturbation import confidence_change, curve_auc, deletion, gaussian_blur, insertion
from onnxcam.metrics.regions import threshold_box, threshold_mask
from onnxcam.metrics.road import noisy_linear_impute, road
from onnxcam.metrics.sanity import cascading_randomization, randomized_copy, weight_layers
from onnxcam.metrics.scoring import ClassScorer, softmax_probabilities

# The runner over a data set (onnxcam.metrics.evaluate) builds Explainers; import it from its module.
__all__ = [
    "peak_distance",
    "spearman",
    "top_region_iou",
    "BASELINES",
    "baseline_maps",
    "center_maps",
    "random_maps",
    "faithfulness",
    "occlusion_maps",
    "box_iou",
    "localization_error",
    "localization_iou",
    "peak_box_distance",
    "pointing_hit",
    "confidence_change",
    "curve_auc",
    "deletion",
    "gaussian_blur",
    "insertion",
    "threshold_box",
    "threshold_mask",
    "noisy_linear_impute",
    "road",
    "cascading_randomization",
    "randomized_copy",
    "weight_layers",
    "ClassScorer",
    "softmax_probabilities",
]

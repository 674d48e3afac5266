"""Numbers about heatmaps: agreement between two maps, and (issue 5) explanation-quality metrics.

Everything here is numpy on (H, W) or (N, H, W) maps; nothing imports the
explainer, so the CLI, the server and the benchmarks can all use it.
"""

from onnxcam.metrics.agreement import peak_distance, spearman, top_region_iou

__all__ = ["peak_distance", "spearman", "top_region_iou"]

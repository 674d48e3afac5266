"""Compare two models' explanations of the same photos: two exports, fp32 against int8, v1 against v2.

:func:`compare_images` explains each photo with both models (each with its
own preprocessing), maps both maps onto the photo's pixels and measures
their agreement with :mod:`onnxcam.metrics.agreement`;
:func:`render_comparison` draws the side-by-side panel; :mod:`.report`
writes the CSV and JSON tables. ``onnxcam compare`` is the command line.
"""

from onnxcam.compare.panel import render_comparison, render_difference
from onnxcam.compare.report import aggregate, record, summary_lines, write_csv, write_json
from onnxcam.compare.run import ImageComparison, ImageFailure, ModelSide, SideResult, compare_images, probabilities

__all__ = [
    "compare_images",
    "ModelSide",
    "ImageComparison",
    "ImageFailure",
    "SideResult",
    "probabilities",
    "render_comparison",
    "render_difference",
    "aggregate",
    "record",
    "summary_lines",
    "write_csv",
    "write_json",
]

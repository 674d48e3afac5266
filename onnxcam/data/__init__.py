"""Data sets of images with ground-truth boxes, for the explanation-quality metrics (``onnxcam eval``).

:mod:`.annotations` reads the formats (onnxcam JSON, CSV, Pascal VOC XML);
:mod:`.samples` turns entries into model inputs with boxes in input pixels.
"""

from onnxcam.data.annotations import (
    AnnotatedImage,
    AnnotatedObject,
    DataError,
    DataIssue,
    Dataset,
    parse_box,
    read_dataset,
)
from onnxcam.data.samples import Sample, box_to_input, load_samples, resolve_label

__all__ = [
    "AnnotatedImage",
    "AnnotatedObject",
    "DataError",
    "DataIssue",
    "Dataset",
    "parse_box",
    "read_dataset",
    "Sample",
    "box_to_input",
    "load_samples",
    "resolve_label",
]

"""The columns ``onnxcam batch`` writes, in one documented, versioned place.

Readers of a results dataset (pandas, DuckDB, Spark) rely on these names and
types, so they change only with :data:`SCHEMA_VERSION`, which every shard
carries in its Parquet metadata (key ``schema_version``). A rerun refuses to
add shards of another version to the same folder. docs/batch.md shows this
table; :func:`arrow_schema` builds the pyarrow schema from it, so the two
cannot drift apart.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Bumped whenever a column is added, removed, renamed or changes type or meaning.
SCHEMA_VERSION = "1"

#: Result table, one row per (image, explained class): column -> (Arrow type name, meaning).
RESULT_COLUMNS: dict[str, tuple[str, str]] = {
    "path": ("string", "the image as named by the source (folder path joined, or the list/table value)"),
    "width": ("int32", "the image's width in pixels (upright, after EXIF orientation)"),
    "height": ("int32", "the image's height in pixels"),
    "class_id": ("int32", "the class explained"),
    "label": ("string", "its name, when labels are known (--labels, settings file, model metadata); else null"),
    "score": ("float32", "the model's output for that class (a probability where the model ends in a Softmax)"),
    "topk_classes": ("list<int32>", "the model's highest-scoring classes, best first (--topk-scores, default 5)"),
    "topk_scores": ("list<float32>", "their scores"),
    "layer": ("string", "the layer the heatmap was computed at"),
    "method": ("string", "the CAM method"),
    "peak_x": ("int32", "the heatmap's maximum, x in the original image's pixels (null for a NaN map)"),
    "peak_y": ("int32", "the heatmap's maximum, y in the original image's pixels"),
    "box_x0": ("int32", "threshold box (largest region >= 15% of the maximum), left, original pixels; null if none"),
    "box_y0": ("int32", "threshold box top"),
    "box_x1": ("int32", "threshold box right, exclusive"),
    "box_y1": ("int32", "threshold box bottom, exclusive"),
    "cam_lowres": ("binary", "the layer-resolution heatmap, float16 little-endian, row-major"),
    "cam_shape": ("list<int32>", "its shape [h, w]: `numpy.frombuffer(cam_lowres, '<f2').reshape(cam_shape)`"),
    "heatmap_png": (
        "binary",
        "with --heatmaps: the heatmap on the original image's pixels, 8-bit greyscale PNG; else null",
    ),
}

#: Failure table, one row per image that could not be explained.
FAILURE_COLUMNS: dict[str, tuple[str, str]] = {
    "path": ("string", "the image as named by the source"),
    "error": ("string", "why it was skipped, one line"),
}


def arrow_type(name: str) -> Any:
    """The pyarrow type for one of the type names above."""
    pa = importlib.import_module("pyarrow")
    if name.startswith("list<"):
        return pa.list_(arrow_type(name[5:-1]))
    return {"string": pa.string(), "int32": pa.int32(), "float32": pa.float32(), "binary": pa.binary()}[name]


def arrow_schema(columns: dict[str, tuple[str, str]], metadata: dict[str, str]) -> Any:
    """A pyarrow schema for ``columns``, carrying :data:`SCHEMA_VERSION` and ``metadata`` (model, layer, method)."""
    pa = importlib.import_module("pyarrow")
    return pa.schema(
        [pa.field(name, arrow_type(kind)) for name, (kind, _) in columns.items()],
        metadata={"schema_version": SCHEMA_VERSION, **metadata},
    )

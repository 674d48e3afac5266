"""Turn users' photos into model inputs, and map CAMs back onto the photos.

The model carries no record of its preprocessing, so the pipeline is derived
from the model's input (layout, channels, dtype, size) plus hints, with this
precedence, highest first, field by field:

1. explicit user options;
2. a settings file beside the model, ``<model stem>.onnxcam.toml`` or
   ``<model stem>.onnxcam.json`` (fields: preset, size, mean, std, bgr,
   scale, layout, resize, crop_pct, pad_value, labels);
3. the model's ``metadata_props``: ``onnxcam.preprocess`` (JSON, same fields)
   > ONNX ``Image.BitmapPixelFormat`` / ``Image.NominalPixelRange`` >
   Ultralytics ``author``/``imgsz``/``names``/``task`` (letterbox for
   detectors, crop for classifiers);
4. defaults: ``imagenet`` (``raw255`` for integer inputs), ``squash``, 224x224
   for dynamic sizes; :meth:`PreprocessSpec.assumed` lists which of these a
   spec fell back to.

Resize modes (:mod:`.geometry`): ``squash``; ``crop`` with ``crop_pct``
(torchvision's and timm's eval transforms); ``letterbox`` with ``pad_value``
(Ultralytics YOLO).

A preset replaces mean/std/scale/bgr from weaker sources; single fields at
the same or a stronger source adjust it. What the model fixes (static size,
graph-pinned layout, channel count) cannot be overridden: a contradicting
user or settings value is an error. Details: :mod:`onnxcam.preprocess.spec`,
:mod:`.presets`, :mod:`.images`, :mod:`.geometry`.

Typical use::

    spec = derive_spec("model.onnx")
    batch, geoms = preprocess_batch(["a.jpg", "b.png"], spec)
    res = Explainer("model.onnx").explain(batch)
    overlay = cam_to_image(res.cam[0], geoms[0])   # (orig_h, orig_w)
"""

from onnxcam.preprocess.batch import as_image, normalize, preprocess_batch, preprocess_image
from onnxcam.preprocess.geometry import (
    Geometry,
    apply_geometry,
    cam_to_image,
    plan_geometry,
    point_to_image,
    point_to_input,
    resize_image,
)
from onnxcam.preprocess.images import DEFAULT_MAX_PIXELS, ImageHeader, ImageInfo, load_image, read_header, to_rgb_or_l
from onnxcam.preprocess.presets import PRESETS, Preset, get_preset
from onnxcam.preprocess.spec import (
    PreprocessSpec,
    derive_spec,
    find_settings_file,
    load_labels,
    metadata_hints,
    with_options,
)

__all__ = [
    "PreprocessSpec",
    "derive_spec",
    "find_settings_file",
    "load_labels",
    "metadata_hints",
    "with_options",
    "Preset",
    "PRESETS",
    "get_preset",
    "load_image",
    "read_header",
    "ImageHeader",
    "ImageInfo",
    "to_rgb_or_l",
    "DEFAULT_MAX_PIXELS",
    "Geometry",
    "plan_geometry",
    "apply_geometry",
    "resize_image",
    "cam_to_image",
    "point_to_image",
    "point_to_input",
    "preprocess_batch",
    "preprocess_image",
    "normalize",
    "as_image",
]

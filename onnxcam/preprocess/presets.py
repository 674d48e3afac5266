"""Named normalisations: what a pixel value in 0..255 becomes before it enters the model.

Every preset is an instance of one formula, applied per channel to the 8-bit
pixel value ``p`` (0..255), after the optional RGB->BGR swap::

    x = (p * scale - mean[c]) / std[c]

``mean`` and ``std`` are in the *scaled* units and in the channel order the
model receives (so the ``caffe`` means are listed B, G, R).

========== ======= =========== ============================== =====================
preset     order   scale       mean                           std
========== ======= =========== ============================== =====================
imagenet   RGB     1/255       (0.485, 0.456, 0.406)          (0.229, 0.224, 0.225)
inception  RGB     1/127.5     (1, 1, 1)                      (1, 1, 1)  -> (p-127.5)/127.5
tf         alias of inception
caffe      BGR     1           (103.939, 116.779, 123.68)     (1, 1, 1)
raw01      RGB     1/255       (0, 0, 0)                      (1, 1, 1)
raw255     RGB     1           (0, 0, 0)                      (1, 1, 1)
========== ======= =========== ============================== =====================
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxcam.errors import PreprocessError


@dataclass(frozen=True)
class Preset:
    name: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bgr: bool = False


PRESETS: dict[str, Preset] = {
    "imagenet": Preset("imagenet", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": Preset("inception", 1 / 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
    "caffe": Preset("caffe", 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), bgr=True),
    "raw01": Preset("raw01", 1 / 255, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "raw255": Preset("raw255", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

#: Other names accepted for a preset.
ALIASES: dict[str, str] = {"tf": "inception"}

DEFAULT_PRESET = "imagenet"


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive, aliases allowed)."""
    if not isinstance(name, str):
        raise PreprocessError(f"preset must be a name, got {type(name).__name__}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        known = ", ".join([*PRESETS, *ALIASES])
        raise PreprocessError(
            f"unknown preprocessing preset {name!r}; choose one of {known}, or give mean/std/scale/bgr yourself"
        )
    return PRESETS[key]

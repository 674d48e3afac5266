"""JSON that strict readers accept, whatever numbers a model produced.

A broken or hostile model can output NaN or infinite scores; ``json.dumps``
would write the bare tokens ``NaN`` and ``Infinity``, which strict readers
(browsers' ``JSON.parse``, Starlette's ``JSONResponse``) reject. Every JSON
document onnxcam writes or answers with goes through :func:`finite_json`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities as null and numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

"""The parameters of ``POST /explain``, from the query string or form fields, checked before any work."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from onnxcam.methods import method_names
from onnxcam.render import COLORMAPS, DEFAULT_COLORMAP
from onnxcam.server.detections import DetectOptions
from onnxcam.server.problems import HTTPProblem

#: The methods a request may name (``MethodSpec.served``): the in-graph ones and the host-side (SVD) ones.
#: Score-CAM and Ablation-CAM cost one forward pass per channel, too slow for a request.
SERVED_METHODS: tuple[str, ...] = method_names(served=True)

KNOWN = ("target", "top_k", "method", "layer", "colormap", "alpha", "detections", "conf", "iou", "max_det")


@dataclass(frozen=True)
class ExplainParams:
    """What one request asks for; ``targets`` None means the image's top ``top_k`` classes."""

    targets: tuple[int, ...] | None
    top_k: int
    method: str
    layer: str
    colormap: str
    alpha: float
    detect: DetectOptions | None = None  # detections=1: every detection of a detector, one heatmap each


def parse_params(
    query: Mapping[str, str],
    form: Mapping[str, str],
    *,
    methods: tuple[str, ...],
    default_method: str,
    default_layer: str,
    num_classes: int | None,
    max_targets: int,
) -> ExplainParams:
    """Merge the query string and form fields (a name in both is an error) and validate every value."""
    both = sorted(set(query) & set(form))
    if both:
        raise HTTPProblem(400, f"parameter {both[0]!r} is given both in the URL and in the form; give it once")
    raw = {**query, **form}
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise HTTPProblem(400, f"unknown parameter {unknown[0]!r}; known: {', '.join(KNOWN)}")
    if raw.get("target", "").strip() and "top_k" in raw:
        raise HTTPProblem(400, "give either target (class ids) or top_k (the image's best classes), not both")
    targets = _targets(raw.get("target", ""), num_classes, max_targets)
    top_k = _int(raw.get("top_k", "1"), "top_k")
    if not 1 <= top_k <= max_targets:
        raise HTTPProblem(400, f"top_k must be between 1 and {max_targets}, got {top_k}")
    if num_classes is not None:
        top_k = min(top_k, num_classes)
    method = raw.get("method", default_method).strip().lower() or default_method
    if method not in methods:
        raise HTTPProblem(400, f"unknown method {method!r}; choose one of {', '.join(methods)}")
    colormap = raw.get("colormap", DEFAULT_COLORMAP).strip().lower() or DEFAULT_COLORMAP
    if colormap not in COLORMAPS:
        raise HTTPProblem(400, f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    alpha = _float(raw.get("alpha", "0.5"), "alpha")
    if not 0.0 <= alpha <= 1.0:
        raise HTTPProblem(400, f"alpha must be between 0 and 1 (the overlay's opacity), got {alpha:g}")
    layer = raw.get("layer", default_layer).strip() or default_layer
    return ExplainParams(targets, top_k, method, layer, colormap, alpha, _detect(raw, max_targets))


def _detect(raw: Mapping[str, str], max_targets: int) -> DetectOptions | None:
    """``detections=1`` with its ``conf``, ``iou`` and ``max_det`` (at most ``max_targets``), else None."""
    flag = raw.get("detections", "").strip().lower()
    if flag not in ("", "0", "false", "no", "off", "1", "true", "yes", "on"):
        raise HTTPProblem(400, f"detections must be 1 or 0, got {flag!r}")
    if flag in ("", "0", "false", "no", "off"):
        extra = sorted(k for k in ("conf", "iou", "max_det") if k in raw)
        if extra:
            raise HTTPProblem(400, f"{extra[0]} goes with detections=1 (explain every detection of a detector)")
        return None
    if raw.get("target", "").strip() or "top_k" in raw:
        raise HTTPProblem(400, "detections=1 explains each detection's class; drop target and top_k")
    conf, iou = _float(raw.get("conf", "0.25"), "conf"), _float(raw.get("iou", "0.45"), "iou")
    for name, value in (("conf", conf), ("iou", iou)):
        if not 0.0 <= value <= 1.0:
            raise HTTPProblem(400, f"{name} must be between 0 and 1, got {value:g}")
    max_det = _int(raw.get("max_det", str(min(20, max_targets))), "max_det")  # the server's --max-targets caps it
    if not 1 <= max_det <= max_targets:
        raise HTTPProblem(400, f"max_det must be between 1 and {max_targets}, got {max_det}")
    return DetectOptions(conf, iou, max_det)


def _targets(text: str, num_classes: int | None, max_targets: int) -> tuple[int, ...] | None:
    items = [t for t in text.replace(" ", ",").split(",") if t]
    if not items:
        return None
    ids = tuple(_int(t, "target") for t in items)
    if len(ids) > max_targets:
        raise HTTPProblem(400, f"at most {max_targets} targets per request, got {len(ids)}")
    for t in ids:
        if t < 0 or (num_classes is not None and t >= num_classes):
            span = f"0..{num_classes - 1}" if num_classes is not None else "0 or more"
            raise HTTPProblem(400, f"target class {t} is out of range: the model's classes are {span}")
    return tuple(dict.fromkeys(ids))  # repeated ids would only repeat the work


def _int(text: str, name: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise HTTPProblem(400, f"{name} must be an integer, got {text!r}") from None


def _float(text: str, name: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise HTTPProblem(400, f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise HTTPProblem(400, f"{name} must be a finite number, got {text!r}")
    return value

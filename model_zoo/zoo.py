"""The model zoo's shared pieces: manifest entries, the cache folder, and reading facts back from ONNX files.

A zoo is a folder of ONNX files plus ``manifest.json``: one entry per model,
saying where it came from (origin framework, exporter, licence), what it
expects (input name, shape, layout, preprocessing) and which layer to try
first. Tests and users read the manifest rather than guessing those facts
from file names. Entries are also written for models that could not be
built, with ``status`` "skipped" or "failed" and the reason, so a missing
framework is visible instead of silently absent.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import onnx

MANIFEST_NAME = "manifest.json"
CACHE_ENV = "ONNXCAM_ZOO_CACHE"
MAX_IR_VERSION = 10  # any onnxruntime >= 1.16 loads it


@dataclasses.dataclass
class ZooEntry:
    """One model of the zoo, as recorded in ``manifest.json``.

    ``input_shape`` uses ``None`` for dynamic axes. ``preprocessing`` holds
    onnxcam preprocessing fields (``preset``, ``size``, ``layout``, ...), so
    the entry can be passed straight to ``onnxcam.preprocess.derive_spec``.
    ``suggested_layer`` is the tensor a user should start from (onnxcam's
    automatic choice unless the builder knows better); ``earlier_layer`` is a
    feature map before it, which tests explain too. ``torch_source`` names a
    ``model_zoo.torchvision_models`` architecture the file was exported from,
    for torch-autograd oracles. ``base`` names the fp32 model a derived
    (float16, int8) copy was made from.
    """

    name: str
    framework: str
    exporter: str = ""
    file: str = ""
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    opset: int = 0
    ir_version: int = 0
    layout: str = "NCHW"
    input_name: str = ""
    input_shape: list = dataclasses.field(default_factory=list)
    input_dtype: str = "float32"
    preprocessing: dict = dataclasses.field(default_factory=dict)
    suggested_layer: str = ""
    earlier_layer: str = ""
    outputs: list = dataclasses.field(default_factory=list)
    explain_output: str = ""  # the output to explain when the first one is not a class score
    precision: str = "float32"
    license: str = ""
    source: str = ""
    torch_source: str = ""
    base: str = ""
    notes: str = ""
    build_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def default_cache() -> Path:
    """``$ONNXCAM_ZOO_CACHE`` if set, else ``~/.cache/onnxcam-zoo``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "onnxcam-zoo"


def load_manifest(cache: str | os.PathLike) -> dict[str, ZooEntry]:
    """The entries of ``cache/manifest.json`` by name (empty when there is none yet)."""
    path = Path(cache) / MANIFEST_NAME
    if not path.exists():
        return {}
    fields = {f.name for f in dataclasses.fields(ZooEntry)}
    rows = json.loads(path.read_text())["models"]
    return {r["name"]: ZooEntry(**{k: v for k, v in r.items() if k in fields}) for r in rows}


def save_manifest(cache: str | os.PathLike, entries: dict[str, ZooEntry]) -> Path:
    """Write ``cache/manifest.json`` atomically (a concurrent reader never sees half a file)."""
    path = Path(cache) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    rows = [dataclasses.asdict(e) for e in sorted(entries.values(), key=lambda e: e.name)]
    tmp.write_text(json.dumps({"format": 1, "models": rows}, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def cap_ir_version(path: Path) -> None:
    """Lower the file's IR version to ``MAX_IR_VERSION`` if the exporter wrote a newer one."""
    model = onnx.load(str(path))
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        onnx.save(model, str(path))


def describe_onnx(entry: ZooEntry, path: Path) -> ZooEntry:
    """Fill the entry's file facts (opset, IR version, input, outputs) from the ONNX file itself."""
    model = onnx.load(str(path), load_external_data=False)
    entry.file = path.name
    entry.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    entry.ir_version = model.ir_version
    weights = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in weights)
    entry.input_name = first.name
    tt = first.type.tensor_type
    entry.input_shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
    entry.input_dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    entry.outputs = [o.name for o in model.graph.output]
    return entry


def fill_layers(entry: ZooEntry, path: Path) -> ZooEntry:
    """Record onnxcam's automatic layer and an earlier feature map to explain as well.

    The earlier layer is the last candidate before the chosen one with a
    larger spatial size (a genuinely earlier stage, not an activation of the
    same block); failing that, the candidate two places before it. Only
    feature maps on every path from the input to the score are considered
    when there are any (a branch of a residual or Inception block explains
    part of the score only). Feature
    maps that feed a ReLU -> MaxPool are passed over when another exists: in
    a trained ReLU network whole pooling windows are exact zeros, the max is
    tied, and the gradient there is defined only by a tie-breaking convention
    that finite differences cannot check.
    """
    import onnxcam  # noqa: PLC0415 - the builders import onnxcam only here
    from onnxcam.autodiff.engine import backward_reachable  # noqa: PLC0415
    from onnxcam.explain.layer_choice import _is_cut  # noqa: PLC0415

    ex = onnxcam.Explainer(str(path), output=entry.explain_output or 0, providers=["CPUExecutionProvider"])
    index = ex.index
    entry.suggested_layer = entry.suggested_layer or ex.layer
    names = [c.name for c in ex.candidates]
    chosen = ex.candidates[names.index(entry.suggested_layer)]
    if not entry.earlier_layer:
        relu_pools = [
            n.input[0]
            for n in index.nodes
            if n.op_type == "MaxPool" and getattr(index.producer.get(n.input[0]), "op_type", "") in ("Relu", "Clip")
        ]
        tied = backward_reachable(index, relu_pools) if relu_pools else set()
        before = ex.candidates[: names.index(chosen.name)]
        before = [c for c in before if c.name not in tied] or before
        before = [c for c in before if _is_cut(index, c.name, ex.score_tensor)] or before
        larger = [c for c in before if _area(c.spatial_size) > _area(chosen.spatial_size)]
        pick = larger[-1] if larger else (before[-2] if len(before) >= 2 else (before[0] if before else None))
        entry.earlier_layer = pick.name if pick else ""
    return entry


def _area(size) -> float:
    h, w = size
    return (h if isinstance(h, int) else 0) * (w if isinstance(w, int) else 0)

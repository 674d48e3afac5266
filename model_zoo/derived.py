"""Reduced-precision copies of a float32 model: float16 weights and activations, and static QDQ int8.

Both keep float32 inputs and outputs, as deployed models usually do, so the
same preprocessed batch feeds the original and the copy and their heatmaps
can be compared pixel for pixel.

* float16: onnxruntime's own converter (``onnxruntime.transformers.float16``,
  shipped in the onnxruntime wheel, so no extra package) with
  ``keep_io_types=True``: Cast nodes at the edges, everything inside in fp16.
* int8: ``onnxruntime.quantization.quantize_static`` in QDQ format, int8
  activations and per-channel int8 weights, calibrated with MinMax on demo
  images (``model_zoo.demo_data``, a seed the demo model never trained on).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

CALIBRATION_SEED = 31
CALIBRATION_IMAGES = 48


def to_float16(src: Path, dest: Path) -> Path:
    """``src`` with float16 weights and compute, float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16  # noqa: PLC0415

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _sort_topologically(model.graph)  # the converter appends the input Casts after their consumers
    onnx.checker.check_model(model)
    _save_atomically(model, dest)
    return dest


def calibration_batches(layout: str, n: int = CALIBRATION_IMAGES, batch: int = 8) -> list[np.ndarray]:
    """Demo images scaled to [0, 1] (the demo model's raw01 preprocessing), in ``layout``."""
    from model_zoo.demo_data import generate  # noqa: PLC0415

    images = generate(n, CALIBRATION_SEED)[0].astype(np.float32) / 255.0
    if layout == "NCHW":
        images = images.transpose(0, 3, 1, 2)
    return [np.ascontiguousarray(images[i : i + batch]) for i in range(0, n, batch)]


def to_int8_qdq(src: Path, dest: Path, input_name: str, layout: str = "NCHW") -> Path:
    """Static QDQ int8 copy of ``src`` calibrated on demo images."""
    from onnxruntime.quantization import (  # noqa: PLC0415
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class DemoReader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(calibration_batches(layout))

        def get_next(self):
            x = next(self._batches, None)
            return None if x is None else {input_name: x}

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(src),
            str(out),
            DemoReader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
        model = onnx.load(str(out))
    onnx.checker.check_model(model)
    _save_atomically(model, dest)
    return dest


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable otherwise)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            (ordered if all(i in ready for i in node.input) else rest).append(node)
            if ordered and ordered[-1] is node:
                ready.update(node.output)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input at node {rest[0].name!r}")
        pending = rest
    copies = [onnx.NodeProto() for _ in ordered]
    for c, node in zip(copies, ordered):
        c.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _save_atomically(model: onnx.ModelProto, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".part")
    onnx.save(model, str(tmp))
    os.replace(tmp, dest)

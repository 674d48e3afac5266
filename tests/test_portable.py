"""Portable exports (``export(..., portable=True)``) against the default ones, on the whole model zoo.

The default explainer graphs are checked against torch autograd and finite
differences by ``tests/test_zoo_matrix.py``; here every zoo model is exported
both ways at its automatic and its earlier layer (the earlier ones cross
MaxPools, AveragePools and scatter-adds) and the two files must compute the
same outputs on the same photos in onnxruntime. The portable file must also
hold none of what some execution providers refuse: MaxPool's ``Indices``, ``OneHot``, ``Sum``,
``ScatterElements``, an attribute equal to its default, ``Size``, or a
``Shape`` of a tensor whose size is static.

When an onnxruntime-openvino environment exists (``tools/make_openvino_venv.sh``;
``ONNXCAM_OPENVINO_PYTHON`` names its Python, default ``/tmp/ovenv/bin/python``),
the portable files are also run by the OpenVINO EP with the CPU fallback
disabled, and by the OpenVINO runtime, against the CPU EP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import defs, helper

import onnxcam
from model_zoo.build import RECIPES
from tests.test_zoo_matrix import photos_for
from tests.zoo_fixtures import zoo  # noqa: F401 - the session fixture

REPO = Path(__file__).resolve().parents[1]
OPENVINO_PYTHON = Path(os.environ.get("ONNXCAM_OPENVINO_PYTHON", "/tmp/ovenv/bin/python"))
#: What the portable graph must not emit (see the module docstring).
REFUSED_OPS = {"ScatterElements", "ScatterND", "Size", "TopK", "GatherElements", "OneHot", "Sum"}
#: OpenVINO's largest difference from the CPU EP, relative to the output's largest value (its kernels sum in
#: other orders; float16 models run in float16 on both).
REL_OPENVINO = 1e-3
IMPLIED = {"dilations": 1, "strides": 1, "pads": 0, "output_padding": 0}


@pytest.fixture(scope="session")
def exports(zoo, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """``exports(name) -> [(layer, default file, portable file, feeds)]``, each zoo model exported once."""
    folder = tmp_path_factory.mktemp("portable")
    done: dict[str, list] = {}

    def get(name: str):
        if name not in done:
            entry, path = zoo(name)
            rows = []
            for label, layer in (("auto", "auto"), ("earlier", entry.earlier_layer)):
                if not layer:
                    continue
                ex = onnxcam.Explainer(path, layer=layer, output=entry.explain_output or 0)
                files = folder / f"{name}_{label}.default.onnx", folder / f"{name}_{label}.portable.onnx"
                ex.export(files[0])
                ex.export(files[1], portable=True)
                rows.append((layer, *files, _feeds(files[0], photos_for(path))))
            done[name] = rows
        return done[name]

    return get


def _feeds(path: Path, photos: np.ndarray) -> dict[str, np.ndarray]:
    """The photos (a fixed batch is met by repeating them) and a target: top-1 and class 1, or a seed."""
    model = onnx.load(str(path), load_external_data=False)
    feeds, rng = {}, np.random.default_rng(0)
    for vi in model.graph.input:
        dims = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in vi.type.tensor_type.shape.dim
        ]
        if not feeds:  # the image comes first
            n = dims[0] or len(photos)
            feeds[vi.name] = np.resize(photos, (n, *photos.shape[1:])).astype(
                helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            )
        elif vi.name.startswith("target_class"):
            feeds[vi.name] = np.resize(np.array([-1, 1], np.int64), n)
        elif vi.name.startswith("target_seed"):
            shape = [n, *(d or 1 for d in dims[1:])]
            feeds[vi.name] = rng.standard_normal(shape).astype(
                helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            )
    return feeds


def _run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def _emitted(path: Path) -> list[onnx.NodeProto]:
    """The nodes onnxcam added (the builder names them ``onnxcam/...``)."""
    return [n for n in onnx.load(str(path)).graph.node if n.name.startswith("onnxcam/")]


def _is_default(node: onnx.NodeProto, attr: onnx.AttributeProto, opset: int) -> bool:
    value = helper.get_attribute_value(attr)
    if attr.name in IMPLIED and isinstance(value, list):
        return all(v == IMPLIED[attr.name] for v in value)
    spec = defs.get_schema(node.op_type, opset, node.domain).attributes.get(attr.name)
    return (
        spec is not None
        and spec.default_value.HasField("type")
        and value == helper.get_attribute_value(spec.default_value)
    )


@pytest.mark.parametrize("name", list(RECIPES))
def test_portable_export_matches_default(exports, name):
    for layer, default, portable, feeds in exports(name):
        want, got = _run(default, feeds), _run(portable, feeds)
        assert want.keys() == got.keys()
        for key, w in want.items():
            g = got[key]
            if np.issubdtype(w.dtype, np.floating):
                scale = max(1.0, float(np.abs(w.astype(np.float64)).max()))
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{name} at {layer}: {key}")
            else:
                np.testing.assert_array_equal(g, w, err_msg=f"{name} at {layer}: {key}")
        model = onnx.load(str(portable))
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        inferred = onnx.shape_inference.infer_shapes(model)
        static = {
            vi.name
            for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
            if vi.type.tensor_type.HasField("shape")
            and all(d.HasField("dim_value") and d.dim_value > 0 for d in vi.type.tensor_type.shape.dim)
        }
        for node in _emitted(portable):
            where = f"{name} at {layer}: {node.op_type} node {node.name!r}"
            assert node.op_type not in REFUSED_OPS, where
            assert not (node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1), where
            assert not (node.op_type == "Shape" and node.input[0] in static), f"{where} reads a static shape"
            defaults = [a.name for a in node.attribute if _is_default(node, a, opset)]
            assert not defaults, f"{where} writes default-valued {defaults}"


def test_portable_rank_and_guided_exports_match(tmp_path):
    """The demo model at its first layer (two MaxPools between it and the score) in "rank" mode and with guided
    backprop: the portable file computes what the default one does."""
    from onnxcam.demo import DEMO_MODEL

    feeds = {"image": np.random.default_rng(3).standard_normal((3, 3, 96, 96)).astype(np.float32)}
    for method, mode, target in (("guided-gradcam", "class", [-1, 2, 0]), ("gradcam", "rank", [-1, -2, -3])):
        ex = onnxcam.Explainer(DEMO_MODEL, layer="/0/0.2/Relu_output_0", method=method)
        ex.export(tmp_path / "d.onnx", mode=mode)
        ex.export(tmp_path / "p.onnx", mode=mode, portable=True)
        run = {**feeds, "target_class": np.array(target, np.int64)}
        want, got = _run(tmp_path / "d.onnx", run), _run(tmp_path / "p.onnx", run)
        for key, w in want.items():
            np.testing.assert_allclose(
                got[key], w, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(w).max())), err_msg=key
            )


def test_openvino_runs_every_portable_zoo_export(exports, tmp_path):
    """Every portable zoo export loads in the OpenVINO EP with CPU fallback disabled and matches the CPU EP."""
    if not OPENVINO_PYTHON.exists():
        pytest.skip(f"no onnxruntime-openvino environment at {OPENVINO_PYTHON} (tools/make_openvino_venv.sh)")
    quantized = set()
    for name in RECIPES:
        try:
            rows = exports(name)
        except pytest.skip.Exception:
            continue
        for _, _, portable, feeds in rows:
            stem = portable.name.removesuffix(".portable.onnx")
            (tmp_path / f"{stem}.onnx").write_bytes(portable.read_bytes())
            np.savez(tmp_path / f"{stem}.npz", **feeds)
            if RECIPES[name].entry.precision.startswith("int8"):
                quantized.add(f"{stem}.onnx")
    done = subprocess.run(
        [str(OPENVINO_PYTHON), str(REPO / "tools" / "openvino_compare.py"), str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert rows, done.stderr[-2000:]
    print("\n".join(json.dumps(r) for r in rows), file=sys.stderr)
    assert len(rows) == len(list(tmp_path.glob("*.onnx")))
    for row in rows:
        assert row["loads_without_fallback"], row
        if row["file"] in quantized:  # OpenVINO runs QDQ models in int8 kernels: the logits alone differ by ~3 %
            continue
        for other in ("openvino_ep", "openvino_runtime"):
            assert row[f"{other}_ints_equal"], row
            for output, diff in row[f"{other}_max_rel_diff"].items():
                assert diff <= REL_OPENVINO, (row["file"], other, output, diff)

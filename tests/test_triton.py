"""``onnxcam export --triton``: the config.pbtxt is parsed back with Triton's schema and checked against the ONNX file.

Triton cannot run here. Its config schema (``inference.ModelConfig`` from
Triton's ``model_config.proto``; the fields the exporter may write, with
Triton's field numbers) is rebuilt below as a protobuf descriptor, so protobuf's
own text-format parser rejects any misspelt field, wrong value type or unknown
data type, as Triton's loader would. The parsed config is then checked against
the written ONNX file (names, data types, dims, batch axis), and the model is
run in onnxruntime on tensors shaped as a Triton client sends them.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from onnxcam import Explainer, demo
from onnxcam.errors import OnnxcamError
from onnxcam.server.triton import write_triton_repository
from tests.tiny_models import tiny_cnn

F = descriptor_pb2.FieldDescriptorProto
#: Triton's DataType enum (model_config.proto), in its order.
TRITON_DATA_TYPES = [
    "TYPE_INVALID",
    "TYPE_BOOL",
    "TYPE_UINT8",
    "TYPE_UINT16",
    "TYPE_UINT32",
    "TYPE_UINT64",
    "TYPE_INT8",
    "TYPE_INT16",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_FP32",
    "TYPE_FP64",
    "TYPE_STRING",
    "TYPE_BF16",
]
#: numpy dtype -> Triton data type, as Triton's client libraries name them (tritonclient.utils.np_to_triton_dtype).
NUMPY_TO_TRITON = {
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.float16): "TYPE_FP16",
    np.dtype(np.float64): "TYPE_FP64",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.uint8): "TYPE_UINT8",
    np.dtype(np.bool_): "TYPE_BOOL",
}


def _model_config_class():
    fdp = descriptor_pb2.FileDescriptorProto(
        name="triton_model_config_subset.proto", package="inference", syntax="proto3"
    )
    enum = fdp.enum_type.add(name="DataType")
    for number, name in enumerate(TRITON_DATA_TYPES):
        enum.value.add(name=name, number=number)

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name

    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("ModelTensorReshape", [("shape", 1, F.TYPE_INT64, many, None)])
    message(
        "ModelInput",
        [
            ("name", 1, F.TYPE_STRING, one, None),
            ("data_type", 2, F.TYPE_ENUM, one, ".inference.DataType"),
            ("dims", 4, F.TYPE_INT64, many, None),
            ("reshape", 5, F.TYPE_MESSAGE, one, ".inference.ModelTensorReshape"),
            ("is_shape_tensor", 6, F.TYPE_BOOL, one, None),
            ("optional", 8, F.TYPE_BOOL, one, None),
        ],
    )
    message(
        "ModelOutput",
        [
            ("name", 1, F.TYPE_STRING, one, None),
            ("data_type", 2, F.TYPE_ENUM, one, ".inference.DataType"),
            ("dims", 3, F.TYPE_INT64, many, None),
            ("label_filename", 4, F.TYPE_STRING, one, None),
            ("reshape", 5, F.TYPE_MESSAGE, one, ".inference.ModelTensorReshape"),
        ],
    )
    message(
        "ModelDynamicBatching",
        [
            ("preferred_batch_size", 1, F.TYPE_INT32, many, None),
            ("max_queue_delay_microseconds", 2, F.TYPE_UINT64, one, None),
            ("preserve_ordering", 3, F.TYPE_BOOL, one, None),
        ],
    )
    message(
        "ModelConfig",
        [
            ("name", 1, F.TYPE_STRING, one, None),
            ("platform", 2, F.TYPE_STRING, one, None),
            ("max_batch_size", 4, F.TYPE_INT32, one, None),
            ("input", 5, F.TYPE_MESSAGE, many, ".inference.ModelInput"),
            ("output", 6, F.TYPE_MESSAGE, many, ".inference.ModelOutput"),
            ("default_model_filename", 8, F.TYPE_STRING, one, None),
            ("dynamic_batching", 11, F.TYPE_MESSAGE, one, ".inference.ModelDynamicBatching"),
            ("backend", 17, F.TYPE_STRING, one, None),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfig = _model_config_class()


def parse_config(path):
    config = ModelConfig()
    text_format.Parse(path.read_text(), config)  # raises ParseError on anything Triton's schema lacks
    return config


def onnx_shape(v: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]


def check_against_onnx(config, model: onnx.ModelProto) -> None:
    """Every declared tensor is the ONNX tensor of that name, with its dtype and shape, batch axis as declared."""
    inits = {i.name for i in model.graph.initializer}
    for declared, actual in (
        (config.input, [v for v in model.graph.input if v.name not in inits]),
        (config.output, list(model.graph.output)),
    ):
        assert [t.name for t in declared] == [v.name for v in actual]
        for t, v in zip(declared, actual):
            np_type = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
            assert TRITON_DATA_TYPES[t.data_type] == NUMPY_TO_TRITON[np.dtype(np_type)], t.name
            shape = onnx_shape(v)
            if config.max_batch_size > 0:
                assert shape[0] is None, f"{t.name}: Triton batches it, but its first axis is fixed"
                model_view = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
                assert model_view == [-1 if d is None else d for d in shape[1:]], t.name
                assert np.prod(list(t.dims)) == np.prod(model_view)  # reshape keeps the element count
            else:
                assert not t.HasField("reshape") and list(t.dims) == [-1 if d is None else d for d in shape]


def run_as_triton_would(folder, config, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed arrays shaped [batch] + dims (client view), reshaped to what the model sees; check the outputs' dims."""
    batch = next(iter(feeds.values())).shape[0] if config.max_batch_size > 0 else None
    lead = [batch] if batch is not None else []
    model_feeds = {}
    for t in config.input:
        a = feeds[t.name]
        assert list(a.shape) == lead + list(t.dims), t.name
        model_feeds[t.name] = a.reshape(lead + list(t.reshape.shape)) if t.HasField("reshape") else a
    sess = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [t.name for t in config.output]
    outs = dict(zip(names, sess.run(names, model_feeds)))
    for t in config.output:
        model_view = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
        assert list(outs[t.name].shape) == lead + model_view, t.name
        outs[t.name] = outs[t.name].reshape(lead + list(t.dims))  # what the client receives
    return outs


def test_demo_repository_from_the_cli(tmp_path):
    repo = tmp_path / "repo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxcam",
            "export",
            str(demo.DEMO_MODEL),
            "--triton",
            str(repo),
            "--triton-name",
            "shapes",
            "--triton-max-batch",
            "8",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    folder = repo / "shapes"
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == [
        "shapes",
        "shapes/1",
        "shapes/1/model.onnx",
        "shapes/config.pbtxt",
    ]
    config = parse_config(folder / "config.pbtxt")
    assert config.name == "shapes" and config.backend == "onnxruntime" and config.max_batch_size == 8
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds > 0
    model = onnx.load(str(folder / "1" / "model.onnx"))
    onnx.checker.check_model(model)
    assert model.ir_version <= 13
    check_against_onnx(config, model)
    # The per-image scalars are the reshape idiom: clients send [N, 1], the model sees [N].
    target = next(t for t in config.input if t.name == "target_class")
    assert list(target.dims) == [1] and target.HasField("reshape") and list(target.reshape.shape) == []

    x = np.concatenate([demo.load_image(p) for p in demo.DEMO_IMAGES[:3]])
    classes = np.array([[-1], [2], [5]], dtype=np.int64)
    outs = run_as_triton_would(folder, config, {"image": x, "target_class": classes})
    ex = Explainer(demo.DEMO_MODEL)
    top1 = ex.explain(x[:1])
    assert outs["target"][0, 0] == top1.targets[0]
    np.testing.assert_allclose(outs["cam"][0], top1.cam[0], atol=1e-5)
    for row, cls in ((1, 2), (2, 5)):
        np.testing.assert_allclose(outs["cam"][row], ex.explain(x[row : row + 1], target=cls).cam[0], atol=1e-5)


def test_fixed_batch_model_is_declared_without_batching(tmp_path):
    ex = Explainer(tiny_cnn(batch=1))
    folder = write_triton_repository(ex, tmp_path, name="tiny")
    config = parse_config(folder / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    model = onnx.load(str(folder / "1" / "model.onnx"))
    check_against_onnx(config, model)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    outs = run_as_triton_would(folder, config, {"x": x, "target_class": np.array([3], np.int64)})
    np.testing.assert_allclose(outs["cam"], ex.explain(x, target=3).cam, atol=1e-5)


def test_parser_rejects_what_triton_would(tmp_path):
    """The schema check can fail: a misspelt field or an unknown data type does not parse."""
    folder = write_triton_repository(Explainer(tiny_cnn()), tmp_path, name="tiny")
    text = (folder / "config.pbtxt").read_text()
    assert parse_config(folder / "config.pbtxt").max_batch_size == 16
    for broken in (
        text.replace("max_batch_size", "max_batchsize"),
        text.replace("TYPE_FP32", "TYPE_FLOAT32"),
        text.replace("dims: [ 5 ]", 'dims: [ "5" ]'),
    ):
        (folder / "config.pbtxt").write_text(broken)
        with pytest.raises(text_format.ParseError):
            parse_config(folder / "config.pbtxt")


def test_bad_names_and_no_destination(tmp_path):
    ex = Explainer(tiny_cnn())
    for bad in ("../escape", "a b", ".."):
        with pytest.raises(OnnxcamError, match="Triton model name"):
            write_triton_repository(ex, tmp_path, name=bad)
    assert list(tmp_path.iterdir()) == []
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), model)
    proc = subprocess.run([sys.executable, "-m", "onnxcam", "export", str(model)], capture_output=True, text=True)
    assert proc.returncode == 2 and "--triton" in proc.stderr

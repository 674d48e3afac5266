"""A hostile model file or settings file cannot make onnxcam read outside the model's folder or allocate at will.

Each test plays an attacker's file (see the threat model in onnxcam/trust.py and the README's security section)
and checks what onnxcam does with it: a clear OnnxcamError, or a warning and the hint ignored, never a secret
read, a hang or a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxcam
from onnxcam.errors import ImageError, ModelLoadError, OnnxcamError, PreprocessError
from onnxcam.graph.load import load_model
from onnxcam.preprocess import derive_spec, load_image
from onnxcam.trust import (
    MAX_JSON_CHARS,
    MAX_LABELS,
    MAX_LITERAL_CHARS,
    MAX_NESTING,
    parse_json,
    parse_literal,
    parse_toml,
)
from tests.tiny_models import tiny_cnn

SECRET = "onnxcam-test-secret-6f1d"


@pytest.fixture
def folders(tmp_path):
    """(model folder, a secret file outside it, a symlink to the secret inside it)."""
    models = tmp_path / "models"
    models.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text(f"{SECRET}\n{SECRET}-2\n")
    (models / "link.txt").symlink_to(secret)
    return models, secret


def save_with_metadata(folder, metadata: dict[str, str], size=16, name="m.onnx"):
    model = tiny_cnn(classes=2, size=size)
    for key, value in metadata.items():
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, key: value})
    path = folder / name
    onnx.save(model, path)
    return path


def spec_quietly(path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = derive_spec(path, **kw)
    return spec, [str(w.message) for w in caught]


@pytest.mark.parametrize("where", ["relative", "absolute", "symlink", "environ", "zero"])
def test_metadata_labels_path_cannot_leave_the_model_folder(folders, where):
    models, secret = folders
    location = {
        "relative": "../secret.txt",
        "absolute": str(secret),
        "symlink": "link.txt",
        "environ": "/proc/self/environ",
        "zero": "/dev/zero",
    }[where]
    path = save_with_metadata(models, {"onnxcam.preprocess": json.dumps({"labels": location})})
    spec, messages = spec_quietly(path)
    assert spec.labels is None
    assert any("outside the model's folder" in m or "absolute" in m for m in messages), messages
    assert SECRET not in repr(spec)


def test_settings_file_labels_path_cannot_leave_the_model_folder(folders):
    models, _ = folders
    path = save_with_metadata(models, {})
    settings = models / "m.onnxcam.json"
    for location in ("../secret.txt", "link.txt", "/dev/zero"):
        settings.write_text(json.dumps({"labels": location}))
        with pytest.raises(PreprocessError, match="outside the model's folder|absolute") as info:
            derive_spec(path)
        assert SECRET not in str(info.value)


def test_labels_inside_the_folder_still_load_and_user_paths_stay_free(folders):
    models, secret = folders
    (models / "names.txt").write_text("cat\ndog\n")
    path = save_with_metadata(models, {"onnxcam.preprocess": json.dumps({"labels": "names.txt"})})
    assert derive_spec(path).labels == ("cat", "dog")
    assert derive_spec(path, labels=str(secret)).labels == (SECRET, f"{SECRET}-2")  # the user's own flag


def test_a_fifo_named_as_labels_is_refused_without_blocking(folders):
    models, _ = folders
    os.mkfifo(models / "names.txt")
    path = save_with_metadata(models, {"onnxcam.preprocess": json.dumps({"labels": "names.txt"})})
    spec, messages = spec_quietly(path)
    assert spec.labels is None and any("not a regular file" in m for m in messages), messages


def test_labels_from_the_cli_never_publish_a_secret(folders, tmp_path):
    models, _ = folders
    path = save_with_metadata(models, {"onnxcam.preprocess": json.dumps({"labels": "/proc/self/environ"})})
    photo = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(photo)
    env = {**os.environ, "ONNXCAM_TEST_SECRET": SECRET}
    run = subprocess.run(
        [sys.executable, "-m", "onnxcam", "explain", str(path), str(photo), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert SECRET not in (tmp_path / "o" / "summary.json").read_text()


def test_huge_input_size_from_metadata_is_refused_before_any_allocation(tmp_path):
    model = tiny_cnn(classes=2, size="S")  # dynamic spatial size: the metadata's size is used
    onnx.helper.set_model_props(model, {"onnxcam.preprocess": json.dumps({"size": [30000, 30000]})})
    path = tmp_path / "huge.onnx"
    onnx.save(model, path)
    with pytest.raises(PreprocessError, match="30000x30000 from metadata.*--max-pixels"):
        derive_spec(path)
    assert derive_spec(path, max_pixels=10**9).size == (30000, 30000)  # a user who trusts the model says so
    photo = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(photo)
    run = subprocess.run(
        [sys.executable, "-m", "onnxcam", "explain", str(path), str(photo), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr and "MemoryError" not in run.stderr
    assert "--max-pixels" in run.stderr


def test_huge_input_size_from_a_settings_file_and_the_user_option(tmp_path):
    model = tiny_cnn(classes=2, size="S")
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    (tmp_path / "m.onnxcam.toml").write_text("size = [20000, 20000]\n")
    with pytest.raises(PreprocessError, match="settings file"):
        derive_spec(path)
    (tmp_path / "m.onnxcam.toml").unlink()
    with pytest.raises(PreprocessError, match="from user"):
        derive_spec(path, size=[9000, 9000], max_pixels=1_000_000)
    assert derive_spec(path, max_pixels=40_000).size == (224, 224)  # the built-in default is never refused


@pytest.mark.parametrize(
    "key,value",
    [
        ("onnxcam.preprocess", "[" * 5000 + "]" * 5000),
        ("onnxcam.preprocess", '{"labels": ' + "[" * (MAX_NESTING + 5) + '"x"' + "]" * (MAX_NESTING + 5) + "}"),
        ("onnxcam.labels", json.dumps(["x"] * (MAX_LABELS + 1))),
        ("onnxcam.labels", json.dumps(["x" * 5000])),
        ("names", "{0: " + "[" * 3000 + "]" * 3000 + "}"),
        ("names", "{0: 'a'} " + "(" * 500),
    ],
)
def test_hostile_metadata_values_are_ignored_with_a_warning(tmp_path, key, value):
    props = {key: value}
    if key == "names":
        props["author"] = "Ultralytics"
    path = save_with_metadata(tmp_path, props)
    spec, messages = spec_quietly(path)
    assert spec.labels is None and messages


def test_deeply_nested_settings_files_are_clear_errors(tmp_path):
    path = save_with_metadata(tmp_path, {})
    (tmp_path / "m.onnxcam.json").write_text('{"labels": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(PreprocessError, match=f"more than {MAX_NESTING} levels"):
        derive_spec(path)
    (tmp_path / "m.onnxcam.json").unlink()
    (tmp_path / "m.onnxcam.toml").write_text("labels = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(PreprocessError, match="nest|TOML"):
        derive_spec(path)


@pytest.mark.parametrize(
    "parse,limit,deep",
    [
        (parse_json, MAX_JSON_CHARS, "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)),
        (parse_literal, MAX_LITERAL_CHARS, "(" * (MAX_NESTING + 1) + ")" * (MAX_NESTING + 1)),
        (parse_toml, MAX_JSON_CHARS, "a = " + "[" * MAX_NESTING + "]" * MAX_NESTING),  # the table is a level too
    ],
)
def test_every_parser_of_untrusted_text_bounds_size_and_nesting_alike(parse, limit, deep):
    with pytest.raises(PreprocessError, match=f"^x has {limit + 1} characters, more than the {limit} onnxcam parses$"):
        parse(" " * (limit + 1), "x", PreprocessError)
    with pytest.raises(PreprocessError, match=f"^x nests .* more than {MAX_NESTING} levels deep$"):
        parse(deep, "x", PreprocessError)
    with pytest.raises(PreprocessError, match="^x is not (valid JSON|valid TOML|a Python literal): "):
        parse("[1,", "x", PreprocessError)


def test_a_nul_byte_in_a_labels_path_is_the_same_clear_error_whoever_names_it(tmp_path):
    path = save_with_metadata(tmp_path, {})
    with pytest.raises(PreprocessError) as given:
        derive_spec(path, labels="names\0.txt")
    (tmp_path / "m.onnxcam.json").write_text(json.dumps({"labels": "names\0.txt"}))
    with pytest.raises(PreprocessError) as named:
        derive_spec(path)
    suffix = "'names\\x00.txt' contains a NUL byte, which no file name can hold; correct the name where it is given"
    assert str(given.value) == f"labels file (from option) {suffix}"
    assert str(named.value) == f"labels file (from settings file {tmp_path / 'm.onnxcam.json'}) {suffix}"


def test_oversized_settings_file_is_not_read(tmp_path):
    path = save_with_metadata(tmp_path, {})
    (tmp_path / "m.onnxcam.json").write_text('{"preset": "imagenet", "x": "' + "a" * (2 << 20) + '"}')
    with pytest.raises(PreprocessError, match="more than the .* bytes onnxcam reads"):
        derive_spec(path)


# -- external data -------------------------------------------------------------------------------


def _external(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _model_with_external_wf(folder, location="w.bin", offset=0, length=None):
    model = tiny_cnn()
    wf = next(t for t in model.graph.initializer if t.name == "wf")
    raw = numpy_helper.to_array(wf).tobytes()
    (folder / "w.bin").write_bytes(raw)
    _external(wf, location, offset, len(raw) if length is None else length)
    path = folder / "m.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "location,offset,length,message",
    [
        ("w\x00.bin", 0, None, "NUL byte"),
        ("w.bin", 0, 10**12, "truncated"),
        ("w.bin", 10**9, 4, "truncated"),
        ("w.bin", -1, 4, "malformed"),
        ("w.bin", 0, 4, "do not match"),  # 4 bytes for a (5, 8) float tensor
        (".", 0, 4, "not a regular file"),
    ],
)
def test_hostile_external_data_entries(tmp_path, location, offset, length, message):
    path = _model_with_external_wf(tmp_path, location, offset, length)
    with pytest.raises(ModelLoadError, match=message):
        onnxcam.Explainer(path)


def test_external_data_of_sparse_initializers_and_subgraphs_is_read(tmp_path):
    model = tiny_cnn()
    wf = next(t for t in model.graph.initializer if t.name == "wf")
    dense = numpy_helper.to_array(wf)
    model.graph.initializer.remove(wf)
    flat_index = np.flatnonzero(dense).astype(np.int64)
    values = numpy_helper.from_array(dense.reshape(-1)[flat_index], "wf")
    (tmp_path / "sparse.bin").write_bytes(values.raw_data)
    _external(values, "sparse.bin", 0, len(values.raw_data))
    model.graph.sparse_initializer.append(
        helper.make_sparse_tensor(values, numpy_helper.from_array(flat_index, "wf_index"), list(dense.shape))
    )
    path = tmp_path / "sparse.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    reference = onnxcam.Explainer(tiny_cnn()).explain(x)
    ex = onnxcam.Explainer(path)
    np.testing.assert_allclose(ex.explain(x).cam_lowres, reference.cam_lowres, rtol=1e-6)
    assert tmp_path.joinpath("sparse.bin").resolve() in ex.source_files

    # a tensor stored externally only inside an If branch
    branch_value = numpy_helper.from_array(np.arange(4, dtype=np.float32), "k")
    (tmp_path / "branch.bin").write_bytes(branch_value.raw_data)
    _external(branch_value, "branch.bin", 0, 16)
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["k_out"], value=branch_value)],
        "then",
        [],
        [helper.make_tensor_value_info("k_out", TensorProto.FLOAT, [4])],
    )
    outer = tiny_cnn()
    outer.graph.node.append(helper.make_node("If", ["cond"], ["branch"], then_branch=then, else_branch=then))
    path = tmp_path / "branch.onnx"
    onnx.save(outer, path)
    loaded = load_model(path)
    tensor = loaded.graph.node[-1].attribute[0].g.node[0].attribute[0].t
    np.testing.assert_array_equal(numpy_helper.to_array(tensor), np.arange(4, dtype=np.float32))


def test_export_never_writes_over_a_file_the_model_reads(tmp_path):
    path = _model_with_external_wf(tmp_path)
    data = tmp_path / "w.bin"
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    ex = onnxcam.Explainer(path)
    for target in (data, path):
        with pytest.raises(OnnxcamError, match="refusing to overwrite"):
            ex.export(target)
    assert hashlib.sha256(data.read_bytes()).hexdigest() == digest


# -- images --------------------------------------------------------------------------------------

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
    b"0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
)


@pytest.mark.parametrize("data", [EPS, b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"])
def test_formats_outside_the_allow_list_are_never_decoded(tmp_path, data, monkeypatch):
    from PIL import EpsImagePlugin

    def never(*args, **kwargs):
        raise AssertionError("the EPS plugin ran on a user file")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", never)
    with pytest.raises(ImageError, match="not an image onnxcam reads"):
        load_image(data)
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match="not an image onnxcam reads"):
        load_image(path)


def test_a_settings_file_linked_from_outside_the_model_folder_is_refused(folders):
    models, secret = folders
    path = save_with_metadata(models, {})
    (models / "m.onnxcam.json").symlink_to(secret)
    with pytest.raises(PreprocessError, match="outside the model's folder") as info:
        derive_spec(path)
    assert SECRET not in str(info.value)


def test_a_labels_option_naming_a_folder_or_device_is_a_clear_error(tmp_path):
    path = save_with_metadata(tmp_path, {})
    for where in (str(tmp_path), "/dev/zero"):
        with pytest.raises(PreprocessError, match="not a regular file"):
            derive_spec(path, labels=where)


@pytest.mark.filterwarnings("ignore:ignoring metadata")  # the model keeps its metadata while its settings are tried
def test_integers_too_long_for_python_are_clear_errors(tmp_path):
    """Python refuses int() of more than 4,300 digits with a plain ValueError, inside json and tomllib."""
    digits = "1" * 5000
    path = save_with_metadata(
        tmp_path, {"onnxcam.preprocess": '{"size": ' + digits + "}", "onnxcam.labels": "[" + digits + "]"}
    )
    spec, messages = spec_quietly(path)
    assert spec.labels is None and len(messages) == 2, messages
    for suffix, text in ((".onnxcam.json", '{"scale": ' + digits + "}"), (".onnxcam.toml", "scale = " + digits)):
        settings = tmp_path / f"m{suffix}"
        settings.write_text(text)
        with pytest.raises(PreprocessError, match="not valid"):
            derive_spec(path)
        settings.unlink()


def test_a_weights_folder_whose_finalizer_was_interrupted_is_removed_at_exit(monkeypatch):
    """SIGTERM mid-run becomes KeyboardInterrupt; landing inside a finalizer's rmtree, it left the weights copy."""
    from onnxcam.graph import weights

    folder = weights.WeightFolder()
    real = weights.shutil.rmtree

    def interrupted(path, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(weights.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        folder.close()  # the finalizer is spent, the folder is still there
    assert folder.path.exists()
    monkeypatch.setattr(weights.shutil, "rmtree", real)
    weights._remove_leftovers()  # what atexit runs
    assert not folder.path.exists()

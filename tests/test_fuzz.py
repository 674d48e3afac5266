"""Fuzzing the trust boundaries (issue 12): hostile models, settings files, images and HTTP bodies.

The contract: every bad input ends in an :class:`onnxcam.errors.OnnxcamError`
subclass (``HTTPProblem`` for request bodies; a ``warnings.warn`` for an
unreadable model *metadata* value, which is then ignored), never another
exception, never a hang, never an unbounded allocation, and no file outside
the model's folder is ever read on a model's or settings file's say-so.

Hypothesis runs derandomized with a small budget so CI is deterministic and
quick; ``ONNXCAM_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py`` gives every
fuzz test that many examples for a longer local run. Inputs that could hang
or eat memory when mishandled (FIFOs, ``/dev/zero``, huge declared sizes)
run in child processes with a memory cap and a timeout (``test_hazard``).

The ``test_found_*`` tests at the end are the smallest failing inputs the
fuzzers found, kept as plain regression tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

if sys.platform != "linux":  # /dev/zero, FIFOs, fork, RLIMIT_AS and ru_maxrss in KiB
    pytest.skip("the fuzz pass runs on Linux", allow_module_level=True)
pytest.importorskip("hypothesis")

import resource  # noqa: E402

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from onnxcam.errors import ImageError, OnnxcamError  # noqa: E402
from onnxcam.preprocess import PreprocessSpec, derive_spec, load_image  # noqa: E402
from tests.fuzz_inputs import (  # noqa: E402
    DOS_EPS_BYTES,
    EPS_BYTES,
    HAZARDS,
    IMAGE_MAGICS,
    IMAGE_SEEDS,
    PDF_BYTES,
    PS_BYTES,
    SECRET,
    form_part,
    image_seed,
    make_world,
    multipart,
    png_declaring,
    set_declared_size,
    small_cnn,
    small_cnn_bytes,
)

REPO = Path(__file__).resolve().parents[1]
_BUDGET = os.environ.get("ONNXCAM_FUZZ_EXAMPLES")
MAX_INPUT_PIXELS = 64 * 1024 * 1024  # the default max_pixels: no spec may ask for a larger input
MAX_SECONDS = 10.0  # "returns within a few seconds", with room for a loaded CI machine
MAX_RSS_GROWTH = 1 << 30  # a new peak of 1 GiB over the one before a call is an unbounded allocation
MAX_LABELS = 100_000  # onnxcam.trust.MAX_LABELS


def fuzz(n: int):
    """Hypothesis settings: ``n`` examples in CI, ``$ONNXCAM_FUZZ_EXAMPLES`` when set; no database, no output."""
    return settings(
        max_examples=int(_BUDGET) if _BUDGET else n,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def guarded(fn, allowed=OnnxcamError):
    """``fn()``'s result, or the ``allowed`` exception it raised; anything else propagates.

    Fails when the call takes over :data:`MAX_SECONDS` or raises the process's
    peak memory by more than :data:`MAX_RSS_GROWTH`. Warnings are allowed.
    """
    peak, start = _peak_rss(), time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn()
    except allowed as e:
        result = e
    took = time.monotonic() - start
    assert took < MAX_SECONDS, f"took {took:.1f} s (a hang, or quadratic work)"
    grew = _peak_rss() - peak
    assert grew < MAX_RSS_GROWTH, f"peak memory grew by {grew >> 20} MiB"
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The model folder with hostile neighbours (see :func:`tests.fuzz_inputs.make_world`)."""
    return make_world(tmp_path_factory.mktemp("fuzz_world"))


def _sub(text: str, world) -> str:
    return text.replace("@ROOT@", str(world["root"]))


def _outside_texts() -> set[str]:
    """Lines of files outside any model folder that must never turn up as class names."""
    lines = {SECRET}
    for path in ("/etc/passwd", "/etc/hostname"):
        try:
            lines |= {ln.strip() for ln in Path(path).read_text().splitlines() if len(ln.strip()) > 3}
        except OSError:
            pass
    return lines


OUTSIDE = _outside_texts()


def check_spec(spec, world) -> None:
    assert isinstance(spec, PreprocessSpec), type(spec)
    h, w = spec.size
    assert 0 < h and 0 < w and h * w <= MAX_INPUT_PIXELS, f"input size {h}x{w} exceeds the pixel cap"
    assert np.isfinite(spec.scale) and spec.scale > 0, spec.scale
    assert all(np.isfinite(v) for v in (*spec.mean, *spec.std)) and all(s != 0 for s in spec.std)
    labels = spec.labels or ()
    assert all(isinstance(x, str) for x in labels)
    leaked = [x for x in labels if SECRET in x or x.strip() in OUTSIDE]
    assert not leaked, f"class names read from a file outside the model folder: {leaked[:3]}"


# -- strategies: hostile field values ------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
HUGE_INTS = (0, -1, -(2**31), 2**31, 2**32 + 1, 2**63, 10**18, 10**400)
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from(HUGE_INTS),
    st.sampled_from(
        [
            "1/255",
            "1/0",
            "0/0",
            "1e999",
            "nan",
            "-inf",
            "1/1e-320",
            " 1 / 255 ",
            "1e-400/1e-400",
            "1" * 5000,
            "--1",
            "1/-0",
        ]
    ),
)
#: Label paths a model or settings file may name: only ``labels.txt`` (inside the folder) is fair game.
LABEL_PATHS = (
    "labels.txt",
    "./labels.txt",
    "sub/../labels.txt",
    "../secret.txt",
    "../secret.json",
    "@ROOT@/secret.txt",
    "@ROOT@/m/link.txt",
    "link.txt",
    "link.json",
    "sub",
    ".",
    "..",
    "",
    "loop",
    "/etc/passwd",
    "/proc/self/environ",
    "/proc/self/cmdline",
    "a\x00b",
    "labels.txt\x00.png",
    "../../../../../../../../etc/passwd",
    "x" * 5000,
    "sub/../../secret.txt",
    "~/.bashrc",
    "missing.txt",
    "labels.json",
    "file:///etc/passwd",
    "\\\\host\\share\\x",
    "C:\\Windows\\win.ini",
    "/etc",
    "/",
    "labels.txt/",
    "LABELS.TXT",
)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | NUMBER | TEXT | st.sampled_from(LABEL_PATHS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
SIZES = st.one_of(
    NUMBER,
    st.lists(NUMBER, max_size=3),
    st.lists(st.sampled_from(HUGE_INTS + (1, 224, 8192, 8193)), max_size=3),
    st.sampled_from(
        [
            "100000x100000",
            "8192x8192",
            "8193x8192",
            "1x67108865",
            "67108864x1",
            "0x0",
            "224",
            "224,224",
            "-1x5",
            "99999999999999999999",
            "1 2 3",
            " ",
            "x",
            "224x",
            "2" * 5000,
        ]
    ),
)
LABELS = st.one_of(
    st.lists(TEXT | NUMBER | st.none(), max_size=8),
    st.sampled_from(LABEL_PATHS),
    TEXT,
    ANY_JSON,
    st.dictionaries(st.integers(-3, 10).map(str), TEXT, max_size=5),
)
FIELD_VALUES = {
    "preset": st.sampled_from(
        ["imagenet", "IMAGENET", " tf ", "caffe", "raw01", "raw255", "inception", "none", "", "../x"]
    )
    | ANY_JSON,
    "size": SIZES | ANY_JSON,
    "mean": st.lists(NUMBER, min_size=1, max_size=4) | NUMBER | ANY_JSON,
    "std": st.lists(NUMBER | st.just(0), min_size=1, max_size=4) | NUMBER | ANY_JSON,
    "scale": NUMBER | ANY_JSON,
    "bgr": st.booleans() | ANY_JSON,
    "layout": st.sampled_from(["NCHW", "NHWC", "nhwc", " NCHW ", "CHW", "NCDHW"]) | ANY_JSON,
    "resize": st.sampled_from(["squash", "crop", "CROP", "fit", "letterbox"]) | ANY_JSON,
    "labels": LABELS,
}
TABLE = st.tuples(
    st.fixed_dictionaries({}, optional=FIELD_VALUES),
    st.one_of(st.just({}), st.just({}), st.just({}), st.dictionaries(TEXT, ANY_JSON, min_size=1, max_size=2)),
).map(lambda t: {**t[1], **t[0]})


def _nest(n: int, open_: str = "[", close: str = "]", inner: str = "") -> str:
    return open_ * n + inner + close * n


DEEP_JSON = tuple(_nest(n) for n in (33, 100, 1000, 100_000)) + (
    '{"labels": ' + _nest(1000) + "}",
    '{"size": ' + _nest(50_000, "[", "]", "1") + "}",
    _nest(5000, '{"a":', "}", "1"),
    '"' + "\\" * 9999 + '"',
    '{"labels": "' + "\\u0000" * 1000 + '"}',
    '{"labels": [' + ",".join(['"x"'] * 200_000) + "]}",
    '{"labels": ["' + "y" * 2_000_000 + '"]}',
)


def json_text(values) -> st.SearchStrategy[str]:
    """JSON of ``values`` (NaN/Infinity included), raw text, or deeply nested brackets."""
    return st.one_of(values.map(lambda v: json.dumps(v, ensure_ascii=False)), TEXT, st.sampled_from(DEEP_JSON))


def literal_text(values) -> st.SearchStrategy[str]:
    """Python literals (Ultralytics' ``names``/``imgsz``), raw text, or deep nesting."""
    deep = (
        "(" * 200 + ")" * 200,
        _nest(100_000),
        _nest(5000, "{1:", "}", "1"),
        "1" * 5000,
        "9" * 4301,
        "{1: 'a', 'b': 2}",
        "{None: 1, 1: 2}",
        "{1j: 'x'}",
        "{(1, 2): 'x'}",
        "{2: 'a', 1.5: 'b'}",
        "set()",
        "{1, 2}",
        "b'x'",
        "1e999",
        "'\\x00'",
        "{0: '" + "z" * 100_000 + "'}",
        repr(["n"] * 200_000),
        repr({i: str(i) for i in range(200_000)}),
        "__import__('os')",
        "[1,2",
    )
    return st.one_of(values.map(repr), TEXT, st.sampled_from(deep))


NAMES = st.one_of(
    st.dictionaries(st.integers(-5, 50) | TEXT | st.none(), TEXT | NUMBER, max_size=6),
    st.lists(TEXT, max_size=6),
    st.sampled_from(LABEL_PATHS),
    NUMBER,
)
METADATA = st.fixed_dictionaries(
    {},
    optional={
        "onnxcam.preprocess": json_text(TABLE),
        "onnxcam.labels": json_text(LABELS),
        "character": TEXT | st.sampled_from(LABEL_PATHS) | st.just("c\n" * 200_000) | st.just("w" * 100_000),
        "Image.BitmapPixelFormat": st.sampled_from(["Bgr8", "Rgb8", "Gray8", "Bgra8", "Rgba8", "Nv12", " bgr8 ", ""])
        | TEXT,
        "Image.NominalPixelRange": st.sampled_from(
            ["NominalRange_0_255", "Normalized_0_1", "Normalized_1_1", "NominalRange_16_235", "normalized_0_1 ", ""]
        )
        | TEXT,
        "author": st.sampled_from(["Ultralytics", "Ultralytics YOLOv8", "ultralytics", "x"]) | TEXT,
        "imgsz": literal_text(SIZES),
        "names": literal_text(NAMES),
        "task": st.sampled_from(["classify", "detect", " CLASSIFY "]) | TEXT,
    },
)
MODEL_KIND = st.sampled_from(["static", "dynamic", "dynamic-uint8"])


def _model(kind: str, props: dict | None = None, world=None) -> onnx.ModelProto:
    model = small_cnn(
        dynamic=kind != "static", dtype=onnx.TensorProto.UINT8 if "uint8" in kind else onnx.TensorProto.FLOAT
    )
    for k, v in (props or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, _sub(v, world) if world is not None else v
    return model


# -- 1. model metadata -> derive_spec ------------------------------------------------------------


@fuzz(250)
@given(kind=MODEL_KIND, props=METADATA)
@example(kind="dynamic", props={"onnxcam.preprocess": '{"size": [100000, 100000]}'})
@example(kind="dynamic", props={"onnxcam.preprocess": '{"size": "8193x8192"}'})
@example(kind="dynamic", props={"author": "Ultralytics", "imgsz": "[99999, 99999]"})
@example(kind="static", props={"onnxcam.preprocess": '{"labels": "link.txt"}'})
@example(kind="static", props={"onnxcam.preprocess": '{"labels": "../secret.txt"}'})
@example(kind="static", props={"onnxcam.preprocess": '{"labels": "@ROOT@/secret.txt"}'})
@example(kind="static", props={"onnxcam.preprocess": '{"labels": "a\\u0000b"}'})
@example(kind="static", props={"onnxcam.labels": '"@ROOT@/secret.txt"'})
@example(kind="static", props={"author": "Ultralytics", "names": "'@ROOT@/secret.txt'"})
@example(kind="static", props={"character": "@ROOT@/secret.txt"})
def test_fuzz_metadata(world, kind, props):
    model = _model(kind, props, world)
    spec = guarded(lambda: derive_spec(model, model_path=world["model"], settings=False))
    if not isinstance(spec, OnnxcamError):
        check_spec(spec, world)


# -- 2. settings files beside the model ----------------------------------------------------------


def _toml_value(v) -> str:
    if v is None:
        return '"null"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def toml_text(table: dict) -> str:
    return (
        "\n".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml_value(v)}" for k, v in table.items() if v is not None)
        + "\n"
    )


DEEP_TOML = (
    "labels = " + _nest(33) + "\n",
    "labels = " + _nest(1000) + "\n",
    "labels = " + _nest(100_000) + "\n",
    "x = " + _nest(2000, "{a = ", "}", "1") + "\n",
    ".".join(["a"] * 5000) + " = 1\n",
    "".join(f"[{'.'.join(['t'] * i)}]\n" for i in range(1, 300)),
    'labels = ["' + "a" * 3_000_000 + '"]\n',
    "labels = [" + ", ".join(['"x"'] * 300_000) + "]\n",
    "\ufeffpreset = 'raw01'\n",
    "size = 1979-05-27\n",
    "mean = 1979-05-27T07:32:00Z\n",
    "scale = 0x10\n",
    "scale = 1_000\n",
    "size = [inf, nan]\n",
    "labels = '''\n" + "l\n" * 200_000 + "'''\n",
    'labels = "@ROOT@/secret.txt"\n',
    'labels = "link.txt"\n',
)
SETTINGS_FILE = st.one_of(
    st.tuples(st.just(".onnxcam.json"), st.binary(max_size=300)),
    st.tuples(st.just(".onnxcam.toml"), st.binary(max_size=300)),
    st.tuples(st.just(".onnxcam.json"), json_text(TABLE).map(str.encode)),
    st.tuples(st.just(".onnxcam.toml"), TABLE.map(toml_text).map(str.encode)),
    st.tuples(st.just(".onnxcam.toml"), st.sampled_from(DEEP_TOML).map(str.encode)),
    st.tuples(
        st.sampled_from([".onnxcam.json", ".onnxcam.toml"]),
        st.sampled_from(
            [
                b"\xff\xfe{\x00}\x00",
                b"{}" + b" " * (3 << 20),
                b"\x00" * 1000,
                b"\xed\xa0\x80",
                b'{"labels": "\xff"}',
                b"[]",
                b"null",
                b"1",
            ]
        ),
    ),
)


def _write_settings(world, files) -> None:
    m = world["m"]
    for suffix in (".onnxcam.json", ".onnxcam.toml"):
        (m / ("model" + suffix)).unlink(missing_ok=True)
    for suffix, data in files:
        (m / ("model" + suffix)).write_bytes(
            _sub(data.decode("utf-8", "surrogateescape"), world).encode("utf-8", "surrogateescape")
        )


@fuzz(250)
@given(kind=MODEL_KIND, files=st.lists(SETTINGS_FILE, min_size=1, max_size=2))
@example(kind="dynamic", files=[(".onnxcam.json", b'{"size": [100000, 100000]}')])
@example(kind="dynamic", files=[(".onnxcam.toml", b"size = 100000\n")])
@example(kind="static", files=[(".onnxcam.json", b'{"labels": "../secret.txt"}')])
@example(kind="static", files=[(".onnxcam.json", b'{"labels": "link.txt"}')])
@example(kind="static", files=[(".onnxcam.json", b'{"labels": "@ROOT@/secret.txt"}')])
@example(kind="static", files=[(".onnxcam.toml", b'labels = "a\\u0000b"\n')])
def test_fuzz_settings_file(world, kind, files):
    _write_settings(world, files)
    try:
        spec = guarded(lambda: derive_spec(_model(kind), model_path=world["model"]))
    finally:
        _write_settings(world, [])
    if not isinstance(spec, OnnxcamError):
        check_spec(spec, world)


def test_settings_symlink_out_of_folder(world):
    """A settings file that is a symlink to a file outside the model folder is not read."""
    link = world["m"] / "model.onnxcam.json"
    link.unlink(missing_ok=True)
    os.symlink(world["root"] / "secret.onnxcam.json", link)
    try:
        spec = guarded(lambda: derive_spec(_model("static"), model_path=world["model"]))
    finally:
        link.unlink()
    if not isinstance(spec, OnnxcamError):
        check_spec(spec, world)


# -- 3. images -> load_image ---------------------------------------------------------------------

INTERESTING = st.sampled_from(
    [
        b"\xff\xff\xff\xff",
        b"\x7f\xff\xff\xff",
        b"\x00\x00\x00\x00",
        b"\x80\x00\x00\x00",
        b"\xff\xff",
        b"\x00",
        b"\xff",
        b"\x01\x00\x00\x00",
    ]
)
POSITION = st.integers(0, 64) | st.integers(0, 1 << 20)
MUTATION = st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(0, 7)),
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("insert"), POSITION, st.binary(min_size=1, max_size=16) | INTERESTING),
    st.tuples(st.just("delete"), POSITION, st.integers(1, 64)),
    st.tuples(st.just("overwrite"), POSITION, st.binary(min_size=1, max_size=8) | INTERESTING),
)
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=4)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, at, *rest in ops:
        at = at % (len(b) + 1)
        if op == "flip" and at < len(b):
            b[at] ^= 1 << rest[0]
        elif op == "truncate":
            del b[at:]
        elif op == "insert":
            b[at:at] = rest[0]
        elif op == "delete":
            del b[at : at + rest[0]]
        elif op == "overwrite":
            b[at : at + len(rest[0])] = rest[0]
    return bytes(b)


CAPS = st.sampled_from([64 * 1024 * 1024, 10_000, 100, 1])


def _check_image(result, cap) -> None:
    if isinstance(result, ImageError):
        return
    img, info = result
    w, h = info.stored_size
    assert w * h <= cap, f"declared {w}x{h} passed the cap of {cap} pixels"
    assert img.size[0] * img.size[1] <= cap
    assert img.mode in ("RGB", "L"), img.mode


@fuzz(500)
@given(seed=st.sampled_from(sorted(IMAGE_SEEDS)), ops=MUTATIONS, cap=CAPS)
def test_fuzz_image_mutations(seed, ops, cap):
    data = mutate(image_seed(seed), ops)
    _check_image(guarded(lambda: load_image(data, max_pixels=cap), ImageError), cap)


@fuzz(300)
@given(magic=st.sampled_from(IMAGE_MAGICS), tail=st.binary(max_size=512), cap=CAPS)
@example(magic=b"", tail=b"", cap=100)
@example(magic=b"\x89PNG\r\n\x1a\n", tail=b"", cap=100)
def test_fuzz_image_arbitrary_bytes(magic, tail, cap):
    data = magic + tail
    _check_image(guarded(lambda: load_image(data, max_pixels=cap), ImageError), cap)


_SIZED = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "PNG-L16", "TIFF-CMYK")
_DIM = st.integers(1, (1 << 32) - 1) | st.sampled_from([1, 2, 8191, 8192, 8193, 16383, 16384, 65535, 1 << 31])


@fuzz(300)
@given(seed=st.sampled_from(_SIZED), w=_DIM, h=_DIM, cap=CAPS)
def test_fuzz_image_declared_size(seed, w, h, cap):
    data = set_declared_size(seed, image_seed(seed), w, h)
    _check_image(guarded(lambda: load_image(data, max_pixels=cap), ImageError), cap)


@pytest.mark.parametrize("seed", _SIZED)
def test_declared_size_over_cap_is_refused(seed):
    data = set_declared_size(seed, image_seed(seed), 16000, 16000)  # 256 Mpx: over the 64 Mpx default
    with pytest.raises(ImageError):
        guarded(lambda: load_image(data), ())


def test_png_bomb_header_refused_before_decoding():
    with pytest.raises(ImageError):
        guarded(lambda: load_image(png_declaring(100_000, 100_000)), ())
    with pytest.raises(ImageError):
        guarded(lambda: load_image(png_declaring(200, 200), max_pixels=200 * 200 - 1), ())


@pytest.mark.parametrize(
    "data",
    [EPS_BYTES, PS_BYTES, DOS_EPS_BYTES, PDF_BYTES, b"%!PS\n" + b"%" * 100],
    ids=["eps", "ps", "dos-eps", "pdf", "ps-short"],
)
def test_postscript_and_pdf_refused(monkeypatch, tmp_path, data):
    """EPS/PS/PDF are refused before any plugin that would run Ghostscript is reached."""
    from PIL import EpsImagePlugin

    ran = []

    def no_ghostscript(*args, **kwargs):
        ran.append(args)
        raise OSError("Ghostscript must never run on a user's file")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True, raising=False)
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    for source in (data, path):
        with pytest.raises(ImageError):
            guarded(lambda source=source: load_image(source), ())
    assert not ran, "Pillow's EPS plugin called Ghostscript on an uploaded file"


# -- 4. model files -> load_model and Explainer --------------------------------------------------


def _load_and_explain(path, input_shape) -> None:
    """derive_spec, load_model, then an Explainer and one explain call; each may only raise an OnnxcamError."""
    from onnxcam.graph.load import load_model

    spec = guarded(lambda: derive_spec(path, settings=False))
    if not isinstance(spec, OnnxcamError):
        assert spec.size[0] * spec.size[1] <= MAX_INPUT_PIXELS
    if isinstance(guarded(lambda: load_model(path)), OnnxcamError):
        return
    import onnxcam

    explainer = guarded(lambda: onnxcam.Explainer(path, providers=["CPUExecutionProvider"], threads=1))
    if isinstance(explainer, OnnxcamError):
        return
    guarded(lambda: explainer.explain(np.zeros(input_shape, np.float32)))


@fuzz(200)
@given(dynamic=st.booleans(), ops=MUTATIONS)
def test_fuzz_small_model_bytes(tmp_path_factory, dynamic, ops):
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.getbasetemp() / "fuzz_small.onnx"
    path.write_bytes(mutate(small_cnn_bytes(dynamic), ops))
    _load_and_explain(path, (1, 3, 8, 8))


@fuzz(60)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("flip"), st.integers(0, 8192) | st.integers(0, 1 << 20), st.integers(0, 7)),
            st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
            st.tuples(st.just("overwrite"), st.integers(0, 8192), INTERESTING),
            st.tuples(st.just("delete"), st.integers(0, 8192), st.integers(1, 8)),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_fuzz_demo_model_bytes(tmp_path_factory, ops):
    pytest.importorskip("onnxruntime")
    from onnxcam.demo import DEMO_MODEL

    path = tmp_path_factory.getbasetemp() / "fuzz_demo.onnx"
    path.write_bytes(mutate(DEMO_MODEL.read_bytes(), ops))
    _load_and_explain(path, (1, 3, 96, 96))


# In-process sizes stay small: a huge dimension may make onnxcam (or onnxruntime) allocate for real, which
# could take the test process down. Huge ones run in test_hazard's memory-capped children instead.
_DIMS = st.sampled_from([-1, 0, 1, 2, 3, 7, 64, 1000])
_NAMES = st.sampled_from(["x", "w1", "b1", "features", "pooled", "flat", "logits", "wf", "bf", "", "nope"]) | TEXT
_OPS = (
    st.sampled_from(
        [
            "Conv",
            "Relu",
            "Gemm",
            "MatMul",
            "Softmax",
            "Loop",
            "If",
            "Scan",
            "Reshape",
            "Resize",
            "NonMaxSuppression",
            "TopK",
            "Einsum",
            "ConvTranspose",
            "MaxPool",
            "Identity",
            "Custom",
            "FusedConv",
            "QLinearConv",
            "Shape",
            "ConstantOfShape",
            "Expand",
            "Tile",
            "Range",
        ]
    )
    | TEXT
)
_ATTR_VALUES = st.one_of(
    st.integers(-64, 64),
    st.lists(_DIMS | st.integers(-3, 9), max_size=6),
    st.floats(allow_nan=True),
    TEXT,
    st.binary(max_size=8),
)
EDIT = st.one_of(
    st.tuples(st.just("input_dim"), st.integers(0, 5), _DIMS),
    st.tuples(st.just("input_dim_param"), st.integers(0, 5), TEXT),
    st.tuples(st.just("input_rank"), st.integers(0, 7)),
    st.tuples(st.just("input_type"), st.integers(0, 40)),
    st.tuples(st.just("opset"), st.integers(-5, 50) | st.just(1 << 40)),
    st.tuples(st.just("ir"), st.integers(-5, 100)),
    st.tuples(st.just("op_type"), st.integers(0, 3), _OPS),
    st.tuples(
        st.just("domain"), st.integers(0, 3), st.sampled_from(["", "ai.onnx", "com.microsoft", "ai.onnx.ml", "x.y"])
    ),
    st.tuples(
        st.just("attr"),
        st.integers(0, 3),
        st.sampled_from(
            [
                "pads",
                "strides",
                "kernel_shape",
                "dilations",
                "group",
                "axis",
                "transB",
                "alpha",
                "auto_pad",
                "to",
                "then_branch",
            ]
        )
        | TEXT,
        _ATTR_VALUES,
    ),
    st.tuples(st.just("init_dims"), st.integers(0, 3), st.lists(_DIMS | st.integers(0, 9), max_size=5)),
    st.tuples(st.just("init_type"), st.integers(0, 3), st.integers(0, 40)),
    st.tuples(st.just("init_raw"), st.integers(0, 3), st.binary(max_size=64)),
    st.tuples(st.just("drop_init"), st.integers(0, 3)),
    st.tuples(st.just("rewire"), st.integers(0, 3), st.integers(0, 3), _NAMES),
    st.tuples(st.just("output_name"), _NAMES),
    st.tuples(st.just("dup_node"), st.integers(0, 3)),
    st.tuples(st.just("drop_node"), st.integers(0, 3)),
    st.tuples(st.just("self_loop"), st.integers(0, 3)),
    st.tuples(
        st.just("no_output"),
    ),
    st.tuples(st.just("extra_input"), _NAMES, st.integers(0, 5)),
)


def _set_attr(node, name: str, value) -> None:
    from onnx import helper

    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    if isinstance(value, float) and value != value:
        value = float("nan")
    try:
        node.attribute.append(helper.make_attribute(name or "a", value))
    except (ValueError, TypeError):
        pass


def apply_edit(model: onnx.ModelProto, edit) -> None:
    g = model.graph
    kind, *args = edit
    if not g.input or not g.output or not g.node:
        return
    dims = g.input[0].type.tensor_type.shape.dim
    if kind == "input_dim" and args[0] < len(dims):
        dims[args[0]].dim_value = max(min(args[1], (1 << 63) - 1), -(1 << 63))
    elif kind == "input_dim_param" and args[0] < len(dims):
        dims[args[0]].dim_param = args[1]
    elif kind == "input_rank":
        while len(dims) > args[0]:
            del dims[len(dims) - 1]
        while len(dims) < args[0]:
            dims.add().dim_value = 2
    elif kind == "input_type":
        g.input[0].type.tensor_type.elem_type = args[0]
    elif kind == "opset":
        model.opset_import[0].version = args[0]
    elif kind == "ir":
        model.ir_version = args[0]
    elif kind == "op_type" and args[0] < len(g.node):
        g.node[args[0]].op_type = args[1]
    elif kind == "domain" and args[0] < len(g.node):
        g.node[args[0]].domain = args[1]
    elif kind == "attr" and args[0] < len(g.node):
        _set_attr(g.node[args[0]], args[1], args[2])
    elif kind == "init_dims" and args[0] < len(g.initializer):
        del g.initializer[args[0]].dims[:]
        g.initializer[args[0]].dims.extend(max(min(d, (1 << 63) - 1), -(1 << 63)) for d in args[1])
    elif kind == "init_type" and args[0] < len(g.initializer):
        g.initializer[args[0]].data_type = args[1]
    elif kind == "init_raw" and args[0] < len(g.initializer):
        g.initializer[args[0]].raw_data = args[1]
    elif kind == "drop_init" and args[0] < len(g.initializer):
        del g.initializer[args[0]]
    elif kind == "rewire" and args[0] < len(g.node):
        node = g.node[args[0]]
        if args[1] < len(node.input):
            node.input[args[1]] = args[2]
        else:
            node.input.append(args[2])
    elif kind == "output_name":
        g.output[0].name = args[0]
    elif kind == "dup_node" and args[0] < len(g.node):
        g.node.append(g.node[args[0]])
    elif kind == "drop_node" and args[0] < len(g.node):
        del g.node[args[0]]
    elif kind == "self_loop" and args[0] < len(g.node) and g.node[args[0]].output:
        g.node[args[0]].input.append(g.node[args[0]].output[0])
    elif kind == "no_output":
        del g.output[:]
    elif kind == "extra_input":
        from onnx import TensorProto, helper

        g.input.append(helper.make_tensor_value_info(args[0], TensorProto.FLOAT, [1] * args[1]))


@fuzz(250)
@given(dynamic=st.booleans(), edits=st.lists(EDIT, min_size=1, max_size=3))
@example(dynamic=False, edits=[("init_dims", 2, [1000, 1000])])
@example(dynamic=False, edits=[("attr", 0, "kernel_shape", [1000, 1000])])
@example(dynamic=False, edits=[("self_loop", 1)])
@example(dynamic=False, edits=[("opset", 1 << 40)])
@example(dynamic=False, edits=[("input_rank", 0)])
def test_fuzz_model_structure(tmp_path_factory, dynamic, edits):
    pytest.importorskip("onnxruntime")
    model = small_cnn(dynamic)
    for edit in edits:
        apply_edit(model, edit)
    path = tmp_path_factory.getbasetemp() / "fuzz_structure.onnx"
    path.write_bytes(model.SerializeToString())
    _load_and_explain(path, (1, 3, 8, 8))


EXT_LOCATIONS = (
    st.sampled_from(
        [
            "weights.bin",
            "./weights.bin",
            "sub/../weights.bin",
            "../secret.bin",
            "@ROOT@/secret.bin",
            "link.bin",
            "/etc/passwd",
            "a\x00b",
            "weights.bin\x00.txt",
            "",
            ".",
            "..",
            "sub",
            "loop",
            "missing.bin",
            "x" * 5000,
            "/".join(["d"] * 3000),
            "../" * 50 + "etc/passwd",
            "weights.bin/",
            "/proc/self/environ",
            "~/weights.bin",
            "file:weights.bin",
            "\\..\\secret.bin",
            "\u202eweights.bin",
        ]
    )
    | TEXT
)
EXT_NUMBERS = (
    st.none()
    | st.sampled_from(
        ["-1", "0", "4", "4096", "4097", str(1 << 62), str(1 << 64), "abc", "", "1e3", " 8", "0x10", "-0", "٣"]
    )
    | st.integers(-(1 << 65), 1 << 65).map(str)
)


@fuzz(150)
@given(
    location=EXT_LOCATIONS,
    offset=EXT_NUMBERS,
    length=EXT_NUMBERS,
    extra=st.lists(
        st.tuples(st.sampled_from(["location", "offset", "length", "checksum", "basepath", "x"]) | TEXT, TEXT),
        max_size=2,
    ),
    which=st.integers(0, 3),
)
@example(location="../secret.bin", offset=None, length=None, extra=[], which=0)
@example(location="link.bin", offset=None, length=None, extra=[], which=0)
@example(location="@ROOT@/secret.bin", offset="0", length="432", extra=[], which=0)
@example(location="weights.bin", offset="-1", length=None, extra=[], which=0)
@example(location="weights.bin", offset="0", length=str(1 << 62), extra=[], which=0)
@example(location="weights.bin", offset=None, length=None, extra=[("location", "../secret.bin")], which=0)
def test_fuzz_external_data(world, location, offset, length, extra, which):
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto

    m = world["m"]
    (m / "weights.bin").write_bytes(bytes(range(256)) * 16)
    model = small_cnn()
    t = model.graph.initializer[which]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", _sub(location, world)), ("offset", offset), ("length", length), *extra):
        if value is not None:
            e = t.external_data.add()
            e.key, e.value = key, _sub(value, world)
    path = m / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    from onnxcam.graph.load import load_model

    loaded = guarded(lambda: load_model(path))
    if not isinstance(loaded, OnnxcamError):
        for tensor in loaded.graph.initializer:
            assert SECRET.encode() not in tensor.raw_data, "external data read from outside the model folder"
    _load_and_explain(path, (1, 3, 8, 8))


# -- 5. multipart bodies -> parse_upload ---------------------------------------------------------

_BCHARS = "abcXYZ0189'()+_,-./:=? "
BOUNDARY = st.text(_BCHARS, min_size=1, max_size=70) | st.sampled_from(
    ["", "a" * 71, "a" * 5000, '"', ";", "\r\n", "--", "\x00", "é", "a b", "=", "----WebKitFormBoundary7MA4YWxkTrZu0gW"]
)
LATIN1 = st.text(st.characters(max_codepoint=255), max_size=80)


def _content_type(boundary: str, style: int) -> str:
    return [
        f"multipart/form-data; boundary={boundary}",
        f'multipart/form-data; boundary="{boundary}"',
        f"MULTIPART/FORM-DATA;BOUNDARY={boundary}",
        f"multipart/form-data; charset=utf-8; boundary={boundary}",
        "multipart/form-data",
        f"multipart/form-data; boundary={boundary}; boundary=other",
        f"multipart/mixed; boundary={boundary}",
        "image/png",
        "application/octet-stream",
        "",
    ][style]


PART = st.one_of(
    st.builds(
        form_part,
        st.sampled_from([b"image", b"file", b"method", b"layer", b"target"]) | st.binary(max_size=20),
        st.binary(max_size=200),
        st.none() | st.binary(max_size=20),
        st.none() | st.binary(max_size=20),
    ),
    st.tuples(st.binary(max_size=120), st.binary(max_size=120)),
    st.tuples(
        st.sampled_from(
            [
                b"Content-Disposition: form-data",
                b"Content-Disposition: form-data; name=",
                b"Content-Disposition: form-data; name=\"image\"; filename*=UTF-8''%ff",
                b'Content-Disposition: form-data; name="image"; filename="' + b"f" * 10000 + b'"',
                b"X: " + b"h" * 100_000,
                b"no colon here",
                b":",
                b"Content-Disposition:" * 1000,
            ]
        ),
        st.binary(max_size=64),
    ),
)


@fuzz(400)
@given(
    boundary=BOUNDARY,
    header_boundary=st.none() | BOUNDARY,
    style=st.integers(0, 9),
    parts=st.lists(PART, max_size=5),
    copies=st.sampled_from([1, 1, 1, 2, 1000]),
    terminate=st.booleans(),
    ops=st.lists(MUTATION, max_size=2),
)
def test_fuzz_multipart(boundary, header_boundary, style, parts, copies, terminate, ops):
    pytest.importorskip("python_multipart")
    from onnxcam.server.problems import HTTPProblem
    from onnxcam.server.uploads import parse_upload

    body = mutate(multipart(parts * copies, boundary.encode("utf-8"), terminate), ops)
    content_type = _content_type(header_boundary if header_boundary is not None else boundary, style)
    result = guarded(lambda: parse_upload(body, content_type), HTTPProblem)
    if isinstance(result, HTTPProblem):
        assert 400 <= result.status < 500, result.status
    else:
        assert isinstance(result.data, bytes) and result.data
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.fields.items())


@fuzz(300)
@given(content_type=LATIN1, body=st.binary(max_size=300))
@example(content_type="multipart/form-data; boundary=x", body=b"--x\r\n" * 100_000)
@example(
    content_type="multipart/form-data; boundary=x",
    body=b'--x\r\nContent-Disposition: form-data; name="f"\r\n\r\n1\r\n' * 20_000 + b"--x--\r\n",
)
@example(content_type='multipart/form-data; boundary="', body=b"--\r\n")
@example(content_type="image/png", body=b"")
def test_fuzz_content_type(content_type, body):
    pytest.importorskip("python_multipart")
    from onnxcam.server.problems import HTTPProblem
    from onnxcam.server.uploads import parse_upload

    result = guarded(lambda: parse_upload(body, content_type), HTTPProblem)
    if isinstance(result, HTTPProblem):
        assert 400 <= result.status < 500, result.status


# -- hazards: processes with a memory cap and a timeout ------------------------------------------

HAZARD_TIMEOUT = 30  # seconds from the start; all hazards run at once, each in its own process
HAZARD_MEMORY = 3 << 30  # address space of a hazard's process: onnxruntime needs ~1.5 GiB of it


@pytest.fixture(scope="module")
def hazard_results(tmp_path_factory):
    """{hazard name: outcome}, from one child that forks a capped process per hazard (fuzz_inputs.run_hazards)."""
    folder = tmp_path_factory.mktemp("hazards")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    code = f"from tests.fuzz_inputs import run_hazards; run_hazards({str(folder)!r}, {HAZARD_TIMEOUT}, {HAZARD_MEMORY})"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=HAZARD_TIMEOUT + 60,
    )
    lines = [ln for ln in proc.stdout.decode(errors="replace").splitlines() if ln.startswith("HAZARDS ")]
    assert lines, f"the hazard runner died (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-800:]}"
    return json.loads(lines[-1][len("HAZARDS ") :])


@pytest.mark.parametrize("name", HAZARDS)
def test_hazard(hazard_results, name):
    report = hazard_results[name]
    outcome = report["outcome"]
    assert outcome != "timeout", f"hazard {name}: no answer after {HAZARD_TIMEOUT} s (a hang or an endless read)"
    assert outcome != "died", f"hazard {name}: the process died ({report['message']})"
    assert outcome != "other", f"hazard {name}: {report['type']}: {report['message']} (at {report['where']})"
    assert not report.get("secret"), f"hazard {name}: class names read from outside the model folder"
    assert report.get("labels", 0) <= MAX_LABELS, f"hazard {name}: {report['labels']} class names accepted"
    if name == "static_input_20k":  # a static input size is the model's own (README, Security): derive_spec keeps
        assert outcome == "ok" and report["size"] == [20000, 20000], report  # it; building the explainer stays small


# -- user options: the same validation, from the caller's side -----------------------------------

USER_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        **{k: v for k, v in FIELD_VALUES.items() if k != "labels"},
        "labels": st.lists(TEXT | NUMBER, max_size=8),  # a user's labels path may point anywhere: lists only here
    },
)


@fuzz(200)
@given(kind=MODEL_KIND, options=USER_OPTIONS)
def test_fuzz_user_options(world, kind, options):
    spec = guarded(lambda: derive_spec(_model(kind), settings=False, **options))
    if not isinstance(spec, OnnxcamError):
        check_spec(spec, world)


# -- regressions: the smallest failing inputs the fuzzers found ----------------------------------


def _warned(fn):
    """``fn()``'s result and the warnings it issued; any exception propagates."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught]


def _settings_spec(world, text: str, suffix: str = ".onnxcam.json"):
    _write_settings(world, [(suffix, text.encode())])
    try:
        return derive_spec(_model("dynamic"), model_path=world["model"])
    finally:
        _write_settings(world, [])


def _check_surface(world, surface: str, field: str, json_value: str, value) -> None:
    """``field`` = ``value`` from ``surface``: metadata warns and ignores it, the others raise an OnnxcamError."""
    if surface == "metadata":
        spec, warned = _warned(
            lambda: derive_spec(
                _model("dynamic", {"onnxcam.preprocess": f'{{"{field}": {json_value}}}'}),
                model_path=world["model"],
                settings=False,
            )
        )
        assert isinstance(spec, PreprocessSpec) and warned
    elif surface == "settings-json":
        with pytest.raises(OnnxcamError):
            _settings_spec(world, f'{{"{field}": {json_value}}}')
    elif surface == "settings-toml":
        with pytest.raises(OnnxcamError):
            _settings_spec(world, f"{field} = {json_value}\n", ".onnxcam.toml")
    else:
        with pytest.raises(OnnxcamError):
            derive_spec(_model("dynamic"), settings=False, **{field: value})


SURFACES = ["metadata", "settings-json", "settings-toml", "user"]


# FOUND by test_fuzz_metadata, test_fuzz_settings_file, test_fuzz_user_options: a JSON/TOML integer of 400 digits
# as mean/std/scale raises OverflowError ("int too large to convert to float") in
# onnxcam/preprocess/spec.py _number (math.isfinite(v) on an int).
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("field", ["mean", "std", "scale"])
def test_found_huge_integer_number(world, surface, field):
    huge = "1" + "0" * 400
    _check_surface(world, surface, field, huge, int(huge))


# FOUND by test_fuzz_settings_file: a size string of 5000 digits raises ValueError ("Exceeds the limit (4300
# digits) for integer string conversion") in onnxcam/preprocess/spec.py _validate (int(p) in the size listcomp).
@pytest.mark.parametrize("surface", SURFACES)
def test_found_size_string_of_5000_digits(world, surface):
    digits = "2" * 5000
    _check_surface(world, surface, "size", f'"{digits}"', digits)


# FOUND by test_fuzz_metadata, test_fuzz_settings_file, test_fuzz_external_data: a labels path or an external
# data location longer than NAME_MAX (or PATH_MAX) raises OSError [Errno 36] "File name too long" from
# Path.is_file() (pathlib.py stat) in onnxcam/trust.py confined_file.
@pytest.mark.parametrize("surface", ["metadata", "settings-json", "settings-toml"])
@pytest.mark.parametrize("location", ["x" * 5000, "/".join(["d"] * 3000)], ids=["long-name", "long-path"])
def test_found_label_path_too_long(world, surface, location):
    _check_surface(world, surface, "labels", f'"{location}"', location)


@pytest.mark.parametrize("location", ["x" * 5000, "/".join(["d"] * 3000)], ids=["long-name", "long-path"])
def test_found_external_data_location_too_long(tmp_path, location):
    from onnx import TensorProto

    from onnxcam.graph.load import load_model

    model = small_cnn()
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    path = tmp_path / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(OnnxcamError):
        load_model(path)


# FOUND by test_fuzz_small_model_bytes and test_fuzz_demo_model_bytes: one flipped bit that makes a string field
# invalid UTF-8 (here the op_type "Gemm" -> b"\xc7emm") raises UnicodeDecodeError from onnx.checker.check_model
# (onnx/checker.py:147), called by onnxcam/graph/weights.py WeightFolder.check; load_model accepts the file.
def test_found_invalid_utf8_op_type(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxcam

    data = bytearray(small_cnn_bytes(True))
    at = data.index(b"Gemm")
    data[at] ^= 0x80
    path = tmp_path / "bad_utf8.onnx"
    path.write_bytes(bytes(data))
    with pytest.raises(OnnxcamError):
        onnxcam.Explainer(path)


# FOUND by test_fuzz_model_structure: an input whose elem_type is 0 (UNDEFINED) or unknown raises KeyError from
# onnx.helper.tensor_dtype_to_np_dtype (onnx/helper.py:1291), via onnxcam/graph/index.py np_dtype, in derive_spec.
@pytest.mark.parametrize("elem_type", [0, 99])
def test_found_undefined_input_elem_type(tmp_path, elem_type):
    model = small_cnn(dynamic=True)
    model.graph.input[0].type.tensor_type.elem_type = elem_type
    path = tmp_path / "undefined.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(OnnxcamError):
        derive_spec(path, settings=False)
    with pytest.raises(OnnxcamError):
        derive_spec(model, settings=False)


# FOUND by test_fuzz_model_structure: a Gemm whose bias C is a 4-D tensor (C rewired to the Conv output) raises
# AssertionError("input rank exceeds output rank under broadcasting") in onnxcam/autodiff/rules/_broadcast.py
# unbroadcast (from rules/matmul.py vjp_gemm), in Explainer.__init__. The ONNX checker accepts the model.
def test_found_gemm_bias_of_higher_rank(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxcam

    model = small_cnn()
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    gemm.input[2] = "features"
    path = tmp_path / "gemm_bias.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(OnnxcamError):
        onnxcam.Explainer(path)


# FOUND by test_hazard[static_input_20k_explainer] and test_hazard[input_dim_2g_explainer] (and
# test_fuzz_model_structure before its sizes were capped): a model with a static input of 20000x20000 (or one
# side of 2**31) makes Explainer.__init__ allocate a dense (n_out, n_in) float64 matrix in
# onnxcam/methods/upsampling.py interpolation_matrix: 2.98 GiB, or a 16 GiB np.arange: MemoryError, or the OOM
# killer. See test_hazard for the capped reproduction; derive_spec already refuses such sizes.


# FOUND by test_fuzz_content_type and test_fuzz_multipart: a multipart boundary longer than 256 characters raises
# python_multipart.exceptions.FormParserError ("Boundary length 300 exceeds maximum of 256") from
# MultipartParser.__init__ (python_multipart/multipart.py:1103): onnxcam/server/uploads.py _split_form builds the
# parser outside its try block.
def test_found_boundary_over_256_chars():
    pytest.importorskip("python_multipart")
    from onnxcam.server.problems import HTTPProblem
    from onnxcam.server.uploads import parse_upload

    boundary = "a" * 300
    body = multipart([form_part(b"image", b"\x89PNG", b"x.png")], boundary.encode())
    with pytest.raises(HTTPProblem) as caught:
        parse_upload(body, f"multipart/form-data; boundary={boundary}")
    assert caught.value.status == 400


# FOUND by a probe beside test_fuzz_content_type: a Content-Type str with a character above U+00FF raises
# UnicodeEncodeError ("'latin-1' codec can't encode character") from python_multipart parse_options_header
# (python_multipart/multipart.py:253), via onnxcam/server/uploads.py media_type. Not reachable through
# Starlette (it decodes headers as latin-1), but parse_upload takes any str.
@pytest.mark.parametrize("content_type", ["image/png; x=\u0100", "multipart/form-data; boundary=\u20ac"])
def test_found_content_type_beyond_latin1(content_type):
    pytest.importorskip("python_multipart")
    from onnxcam.server.problems import HTTPProblem
    from onnxcam.server.uploads import parse_upload

    with pytest.raises(HTTPProblem):
        parse_upload(b"--x\r\n", content_type)

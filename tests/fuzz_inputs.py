"""Seed inputs for tests/test_fuzz.py: small valid models, images and multipart bodies to mutate.

Everything here is built in memory from onnx.helper, numpy and Pillow, so the
fuzz tests need no files from the repository beyond the demo model.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# -- models --------------------------------------------------------------------------------------


def small_cnn(
    dynamic: bool = False, size: int = 8, classes: int = 3, dtype: int = TensorProto.FLOAT, seed: int = 0
) -> onnx.ModelProto:
    """x (1,3,size,size), or (N,3,'h','w') when ``dynamic`` -> Conv -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = []
    x = "x"
    if dtype != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], name="cast", to=TensorProto.FLOAT))
        x = "xf"
    nodes += [
        helper.make_node("Conv", [x, "w1", "b1"], ["features"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    shape = ["N", 3, "h", "w"] if dynamic else [1, 3, size, size]
    graph = helper.make_graph(
        nodes,
        "fuzz_cnn",
        [helper.make_tensor_value_info("x", dtype, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], classes])],
        [init("w1", 4, 3, 3, 3), init("b1", 4), init("wf", classes, 4), init("bf", classes)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fuzz")
    model.ir_version = 8
    return model


@functools.lru_cache(maxsize=None)
def small_cnn_bytes(dynamic: bool = False) -> bytes:
    return small_cnn(dynamic).SerializeToString()


# -- images --------------------------------------------------------------------------------------

#: Formats the seeds are written in (Pillow names), with the mode each seed uses.
IMAGE_SEEDS = {
    "PNG": "RGBA",
    "JPEG": "RGB",
    "GIF": "P",
    "BMP": "RGB",
    "TIFF": "RGB",
    "WEBP": "RGB",
    "PNG-L16": "I;16",
    "TIFF-CMYK": "CMYK",
    "ICO": "RGBA",
    "PPM": "RGB",
    "TGA": "RGB",
}


@functools.lru_cache(maxsize=None)
def image_seed(name: str, w: int = 12, h: int = 9) -> bytes:
    """A small valid image file in format ``name`` (a key of :data:`IMAGE_SEEDS`)."""
    from PIL import Image

    fmt = name.split("-")[0]
    mode = IMAGE_SEEDS[name]
    rng = np.random.default_rng(len(name))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), "RGBA").convert(mode)
    buf = io.BytesIO()
    kwargs = {"exif": _exif_orientation(6)} if fmt in ("JPEG", "WEBP") else {}
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _exif_orientation(value: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_declaring(w: int, h: int, idat: bytes | None = None) -> bytes:
    """A PNG whose IHDR declares ``w`` x ``h`` (8-bit RGB) with correct CRCs, and a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", w & 0xFFFFFFFF, h & 0xFFFFFFFF, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def set_declared_size(name: str, data: bytes, w: int, h: int) -> bytes | None:
    """``data`` with its header's width and height fields set to ``w``, ``h`` (CRC fixed for PNG); None if unknown."""
    fmt = name.split("-")[0]
    b = bytearray(data)
    if fmt == "PNG":
        b[16:24] = struct.pack(">II", w & 0xFFFFFFFF, h & 0xFFFFFFFF)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
        return bytes(b)
    if fmt == "GIF":  # logical screen, and the first image descriptor
        b[6:10] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)
        at = b.find(b"\x2c", 13)
        if at > 0:
            b[at + 5 : at + 9] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)
        return bytes(b)
    if fmt == "BMP":
        b[18:26] = struct.pack("<ii", _s32(w), _s32(h))
        return bytes(b)
    if fmt == "JPEG":
        for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
            at = b.find(marker)
            if at > 0:
                b[at + 5 : at + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
                return bytes(b)
        return None
    if fmt == "WEBP":
        kind = bytes(b[12:16])
        if kind == b"VP8X":
            b[24:30] = ((w - 1) & 0xFFFFFF).to_bytes(3, "little") + ((h - 1) & 0xFFFFFF).to_bytes(3, "little")
        elif kind == b"VP8L":
            bits = ((w - 1) & 0x3FFF) | (((h - 1) & 0x3FFF) << 14) | (b[24] >> 4 << 28)
            b[21:25] = struct.pack("<I", bits)
        elif kind == b"VP8 ":
            b[26:30] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)
        else:
            return None
        return bytes(b)
    if fmt == "TIFF":  # ImageWidth (256) and ImageLength (257) in the first IFD, as LONG values
        little = b[:2] == b"II"
        e = "<" if little else ">"
        ifd = struct.unpack(e + "I", b[4:8])[0]
        count = struct.unpack(e + "H", b[ifd : ifd + 2])[0]
        for i in range(count):
            at = ifd + 2 + 12 * i
            tag = struct.unpack(e + "H", b[at : at + 2])[0]
            if tag in (256, 257):
                b[at + 2 : at + 12] = struct.pack(e + "HII", 4, 1, (w if tag == 256 else h) & 0xFFFFFFFF)
        return bytes(b)
    if fmt == "PPM":
        head, _, rest = bytes(b).partition(b"\n")
        dims, _, rest = rest.partition(b"\n")
        return head + b"\n" + f"{w} {h}".encode() + b"\n" + rest
    return None


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


#: Headers of formats a photo loader must refuse: PostScript and EPS run Ghostscript in Pillow, PDF is no photo.
EPS_BYTES = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
    b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
)
PS_BYTES = b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\nshowpage\n%%EOF\n"
#: DOS EPS binary header (C5 D0 D3 C6): PostScript at an offset, as Pillow's EPS plugin also reads it.
DOS_EPS_BYTES = b"\xc5\xd0\xd3\xc6" + struct.pack("<IIIIII", 30, len(EPS_BYTES), 0, 0, 0, 0) + b"\xff\xff" + EPS_BYTES
PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
)

#: Magic numbers of formats Pillow can open, to steer arbitrary bytes into its rarer decoders.
IMAGE_MAGICS = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"P6\n",
    b"P5\n",
    b"P4\n",
    b"Pf\n",
    b"\x00\x00\x01\x00",
    b"8BPS",
    b"%!PS-Adobe-3.0 EPSF-3.0\n",
    b"\xc5\xd0\xd3\xc6",
    b"%PDF-1.4\n",
    b"qoif",
    b"DDS ",
    b"\x01\xda",
    b"SIMPLE  =                    T",
    b"icns",
    b"\x0a\x05\x01\x08",
    b"\x59\xa6\x6a\x95",
    b"FORM",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    b"\xff\x4f\xff\x51",
    b"#define",
    b"/* XPM */",
    b"\x00\x00\x02\x00",
    b"\x00\x00\x0a\x00",
    b"BLP2",
    b"FLI",
    b"\x76\x2f\x31\x01",
    b"\x00\x00\x01\x00\x01\x00",
)


# -- multipart bodies ----------------------------------------------------------------------------


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes, terminate: bool = True) -> bytes:
    """A multipart/form-data body: ``parts`` are (header block without the final CRLF, data)."""
    out = bytearray()
    for headers, data in parts:
        out += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n"
    if terminate:
        out += b"--" + boundary + b"--\r\n"
    return bytes(out)


def form_part(name: bytes, data: bytes, filename: bytes | None = None, content_type: bytes | None = None) -> tuple:
    disp = b'Content-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        disp += b'; filename="' + filename + b'"'
    headers = disp + (b"\r\nContent-Type: " + content_type if content_type is not None else b"")
    return headers, data


# -- hazards run in a child process (test_fuzz.py::test_hazard) -----------------------------------
#
# Inputs that, mishandled, hang for ever (a FIFO), read for ever (/dev/zero) or allocate gigabytes: they
# run in a child with a memory cap and a timeout, so a regression fails one test instead of the CI job.

SECRET = "S3CRET-onnxcam-fuzz-7f3a"


def make_world(root) -> dict:
    """A model folder ``root/m`` with hostile neighbours; returns the paths by name.

    Outside the folder: ``secret.txt``, ``secret.json``, ``secret.bin`` and
    ``secret.onnxcam.json`` all hold :data:`SECRET`. Inside: ``labels.txt``
    (a legitimate file), symlinks ``link.txt``/``link.json``/``link.bin``
    pointing at the secrets, ``zero.txt``/``zero.bin`` pointing at
    ``/dev/zero``, a folder ``sub``, and a symlink loop ``loop``. FIFOs are
    made only by :func:`add_fifos` (children only: opening one blocks).
    """
    import json
    import os
    from pathlib import Path

    root = Path(root)
    m = root / "m"
    (m / "sub").mkdir(parents=True, exist_ok=True)
    (root / "secret.txt").write_text(SECRET + "\n")
    (root / "secret.json").write_text(json.dumps([SECRET]))
    (root / "secret.bin").write_bytes(SECRET.encode() * 64)
    (root / "secret.onnxcam.json").write_text(json.dumps({"labels": [SECRET]}))
    (m / "labels.txt").write_text("cat\ndog\nbird\n")
    links = {
        "link.txt": root / "secret.txt",
        "link.json": root / "secret.json",
        "link.bin": root / "secret.bin",
        "zero.txt": Path("/dev/zero"),
        "zero.bin": Path("/dev/zero"),
        "loop": m / "loop",
    }
    for name, target in links.items():
        if not os.path.lexists(m / name):
            os.symlink(target, m / name)
    return {"root": root, "m": m, "model": m / "model.onnx"}


def add_fifos(m) -> None:
    import os

    for name in ("fifo.txt", "fifo.bin"):
        if not os.path.lexists(os.path.join(m, name)):
            os.mkfifo(os.path.join(m, name))


def _with_props(model: onnx.ModelProto, props: dict) -> onnx.ModelProto:
    for k, v in props.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model


def _external_model(world: dict, location: str, length: str | None = None) -> None:
    """``world['model']`` with its Conv weight stored externally at ``location`` (written by hand)."""
    model = small_cnn()
    (world["m"] / "weights.bin").write_bytes(b"\0" * 4096)
    t = next(t for t in model.graph.initializer if t.name == "w1")
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", length)):
        if v is not None:
            e = t.external_data.add()
            e.key, e.value = k, v
    world["model"].write_bytes(model.SerializeToString())


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""

    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def nested_if_bytes(depth: int) -> bytes:
    """small_cnn plus an output computed through ``depth`` nested If subgraphs, encoded by hand.

    onnx.helper cannot build it past protobuf's nesting limit (each If is 3
    message levels), but a file can hold any depth.
    """
    plain = helper.make_graph(
        [helper.make_node("Identity", ["logits"], ["e"])],
        "e",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 3])],
    ).SerializeToString()
    graph = helper.make_graph(
        [helper.make_node("Identity", ["logits"], ["y0"])],
        "g0",
        [],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, [1, 3])],
    ).SerializeToString()
    graph_type = b"\xa0\x01\x05"  # AttributeProto.type (field 20) = GRAPH (5)
    for i in range(1, depth + 1):
        then = _field(1, b"then_branch") + graph_type + _field(6, graph)
        other = _field(1, b"else_branch") + graph_type + _field(6, plain)
        node = helper.make_node("If", ["cond"], [f"y{i}"]).SerializeToString() + _field(5, then) + _field(5, other)
        out = helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 3]).SerializeToString()
        graph = _field(1, node) + _field(2, f"g{i}".encode()) + _field(12, out)
    model = small_cnn()
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    # A second `graph` field is merged into the first: its node and output are appended.
    return model.SerializeToString() + _field(7, graph)


def _hazard(name: str, world: dict):
    """Run hazard ``name`` (see :data:`HAZARDS`); returns what onnxcam returned."""
    import json

    from onnxcam.preprocess import derive_spec, load_image

    model, m = world["model"], world["m"]
    P = "onnxcam.preprocess"
    meta = {  # built lazily: some are megabytes
        "meta_labels_dev_zero": lambda: {P: json.dumps({"labels": "/dev/zero"})},
        "meta_labels_zero_link": lambda: {P: json.dumps({"labels": "zero.txt"})},
        "meta_labels_fifo": lambda: {P: json.dumps({"labels": "fifo.txt"})},
        "meta_labels_proc_fd": lambda: {P: json.dumps({"labels": "/proc/self/fd/0"})},
        "labels_key_dev_zero": lambda: {"onnxcam.labels": json.dumps("/dev/zero")},
        "ultralytics_names_dev_zero": lambda: {"author": "Ultralytics", "names": repr("/dev/zero")},
        "character_huge": lambda: {"character": "c\n" * (1 << 20)},
    }
    settings = {
        "settings_labels_zero_link": lambda: json.dumps({"labels": "zero.txt"}),
        "settings_labels_fifo": lambda: json.dumps({"labels": "fifo.txt"}),
        "settings_labels_dev_zero": lambda: json.dumps({"labels": "/dev/zero"}),
        "settings_huge_labels_list": lambda: '{"labels": [' + ", ".join(['"x"'] * 3_000_000) + "]}",
    }
    if name in meta:
        return derive_spec(_with_props(small_cnn(), meta[name]()), model_path=model)
    if name in settings:
        (m / "model.onnxcam.json").write_text(settings[name]())
        return derive_spec(small_cnn(), model_path=model)
    if name in ("settings_file_fifo", "settings_file_dev_zero"):
        import os

        target = m / "model.onnxcam.json"
        if name.endswith("fifo"):
            os.mkfifo(target)
        else:
            os.symlink("/dev/zero", target)
        return derive_spec(small_cnn(), model_path=model)
    if name.startswith("ext_"):
        import onnxcam
        from onnxcam.graph.load import load_model

        location, length = {
            "ext_zero_link": ("zero.bin", "256"),
            "ext_fifo": ("fifo.bin", "256"),
            "ext_dev_zero": ("/dev/zero", "256"),
            "ext_huge_length": ("weights.bin", str(1 << 33)),
            "ext_zero_link_no_length": ("zero.bin", None),
        }[name]
        _external_model(world, location, length)
        load_model(model)
        return onnxcam.Explainer(model)
    if name in ("static_input_20k", "static_input_20k_explainer"):
        import onnxcam

        big = small_cnn()
        dims = big.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value = dims[3].dim_value = 20000
        onnx.save(big, model)
        if name.endswith("explainer"):
            return onnxcam.Explainer(model)
        return derive_spec(model)
    if name in ("input_dim_2g_explainer", "conv_pads_huge_explainer"):
        import onnxcam

        big = small_cnn()
        if name.startswith("input"):
            big.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 1 << 31
        else:
            conv = next(n for n in big.graph.node if n.op_type == "Conv")
            del conv.attribute[:]
            conv.attribute.append(helper.make_attribute("pads", [1 << 18] * 4))
        onnx.save(big, model)
        return onnxcam.Explainer(model)
    if name == "initializer_dims_huge":
        import onnxcam

        big = small_cnn()
        t = next(t for t in big.graph.initializer if t.name == "wf")
        del t.dims[:]
        t.dims.extend([1 << 15, 1 << 15])
        onnx.save(big, model)
        return onnxcam.Explainer(model)
    if name.startswith("nested_if_"):
        import onnxcam

        model.write_bytes(nested_if_bytes(int(name.rsplit("_", 1)[1])))
        return onnxcam.Explainer(model)
    if name == "image_gif_many_frames":
        frames = b"".join(b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00" for _ in range(200_000))
        gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff" + frames + b"\x3b"
        return load_image(gif)
    if name == "image_png_zlib_bomb":  # 5000x5000 RGB: under the cap, 75 MB inflated from ~75 kB
        z = zlib.compressobj(9)
        row = b"\0" * (5000 * 3 + 1)
        raw = b"".join(z.compress(row) for _ in range(5000)) + z.flush()
        return load_image(png_declaring(5000, 5000, raw))
    raise KeyError(name)


#: Hazard names, each run by test_fuzz.py in its own child process.
HAZARDS = (
    "meta_labels_dev_zero",
    "meta_labels_zero_link",
    "meta_labels_fifo",
    "meta_labels_proc_fd",
    "labels_key_dev_zero",
    "ultralytics_names_dev_zero",
    "character_huge",
    "settings_labels_zero_link",
    "settings_labels_fifo",
    "settings_labels_dev_zero",
    "settings_huge_labels_list",
    "settings_file_fifo",
    "settings_file_dev_zero",
    "ext_zero_link",
    "ext_fifo",
    "ext_dev_zero",
    "ext_huge_length",
    "ext_zero_link_no_length",
    "static_input_20k",
    "static_input_20k_explainer",
    "input_dim_2g_explainer",
    "conv_pads_huge_explainer",
    "initializer_dims_huge",
    "nested_if_2",
    "nested_if_30",
    "nested_if_200",
    "image_gif_many_frames",
    "image_png_zlib_bomb",
)


def _run_one(name: str, folder: str) -> dict:
    """Hazard ``name`` in a fresh world under ``folder``: how it ended, as a JSON-able dict."""
    import os
    import time
    import traceback
    import warnings

    from onnxcam.errors import OnnxcamError
    from onnxcam.preprocess import PreprocessSpec

    world = make_world(folder)
    add_fifos(world["m"])
    os.chdir(folder)
    report: dict = {"name": name}
    start = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = _hazard(name, world)
        report["outcome"] = "ok"
        if isinstance(result, PreprocessSpec):
            report["size"] = list(result.size)
            report["labels"] = len(result.labels or ())
            report["secret"] = any(SECRET in str(x) for x in (result.labels or ()))
    except OnnxcamError as e:
        report.update(outcome="onnxcam", type=type(e).__name__, message=str(e)[:300])
    except BaseException as e:  # noqa: BLE001 - the point is to report anything else
        last = traceback.extract_tb(e.__traceback__)[-1]
        report.update(
            outcome="other",
            type=type(e).__name__,
            message=str(e)[:300],
            where=f"{last.filename}:{last.lineno} in {last.name}",
        )
    report["seconds"] = round(time.monotonic() - start, 2)
    return report


def run_hazards(folder: str, timeout: float, memory: int) -> None:
    """Child entry point: every hazard in its own forked process, at once; print one JSON line of outcomes.

    Imports happen once here, before the forks, so each hazard costs only its
    own work. A hazard's process gets ``memory`` bytes of address space and
    is killed when it has not finished ``timeout`` seconds after the start.
    """
    import json
    import os
    import resource
    import signal
    import time

    import onnxcam  # noqa: F401 - imported once, before forking
    import onnxcam.preprocess  # noqa: F401
    from onnxcam.graph import load  # noqa: F401

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    running: dict[str, tuple[int, int]] = {}
    for name in HAZARDS:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the hazard's own process: never returns
            code = 0
            try:
                os.close(r)
                resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
                sub = os.path.join(folder, name)
                os.makedirs(sub)
                os.write(w, json.dumps(_run_one(name, sub)).encode())
            except BaseException:  # noqa: BLE001
                code = 3
            finally:
                os._exit(code)
        os.close(w)
        running[name] = (pid, r)
    results: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        for name, (pid, r) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                data = b""
                while chunk := os.read(r, 1 << 16):
                    data += chunk
                os.close(r)
                del running[name]
                if data:
                    results[name] = json.loads(data)
                else:
                    how = (
                        f"killed by signal {os.WTERMSIG(status)}"
                        if os.WIFSIGNALED(status)
                        else f"exit status {os.WEXITSTATUS(status)}"
                    )
                    results[name] = {"name": name, "outcome": "died", "message": how}
        time.sleep(0.05)
    for name, (pid, r) in running.items():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        results[name] = {"name": name, "outcome": "timeout"}
    print("HAZARDS " + json.dumps(results), flush=True)

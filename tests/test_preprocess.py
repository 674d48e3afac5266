"""Preprocessing: presets, layouts from the graph, hints and their precedence, safe image loading,
and the exact mapping of a CAM back onto the photo's pixels."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxcam.errors import ImageError, InputError, OnnxcamError, PreprocessError
from onnxcam.preprocess import (
    PreprocessSpec,
    cam_to_image,
    derive_spec,
    load_image,
    plan_geometry,
    point_to_image,
    point_to_input,
    preprocess_batch,
    read_header,
    with_options,
)

# -- tiny models -----------------------------------------------------------------------------------


def conv_model(layout="NCHW", channels=3, h=2, w=2, elem=TensorProto.FLOAT, metadata=None, batch="N"):
    """x -> (Transpose perm [0,3,1,2] if NHWC, tf2onnx style) -> Conv -> GlobalAveragePool -> Flatten."""
    rng = np.random.default_rng(0)
    wt = numpy_helper.from_array(rng.standard_normal((4, channels, 1, 1)).astype(np.float32), "w")
    nodes, src = [], "x"
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        src = "xf"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [src], ["xt"], perm=[0, 3, 1, 2]))
        src = "xt"
        shape = [batch, h, w, channels]
    else:
        shape = [batch, channels, h, w]
    nodes += [
        helper.make_node("Conv", [src, "w"], ["c"], name="conv"),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        [wt],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    return model


PIX = np.array([[[0, 128, 255], [10, 20, 30]], [[255, 0, 0], [1, 2, 3]]], dtype=np.uint8)  # 2x2 RGB, [y, x, c]


def expected(preset: str) -> np.ndarray:
    """(H, W, C) expected values, written out independently of the preset table."""
    p = PIX.astype(np.float64)
    if preset == "imagenet":
        return (p / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    if preset in ("inception", "tf"):
        return (p - 127.5) / 127.5
    if preset == "caffe":
        return p[:, :, ::-1] - np.array([103.939, 116.779, 123.68])
    if preset == "raw01":
        return p / 255
    if preset == "raw255":
        return p
    raise AssertionError(preset)


# -- presets and layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["imagenet", "inception", "tf", "caffe", "raw01", "raw255"])
def test_preset_values_nchw(preset):
    spec = derive_spec(conv_model("NCHW"), preset=preset)
    assert spec.layout == "NCHW" and spec.size == (2, 2) and spec.channels == 3
    batch, geoms = preprocess_batch([Image.fromarray(PIX)], spec)
    assert batch.shape == (1, 3, 2, 2) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], expected(preset).transpose(2, 0, 1), rtol=1e-6, atol=1e-5)
    assert geoms[0].orig_size == (2, 2)


@pytest.mark.parametrize("preset", ["imagenet", "caffe", "inception"])
def test_preset_values_nhwc_from_tf2onnx_transpose(preset):
    spec = derive_spec(conv_model("NHWC"), preset=preset)
    assert spec.layout == "NHWC"
    batch, _ = preprocess_batch(Image.fromarray(PIX), spec)
    assert batch.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(batch[0], expected(preset), rtol=1e-6, atol=1e-5)
    # spot-check the layout by hand: pixel (y=1, x=0) is pure red
    if preset == "caffe":
        np.testing.assert_allclose(batch[0, 1, 0], [0 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-6)


def test_default_is_imagenet_and_custom_fields():
    spec = derive_spec(conv_model(), settings=False)
    assert spec.preset == "imagenet" and spec.sources["preset"] == "default"
    spec = derive_spec(conv_model(), mean=[10, 20, 30], std=2, scale="1/1", bgr=True)
    assert spec.preset == "custom"
    batch, _ = preprocess_batch(PIX, spec)
    want = (PIX[:, :, ::-1].astype(np.float64) - [10, 20, 30]) / 2
    np.testing.assert_allclose(batch[0], want.transpose(2, 0, 1), rtol=1e-6)


def test_grayscale_model_converts_to_L_and_averages_mean():
    spec = derive_spec(conv_model("NCHW", channels=1))
    assert spec.channels == 1 and spec.image_mode == "L"
    assert spec.mean == pytest.approx((0.449,)) and spec.std == pytest.approx((0.226,))
    batch, _ = preprocess_batch(PIX, spec)
    assert batch.shape == (1, 1, 2, 2)
    lum = np.asarray(Image.fromarray(PIX).convert("L"), np.float64)
    assert lum[1, 0] == 76  # pure red in ITU-R 601-2 luma
    np.testing.assert_allclose(batch[0, 0], (lum / 255 - 0.449) / 0.226, rtol=1e-6)
    spec = derive_spec(conv_model("NHWC", channels=1), preset="raw255")
    batch, _ = preprocess_batch(PIX, spec)
    assert batch.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(batch[0, :, :, 0], lum)


def test_model_dtype_is_kept():
    spec = derive_spec(conv_model(elem=TensorProto.FLOAT16))
    batch, _ = preprocess_batch(PIX, spec)
    assert batch.dtype == np.float16
    spec = derive_spec(conv_model(elem=TensorProto.UINT8))
    assert spec.preset == "raw255"  # integer inputs default to raw pixel values
    batch, _ = preprocess_batch(PIX, spec)
    assert batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0], PIX.transpose(2, 0, 1))


def test_size_from_model_user_or_default():
    assert derive_spec(conv_model(h=7, w=5)).size == (7, 5)
    assert derive_spec(conv_model(h="H", w="W")).size == (224, 224)
    spec = derive_spec(conv_model(h="H", w="W"), size=[32, 48])
    assert spec.size == (32, 48) and spec.sources["size"] == "user"
    assert derive_spec(conv_model(h="H", w="W"), size=64).size == (64, 64)
    with pytest.raises(PreprocessError, match="fixed input size 7x5"):
        derive_spec(conv_model(h=7, w=5), size=224)


def test_layout_pinned_by_graph_cannot_be_contradicted():
    with pytest.raises(PreprocessError, match="contradicts the model"):
        derive_spec(conv_model("NHWC"), layout="NCHW")
    assert derive_spec(conv_model("NHWC"), layout="nhwc").layout == "NHWC"


def test_bad_options_are_onnxcam_errors():
    for kw in (
        {"preset": "vgg"},
        {"mean": [1, 2]},
        {"std": 0},
        {"resize": "pad"},
        {"scale": -1},
        {"bgr": "yes"},
        {"size": [0, 3]},
        {"colour": "rgb"},
    ):
        with pytest.raises(PreprocessError):
            derive_spec(conv_model(), **kw)
    assert issubclass(PreprocessError, OnnxcamError) and issubclass(ImageError, OnnxcamError)


# -- settings file and metadata --------------------------------------------------------------------


def test_precedence_user_over_settings_over_metadata_over_defaults(tmp_path):
    model = conv_model(
        h="H",
        w="W",
        metadata={"onnxcam.preprocess": json.dumps({"preset": "raw01", "size": 16, "resize": "squash", "bgr": True})},
    )
    path = tmp_path / "net.onnx"
    onnx.save(model, path)
    (tmp_path / "labels.txt").write_text("cat\ndog\n\n")
    (tmp_path / "net.onnxcam.toml").write_text(
        'preset = "caffe"\nsize = [32, 48]\nresize = "crop"\nlabels = "labels.txt"\n'
    )

    spec = derive_spec(path)
    assert (spec.preset, spec.size, spec.resize, spec.bgr) == ("caffe", (32, 48), "crop", True)
    assert spec.labels == ("cat", "dog")
    assert spec.sources["size"].startswith("settings file") and spec.sources["preset"].startswith("settings file")

    spec = derive_spec(path, preset="inception", resize="squash")
    assert (spec.preset, spec.size, spec.resize, spec.bgr) == ("inception", (32, 48), "squash", False)

    spec = derive_spec(path, bgr=False)  # a user field refines the settings file's preset
    assert spec.preset == "custom" and not spec.bgr and spec.mean == (103.939, 116.779, 123.68)

    spec = derive_spec(path, settings=False)  # metadata next
    assert (spec.preset, spec.size, spec.resize, spec.bgr) == ("custom", (16, 16), "squash", True)
    assert spec.scale == pytest.approx(1 / 255) and spec.mean == (0, 0, 0)  # raw01, refined by bgr
    assert spec.sources["preset"] == "metadata onnxcam.preprocess"

    spec = derive_spec(path, settings=False, metadata=False)  # defaults
    assert (spec.preset, spec.size, spec.resize, spec.bgr) == ("imagenet", (224, 224), "squash", False)

    # a ModelProto plus model_path finds the same settings file
    assert derive_spec(model, model_path=path).preset == "caffe"


def test_the_spec_names_the_labels_file_it_read_whoever_named_it(tmp_path):
    """The CLI protects ``spec.labels_file`` from its outputs: it must name the file read, and only that one."""
    path = tmp_path / "m.onnx"
    onnx.save(conv_model(metadata={"onnxcam.preprocess": '{"labels": "meta.txt"}'}), path)
    for name in ("meta.txt", "settings.txt", "user.txt"):
        (tmp_path / name).write_text("a\nb\nc\nd\n")
    assert derive_spec(path).labels_file == tmp_path / "meta.txt"
    (tmp_path / "m.onnxcam.json").write_text('{"labels": "settings.txt"}')
    assert derive_spec(path).labels_file == tmp_path / "settings.txt"
    assert derive_spec(path, labels=str(tmp_path / "user.txt")).labels_file == tmp_path / "user.txt"
    assert derive_spec(path, labels=["w", "x", "y", "z"]).labels_file is None  # a list over a weaker file
    (tmp_path / "m.onnxcam.json").write_text('{"labels": ["w", "x", "y", "z"]}')
    assert derive_spec(path).labels_file is None
    spec = with_options(derive_spec(path), labels=str(tmp_path / "user.txt"))
    assert spec.labels == ("a", "b", "c", "d") and spec.labels_file == tmp_path / "user.txt"


def test_json_settings_file_and_conflicts(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model(h=8, w=8), path)
    (tmp_path / "m.onnxcam.json").write_text(json.dumps({"mean": [0.5], "std": [0.5], "labels": ["a", "b"]}))
    spec = derive_spec(path)
    assert spec.mean == (0.5, 0.5, 0.5) and spec.scale == pytest.approx(1 / 255) and spec.labels == ("a", "b")
    (tmp_path / "m.onnxcam.toml").write_text('preset = "tf"\n')
    with pytest.raises(PreprocessError, match="keep only one"):
        derive_spec(path)
    (tmp_path / "m.onnxcam.json").unlink()
    (tmp_path / "m.onnxcam.toml").write_text('preset = "tf"\nsize = 224\n')  # static 8x8 model
    with pytest.raises(PreprocessError, match="settings file"):
        derive_spec(path)
    (tmp_path / "m.onnxcam.toml").write_text('prest = "tf"\n')
    with pytest.raises(PreprocessError, match="unknown field"):
        derive_spec(path)
    (tmp_path / "m.onnxcam.toml").write_text("preset = \n")
    with pytest.raises(PreprocessError, match="not valid TOML"):
        derive_spec(path)


def test_standard_and_ultralytics_metadata_hints():
    spec = derive_spec(
        conv_model(metadata={"Image.NominalPixelRange": "Normalized_1_1", "Image.BitmapPixelFormat": "Bgr8"})
    )
    assert spec.preset == "custom" and spec.bgr and spec.scale == pytest.approx(1 / 127.5)
    batch, _ = preprocess_batch(PIX, spec)
    np.testing.assert_allclose(batch[0], expected("inception")[:, :, ::-1].transpose(2, 0, 1), atol=1e-6)

    spec = derive_spec(
        conv_model(
            h="H",
            w="W",
            metadata={
                "author": "Ultralytics",
                "imgsz": "[32, 40]",
                "names": "{0: 'cat', 1: 'dog'}",
                "task": "classify",
            },
        )
    )
    assert (spec.preset, spec.size, spec.labels, spec.resize) == ("raw01", (32, 40), ("cat", "dog"), "crop")

    # the onnxcam key outranks the standard keys; a static size outranks metadata silently
    spec = derive_spec(
        conv_model(
            metadata={
                "Image.NominalPixelRange": "NominalRange_0_255",
                "onnxcam.preprocess": '{"preset": "caffe", "size": 300}',
            }
        )
    )
    assert spec.preset == "caffe" and spec.size == (2, 2)


def test_malformed_metadata_is_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="ignoring"):
        spec = derive_spec(conv_model(metadata={"onnxcam.preprocess": "{not json"}))
    assert spec.preset == "imagenet"


# -- geometry: mapping back onto the photo ---------------------------------------------------------


def blob_image(h, w, y, x):
    """A dark photo with a smooth bright blob centred on pixel (y, x)."""
    yy, xx = np.mgrid[0:h, 0:w]
    a = 255 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    return Image.fromarray(np.repeat(np.rint(a).astype(np.uint8)[:, :, None], 3, axis=2))


@pytest.mark.parametrize("mode", ["squash", "crop", "letterbox"])
@pytest.mark.parametrize(
    "orig,target,blob",
    [
        ((50, 80), (64, 64), (20, 40)),
        ((50, 80), (64, 64), (40, 30)),
        ((120, 70), (48, 40), (70, 30)),
        ((33, 47), (40, 56), (5, 40)),
    ],
)
def test_peak_maps_back_to_the_blob(mode, orig, target, blob):
    dark = {"pad_value": 0} if mode == "letterbox" else {}  # black padding: only the blob is bright
    spec = with_options(PreprocessSpec(size=target), preset="raw255", resize=mode, **dark)
    batch, (g,) = preprocess_batch(blob_image(*orig, *blob), spec)
    lum = batch[0].sum(axis=0).astype(np.float64)
    lum = np.where(lum > 0.5 * lum.max(), lum, 0)
    yy, xx = np.mgrid[0 : target[0], 0 : target[1]]
    cy, cx = (lum * yy).sum() / lum.sum(), (lum * xx).sum() / lum.sum()  # where Pillow put the blob
    py, px = int(round(cy)), int(round(cx))
    cam = np.zeros(target, np.float32)
    cam[py, px] = 1.0  # a CAM peaking on the blob's model-input pixel
    back = cam_to_image(cam, g)
    assert back.shape == orig and back.dtype == np.float32
    by, bx = np.unravel_index(np.argmax(back), back.shape)
    # rounding to a model pixel costs up to half a model pixel, i.e. 0.5 / scale photo pixels
    tol = max(1.0, 0.5 / min(g.scale_y, g.scale_x) + 0.5)
    assert abs(by - blob[0]) <= tol and abs(bx - blob[1]) <= tol, (mode, (by, bx), blob)
    y, x = point_to_image((cy, cx), g)  # the sub-pixel peak maps back within a pixel
    assert abs(y - blob[0]) <= 1 and abs(x - blob[1]) <= 1, ((y, x), blob)
    fy, fx = point_to_input(blob, g)  # and the forward map agrees with Pillow's resize
    assert abs(fy - cy) <= 0.5 and abs(fx - cx) <= 0.5, ((fy, fx), (cy, cx))


def test_crop_geometry_and_zeros_outside_the_crop():
    g = plan_geometry((50, 80), (64, 64), "crop")
    # shorter side 50 -> 64; longer 80 * 64 // 50 = 102; centre crop starts at round(38 / 2) = 19
    assert (g.resized_h, g.resized_w, g.crop_top, g.crop_left) == (64, 102, 0, 19)
    back = cam_to_image(np.ones((64, 64), np.float32), g)
    # the window covers photo x in [19 / 1.275, 83 / 1.275] = [14.90, 65.10]: centres of columns 15..64
    assert np.all(back[:, :15] == 0) and np.all(back[:, 65:] == 0)
    np.testing.assert_allclose(back[:, 15:65], 1.0, atol=1e-6)
    # squash covers every pixel
    assert np.all(cam_to_image(np.ones((64, 64), np.float32), plan_geometry((50, 80), (64, 64))) > 0.999)


def test_cam_to_image_is_bilinear_and_points_round_trip():
    g = plan_geometry((8, 8), (4, 4), "squash")  # photo pixel = half a model pixel
    cam = np.zeros((4, 4), np.float32)
    cam[:, 2] = 1.0
    back = cam_to_image(cam, g)
    # photo column j centre maps to model x = (j + .5) / 2 - .5: columns 4, 5 -> 1.75, 2.25 -> 0.75, 0.75
    np.testing.assert_allclose(back[0], [0, 0, 0, 0.25, 0.75, 0.75, 0.25, 0], atol=1e-6)
    for p in [(0, 0), (3, 2), (1.5, 2.25)]:
        assert point_to_input(point_to_image(p, g), g) == pytest.approx(p)
    with pytest.raises(InputError):
        cam_to_image(np.zeros((5, 4)), g)


# -- image files -----------------------------------------------------------------------------------


def save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_plain_images_load_and_files_stay_untouched(tmp_path):
    p = save(Image.fromarray(PIX), tmp_path / "a.png")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    img, info = load_image(p)
    assert img.mode == "RGB" and info.format == "PNG" and info.size == (2, 2)
    np.testing.assert_array_equal(np.asarray(img), PIX)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("case", ["missing", "folder", "text", "truncated_jpeg", "truncated_png"])
def test_unreadable_files(tmp_path, case):
    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    if case == "missing":
        p = tmp_path / "nope.jpg"
    elif case == "folder":
        p = tmp_path
    elif case == "text":
        p = tmp_path / "notes.png"
        p.write_text("this is not a picture\n" * 20)
    else:
        fmt = "JPEG" if case == "truncated_jpeg" else "PNG"
        buf = io.BytesIO()
        noise.save(buf, fmt)
        p = tmp_path / f"cut.{fmt.lower()}"
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert str(p.name) in str(e.value) or str(p) in str(e.value)


def png_header_only(w, h):
    """A PNG that declares w x h 8-bit gray but holds no pixels: costs nothing to write."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_and_pillow_state_is_restored(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(30000, 30000))  # 900 megapixels declared
    with pytest.raises(ImageError, match="too large.*max_pixels"):
        load_image(bomb)
    small = save(Image.new("L", (100, 100), 7), tmp_path / "small.png")
    with pytest.raises(ImageError, match="10000 pixels"):
        load_image(small, max_pixels=5000)  # under Pillow's own threshold: our own cap
    with pytest.raises(ImageError, match="too large"):
        load_image(small, max_pixels=4000)  # past twice the cap: Pillow's error, translated
    assert load_image(small, max_pixels=10000)[0].size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == before


def test_an_uploads_header_is_read_once_and_decodes_as_load_image(monkeypatch):
    """read_header checks the header (the server charges its pixel budget from it); decode() goes on from it."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    want, want_info = load_image(data, name="upload 'a.png'")
    opened, real_open = [], Image.open
    monkeypatch.setattr(Image, "open", lambda *args, **kw: opened.append(args) or real_open(*args, **kw))
    header = read_header(data, max_pixels=1200, name="upload 'a.png'")
    assert (header.size, header.pixels) == ((40, 30), 1200)
    photo, info = header.decode()
    assert len(opened) == 1 and info == want_info
    np.testing.assert_array_equal(np.asarray(photo), np.asarray(want))
    with pytest.raises(ImageError, match="upload 'a.png' is too large: 1200 pixels exceeds the cap of 1199"):
        read_header(data, max_pixels=1199, name="upload 'a.png'")  # from the header: nothing decoded
    with pytest.raises(ImageError, match="upload is empty"):
        read_header(b"")
    with pytest.raises(ImageError, match="not an image onnxcam reads"):
        read_header(b"GIF89a not really")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        read_header(data[:100]).decode()


def test_cap_can_be_raised_beyond_pillows_default(tmp_path):
    w, h = 10000, 9000  # 90 MP > Pillow's default warning limit (~89.5 MP) and > our 64 MP default
    p = save(Image.new("1", (w, h), 0), tmp_path / "big.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(p)
    img, info = load_image(p, max_pixels=100_000_000)
    assert img.size == (w, h) and img.mode == "L" and info.mode == "1"


def test_rgba_la_and_palette_transparency_composite_on_white(tmp_path):
    a = np.array([[[255, 0, 0, 255], [0, 0, 255, 0]], [[0, 0, 0, 128], [10, 20, 30, 255]]], np.uint8)
    img, info = load_image(save(Image.fromarray(a, "RGBA"), tmp_path / "rgba.png"))
    assert img.mode == "RGB" and info.mode == "RGBA"
    got = np.asarray(img).astype(int)
    assert got[0, 0].tolist() == [255, 0, 0] and got[0, 1].tolist() == [255, 255, 255]
    assert got[1, 1].tolist() == [10, 20, 30] and np.all(np.abs(got[1, 0] - 127) <= 1)

    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], np.uint8), "LA")
    img, _ = load_image(save(la, tmp_path / "la.png"))
    assert img.mode == "L" and np.asarray(img).tolist() == [[50, 255]]

    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putdata([0, 1])
    img, info = load_image(save(pal, tmp_path / "p.png"))
    assert info.mode == "P" and img.mode == "RGB" and np.asarray(img).tolist() == [[[255, 0, 0], [0, 255, 0]]]
    img, _ = load_image(save(pal, tmp_path / "pt.png", transparency=1))
    assert np.asarray(img).tolist() == [[[255, 0, 0], [255, 255, 255]]]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    p = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    img, info = load_image(p)
    assert info.mode == "CMYK" and img.mode == "RGB"
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert r > 240 and g < 15 and b < 15


def test_sixteen_bit_png_is_scaled_to_8_bit(tmp_path):
    a = np.array([[0, 257 * 100], [65535, 257 * 200 + 128]], np.uint16)
    p = save(Image.fromarray(a), tmp_path / "deep.png")
    img, info = load_image(p)
    assert info.mode.startswith("I") and img.mode == "L"
    assert np.asarray(img).tolist() == [[0, 100], [255, 200]]


def test_exif_rotated_jpeg_is_made_upright(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 8, 8))  # mark at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = save(stored, tmp_path / "rot.jpg", exif=exif, quality=95)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    img, info = load_image(p)
    assert info.orientation == 6 and info.stored_size == (40, 20) and img.size == (20, 40)
    a = np.asarray(img.convert("L")).astype(int)
    assert a[1:7, 13:19].mean() > 200 and a[1:7, 1:7].mean() < 50  # the mark is now top-right
    assert hashlib.sha256(p.read_bytes()).hexdigest() == digest
    spec = with_options(PreprocessSpec(size=(8, 8)), preset="raw255")
    _, (g,) = preprocess_batch([p], spec)
    assert g.orig_size == (40, 20)  # geometry is relative to the upright photo


# -- batches and the explainer --------------------------------------------------------------------


def test_batch_of_mixed_sources_and_empty_batch(tmp_path):
    p = save(Image.fromarray(PIX), tmp_path / "a.png")
    spec = derive_spec(conv_model(h=4, w=6), preset="raw255")
    gray = np.full((3, 5), 9, np.uint8)
    batch, geoms = preprocess_batch([p, Image.fromarray(PIX).convert("RGBA"), gray], spec)
    assert batch.shape == (3, 3, 4, 6) and [g.orig_size for g in geoms] == [(2, 2), (2, 2), (3, 5)]
    np.testing.assert_allclose(batch[2], 9.0)
    with pytest.raises(InputError):
        preprocess_batch([], spec)
    with pytest.raises(InputError):
        preprocess_batch([np.zeros((4, 4), np.float32)], spec)


def test_end_to_end_with_the_explainer(tmp_path):
    from onnxcam import Explainer
    from tests.tiny_models import tiny_cnn

    model = tiny_cnn(size=16)
    spec = derive_spec(model, resize="crop")
    photo = blob_image(30, 50, 15, 25)
    batch, (g,) = preprocess_batch([photo], spec)
    res = Explainer(model).explain(batch)
    back = cam_to_image(res.cam[0], g)
    assert back.shape == (30, 50) and back.min() >= 0 and back.max() <= 1 + 1e-6
    # 30x50 -> 16x26, crop from x=5: the window is photo x in [5 / .52, 21 / .52] = [9.6, 40.4]
    assert np.all(back[:, :10] == 0) and np.all(back[:, 40:] == 0)

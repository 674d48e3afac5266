"""The exporters' own resizes: Ultralytics' letterbox, timm's ``crop_pct`` and torchvision's classification preset.

Each is checked against the exporter's arithmetic (or its own transform, where it is installed), and each
round trip photo -> model input -> photo is checked to the pixel.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxcam.cli.main import main
from onnxcam.errors import PreprocessError
from onnxcam.preprocess import (
    PreprocessSpec,
    cam_to_image,
    derive_spec,
    plan_geometry,
    point_to_image,
    point_to_input,
    preprocess_batch,
    with_options,
)
from tests.test_preprocess import conv_model

# -- Ultralytics' LetterBox, as the reference --------------------------------------------------------------------


def ultralytics_letterbox_params(shape: tuple[int, int], new_shape: tuple[int, int]) -> dict:
    """The arithmetic of ``LetterBox.get_params`` (auto=False, scale_fill=False, scaleup=True, center=True).

    Copied from ultralytics 8.4.190, ``ultralytics/data/augment.py``, class ``LetterBox``, method
    ``get_params`` (the wheel read with ``pip download ultralytics --no-deps``, not installed); only the
    branches onnxcam's letterbox stands for are kept. ``shape`` and ``new_shape`` are (height, width).
    """
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    new_unpad = max(round(shape[1] * r), 1), max(round(shape[0] * r), 1)  # keep thin images at least 1 pixel
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]  # wh padding
    dw /= 2  # divide padding into 2 sides
    dh /= 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return {"new_unpad": new_unpad, "top": top, "bottom": bottom, "left": left, "right": right}


def cv2_linear(img: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)`` without OpenCV (not a dependency).

    Two-tap bilinear with half-pixel centres and no antialiasing, which is torch's ``interpolate(bilinear,
    align_corners=False, antialias=False)``; OpenCV's fixed-point weights differ from it by at most 1 level.
    """
    import torch

    t = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(t, size=(size_wh[1], size_wh[0]), mode="bilinear", align_corners=False)
    return np.clip(np.rint(out[0].permute(1, 2, 0).numpy()), 0, 255).astype(np.uint8)


def ultralytics_letterbox(img: np.ndarray, new_shape: tuple[int, int], padding_value: int = 114) -> np.ndarray:
    """``LetterBox.apply_image`` of the same release: resize, then ``cv2.copyMakeBorder`` with the grey."""
    p = ultralytics_letterbox_params(img.shape[:2], new_shape)
    if img.shape[1::-1] != p["new_unpad"]:
        img = cv2_linear(img, p["new_unpad"])
    return np.pad(
        img, ((p["top"], p["bottom"]), (p["left"], p["right"]), (0, 0)), mode="constant", constant_values=padding_value
    )


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth photo (no detail finer than a few pixels), so that two bilinear filters agree on it."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))


def raw255(size: tuple[int, int], **fields) -> PreprocessSpec:
    return with_options(PreprocessSpec(size=size), preset="raw255", **fields)


def as_hwc(batch: np.ndarray) -> np.ndarray:
    return batch[0].transpose(1, 2, 0)


SHAPES = [  # (photo h, w) -> (input H, W): landscape, portrait, odd sizes, odd paddings, up- and downscaling
    ((480, 640), (640, 640)),
    ((640, 480), (640, 640)),
    ((37, 101), (64, 64)),
    ((101, 37), (64, 64)),
    ((50, 81), (64, 64)),  # 50 * 64 / 81 = 39.5: rounds up to 40
    ((81, 50), (64, 64)),
    ((333, 500), (224, 224)),
    ((500, 333), (320, 256)),
    ((45, 45), (64, 48)),
    ((1, 300), (32, 32)),
    ((64, 64), (64, 64)),
]


@pytest.mark.parametrize("orig,target", SHAPES)
def test_letterbox_geometry_is_ultralytics_arithmetic(orig, target):
    g = plan_geometry(orig, target, "letterbox")
    p = ultralytics_letterbox_params(orig, target)
    assert (g.resized_w, g.resized_h) == p["new_unpad"]
    assert g.padding == (p["top"], p["left"], p["bottom"], p["right"])
    assert g.content() == (p["top"], p["left"], p["top"] + g.resized_h, p["left"] + g.resized_w)


@pytest.mark.parametrize("orig,target", SHAPES)
def test_letterboxed_tensor_equals_ultralytics_within_interpolation(orig, target):
    img = photo(*orig)
    batch, (g,) = preprocess_batch(img, raw255(target, resize="letterbox"))
    got = as_hwc(batch)
    want = ultralytics_letterbox(img, target)
    assert got.shape == want.shape
    top, left, bottom, right = g.content()
    pad = np.ones(target, bool)
    pad[top:bottom, left:right] = False
    assert np.all(got[pad] == 114) and np.all(want[pad] == 114)  # the grey, exactly, and exactly where it is
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))[top:bottom, left:right]
    # Enlarging, Pillow's BILINEAR and INTER_LINEAR (here its torch stand-in, cv2_linear) are the same two-tap
    # filter: measured max 1 level (rounding). Shrinking, Pillow's antialiases (its triangle widens with
    # 1 / scale) and INTER_LINEAR does not, so they part with the scale; measured on these photos (detail about
    # 8 px): scale 0.62-0.79 mean 0.6-0.8, max 6 levels; scale 0.45 mean 1.7, max 11; the 1x300 strip at scale
    # 0.11 mean 11.6, max 35 (INTER_LINEAR aliases).
    scale = min(g.scale_y, g.scale_x)
    mean, worst = (0.25, 1) if scale >= 1 else (1.0, 6) if scale > 0.6 else (2.0, 12) if scale > 0.4 else (13, 40)
    assert diff.mean() <= mean and diff.max() <= worst, (scale, diff.mean(), diff.max())


def test_pad_value_and_grayscale_letterbox():
    img = np.full((10, 30), 200, np.uint8)  # an L photo
    batch, (g,) = preprocess_batch(img, raw255((30, 30), resize="letterbox", pad_value=0))
    assert g.padding == (10, 0, 10, 0)
    assert np.all(batch[0][:, :10] == 0) and np.all(batch[0][:, 20:] == 0) and np.all(batch[0][:, 10:20] == 200)
    spec = derive_spec(conv_model(channels=1, h=30, w=30), preset="raw255", resize="letterbox")
    batch, _ = preprocess_batch(img, spec)
    assert batch.shape == (1, 1, 30, 30) and np.all(batch[0, 0, :10] == 114) and np.all(batch[0, 0, 10:20] == 200)


# -- round trips to the pixel ----------------------------------------------------------------------------------------


def marked(h: int, w: int, y: int, x: int) -> np.ndarray:
    """A black photo with one white pixel at (y, x)."""
    a = np.zeros((h, w, 3), np.uint8)
    a[y, x] = 255
    return a


def centroid(batch: np.ndarray) -> tuple[float, float]:
    lum = batch[0].sum(axis=0).astype(np.float64)
    yy, xx = np.mgrid[0 : lum.shape[0], 0 : lum.shape[1]]
    return (lum * yy).sum() / lum.sum(), (lum * xx).sum() / lum.sum()


@pytest.mark.parametrize(
    "orig,target",
    [((37, 101), (64, 64)), ((101, 37), (64, 64)), ((333, 500), (224, 224)), ((59, 41), (160, 96))],
)
def test_a_marked_pixel_comes_back_to_the_same_pixel(orig, target):
    """Photo -> letterboxed input (the grey set to 0 so only the mark is bright) -> the mark's centre -> photo."""
    h, w = orig
    spec = raw255(target, resize="letterbox", pad_value=0)
    for y, x in [(0, 0), (h - 1, w - 1), (h // 2, w // 3), (h // 3 + 1, w - 2), (1, w // 2)]:
        batch, (g,) = preprocess_batch(marked(h, w, y, x), spec)
        cy, cx = centroid(batch)
        if 0 < y < h - 1 and 0 < x < w - 1:  # an edge pixel's blur is cut by the border: its centroid shifts
            # the filter's samples sit unevenly around the mark: its centroid is off by up to 0.06 input pixel
            assert point_to_input((y, x), g) == pytest.approx((cy, cx), abs=0.1)
            by, bx = point_to_image((cy, cx), g)
            assert (round(by), round(bx)) == (y, x), ((by, bx), (y, x))
        py, px = point_to_input((y, x), g)  # the exact centre maps back exactly, whatever the position
        assert point_to_image((py, px), g) == pytest.approx((y, x), abs=1e-9)


@pytest.mark.parametrize("orig,target", [((37, 101), (128, 128)), ((101, 37), (128, 128)), ((45, 70), (128, 96))])
def test_a_marked_box_comes_back_to_the_same_pixels(orig, target):
    """A white box, enlarged into the letterbox: its edges in the input map back onto its edges in the photo.

    Enlarged, so that an input pixel is smaller than a photo pixel and the half-way threshold finds each edge
    to within one input pixel, i.e. less than half a photo pixel.
    """
    h, w = orig
    y0, x0, y1, x1 = h // 4, w // 3, h // 2 + 3, w - 5  # end-exclusive
    a = np.zeros((h, w, 3), np.uint8)
    a[y0:y1, x0:x1] = 255
    batch, (g,) = preprocess_batch(a, raw255(target, resize="letterbox", pad_value=0))
    lit = np.argwhere(batch[0, 0] >= 128)  # the box's pixels in the input, by the half-way threshold
    (ty, tx), (by, bx) = lit.min(axis=0), lit.max(axis=0)
    top, left = point_to_image((ty, tx), g)
    bottom, right = point_to_image((by, bx), g)
    assert (round(top), round(left), round(bottom), round(right)) == (y0, x0, y1 - 1, x1 - 1)


def test_cam_back_on_the_photo_drops_the_padding():
    g = plan_geometry((37, 101), (64, 64), "letterbox")
    top, left, bottom, right = g.content()
    assert (top, bottom) == (20, 43)  # 101 -> 64 wide, 37 -> 23 high, 41 rows of grey: 20 above, 21 below
    ones = cam_to_image(np.ones((64, 64), np.float32), g)
    np.testing.assert_allclose(ones, 1.0, atol=1e-6)  # the photo is all inside the window
    border = np.ones((64, 64), np.float32)
    border[top:bottom, left:right] = 0
    assert np.all(cam_to_image(border, g) == 0)  # a map that only lights the grey leaves the photo dark
    inside = 1 - border
    np.testing.assert_allclose(cam_to_image(inside, g), 1.0, atol=1e-6)  # and the photo's edge keeps its value


@pytest.mark.parametrize("orig,target", [((50, 80), (64, 64)), ((120, 70), (48, 40)), ((33, 47), (40, 56))])
def test_letterbox_cam_peak_lands_on_the_blob(orig, target):
    """A one-pixel CAM peak on the blob's input pixel lands on the blob's photo pixel."""
    by, bx = orig[0] // 3, orig[1] - orig[1] // 4
    batch, (g,) = preprocess_batch(marked(*orig, by, bx), raw255(target, resize="letterbox", pad_value=0))
    py, px = (int(round(v)) for v in point_to_input((by, bx), g))
    cam = np.zeros(target, np.float32)
    cam[py, px] = 1
    y, x = np.unravel_index(np.argmax(cam_to_image(cam, g)), orig)
    tol = max(1.0, 0.5 / min(g.scale_y, g.scale_x) + 0.5)  # half a model pixel, in photo pixels
    assert abs(y - by) <= tol and abs(x - bx) <= tol


# -- crop_pct: timm and torchvision ------------------------------------------------------------------------------

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def imagenet(size: tuple[int, int], crop_pct: float) -> PreprocessSpec:
    return with_options(PreprocessSpec(size=size), preset="imagenet", resize="crop", crop_pct=crop_pct)


@pytest.mark.parametrize("crop_pct", [0.875, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("orig", [(300, 400), (481, 641), (150, 113), (224, 224)])
def test_crop_pct_equals_timms_own_eval_transform(orig, crop_pct):
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config(
        {"input_size": (3, 224, 224), "crop_pct": crop_pct, "interpolation": "bilinear", "mean": MEAN, "std": STD}
    )
    img = Image.fromarray(photo(*orig, seed=1))
    want = create_transform(**config)(img).numpy()
    got, (g,) = preprocess_batch(img, imagenet((224, 224), crop_pct))
    assert min(g.resized_h, g.resized_w) == int(224 / crop_pct)
    # the same Pillow resize and crop: the only difference is float32 rounding of the normalisation (measured
    # max 4.8e-7 over these 16 cases)
    np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-6)


def test_crop_pct_875_is_torchvisions_classification_preset_and_crop_is_not():
    from torchvision.models import ResNet50_Weights

    preset = ResNet50_Weights.DEFAULT.transforms()  # IMAGENET1K_V2: resize 232, crop 224, bilinear, antialias
    crop, resize = preset.crop_size[0], preset.resize_size[0]
    img = Image.fromarray(photo(300, 451, seed=2))
    want = preset(img).numpy()
    got, _ = preprocess_batch(img, imagenet((crop, crop), crop / resize))
    np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-6)  # Pillow both sides: float rounding only (4.8e-7)
    plain, _ = preprocess_batch(img, imagenet((crop, crop), 1.0))
    assert np.abs(plain[0] - want).max() > 0.5  # --resize crop alone is not torchvision's preset

    # the same preset on a uint8 tensor resizes with torch's antialiased bilinear instead of Pillow's: measured
    # max 0.0175 in normalised units (1 level of 255), mean 0.0031, on this photo
    tensor = preset(torch_uint8(img)).numpy()
    diff = np.abs(got[0] - tensor)
    assert diff.max() < 0.03 and diff.mean() < 0.006, (diff.max(), diff.mean())


def torch_uint8(img: Image.Image):
    import torch

    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def test_crop_pct_geometry_maps_back_like_crop():
    g = plan_geometry((481, 641), (224, 224), "crop", crop_pct=0.875)
    # shorter side -> floor(224 / 0.875) = 256, longer 641 * 256 // 481 = 341; centre 224: offsets 16 and 58
    assert (g.resized_h, g.resized_w, g.crop_top, g.crop_left) == (256, 341, 16, 58)
    back = cam_to_image(np.ones((224, 224), np.float32), g)
    t, left, b, r = g.crop_box()
    rows = np.flatnonzero(back[:, 320] > 0)
    cols = np.flatnonzero(back[240] > 0)
    # photo pixels whose centre lies inside the crop window keep the map, the others get 0 (as plain crop)
    assert rows[0] == int(np.ceil(t - 0.5)) and rows[-1] == int(np.floor(b - 0.5))
    assert cols[0] == int(np.ceil(left - 0.5)) and cols[-1] == int(np.floor(r - 0.5))
    assert plan_geometry((481, 641), (224, 224), "crop", crop_pct=1.0) == plan_geometry((481, 641), (224, 224), "crop")


# -- fields, sources and errors ------------------------------------------------------------------------------------


def test_mode_fields_imply_their_mode_and_follow_source_strength(tmp_path):
    model = conv_model(h="H", w="W")
    assert derive_spec(model, crop_pct="224/256").resize == "crop"
    assert derive_spec(model, crop_pct=0.875).crop_pct == 0.875
    assert derive_spec(model, pad_value=0).resize == "letterbox"
    path = tmp_path / "net.onnx"
    onnx.save(model, path)
    (tmp_path / "net.onnxcam.toml").write_text('resize = "crop"\ncrop_pct = 0.9\n')
    spec = derive_spec(path)
    assert (spec.resize, spec.crop_pct) == ("crop", 0.9) and "crop_pct=0.9" in spec.describe()
    spec = derive_spec(path, resize="letterbox")  # the user's mode drops the file's crop_pct
    assert (spec.resize, spec.crop_pct, spec.pad_value) == ("letterbox", 1.0, 114)
    assert derive_spec(path, pad_value=0).resize == "letterbox"  # a stronger mode field picks its mode
    with pytest.raises(PreprocessError, match="belongs to resize mode crop"):
        derive_spec(path, resize="squash", crop_pct=0.9)
    with pytest.raises(PreprocessError, match="both come from your options"):
        derive_spec(path, crop_pct=0.9, pad_value=0)
    (tmp_path / "net.onnxcam.toml").write_text('resize = "squash"\npad_value = 3\n')
    with pytest.raises(PreprocessError, match="settings file"):
        derive_spec(path)
    meta = conv_model(h="H", w="W", metadata={"onnxcam.preprocess": json.dumps({"crop_pct": 0.95})})
    assert derive_spec(meta).resize == "crop" and derive_spec(meta, resize="squash").crop_pct == 1.0


@pytest.mark.parametrize(
    "field,value",
    [("crop_pct", 0), ("crop_pct", 1.5), ("crop_pct", -0.5), ("crop_pct", "half"), ("crop_pct", True)]
    + [("pad_value", 256), ("pad_value", -1), ("pad_value", 1.5), ("pad_value", "grey"), ("pad_value", [114])],
)
def test_bad_mode_fields_are_preprocess_errors(field, value):
    with pytest.raises(PreprocessError, match=field):
        derive_spec(conv_model(h="H", w="W"), **{field: value})
    with pytest.raises(PreprocessError, match=field):
        with_options(PreprocessSpec(size=(8, 8)), **{field: value})


def test_a_tiny_crop_pct_from_an_untrusted_file_cannot_blow_up_the_resize(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model(h=224, w=224), path)
    (tmp_path / "m.onnxcam.json").write_text('{"crop_pct": 1e-6}')
    with pytest.raises(PreprocessError, match="crop_pct"):
        derive_spec(path)


def test_assumed_names_what_no_source_gave_and_with_options_clears_it():
    spec = derive_spec(conv_model(h="H", w="W"))
    assert spec.assumed() == ["normalization", "resize", "size"]
    assert with_options(spec, crop_pct=0.9).assumed() == ["normalization", "size"]  # crop_pct picked the mode
    assert with_options(spec, preset="raw01", size=(8, 8)).assumed() == ["resize"]
    assert derive_spec(conv_model(h=8, w=8), mean=0.5, std=0.5, scale=1 / 255, bgr=False).assumed() == ["resize"]
    assert PreprocessSpec(size=(8, 8)).assumed() == []  # built by hand: nothing was guessed


def test_ultralytics_detectors_letterbox_and_classifiers_crop():
    def ultra(task: str) -> str:
        return derive_spec(conv_model(h="H", w="W", metadata={"author": "Ultralytics", "task": task})).resize

    assert ultra("detect") == ultra("segment") == ultra("pose") == "letterbox" and ultra("classify") == "crop"


# -- the command line: the notice and summary.json ---------------------------------------------------------------


def _explain(tmp_path, capsys, model: onnx.ModelProto, *flags: str) -> tuple[str, dict]:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    Image.fromarray(photo(30, 50)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["explain", str(path), str(tmp_path / "a.png"), "-o", str(out), *flags]) == 0
    return capsys.readouterr().err, json.loads((out / "summary.json").read_text())


def test_the_cli_says_in_one_line_what_it_assumed(tmp_path, capsys):
    err, summary = _explain(tmp_path, capsys, conv_model(h="H", w="W"))
    notes = [line for line in err.splitlines() if line.startswith("onnxcam: note:")]
    assert len(notes) == 1, err
    assert "assumed preset imagenet, resize=squash, size 224x224" in notes[0]
    assert "--preprocess" in notes[0] and "--resize squash|crop|letterbox" in notes[0] and "--size" in notes[0]
    assert "m.onnxcam.toml" in notes[0]
    rec = summary["preprocessing"]
    assert rec["assumed"] == ["normalization", "resize", "size"]
    assert (rec["resize"], rec["size"], rec["preset"]) == ("squash", [224, 224], "imagenet")
    assert rec["mean"] == list(MEAN) and rec["std"] == list(STD)


def test_a_run_that_fails_after_the_guess_shows_only_its_error(tmp_path, capsys):
    """The notice waits for the run to do its work: a failed run ends in its one error line, and the held-back
    notice does not leak into the next run in the same process."""
    path = tmp_path / "m.onnx"
    onnx.save(conv_model(h="H", w="W"), path)
    (tmp_path / "empty").mkdir()
    assert main(["explain", str(path), str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == f"onnxcam: error: no images found in {tmp_path / 'empty'}\n"
    err, _ = _explain(tmp_path, capsys, conv_model(h=32, w=32), "--preprocess", "raw01", "--resize", "crop")
    assert "note:" not in err


def test_the_cli_is_quiet_when_told_and_records_the_mode_fields(tmp_path, capsys):
    err, summary = _explain(
        tmp_path, capsys, conv_model(h=32, w=32), "--preprocess", "raw01", "--resize", "letterbox", "--pad-value", "0"
    )
    assert "note:" not in err
    rec = summary["preprocessing"]
    assert (rec["resize"], rec["pad_value"], rec["assumed"]) == ("letterbox", 0, [])
    assert "crop_pct" not in rec
    err, summary = _explain(tmp_path, capsys, conv_model(h=32, w=32), "--crop-pct", "0.875")
    assert "assumed preset imagenet;" in err and "resize" not in err.split("assumed")[1].split(";")[0]
    assert (summary["preprocessing"]["resize"], summary["preprocessing"]["crop_pct"]) == ("crop", 0.875)


def test_bad_mode_flags_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model(h=32, w=32), path)
    Image.fromarray(photo(30, 50)).save(tmp_path / "a.png")
    for flags in (["--crop-pct", "1.2"], ["--pad-value", "300"], ["--resize", "squash", "--crop-pct", "0.9"]):
        assert main(["explain", str(path), str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), *flags]) == 1
        err = capsys.readouterr().err
        assert err.startswith("onnxcam: error:") and err.count("\n") == 1 and "Traceback" not in err, err

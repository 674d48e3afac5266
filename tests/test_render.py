"""onnxcam.render: colormaps, overlay blending, threshold regions, panels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxcam.errors import InputError, OnnxcamError
from onnxcam.render import (
    COLORMAPS,
    DEFAULT_COLORMAP,
    TILE_BOXES_KEY,
    apply_colormap,
    boundary,
    colormap_lut,
    format_caption,
    label_components,
    render_class_panels,
    render_layer_panel,
    render_overlay,
    render_panel,
    resize_cam,
    threshold_box,
    threshold_mask,
)
from onnxcam.render.layout import wrap, font

# Published 8-bit endpoints (and midpoints) of each map: viridis #440154 / #21918c / #fde725;
# Google's turbo_srgb_bytes[0] and [255]; matplotlib's jet and cividis segment/table ends.
PUBLISHED = {
    "viridis": {0: (68, 1, 84), 128: (33, 145, 140), 255: (253, 231, 37)},
    "cividis": {0: (0, 34, 78), 255: (254, 232, 56)},
    "turbo": {0: (48, 18, 59), 255: (122, 4, 3)},
    "jet": {0: (0, 0, 128), 255: (128, 0, 0)},
}


def blob(h, w, cy, cx, sigma):
    y, x = np.mgrid[0:h, 0:w]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2)).astype(np.float32)


# ---------------------------------------------------------------- colormaps


def test_default_is_viridis_and_all_maps_present():
    assert DEFAULT_COLORMAP == "viridis"
    assert set(COLORMAPS) == {"viridis", "cividis", "turbo", "jet"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_lut_published_values(name):
    lut = colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    for idx, rgb in PUBLISHED[name].items():
        assert tuple(lut[idx]) == rgb, (name, idx)


@pytest.mark.parametrize("name", COLORMAPS)
def test_apply_colormap_endpoints_and_index_rule(name):
    lut = colormap_lut(name)
    cam = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    out = apply_colormap(cam, name)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == tuple(lut[0])
    assert tuple(out[0, 1]) == tuple(lut[255])
    assert tuple(out[1, 0]) == tuple(lut[128])  # floor(0.5 * 256)
    assert tuple(out[1, 1]) == tuple(lut[64])
    # every entry is reachable: v = (i + 0.5) / 256 picks entry i
    ramp = ((np.arange(256) + 0.5) / 256).astype(np.float32)[None, :]
    np.testing.assert_array_equal(apply_colormap(ramp, name)[0], lut)


def test_default_colormap_is_used():
    cam = np.ones((1, 1), np.float32)
    assert tuple(apply_colormap(cam)[0, 0]) == (253, 231, 37)


@pytest.mark.parametrize("name", COLORMAPS)
def test_luts_match_matplotlib(name):
    mpl = pytest.importorskip("matplotlib")
    ref = mpl.colormaps[name](np.arange(256))[:, :3]
    np.testing.assert_array_equal(colormap_lut(name), np.round(ref * 255).astype(np.uint8))
    # and apply_colormap agrees with matplotlib's own byte output (which truncates) within 1
    v = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    got = apply_colormap(v, name).astype(int)
    want = mpl.colormaps[name](v, bytes=True)[..., :3].astype(int)
    assert np.abs(got - want).max() <= 1


def test_viridis_and_cividis_are_monotonic_in_lightness():
    # colour-blind-safe claim: greyscale (Rec. 709 luma) rises monotonically
    for name in ("viridis", "cividis"):
        luma = colormap_lut(name).astype(float) @ [0.2126, 0.7152, 0.0722]
        assert np.all(np.diff(luma) > -0.75), name


def test_bad_colormap_name_lists_valid_names():
    with pytest.raises(OnnxcamError) as ei:
        apply_colormap(np.zeros((2, 2)), "hot")
    for name in COLORMAPS:
        assert name in str(ei.value)
    with pytest.raises(OnnxcamError):
        render_overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2)), colormap="rainbow")
    with pytest.raises(OnnxcamError):
        render_panel(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2)), "x", colormap="Jet2")


@pytest.mark.parametrize(
    "bad", [np.full((2, 2), np.nan), np.full((2, 2), 37.0), np.zeros((1, 2, 2)), np.zeros((0, 3)), np.array([["a"]])]
)
def test_bad_cam_rejected(bad):
    with pytest.raises(InputError):
        apply_colormap(bad)


def test_slight_overshoot_is_clipped():
    out = apply_colormap(np.array([[-0.01, 1.02]]), "viridis")
    assert tuple(out[0, 0]) == (68, 1, 84) and tuple(out[0, 1]) == (253, 231, 37)


# ---------------------------------------------------------------- overlay


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("name", ["viridis", "jet"])
def test_alpha_blend_per_pixel(alpha, name):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    cam = rng.random((6, 7)).astype(np.float32)
    out = np.asarray(render_overlay(img, cam, name, alpha), dtype=float)
    colour = colormap_lut(name)[np.minimum(np.floor(cam * 256), 255).astype(int)].astype(float)
    want = (1 - alpha) * img.astype(float) + alpha * colour
    assert np.abs(out - want).max() <= 1.0
    if alpha == 0.0:
        np.testing.assert_array_equal(out, img)


def test_overlay_known_pixels_and_pil_input():
    img = Image.new("RGB", (4, 3), (200, 100, 0))
    cam = np.zeros((3, 4), np.float32)
    cam[1, 2] = 1.0
    out = render_overlay(img, cam, "viridis", 0.5)
    assert isinstance(out, Image.Image) and out.size == (4, 3) and out.mode == "RGB"
    assert out.getpixel((2, 1)) == (round((200 + 253) / 2), round((100 + 231) / 2), round((0 + 37) / 2))
    assert out.getpixel((0, 0)) == (134, 50, 42)  # (200+68)/2, (100+1)/2 -> 50.5 rounds to even, 84/2


def test_overlay_accepts_grey_and_rgba_arrays():
    grey = np.full((3, 3), 100, np.uint8)
    out = np.asarray(render_overlay(grey, np.zeros((3, 3)), "jet", 1.0))
    assert tuple(out[0, 0]) == (0, 0, 128)
    rgba = np.zeros((3, 3, 4), np.uint8)
    assert render_overlay(rgba, np.zeros((3, 3))).size == (3, 3)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "half", None])
def test_alpha_out_of_range(alpha):
    with pytest.raises(OnnxcamError):
        render_overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2)), alpha=alpha)
    with pytest.raises(OnnxcamError):
        render_panel(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2)), "x", alpha=alpha)


def test_bad_images_rejected():
    cam = np.zeros((4, 4))
    with pytest.raises(InputError, match="uint8"):
        render_overlay(np.zeros((4, 4, 3), np.float32), cam)
    with pytest.raises(InputError, match="channels-first"):
        render_overlay(np.zeros((3, 4, 5), np.uint8), cam)
    with pytest.raises(InputError, match="resize the cam"):
        render_overlay(np.zeros((4, 5, 3), np.uint8), cam)


def test_resize_cam():
    cam = blob(7, 7, 3, 3, 1.5)
    big = resize_cam(cam, (21, 35))  # (width, height)
    assert big.shape == (35, 21) and big.dtype == np.float32
    assert 0.0 <= big.min() and big.max() <= 1.0
    assert np.unravel_index(np.argmax(big), big.shape) == (17, 10)


# ---------------------------------------------------------------- regions


def two_blobs():
    """A big blob (radius 10 at (y=20, x=15)) and a small one (radius 4 at (y=8, x=50))."""
    h, w = 40, 64
    y, x = np.mgrid[0:h, 0:w]
    cam = np.zeros((h, w), np.float32)
    cam[(y - 20) ** 2 + (x - 15) ** 2 <= 100] = 0.6
    cam[(y - 8) ** 2 + (x - 50) ** 2 <= 16] = 1.0  # the maximum sits in the small blob
    cam[20, 15] = 0.9
    return cam


def test_threshold_box_picks_the_bigger_blob_exactly():
    cam = two_blobs()
    assert threshold_box(cam) == (5, 10, 26, 31)  # x 15±10, y 20±10, exclusive ends
    assert threshold_box(cam, connectivity=4) == (5, 10, 26, 31)
    # above 70% of the max only the small blob survives
    assert threshold_box(cam, fraction=0.7) == (46, 4, 55, 13)


def test_threshold_box_uses_fraction_of_max():
    cam = np.zeros((10, 10), np.float32)
    cam[2:4, 2:9] = 0.14  # 14% of the max: below the paper's 15% -> ignored
    cam[6:8, 1:3] = 0.16
    cam[6, 6] = 1.0
    assert threshold_box(cam) == (1, 6, 3, 8)
    assert threshold_box(np.zeros((5, 5))) is None


def test_connectivity_4_vs_8():
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # a diagonal chain
    mask[4, 0:2] = True
    labels8, n8 = label_components(mask, 8)
    labels4, n4 = label_components(mask, 4)
    assert (n8, n4) == (2, 4)
    assert labels8[0, 0] == labels8[2, 2] == 1 and labels8[4, 0] == 2
    cam = mask.astype(np.float32)
    assert threshold_box(cam, connectivity=8) == (0, 0, 3, 3)
    assert threshold_box(cam, connectivity=4) == (0, 4, 2, 5)
    with pytest.raises(OnnxcamError):
        label_components(mask, 6)


def test_labelling_matches_flood_fill_on_random_masks():
    from collections import deque

    rng = np.random.default_rng(3)
    for conn in (4, 8):
        for _ in range(20):
            mask = rng.random((13, 17)) < 0.45
            labels, n = label_components(mask, conn)
            # reference: BFS flood fill
            ref = np.zeros(mask.shape, int)
            k = 0
            steps = [(0, 1), (1, 0), (0, -1), (-1, 0)] + ([(1, 1), (1, -1), (-1, 1), (-1, -1)] if conn == 8 else [])
            for sy, sx in zip(*np.nonzero(mask)):
                if ref[sy, sx]:
                    continue
                k += 1
                ref[sy, sx] = k
                q = deque([(sy, sx)])
                while q:
                    cy, cx = q.popleft()
                    for dy, dx in steps:
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < 13 and 0 <= nx < 17 and mask[ny, nx] and not ref[ny, nx]:
                            ref[ny, nx] = k
                            q.append((ny, nx))
            assert n == k
            np.testing.assert_array_equal(labels, ref)  # same row-major numbering


def test_contour_pixels_lie_on_region_boundary():
    cam = blob(48, 64, 24, 30, 8)
    img = np.full((48, 64, 3), 128, np.uint8)
    plain = np.asarray(render_overlay(img, cam, "viridis", 0.5))
    drawn = np.asarray(render_overlay(img, cam, "viridis", 0.5, contour=True))
    region = threshold_mask(cam)
    edge = boundary(region)
    white = np.all(drawn == 255, axis=2)
    assert white.any()
    np.testing.assert_array_equal(white, edge)  # 1-px white core exactly on the boundary
    # every white pixel is in the region and has a 4-neighbour outside it
    ys, xs = np.nonzero(white)
    assert region[ys, xs].all()
    p = np.pad(region, 1)
    outside = ~p[ys, xs + 1] | ~p[ys + 2, xs + 1] | ~p[ys + 1, xs] | ~p[ys + 1, xs + 2]
    assert outside.all()
    # the dark outline hugs the core; pixels far from the boundary are untouched
    changed = np.any(drawn != plain, axis=2)
    near = np.zeros_like(edge)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(np.roll(edge, dy, 0), dx, 1)
    assert not (changed & ~near).any()
    assert np.all(drawn[changed & ~white] == 0)


def test_box_is_drawn_on_threshold_box():
    cam = two_blobs()
    img = np.full(cam.shape + (3,), 128, np.uint8)
    out = np.asarray(render_overlay(img, cam, "viridis", 0.0, box=True))
    x0, y0, x1, y1 = threshold_box(cam)
    white = np.all(out == 255, axis=2)
    ys, xs = np.nonzero(white)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
    assert white[y0, x0:x1].all() and white[y1 - 1, x0:x1].all()
    assert white[y0:y1, x0].all() and white[y0:y1, x1 - 1].all()
    assert np.all(out[y0 - 1, x0:x1] == 0)  # dark edge just outside
    assert not white[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].any()  # hollow


# ---------------------------------------------------------------- panels


def photo(h=120, w=160):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 90)], axis=2).astype(np.uint8)


def test_panel_layout_and_tiles():
    img = photo()
    cam = blob(120, 160, 60, 40, 15)
    cam /= cam.max()
    fig = render_panel(img, cam, format_caption("tabby", 9.87, "/layer4/Relu", 281), "jet", 0.4)
    boxes = fig.info[TILE_BOXES_KEY]
    assert len(boxes) == 3
    # 160x120 is within [192, 384] after the small-image rule: long side grows to 192
    for x0, y0, x1, y1 in boxes:
        assert (x1 - x0, y1 - y0) == (192, 144)
    assert boxes[0][1] == boxes[1][1] == boxes[2][1]  # one row
    assert boxes[0][2] < boxes[1][0] and boxes[1][2] < boxes[2][0]  # left to right, no overlap
    assert fig.width < 3 * 192 + 60 and fig.height > 144 + 30  # room for caption and colour bar
    a = np.asarray(fig)
    # tile 1 is the original (resized), tile 2 the pure heatmap, tile 3 the overlay
    x0, y0 = boxes[1][:2]
    peak = a[y0 + 72, x0 + 48]  # blob centre at (x=40, y=60) scaled by 1.2
    assert np.abs(peak.astype(int) - colormap_lut("jet")[255]).max() <= 12
    corner = a[y0 + 143, x0 + 191]
    assert tuple(corner) == tuple(colormap_lut("jet")[0])
    ox, oy = boxes[2][:2]
    orig = a[boxes[0][1] + 143, boxes[0][0] + 191].astype(float)
    want = 0.6 * orig + 0.4 * colormap_lut("jet")[0]
    assert np.abs(a[oy + 143, ox + 191] - want).max() <= 1.0


def test_panel_tiles_capped_at_tile_size():
    img = np.zeros((600, 1000, 3), np.uint8)
    fig = render_panel(img, np.zeros((600, 1000)), "caption")
    for x0, y0, x1, y1 in fig.info[TILE_BOXES_KEY]:
        assert (x1 - x0, y1 - y0) == (384, 230)
    fig = render_panel(img, np.zeros((600, 1000)), "", tile_size=200, colorbar=False)
    assert [b[2] - b[0] for b in fig.info[TILE_BOXES_KEY]] == [200, 200, 200]


def test_caption_and_colorbar_are_drawn():
    img = np.full((64, 64, 3), 255, np.uint8)
    bare = render_panel(img, np.zeros((64, 64)), "", colorbar=False)
    full = render_panel(img, np.zeros((64, 64)), "a caption", colorbar=True)
    assert full.height > bare.height
    a = np.asarray(full)
    top = a[: full.info[TILE_BOXES_KEY][0][1]]
    assert (top.sum(axis=2) < 200).any()  # dark caption text above the tiles
    bottom = a[full.info[TILE_BOXES_KEY][0][3] :]
    lut = colormap_lut("viridis")
    for colour in (lut[0], lut[255]):
        assert np.all(bottom == colour, axis=2).any()  # colour bar shows both ends


def test_class_panels():
    img = photo()
    cams = np.stack([blob(120, 160, 30, 40, 10), blob(120, 160, 90, 120, 10)])
    fig = render_class_panels(img, cams, ["cat", "dog"], alpha=1.0, columns=None)
    boxes = fig.info[TILE_BOXES_KEY]
    assert len(boxes) == 3
    a = np.asarray(fig)
    last = tuple(colormap_lut("viridis")[255])
    # alpha=1: tile 2's peak is at the first blob, tile 3's at the second (scale 1.2)
    assert tuple(a[boxes[1][1] + 36, boxes[1][0] + 48]) == last
    assert tuple(a[boxes[2][1] + 108, boxes[2][0] + 144]) == last
    assert tuple(a[boxes[1][1] + 108, boxes[1][0] + 144]) != last
    with pytest.raises(OnnxcamError, match="caption"):
        render_class_panels(img, cams, ["cat"])
    grid = render_class_panels(img, list(cams) * 2, ["a", "b", "c", "d"], columns=2, show_image=False)
    gb = grid.info[TILE_BOXES_KEY]
    assert len(gb) == 4 and gb[0][1] == gb[1][1] < gb[2][1] == gb[3][1]


def test_layer_panel_order_and_labels():
    img = photo()
    layers = [
        (f"/features/conv{i}/Relu_output_0_with_a_rather_long_name", blob(120, 160, 60, 20 + 40 * i, 12))
        for i in range(3)
    ]
    fig = render_layer_panel(img, layers, "cividis", alpha=1.0, caption="layers, shallow to deep")
    boxes = fig.info[TILE_BOXES_KEY]
    assert len(boxes) == 4
    a = np.asarray(fig)
    last = tuple(colormap_lut("cividis")[255])
    for i in range(3):
        x0, y0 = boxes[i + 1][:2]
        assert tuple(a[y0 + 72, x0 + round((20 + 40 * i) * 1.2)]) == last
    with pytest.raises(OnnxcamError):
        render_layer_panel(img, [blob(120, 160, 1, 1, 1)])
    with pytest.raises(InputError, match="resize"):
        render_layer_panel(img, [("a", np.zeros((12, 16)))])


def test_wrap_keeps_long_names_within_width():
    fnt = font(16)
    lines = wrap("layer /model/backbone/stage4/block2/conv3/Conv_output_0 done", fnt, 120)
    assert len(lines) > 2
    assert all(fnt.getlength(line) <= 120 for line in lines)
    assert "".join(lines).replace(" ", "") == "layer/model/backbone/stage4/block2/conv3/Conv_output_0done"


def test_format_caption():
    assert format_caption("tabby", 9.8712, "/l4/Relu", 281) == "tabby (281) | score 9.871 | layer /l4/Relu"
    assert format_caption(class_id=3) == "class 3"
    assert format_caption() == ""


# ---------------------------------------------------------------- purity


def test_render_imports_neither_matplotlib_nor_opencv():
    code = "import sys, onnxcam.render; bad = {'matplotlib', 'cv2', 'scipy'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    src = Path(__file__).resolve().parents[1] / "onnxcam"
    for py in src.rglob("*.py"):
        text = py.read_text()
        assert "import matplotlib" not in text and "import cv2" not in text, py


def test_rendering_writes_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    img = photo()
    cam = blob(120, 160, 60, 80, 20)
    render_panel(img, cam, "x", contour=True, box=True)
    render_class_panels(img, [cam], ["x"])
    render_layer_panel(img, [("l", cam)])
    assert list(tmp_path.iterdir()) == []

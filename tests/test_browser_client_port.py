"""The browser page's preprocessing (onnxcam/web/static/*.js) against onnxcam's Python preprocessing, run in Node.

The page must feed the explainer the same array as Python and put the heatmap on the photo's pixels the same way,
so these compare bit for bit: the geometry of every resize mode, Pillow's BILINEAR resize of 8-bit images (its
fixed-point arithmetic and pass order), the float resize with a box that ``cam_to_image`` uses, and the
normalisation of every preset, layout and dtype the page builds. Node runs the same files the page loads (they are
UMD modules). Without Node the tests are skipped, except under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxcam.preprocess import cam_to_image, plan_geometry
from onnxcam.preprocess.batch import normalize
from onnxcam.preprocess.geometry import apply_geometry
from onnxcam.preprocess.spec import PreprocessSpec
from onnxcam.web.bundle import pillow_vertical_first

STATIC = Path(__file__).resolve().parents[1] / "onnxcam" / "web" / "static"

DRIVER = r"""
const P = require(process.argv[1] + "/preprocess.js");
const R = require(process.argv[1] + "/resample.js");
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = cases.map((c) => {
  if (c.kind === "resize") {
    const data = c.float ? Float32Array.from(c.data) : Uint8Array.from(c.data);
    const im = { width: c.w, height: c.h, channels: c.ch, data };
    return Array.from(R.resize(im, c.W, c.H, c.box, c.vf).data);
  }
  if (c.kind === "normalize") {
    const im = { width: c.w, height: c.h, channels: 3, data: Uint8Array.from(c.data) };
    return Array.from(P.normalize(im, c.spec));
  }
  const g = P.planGeometry(c.oh, c.ow, c.th, c.tw, c.mode, c.cp, c.pad);
  const im = { width: c.ow, height: c.oh, channels: 3, data: Uint8Array.from(c.img) };
  return { g: [g.resizedH, g.resizedW, g.cropTop, g.cropLeft], px: Array.from(P.applyGeometry(im, g, c.vf).data),
           cam: Array.from(P.camToImage(Float32Array.from(c.cam), g, c.vf)) };
});
process.stdout.write(JSON.stringify(out));
"""


def node_run(cases: list[dict]) -> list:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is missing (CI is set: the browser page's tests must run; install Node.js)")
        pytest.skip("node is not installed")
    done = subprocess.run(
        [node, "-e", DRIVER, str(STATIC)], input=json.dumps(cases), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_geometry_resize_and_cam_mapping_equal_python_bit_for_bit():
    rng = np.random.default_rng(17)
    vf = pillow_vertical_first()
    cases, expected = [], []
    for i in range(90):
        oh, ow = (int(v) for v in rng.integers(1, 260, 2))
        th, tw = (int(v) for v in rng.integers(1, 120, 2))
        if i % 10 == 0:  # tall photos: Pillow 13 resizes them vertically first
            oh = int(rng.integers(200, 400))
        mode = ("squash", "crop", "letterbox")[i % 3]
        crop_pct = float(rng.choice([1.0, 0.875, 0.95])) if mode == "crop" else 1.0
        pad = int(rng.integers(0, 256)) if mode == "letterbox" else 114
        img = rng.integers(0, 256, (oh, ow, 3), dtype=np.uint8)
        cam = rng.random((th, tw), dtype=np.float32)
        cases.append(
            dict(kind="geometry", oh=oh, ow=ow, th=th, tw=tw, mode=mode, cp=crop_pct, pad=pad, vf=vf,
                 img=img.ravel().tolist(), cam=cam.ravel().tolist())
        )  # fmt: skip
        g = plan_geometry((oh, ow), (th, tw), mode, crop_pct=crop_pct, pad_value=pad)
        expected.append((g, np.asarray(apply_geometry(Image.fromarray(img), g)), cam_to_image(cam, g)))
    for case, got, (g, pixels, mapped) in zip(cases, node_run(cases), expected):
        where = f"{case['oh']}x{case['ow']} -> {case['th']}x{case['tw']} {case['mode']}"
        assert got["g"] == [g.resized_h, g.resized_w, g.crop_top, g.crop_left], where
        assert np.array_equal(np.asarray(got["px"], np.uint8), pixels.ravel()), where
        assert np.array_equal(np.asarray(got["cam"], np.float32), mapped.ravel()), where


def test_pillow_resize_port_on_both_pass_orders_and_boxes():
    rng = np.random.default_rng(3)
    vf = pillow_vertical_first()
    cases, expected = [], []
    sizes = [(300, 40, 20, 30), (40, 300, 30, 20), (17, 19, 50, 7), (64, 64, 64, 64), (90, 60, 30, 58), (5, 400, 3, 2)]
    for h, w, H, W in sizes:
        for mode in ("L", "RGB"):
            a = rng.integers(0, 256, (h, w) if mode == "L" else (h, w, 3), dtype=np.uint8)
            cases.append(dict(kind="resize", w=w, h=h, ch=1 if mode == "L" else 3, data=a.ravel().tolist(), W=W, H=H,
                              box=None, vf=vf, float=False))  # fmt: skip
            expected.append(np.asarray(Image.fromarray(a, mode).resize((W, H), Image.Resampling.BILINEAR)).ravel())
        f = rng.random((h, w), dtype=np.float32)
        box = (0.3 * w / 7, 1.7, w - 0.25, h - 0.6)  # fractional, as cam_to_image's
        cases.append(dict(kind="resize", w=w, h=h, ch=1, data=f.ravel().tolist(), W=W, H=H, box=list(box), vf=vf,
                          float=True))  # fmt: skip
        expected.append(np.asarray(Image.fromarray(f, "F").resize((W, H), Image.Resampling.BILINEAR, box=box)).ravel())
    for case, got, want in zip(cases, node_run(cases), expected):
        assert np.array_equal(np.asarray(got, want.dtype), want), (case["h"], case["w"], case["H"], case["W"])


@pytest.mark.parametrize(
    "fields",
    [
        dict(preset="imagenet", scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        dict(preset="caffe", scale=1.0, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), bgr=True),
        dict(preset="inception", scale=1 / 127.5, mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0), layout="NHWC"),
        dict(preset="raw01", scale=1 / 255, mean=(0.5,), std=(0.25,), channels=1),
        dict(preset="raw255", scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), dtype=np.dtype("uint8")),
        dict(preset="custom", scale=1.0, mean=(127.5, 127.5, 127.5), std=(1.0, 1.0, 1.0), dtype=np.dtype("int8")),
    ],
    ids=["imagenet", "caffe-bgr", "inception-nhwc", "gray", "uint8", "int8"],
)
def test_normalisation_equals_python(fields):
    spec = PreprocessSpec(
        size=(7, 9),
        layout=fields.get("layout", "NCHW"),
        channels=fields.get("channels", 3),
        dtype=fields.get("dtype", np.dtype("float32")),
        scale=fields["scale"],
        mean=fields["mean"],
        std=fields["std"],
        bgr=fields.get("bgr", False),
    )
    rgb = np.random.default_rng(5).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    rgb[0, :3] = [[0, 0, 0], [255, 255, 255], [128, 127, 126]]
    page_spec = dict(channels=spec.channels, layout=spec.layout, dtype=spec.dtype.name, scale=spec.scale,
                     mean=list(spec.mean), std=list(spec.std), bgr=spec.bgr)  # fmt: skip
    (got,) = node_run([dict(kind="normalize", w=9, h=7, data=rgb.ravel().tolist(), spec=page_spec)])
    want = normalize(Image.fromarray(rgb), spec).ravel()
    assert np.array_equal(np.asarray(got, want.dtype), want)

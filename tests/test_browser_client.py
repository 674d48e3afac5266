"""The client-side page (``onnxcam export --web``, ``onnxcam serve --client-side``) in a real headless Chromium.

The page runs the explainer with ONNX Runtime Web's WebAssembly backend. Its heatmap on the photo's pixels must
equal the Python result (``Explainer.explain`` on ``preprocess_batch``, then ``cam_to_image``, clipped, as the
server draws it) to 1e-4, for the demo model and a zoo model (RapidOCR's pretrained text-direction classifier:
BGR, ``inception`` scaling, a 48x192 input). The model input the page built must equal Python's exactly. The page
must fetch nothing but its own files, never send the image, and refuse hostile files with a message.

onnxruntime-web comes from npm (the pinned version, ``npm ci`` into a cache: ``$ONNXCAM_ORT_WEB_CACHE``, or
``$ONNXCAM_ORT_WEB`` for a copy at hand); Chromium from Debian, launched as in ``tests/test_browser.py``. Without
them the tests are skipped, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import onnxcam
from onnxcam import demo
from onnxcam.preprocess import derive_spec, preprocess_batch
from onnxcam.render import render_overlay
from onnxcam.server.results import on_photo
from tests.test_browser import _missing, launched_chromium
from tests.zoo_fixtures import zoo  # noqa: F401 - the session fixture

DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "browser_page.png"
TOLERANCE = 1e-4
#: The page's last explanation, its typed arrays as base64 (a few hundred kB at most for these photos).
READ_LAST = """() => {
  const l = self.onnxcamLast;
  const b64 = (a) => { const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength); let s = "";
    for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode.apply(null, u.subarray(i, i + 8192));
    return btoa(s); };
  return { input: b64(l.input), mapped: b64(l.mapped), cls: l.class, width: l.width, height: l.height };
}"""


@pytest.fixture(scope="module")
def ort_web():
    from onnxcam.errors import OnnxcamError
    from onnxcam.web import find_ort_web

    try:
        return find_ort_web()
    except OnnxcamError as e:
        _missing(f"onnxruntime-web is not available: {e}")


@pytest.fixture(scope="module")
def browser():
    yield from launched_chromium()


class StaticSite:
    """The page's folder over http on a free port, as ``python -m http.server -d DIR`` serves it."""

    def __init__(self, folder: Path):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> StaticSite:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def write_page(model, folder: Path, ort_web: Path, **spec_options) -> Path:
    from onnxcam.web import write_web_page

    return write_web_page(onnxcam.Explainer(model), derive_spec(model, **spec_options), folder, ort_web=ort_web)


def open_page(browser, url: str):
    """A page at ``url`` that records script errors, requests to other origins, and requests that send a body."""
    page = browser.new_page(viewport={"width": 1180, "height": 700})
    page.errors, page.outside, page.sent = [], [], []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    own = (url.split("/", 3)[0] + "//" + url.split("/", 3)[2], "data:", "blob:")
    page.on("request", lambda r: None if r.url.startswith(own) else page.outside.append(r.url))
    page.on("request", lambda r: page.sent.append(r.url) if r.method != "GET" else None)
    page.goto(url)
    page.wait_for_selector("body[data-ready]", timeout=120_000)
    return page


def explain_in_page(page, photo: Path) -> dict:
    page.evaluate("() => document.getElementById('overlay').removeAttribute('data-class')")
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#overlay[data-class]", timeout=120_000)
    return page.evaluate(READ_LAST)


def python_result(model, photo: Path, **spec_options):
    """What onnxcam's Python side makes of ``photo``: the model input, the class, the map on the photo's pixels."""
    spec = derive_spec(model, **spec_options)
    x, geoms = preprocess_batch([photo], spec)
    res = onnxcam.Explainer(model).explain(x)
    return x, int(res.targets[0]), on_photo(res.cam[0], geoms[0])


def check_against_python(got: dict, model, photo: Path, **spec_options) -> np.ndarray:
    x, cls, mapped = python_result(model, photo, **spec_options)
    page_input = np.frombuffer(base64.b64decode(got["input"]), x.dtype)
    assert np.array_equal(page_input, x.ravel()), "the page fed the model another array than Python's preprocessing"
    assert got["cls"] == cls
    page_map = np.frombuffer(base64.b64decode(got["mapped"]), np.float32).reshape(got["height"], got["width"])
    assert page_map.shape == mapped.shape
    assert mapped.max() - mapped.min() > 0.5, "a flat map would not show a difference"
    err = float(np.abs(page_map - mapped).max())
    assert err <= TOLERANCE, f"the page's heatmap differs from Python's by {err:.2e}"
    return mapped


def canvas_pixels(page) -> np.ndarray:
    url = page.eval_on_selector("#overlay", "c => c.toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")).astype(int)


def test_demo_page_matches_python_and_refuses_hostile_files(browser, ort_web, tmp_path):
    folder = write_page(demo.DEMO_MODEL, tmp_path / "page", ort_web)
    photo = tmp_path / "cross.png"  # not square, enlarged: a real resize on the way in and on the way out
    Image.open(demo.DEMO_IMAGES[1]).convert("RGB").resize((320, 240), Image.Resampling.BICUBIC).save(photo)
    with StaticSite(folder) as site:
        page = open_page(browser, site.url)
        got = explain_in_page(page, photo)
        mapped = check_against_python(got, demo.DEMO_MODEL, photo)
        assert page.inner_text("#caption").startswith("cross (4)")
        assert page.inner_text("#status") == ""

        # the overlay is the server's: the same colormap table and blend (rounding: one level at most)
        want = np.asarray(render_overlay(Image.open(photo), mapped, "viridis", 0.5)).astype(int)
        assert np.abs(canvas_pixels(page) - want).max() <= 1
        page.select_option("#colormap", "jet")
        page.fill("#alpha", "0.8")
        page.dispatch_event("#alpha", "input")
        want = np.asarray(render_overlay(Image.open(photo), mapped, "jet", 0.8)).astype(int)
        assert np.abs(canvas_pixels(page) - want).max() <= 1
        page.select_option("#colormap", "viridis")
        page.fill("#alpha", "0.5")
        page.dispatch_event("#alpha", "input")
        page.evaluate("() => document.activeElement.blur()")
        shot = tmp_path / "browser_page.png"
        page.screenshot(path=str(shot), full_page=True)

        # a JPEG with an EXIF rotation: the browser's decoder and orientation agree with Pillow's here
        rotated = tmp_path / "rotated.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # shown rotated by 90 degrees
        Image.open(photo).resize((200, 150)).save(rotated, quality=85, exif=exif)
        check_against_python(explain_in_page(page, rotated), demo.DEMO_MODEL, rotated)
        explain_in_page(page, photo)

        # another class: the page reruns with target_class = that class
        second = page.eval_on_selector_all("#preds button.pick", "bs => bs.map(b => Number(b.dataset.class))")[1]
        page.click(f"#preds button.pick[data-class='{second}']")
        page.wait_for_selector(f"#overlay[data-class='{second}']")
        assert page.evaluate("() => self.onnxcamLast.class") == second

        # hostile files: not an image, and an image over the page's pixel cap; each gets a message, nothing breaks
        fake = tmp_path / "fake.png"
        fake.write_bytes(b"<script>alert(1)</script>" * 10)
        page.set_input_files("#file", str(fake))
        page.wait_for_function("() => document.getElementById('status').classList.contains('error')")
        assert "not an image this browser decodes" in page.inner_text("#status")
        page.evaluate("() => { document.getElementById('status').className = ''; }")
        big = tmp_path / "big.png"
        Image.new("RGB", (6000, 5000), (90, 120, 200)).save(big)  # 30 megapixels, over the 25 default
        page.set_input_files("#file", str(big))
        page.wait_for_function("() => document.getElementById('status').classList.contains('error')")
        assert "at most 25000000 pixels" in page.inner_text("#status")
        assert not page.errors, page.errors
        assert not page.outside, f"the page fetched from elsewhere: {page.outside}"
        assert not page.sent, f"the page sent something: {page.sent}"
        page.close()
    assert Image.open(shot).size[0] == 1180
    if os.environ.get("ONNXCAM_UPDATE_DOCS"):
        shutil.copyfile(shot, DOCS_SCREENSHOT)


def test_zoo_model_page_matches_python(browser, ort_web, zoo, tmp_path):  # noqa: F811 - the zoo fixture
    _, model = zoo("rapidocr_cls")  # pretrained; BGR, inception scaling, a 48x192 input from a settings file
    folder = write_page(model, tmp_path / "page", ort_web)
    photo = tmp_path / "wide.png"
    Image.open(demo.DEMO_IMAGES[0]).convert("RGB").resize((251, 97), Image.Resampling.BICUBIC).save(photo)
    with StaticSite(folder) as site:
        page = open_page(browser, site.url)
        check_against_python(explain_in_page(page, photo), model, photo)
        assert not page.errors and not page.outside and not page.sent
        page.close()


def test_serve_client_side(browser, ort_web, tmp_path):
    from onnxcam.server.child import ServerProcess

    photo = tmp_path / "cross.png"
    Image.open(demo.DEMO_IMAGES[1]).convert("RGB").save(photo)
    with ServerProcess(["--demo", "--client-side", "--ort-web", str(ort_web)]) as server:
        import httpx

        first = httpx.get(server.url, follow_redirects=False)
        assert first.status_code == 307 and first.headers["location"] == "/client/"
        for path in ("client/../app.py", "client/%2e%2e/server/app.py", "client/ort/../../x", "client/page.html"):
            assert httpx.get(server.url + path).status_code == 404, path
        index = httpx.get(server.url + "client/")
        assert index.headers["cross-origin-embedder-policy"] == "require-corp"
        assert "script-src 'self'" in index.headers["content-security-policy"]
        assert httpx.get(server.url + "client/ort/ort-wasm-simd-threaded.wasm").headers["content-type"] == (
            "application/wasm"
        )
        page = open_page(browser, server.url)
        assert page.evaluate("() => self.crossOriginIsolated")  # WebAssembly threads are allowed
        check_against_python(explain_in_page(page, photo), demo.DEMO_MODEL, photo)
        assert not page.errors and not page.outside
        assert not page.sent, f"the image left the browser: {page.sent}"
        page.close()


def test_an_explainer_near_2_gib_is_refused_and_nothing_of_it_is_left(tmp_path, monkeypatch):
    """Near 2 GiB ``save_model`` keeps the weights beside the file (``explainer.onnx.data``), which the page never
    loads; simulated by saving the demo explainer that way."""
    import onnx

    from onnxcam import explainer as explainer_module
    from onnxcam.errors import OnnxcamError
    from onnxcam.web import write_web_page
    from onnxcam.web.ort_web import ORT_FILES

    def save_beside(model, path):  # what save_model does from 2**31 - 2**20 bytes on
        onnx.save(model, str(path), save_as_external_data=True, location=Path(path).name + ".data", size_threshold=0)

    monkeypatch.setattr(explainer_module, "save_model", save_beside)
    ort = tmp_path / "ort"  # never copied: the refusal comes first
    ort.mkdir()
    for name in ORT_FILES:
        (ort / name).write_bytes(b"")
    out = tmp_path / "page"
    ex = onnxcam.Explainer(demo.DEMO_MODEL)
    with pytest.raises(OnnxcamError, match="explain this model on a server"):
        write_web_page(ex, derive_spec(demo.DEMO_MODEL), out, ort_web=ort)
    assert not (out / "explainer.onnx").exists() and not (out / "explainer.onnx.data").exists()

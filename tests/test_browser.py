"""The web page in a real headless Chromium, driven by Playwright, against a real ``onnxcam serve``.

The page colours the heatmap and blends it over the photo itself (so the
opacity slider and colormap choice need no new request). The test reads the
page's overlay canvas back and compares it with the server's own overlay PNG
for the same image and settings, before and after changing them, then ticks
two classes to compare and saves a screenshot.

Chromium comes from Debian (``apt-get install chromium``); Playwright's own
browser download is not used. Without Chromium the test is skipped, except
under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxcam import demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve_page.png"


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser test must run; .ci/run installs chromium)")
    pytest.skip(reason)


def launched_chromium():
    """Debian's headless Chromium driven by Playwright (a generator for a fixture), or a skip saying what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        _missing(f"{e.name} is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def browser():
    try:
        import httpx  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as e:
        _missing(f"{e.name} is not installed (pip install -e '.[test]')")
    yield from launched_chromium()


def canvas_pixels(page, selector: str) -> np.ndarray:
    url = page.eval_on_selector(selector, "c => c.toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")).astype(int)


def server_overlay(url: str, data: bytes, **params) -> np.ndarray:
    import httpx

    r = httpx.post(
        url + "explain",
        files={"image": ("p.png", data, "image/png")},
        data={k: str(v) for k, v in params.items()},
        timeout=60,
    )
    r.raise_for_status()
    png = base64.b64decode(r.json()["explanations"][0]["overlay_png"])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_page_uploads_explains_and_compares(browser, tmp_path):
    from onnxcam.server.child import ServerProcess

    photo = tmp_path / "cross.png"  # enlarged so the screenshot is readable; the map is carried onto its pixels
    Image.open(demo.DEMO_IMAGES[1]).convert("RGB").resize((288, 288), Image.Resampling.BICUBIC).save(photo)
    data = photo.read_bytes()
    with ServerProcess(["--demo"]) as server:
        page = browser.new_page(viewport={"width": 1180, "height": 860})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        outside = []
        own = (server.url, "data:", "blob:")
        page.on("request", lambda r: None if r.url.startswith(own) else outside.append(r.url))
        page.goto(server.url)
        page.wait_for_selector("#colormap option", state="attached")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#overlay[data-class]", timeout=60_000)

        shown = canvas_pixels(page, "#overlay")
        assert shown.shape == (288, 288, 3)
        assert shown.std() > 20 and len(np.unique(shown.reshape(-1, 3), axis=0)) > 1000, "the overlay is blank"
        original = np.asarray(Image.open(photo).convert("RGB")).astype(int)
        assert np.abs(shown - original).mean() > 10, "no heatmap over the photo"
        assert np.abs(shown - server_overlay(server.url, data)).max() <= 1
        assert page.inner_text("#caption").startswith("cross (4)")

        page.select_option("#colormap", "jet")
        page.fill("#alpha", "0.8")
        page.dispatch_event("#alpha", "input")
        recoloured = canvas_pixels(page, "#overlay")
        assert np.abs(recoloured - server_overlay(server.url, data, colormap="jet", alpha=0.8)).max() <= 1

        page.select_option("#colormap", "viridis")
        page.fill("#alpha", "0.5")
        page.dispatch_event("#alpha", "input")
        boxes = page.locator("#preds input[type=checkbox]")
        assert boxes.count() >= 3
        boxes.nth(0).check()
        page.wait_for_selector("#compare canvas[data-class]")
        boxes.nth(1).check()
        page.wait_for_selector("#compare figure:nth-child(2) canvas[data-class]")
        shown_classes = page.eval_on_selector_all("#compare canvas", "cs => cs.map(c => Number(c.dataset.class))")
        predicted = page.eval_on_selector_all("#preds button.pick", "bs => bs.map(b => Number(b.dataset.class))")
        assert shown_classes == predicted[:2]
        assert page.inner_text("#status") == ""

        shot = tmp_path / "serve_page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert Image.open(shot).size[0] == 1180
        if os.environ.get("ONNXCAM_UPDATE_DOCS"):
            shutil.copyfile(shot, DOCS_SCREENSHOT)
        assert not errors, errors
        assert not outside, f"the page fetched from elsewhere: {outside}"
        page.close()

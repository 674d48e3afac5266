"""``onnxcam explain --detections`` and ``POST /explain`` with ``detections=1`` on YOLOv8n (Ultralytics' exporter).

The expected boxes come from the Python API on the same preprocessed photo
(``find_detections`` on ``Explainer.predict``), mapped onto the photo with
the letterbox arithmetic written out here (scale, then the padding offset),
not with onnxcam's own mapping; the photo is not square, so a wrong offset or
scale shows. Each panel's heatmap row is checked against ``DetectionTarget``
run on its own.
"""

from __future__ import annotations

import json
import os
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
if importlib.util.find_spec("ultralytics") is None:  # not imported here: see model_zoo.detector_models.yolov8n
    pytest.skip("ultralytics is not installed (pip install -e '.[test]')", allow_module_level=True)

import onnxcam
from onnxcam.cli.main import main
from onnxcam.detect import DetectionTarget, detector_format, find_detections
from onnxcam.preprocess import derive_spec, load_image, preprocess_image

PHOTO_SIZE = (300, 500)  # (height, width): letterboxed into 160x160 with 32 rows of padding above and below


@pytest.fixture(scope="module")
def yolo(tmp_path_factory) -> Path:
    from model_zoo.detector_models import yolov8n

    folder = os.environ.get("ONNXCAM_ZOO_CACHE")
    return yolov8n(Path(folder) if folder else tmp_path_factory.mktemp("detect_cli"), imgsz=160)[0]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = (rng.random((*PHOTO_SIZE, 3)) * 255).astype(np.uint8)
    pixels[100:220, 150:330] = (220, 40, 40)  # a block, so the map is not noise only
    path = tmp_path_factory.mktemp("photos") / "wide.png"
    Image.fromarray(pixels).save(path)
    return path


def expected(yolo: Path, photo: Path, conf: float, max_det: int):
    ex = onnxcam.Explainer(yolo)
    spec = derive_spec(ex.index, model_path=yolo)
    assert spec.resize == "letterbox"  # from the Ultralytics metadata
    x, _ = preprocess_image(load_image(photo)[0], spec)
    fmt = detector_format(ex.index)
    (dets,) = find_detections(fmt, ex.predict(x[None]).outputs, (160, 160), conf=conf, max_det=max_det)
    scale, top = 160 / 500, (160 - 96) / 2

    def on_photo(box):
        x0, y0, x1, y1 = box
        return [
            max(0.0, x0 / scale),
            max(0.0, (y0 - top) / scale),
            min(500.0, x1 / scale),
            min(300.0, (y1 - top) / scale),
        ]

    return ex, x, dets, [on_photo(d.box) for d in dets]


def test_explain_detections_writes_a_panel_per_detection_with_its_box(yolo, photo, tmp_path):
    out = tmp_path / "out"
    code = main(["explain", str(yolo), str(photo), "--detections", "--conf", "0.3", "--max-det", "3", "-o", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    results = summary["results"]
    ex, x, dets, boxes = expected(yolo, photo, 0.3, 3)
    assert len(dets) == 3 and len(results) == 3
    assert summary["detector"].startswith("yolov8 (80 classes")
    for k, (record, det, box) in enumerate(zip(results, dets, boxes), start=1):
        assert record["detection"] == k and record["target"] == det.class_id
        assert record["score"] == pytest.approx(det.score, rel=1e-6)
        assert record["box"] == pytest.approx(box, abs=0.01)
        assert (out / record["panel"]).is_file() and record["panel"] == f"wide.png.det{k}.cam.png"


def test_each_detection_is_explained_as_its_own_target(yolo, photo):
    ex, x, dets, _ = expected(yolo, photo, 0.3, 3)
    together = ex.explain(x[None], DetectionTarget.all(dets))
    for row, det in enumerate(dets):
        alone = ex.explain(x[None], DetectionTarget(det.box, det.class_id))
        np.testing.assert_allclose(together.cam_lowres[row], alone.cam_lowres[0], rtol=1e-4, atol=1e-6)


def test_bad_detection_options_are_one_line_errors(yolo, photo, tmp_path, capsys):
    assert main(["explain", str(yolo), str(photo), "--detections", "--conf", "1.5", "-o", str(tmp_path)]) != 0
    assert "conf must be a number in [0, 1]" in capsys.readouterr().err
    assert main(["explain", str(yolo), str(photo), "--detections", "--top", "3", "-o", str(tmp_path)]) != 0
    assert "drop --target, --top" in capsys.readouterr().err
    from onnxcam import demo

    assert main(["explain", str(demo.DEMO_MODEL), str(photo), "--detections", "-o", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "--detector yolov8|" in err and "without --detections" in err and "Traceback" not in err


def test_serve_answers_detections_with_boxes_on_the_photo(yolo, photo):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("starlette")
    from onnxcam.server.child import ServerProcess

    _, _, dets, boxes = expected(yolo, photo, 0.3, 3)
    with ServerProcess([str(yolo)]) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        assert client.get("/info").json()["detector"].startswith("yolov8")
        files = {"image": ("wide.png", photo.read_bytes(), "image/png")}
        answer = client.post("/explain", files=files, data={"detections": "1", "conf": "0.3", "max_det": "3"})
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert [e["box"] for e in got["explanations"]] == [pytest.approx(b, abs=0.01) for b in boxes]
        assert [e["class"] for e in got["explanations"]] == [d.class_id for d in dets]
        assert all(e["heatmap_png"] and e["overlay_png"] for e in got["explanations"])
        refused = client.post("/explain", files=files, data={"conf": "0.3"})
        assert refused.status_code == 400 and "detections=1" in refused.json()["error"]


def test_a_request_that_gives_up_stops_between_its_detections(yolo, photo, monkeypatch):
    """In process: the request's cancel token reaches the detections step; once set, no further detection is drawn."""
    import asyncio

    pytest.importorskip("starlette")
    from onnxcam.preprocess import read_header
    from onnxcam.server import detections
    from onnxcam.server.app import ExplainService, ServeConfig
    from onnxcam.server.params import SERVED_METHODS, parse_params
    from onnxcam.server.workers import Cancelled

    ex = onnxcam.Explainer(yolo)
    service = ExplainService(ex, derive_spec(ex.index, model_path=yolo), ServeConfig(model=yolo))
    rendered: list = []
    real_overlay = detections.overlay

    async def scenario() -> None:
        errand = service.workers.errand()

        def overlay(*args):  # the client goes away while the first detection is drawn
            rendered.append(args)
            errand.cancel()
            return real_overlay(*args)

        monkeypatch.setattr(detections, "overlay", overlay)
        header = read_header(photo.read_bytes(), 10**7, "upload")
        params = parse_params(
            {},
            {"detections": "1", "conf": "0.3", "max_det": "3"},
            methods=SERVED_METHODS,
            default_method="gradcam",
            default_layer="auto",
            num_classes=None,
            max_targets=8,
        )
        slot = await service.pool.get(service.key_for(params.method, params.layer))
        try:
            with pytest.raises(Cancelled):
                await service._explain_image(None, header, params, slot, errand)  # type: ignore[arg-type]
        finally:
            await service.close()

    asyncio.run(scenario())
    assert len(rendered) == 1  # of three detections (see the test above: conf 0.3 finds three)


def test_the_page_draws_the_boxes_and_a_click_picks_a_detection(yolo, photo):
    """Real Chromium (skipped where Debian's is missing): upload, then click inside the second detection's box."""
    pytest.importorskip("httpx")
    pytest.importorskip("starlette")
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    from onnxcam.server.child import ServerProcess

    _, _, dets, boxes = expected(yolo, photo, 0.25, 8)
    with ServerProcess([str(yolo)]) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server.url)
        page.wait_for_selector("#colormap option", state="attached")
        assert page.inner_text("#meta").split(" \u00b7 ")[1].startswith("yolov8")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#overlay[data-class]", timeout=120_000)
        assert page.inner_text("#caption").startswith("#1 ")
        assert page.locator("#preds li").count() == len(dets)

        def picked(x: float, y: float) -> int:  # the smallest box holding the point: what a click there selects
            holding = [k for k, b in enumerate(boxes) if b[0] <= x <= b[2] and b[1] <= y <= b[3]]
            return min(holding, key=lambda k: (boxes[k][2] - boxes[k][0]) * (boxes[k][3] - boxes[k][1]))

        centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]
        want = next(k for k in range(1, len(boxes)) if picked(*centres[k]) == k)  # not the first: a change
        x, y = centres[want]
        canvas = page.locator("#overlay").bounding_box()
        page.mouse.click(canvas["x"] + x * canvas["width"] / 500, canvas["y"] + y * canvas["height"] / 300)
        page.wait_for_selector(f'#overlay[data-class="d{want + 1}"]', timeout=60_000)
        assert page.inner_text("#caption").startswith(f"#{want + 1} ")
        browser.close()

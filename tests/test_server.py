"""``onnxcam serve`` through a real server process on loopback, checked against direct Explainer calls.

Every answer is compared with what ``Explainer.explain`` gives for the same
image bytes and class: the heatmap PNG's levels, the overlay's pixels, the
peak and the scores. The burst sends different images and classes at once so
that a batch that mixed up its rows would fail.
"""

from __future__ import annotations

import base64
import io
import os
import re
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="onnxcam[serve] is not installed")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from onnxcam import Explainer, demo  # noqa: E402
from onnxcam.metrics.agreement import peak  # noqa: E402
from onnxcam.preprocess import cam_to_image, derive_spec, load_image, point_to_image, preprocess_image  # noqa: E402
from onnxcam.render import COLORMAPS, colormap_lut, render_overlay  # noqa: E402
from onnxcam.render.colormaps import cam_to_index  # noqa: E402
from onnxcam.server.child import ServerProcess  # noqa: E402

UPLOAD_LIMIT = 2 * 2**20  # --max-upload-mb 2: above the 1 MiB where Starlette's own form parser spools to disk
PIXEL_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo model behind a real server; its cwd and TMPDIR are empty folders, to see what it writes."""
    work, tmp = tmp_path_factory.mktemp("cwd"), tmp_path_factory.mktemp("tmpdir")
    with ServerProcess(
        [
            "--demo",
            "--max-upload-mb",
            "2",
            "--max-pixels",
            str(PIXEL_LIMIT),
            "--max-batch",
            "8",
            "--batch-window-ms",
            "20",
        ],
        cwd=work,
        env={"TMPDIR": str(tmp)},
    ) as proc:
        proc.work, proc.tmp = work, tmp
        proc.tmp_at_start = {p.name for p in tmp.iterdir()}  # the Explainer's weight folder, and whatever the OS adds
        yield proc


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def reference():
    """Direct explanations of the same bytes, as the server should give them."""
    ex = Explainer(demo.DEMO_MODEL)
    spec = derive_spec(ex.index, model_path=demo.DEMO_MODEL)
    explainers = {("gradcam", "auto"): ex}

    def explain(data: bytes, target: int | None = None, method: str = "gradcam", layer: str = "auto"):
        key = (method, layer)
        if key not in explainers:
            explainers[key] = Explainer(demo.DEMO_MODEL, layer=layer, method=method)
        e = explainers[key]
        photo, _ = load_image(data)
        x, g = preprocess_image(photo, spec)
        res = e.explain(x[None], target=target)
        cam = res.cam[0]
        mapped = np.clip(cam_to_image(cam, g), 0, 1)
        py, px = point_to_image(peak(cam), g)
        return {
            "class": int(res.targets[0]),
            "scores": e.class_scores(res)[0],
            "levels": cam_to_index(mapped),
            "mapped": mapped,
            "photo": photo,
            "peak": (int(round(px)), int(round(py))),
        }

    explain.explainer = ex
    return explain


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def demo_bytes(i: int, size: tuple[int, int] | None = None) -> bytes:
    """Demo image ``i``, optionally resized (so the map must be carried back onto other pixels)."""
    data = demo.DEMO_IMAGES[i].read_bytes()
    if size is None:
        return data
    return png_bytes(Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.Resampling.BILINEAR))


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def metrics(client) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}."""
    text = client.get("/metrics").text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def explain(client, data: bytes, **params):
    return client.post(
        "/explain", files={"image": ("photo.png", data, "image/png")}, data={k: str(v) for k, v in params.items()}
    )


def burst(url: str, jobs: list[tuple[bytes, dict]]) -> list:
    """Send every (image, params) job at the same moment, each on its own connection; the answers in order."""
    start = threading.Barrier(len(jobs))
    answers: list = [None] * len(jobs)

    def send(k):
        data, params = jobs[k]
        with httpx.Client(base_url=url, timeout=120) as own:
            start.wait()
            answers[k] = explain(own, data, **params)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def check_explanation(answer: dict, expected: dict, class_id: int) -> None:
    e = next(e for e in answer["explanations"] if e["class"] == class_id)
    levels = decode_png(e["heatmap_png"]).astype(int)
    assert levels.shape == expected["levels"].shape
    diff = np.abs(levels - expected["levels"].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.02, (diff.max(), diff.mean())
    assert abs(e["peak"]["x"] - expected["peak"][0]) <= 1 and abs(e["peak"]["y"] - expected["peak"][1]) <= 1
    assert e["score"] == pytest.approx(float(expected["scores"][class_id]), rel=1e-4, abs=1e-4)
    assert e["label"] == demo.DEMO_LABELS[class_id]


# -- read-only endpoints ---------------------------------------------------------------------------


def test_healthz_layers_info(client, reference):
    assert client.get("/healthz").json()["status"] == "ok"
    ex = reference.explainer
    layers = client.get("/layers").json()
    assert [row["name"] for row in layers["layers"]] == [c.name for c in ex.candidates]
    assert layers["default"] == ex.layer
    info = client.get("/info").json()
    assert info["labels"] == demo.DEMO_LABELS and info["num_classes"] == len(demo.DEMO_LABELS)
    assert info["input_size"] == list(demo.INPUT_SIZE)
    assert set(info["colormaps"]) == set(COLORMAPS)
    for name, hex_lut in info["colormaps"].items():
        assert bytes.fromhex(hex_lut) == colormap_lut(name).tobytes()
    assert info["limits"]["max_upload_bytes"] == UPLOAD_LIMIT and info["limits"]["max_pixels"] == PIXEL_LIMIT


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    # No script, style, image or font from anywhere else: no absolute URL at all.
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", r.text, re.I)
    assert 'id="overlay"' in r.text and 'type="file"' in r.text


def test_unknown_route_and_method(client):
    r = client.get("/nope")
    assert r.status_code == 404 and "/explain" in r.json()["error"]
    assert client.get("/explain").status_code == 405


# -- explanations ----------------------------------------------------------------------------------


def test_explain_json_matches_direct_explainer(client, reference):
    data = demo_bytes(1, size=(160, 120))
    expected = reference(data)
    r = explain(client, data)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["image"] == {"width": 160, "height": 120}
    assert answer["layer"] == reference.explainer.layer and answer["method"] == "gradcam"
    order = np.argsort(-expected["scores"])
    assert [p["class"] for p in answer["predictions"]] == [int(c) for c in order[:5]]
    assert [e["class"] for e in answer["explanations"]] == [expected["class"]]
    check_explanation(answer, expected, expected["class"])
    overlay = decode_png(answer["explanations"][0]["overlay_png"]).astype(int)
    want = np.asarray(render_overlay(expected["photo"], expected["mapped"], "viridis", 0.5)).astype(int)
    assert np.abs(overlay - want).max() <= 3  # one heatmap level apart at most


def test_targets_top_k_and_png(client, reference):
    data = demo_bytes(2)
    answer = explain(client, data, target="3,1", colormap="jet", alpha=0.7).json()
    assert [e["class"] for e in answer["explanations"]] == [3, 1]
    for c in (3, 1):
        check_explanation(answer, reference(data, target=c), c)
    top = explain(client, data, top_k=3).json()
    order = np.argsort(-reference(data)["scores"])[:3]
    assert [e["class"] for e in top["explanations"]] == [int(c) for c in order]
    # Raw body + Accept: image/png -> the overlay of the first class, as in the JSON answer.
    r = client.post(
        "/explain?target=3&colormap=jet&alpha=0.7",
        content=data,
        headers={"Content-Type": "image/png", "Accept": "image/png"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-onnxcam-class"] == "3"
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(r.content))), decode_png(answer["explanations"][0]["overlay_png"])
    )


def test_other_method_and_layer(client, reference):
    layer = reference.explainer.candidates[-4].name
    data = demo_bytes(4)
    r = explain(client, data, method="layercam", layer=layer, target=2)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["layer"] == layer and answer["method"] == "layercam"
    expected = reference(data, target=2, method="layercam", layer=layer)
    check_explanation(answer, expected, 2)
    default = reference(data, target=2)
    assert np.abs(expected["levels"].astype(int) - default["levels"].astype(int)).max() > 10  # a different map


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"top_k": 0}, "top_k must be between"),
        ({"top_k": "two"}, "top_k must be an integer"),
        ({"target": 6}, "out of range"),
        ({"target": -1}, "out of range"),
        ({"target": "1,x"}, "target must be"),
        ({"method": "magic"}, "unknown method"),
        ({"colormap": "rainbow"}, "unknown colormap"),
        ({"alpha": 1.5}, "alpha must be between"),
        ({"alpha": "nan"}, "finite"),
        ({"layer": "no_such"}, "no_such"),
        ({"size": 3}, "unknown parameter 'size'"),
        ({"target": 1, "top_k": 2}, "either target"),
    ],
)
def test_parameter_errors(client, params, needle):
    r = explain(client, demo_bytes(0), **params)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]


def test_parameter_in_url_and_form_is_refused(client):
    r = client.post("/explain?top_k=2", files={"image": ("a.png", demo_bytes(0), "image/png")}, data={"top_k": "1"})
    assert r.status_code == 400 and "both" in r.json()["error"]


# -- bad uploads -----------------------------------------------------------------------------------


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking 100 kB-free PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def raw_status(server, headers: str) -> int:
    """Send only a request head (no body) on a socket; the server must answer from the headers alone."""
    host, port = re.match(r"http://([^:/]+):(\d+)/", server.url).groups()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(headers.encode())
        reply = s.recv(4096).decode("latin-1")
    return int(reply.split()[1])


def test_bad_uploads_get_4xx_and_the_server_keeps_serving(server, client, reference):
    before = metrics(client)
    good = demo_bytes(5)
    png = {"Content-Type": "image/png"}
    cases = {
        "truncated png": (client.post("/explain", content=good[:300], headers=png), 400, "corrupt or truncated"),
        "huge declared dims": (explain(client, huge_png()), 400, "too large"),
        "wrong content type": (
            client.post("/explain", content=b'{"image": 1}', headers={"Content-Type": "application/json"}),
            415,
            "unsupported content",
        ),
        "no content type": (client.post("/explain", content=good), 415, "no Content-Type"),
        "empty body": (client.post("/explain", content=b"", headers=png), 400, "empty"),
        "empty form field": (explain(client, b""), 400, "empty"),
        "form without image": (
            client.post("/explain", data={"top_k": "1"}, files={"note": (None, b"x")}),
            400,
            "no image",
        ),
        "not an image": (client.post("/explain", content=os.urandom(2000), headers=png), 400, "not an image"),
        "over the limit": (client.post("/explain", content=good + os.urandom(UPLOAD_LIMIT), headers=png), 413, "limit"),
    }
    for name, (r, status, needle) in cases.items():
        assert r.status_code == status, (name, r.text)
        assert needle in r.json()["error"], (name, r.json())
    # A declared length far over the limit is refused from the headers, before any body byte is read.
    assert (
        raw_status(
            server, "POST /explain HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000000000\r\n\r\n"
        )
        == 413
    )
    assert client.get("/healthz").status_code == 200
    ok = explain(client, good)
    assert ok.status_code == 200
    check_explanation(ok.json(), reference(good), reference(good)["class"])
    after = metrics(client)

    def delta(status):
        key = f'onnxcam_requests_total{{path="/explain",status="{status}"}}'
        return after.get(key, 0) - before.get(key, 0)

    assert (delta(400), delta(413), delta(415), delta(200)) == (6, 2, 2, 1)


# -- concurrency -----------------------------------------------------------------------------------


def test_concurrent_burst_is_batched_and_every_answer_is_right(client, reference):
    jobs = []
    for i in range(16):
        size = None if i % 2 else (96 + 8 * i, 80 + 4 * i)
        params = [{}, {"target": i % 6}, {"top_k": 2}, {"target": f"{(i + 1) % 6},{i % 6}"}][i % 4]
        jobs.append((demo_bytes(i % 6, size), params))
    before = metrics(client)
    answers = burst(str(client.base_url), jobs)
    for (data, params), r in zip(jobs, answers):
        assert r.status_code == 200, r.text
        answer = r.json()
        if "target" in params:
            wanted = [int(c) for c in str(params["target"]).split(",")]
        else:
            order = np.argsort(-reference(data)["scores"])
            wanted = [int(c) for c in order[: params.get("top_k", 1)]]
        assert [e["class"] for e in answer["explanations"]] == wanted
        for c in wanted:
            check_explanation(answer, reference(data, target=c), c)
    after = metrics(client)
    batches = after["onnxcam_batch_size_count"] - before["onnxcam_batch_size_count"]
    images = after["onnxcam_batch_size_sum"] - before["onnxcam_batch_size_sum"]
    assert images == len(jobs)
    assert batches < len(jobs), "16 simultaneous requests were never batched"


def test_images_differ_so_the_burst_can_fail(reference):
    """The burst's check means something only if a mixed-up row would give another map."""
    maps = [reference(demo_bytes(i))["levels"] for i in range(6)]
    for i in range(6):
        for j in range(i + 1, 6):
            assert np.abs(maps[i].astype(int) - maps[j].astype(int)).max() > 20


def test_nothing_written_to_disk(server, client):
    """Uploads are parsed in memory: the server's cwd stays empty and TMPDIR gains only Explainer weight folders."""
    noise = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)))
    assert 2**20 < len(noise) < UPLOAD_LIMIT
    assert explain(client, noise).status_code == 200
    assert list(server.work.iterdir()) == []
    new = {p.name for p in server.tmp.iterdir()} - server.tmp_at_start
    assert all(name.startswith("onnxcam-") for name in new), new


def test_stopping_the_server_removes_its_weight_folders(tmp_path):
    """SIGTERM (what ``ServerProcess.stop`` and most process managers send) ends the server cleanly."""
    with ServerProcess(["--demo"], env={"TMPDIR": str(tmp_path)}) as proc:
        assert any(p.name.startswith("onnxcam-") for p in tmp_path.iterdir())
    assert proc._proc.returncode == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("onnxcam-")]


# -- queue and timeout -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """A model whose explanation takes ~0.1 s (8 channels at 768 x 768), so that requests pile up."""
    import onnx

    from tests.tiny_models import tiny_cnn

    path = tmp_path_factory.mktemp("slow") / "slow.onnx"
    onnx.save(tiny_cnn(size=768), path)
    return path


def test_full_queue_gets_503_and_the_rest_are_answered(slow_model):
    """One request runs, one waits; the others find the queue full. Decoding is far quicker than explaining."""
    with ServerProcess([str(slow_model), "--queue-size", "1", "--max-batch", "1"]) as proc:
        answers = burst(proc.url, [(demo_bytes(0), {})] * 16)  # 8 sometimes met no full queue on a loaded machine
        statuses = sorted(r.status_code for r in answers)
        assert 503 in statuses and 200 in statuses and set(statuses) == {200, 503}, statuses
        refused = next(r for r in answers if r.status_code == 503)
        assert refused.headers["retry-after"] == "1" and "busy" in refused.json()["error"]
        answered = [r.json() for r in answers if r.status_code == 200]
        assert all(a["explanations"][0]["class"] == answered[0]["explanations"][0]["class"] for a in answered)
        text = httpx.get(proc.url + "metrics").text
        assert f'onnxcam_requests_total{{path="/explain",status="503"}} {statuses.count(503)}' in text


def test_slow_requests_get_504_and_the_server_goes_on(slow_model):
    with (
        ServerProcess([str(slow_model), "--timeout", "0.02"]) as proc,
        httpx.Client(base_url=proc.url, timeout=30) as c,
    ):
        for _ in range(2):
            r = explain(c, demo_bytes(0))
            assert r.status_code == 504 and "0.02 s" in r.json()["error"], r.text
        assert c.get("/healthz").status_code == 200
        assert 'onnxcam_requests_total{path="/explain",status="504"} 2' in c.get("/metrics").text


def test_cli_refuses_bad_options(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "onnxcam", "serve", *args], capture_output=True, text=True, timeout=120
        )

    r = run()
    assert r.returncode == 1 and "--demo" in r.stderr
    r = run("--demo", "--max-batch", "0")
    assert r.returncode == 1 and "max_batch" in r.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    r = run(str(bad))
    assert r.returncode == 1 and r.stderr.startswith("onnxcam: error:") and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
    assert Path(bad).read_bytes() == b"not onnx"


def test_serve_without_the_server_packages_says_what_to_install():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
        "from onnxcam.cli.main import main; sys.exit(main(['serve', '--demo']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "pip install 'onnxcam[serve]'" in r.stderr, r.stderr


# -- the batcher and the Explainer pool, in process ------------------------------------------------


def _batcher(run, **policy):
    from concurrent.futures import ThreadPoolExecutor

    from onnxcam.server.batching import BatchPolicy, MicroBatcher

    sizes = []
    return MicroBatcher(run, ThreadPoolExecutor(1), BatchPolicy(**policy), on_batch=sizes.append), sizes


def test_batcher_groups_waiting_jobs_and_refuses_when_full():
    import asyncio

    from onnxcam.server.batching import QueueFull

    gate = threading.Event()

    def run(items):
        gate.wait(10)  # the first batch blocks until the others have queued
        return [x * 10 for x in items]

    async def scenario():
        batcher, sizes = _batcher(run, max_batch=3, window_ms=0, queue_size=4)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # the worker took job 0 and is blocked in run()
        rest = [asyncio.ensure_future(batcher.submit(k)) for k in range(1, 5)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.submit(99)
        rest[0].cancel()  # a request that gave up never reaches the model
        gate.set()
        results = await asyncio.gather(first, *rest[1:])
        await batcher.close()
        return results, sizes

    results, sizes = asyncio.run(scenario())
    assert results == [0, 20, 30, 40]
    assert sizes == [1, 2, 1]  # then jobs [1, 2, 3] (max_batch) less the cancelled 1, then [4]


def test_batcher_waits_only_for_announced_requests():
    import asyncio

    async def scenario():
        batcher, sizes = _batcher(lambda items: items, max_batch=8, window_ms=2000, queue_size=8)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await batcher.submit(1) == 1  # alone: no window at all
        alone = loop.time() - t0

        async def announced(k, delay):
            with batcher.expecting():
                await asyncio.sleep(delay)  # "decoding"
            return await batcher.submit(k)

        with batcher.expecting():
            pass  # an announcement that failed (bad image) must not hold anyone up for the window
        both = await asyncio.gather(announced(2, 0.0), announced(3, 0.2))
        await batcher.close()
        return alone, both, sizes

    alone, both, sizes = asyncio.run(scenario())
    assert alone < 1.0 and both == [2, 3]
    assert sizes == [1, 2]  # 2 waited (within the 2 s window) for 3, which was being decoded


def test_pool_is_bounded_and_builds_once():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from onnxcam.errors import LayerError
    from onnxcam.server.pool import ExplainerPool, Slot

    builds = []

    def build(key):
        builds.append(key)
        if key[1] == "bad":
            raise LayerError("no such layer")
        time.sleep(0.05)
        return Slot(explainer=key, batcher=_batcher(lambda items: items)[0])

    async def scenario():
        pool = ExplainerPool(("gradcam", "auto"), build(("gradcam", "auto")), build, ThreadPoolExecutor(1), capacity=1)
        a1, a2 = await asyncio.gather(pool.get(("layercam", "auto")), pool.get(("layercam", "auto")))
        assert a1 is a2
        assert await a1.batcher.submit(7) == 7
        with pytest.raises(LayerError):
            await pool.get(("gradcam", "bad"))
        b = await pool.get(("hirescam", "auto"))  # evicts layercam, never the default
        keys = [k for k, _ in pool.slots]
        again = await pool.get(("layercam", "auto"))
        await pool.close()
        return keys, b, again, a1

    keys, b, again, first = asyncio.run(scenario())
    assert keys == [("gradcam", "auto"), ("hirescam", "auto")]
    assert again is not first  # rebuilt after eviction
    assert builds == [
        ("gradcam", "auto"),
        ("layercam", "auto"),
        ("gradcam", "bad"),
        ("hirescam", "auto"),
        ("layercam", "auto"),
    ]


def test_a_mixed_micro_batch_takes_two_runs_and_matches_single_explanations():
    """Top-k and explicit classes in one batch: at most two session runs, each map as if explained alone."""
    from onnxcam.server.explain_batch import Wish, explain_batch
    from tests.tiny_models import tiny_cnn

    ex = Explainer(tiny_cnn(classes=6, seed=2))
    x = np.random.default_rng(9).random((3, 3, 16, 16), dtype=np.float32)
    calls, run = [], ex.session.run
    ex.session.run = lambda *a, **k: calls.append(1) or run(*a, **k)
    got = explain_batch(ex, x, [Wish(None, 3), Wish((2, 0)), Wish(None, 1)])
    ex.session.run = run
    assert len(calls) == 2
    order = np.argsort(-ex.predict(x).scores, axis=1, kind="stable")
    assert [c for c, _ in got[0].cams] == order[0, :3].tolist() and [c for c, _ in got[1].cams] == [2, 0]
    for i, image in enumerate(got):
        for cls, cam in image.cams:
            np.testing.assert_allclose(cam, ex.explain(x[i : i + 1], target=cls).cam[0], rtol=1e-5, atol=1e-6)


def vit_like_model(path: Path) -> Path:
    """One ``(N, 197, 768)`` output, a ViT's tokens: a 4x4 stride-4 patch embedding of 56x56 (196) + a class token."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.standard_normal((768, 3, 4, 4)).astype(np.float32) * 0.1,
        "flat": np.array([0, 768, 196], np.int64),
        "cls": rng.standard_normal((1, 1, 768)).astype(np.float32),
        "zero": np.array([0], np.int64),
        "one": np.array([1], np.int64),
        "one_768": np.array([1, 768], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["pixel_values", "w"], ["patches"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Relu", ["patches"], ["act"]),
        helper.make_node("Reshape", ["act", "flat"], ["tokens_t"]),
        helper.make_node("Transpose", ["tokens_t"], ["tokens"], perm=[0, 2, 1]),
        helper.make_node("Shape", ["tokens"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "one_768"], ["cls_shape"], axis=0),
        helper.make_node("Expand", ["cls", "cls_shape"], ["cls_b"]),
        helper.make_node("Concat", ["cls_b", "tokens"], ["last_hidden_state"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "vit_like",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, 56, 56])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["N", 197, 768])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_single_token_output_is_not_advertised_as_a_detector(tmp_path):
    """``(N, 197, 768)`` has the shape of a YOLOv8 head with 193 classes: a shape alone makes no detector."""
    from starlette.testclient import TestClient

    from onnxcam.server.app import ServeConfig, create_app

    path = vit_like_model(tmp_path / "vit_like.onnx")
    ex = Explainer(path)
    app = create_app(ex, derive_spec(ex.index, model_path=path), ServeConfig(model=path))
    with TestClient(app) as client:
        assert client.get("/info").json()["detector"] is None
        files = {"image": ("a.png", demo_bytes(0), "image/png")}
        refused = client.post("/explain", files=files, data={"detections": "1"})
    assert refused.status_code == 400, refused.text
    assert "only look like a yolov8 head by their shape" in refused.json()["error"]

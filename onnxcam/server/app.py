"""The ASGI app of ``onnxcam serve``: routes, error answers, and the request path from upload to heatmap.

``POST /explain`` reads the upload into memory (bounded, and counted in the
server's upload budget), splits the form and reads the image's header once,
checks the parameters, takes the image's declared pixels from the server's
pixel budget, decodes and preprocesses the image on a small worker
pool, hands the array to the micro-batcher of its (method, layer) pair, and
turns the batch's answer into JSON or a PNG on the same worker pool. The whole
path, reading the body included, runs under the request timeout; when the
timeout passes or the client disconnects, everything the request started is
stopped (:mod:`.giving_up`, :mod:`.workers`) and its pixels are given back.

Status codes: 400 bad parameters or image, 404/405 unknown route or method,
413 body or form over a limit, 415 not an image or a form, 503 busy (queue
full, too many requests in progress, no room in the upload budget, or none in
the pixel budget within the timeout; with ``Retry-After``), 504 timeout, 500 a
failure inside onnxcam or ONNX Runtime, 499 (logged only) the client went
away. Every error answer is ``{"error": message, "status": code}``
(:mod:`.problems`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from onnxcam.errors import ImageError, LayerError, OnnxcamError, PreprocessError, TargetError
from onnxcam.explainer import Explainer
from onnxcam.graph.layers import resolve_layer
from onnxcam.preprocess import ImageHeader, PreprocessSpec, preprocess_image, read_header
from onnxcam.render import COLORMAPS, DEFAULT_COLORMAP, colormap_lut
from onnxcam.server.admission import InFlightLimit
from onnxcam.server.batching import BatchPolicy, MicroBatcher, QueueFull
from onnxcam.server.connections import ConnectionGuard
from onnxcam.server.detections import detector_info, explain_detections
from onnxcam.server.explain_batch import Wish, explain_batch
from onnxcam.server.giving_up import ClientGone, answer_unless_given_up
from onnxcam.server.limits import Limits
from onnxcam.server.params import SERVED_METHODS, ExplainParams, parse_params
from onnxcam.server.pixel_budget import PixelBudget
from onnxcam.server.pool import ExplainerPool, Key, Slot
from onnxcam.server.problems import HTTPProblem, busy, problem_content
from onnxcam.server.prom import CONTENT_TYPE as PROM_CONTENT_TYPE, Metrics
from onnxcam.server.results import describe, overlay_png
from onnxcam.server.uploads import Upload, parse_upload, read_body
from onnxcam.server.workers import CancelToken, Errand, WorkerPool
from onnxcam.strict_json import finite_json

ROUTES = ("/", "/explain", "/layers", "/info", "/healthz", "/metrics")
#: The page loads nothing from elsewhere; its script and style are inline.
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class ServeConfig:
    """How the server explains and what it accepts (defaults: :mod:`.limits`, :mod:`.batching`)."""

    model: Path
    method: str = "gradcam"
    layer: str = "auto"
    limits: Limits = field(default_factory=Limits)
    batching: BatchPolicy = field(default_factory=BatchPolicy)
    cache_size: int = 4  # extra (method, layer) pairs kept besides the default
    threads: int | None = None  # ONNX Runtime intra-op threads per session
    token_grid: tuple[int, int] | None = None  # token layers' patch grid and prefix count, where the graph does not say
    prefix_tokens: int | None = None
    input_size: tuple[int, int] | None = None  # a dynamic image size pinned to the one requests are resized to
    workers: int = max(1, min(4, os.cpu_count() or 1))  # decode/encode threads
    client_dir: Path | None = None  # serve --client-side: the written page (onnxcam.web), served at /client/


class ExplainService:
    """Everything a request needs: the Explainer pool, preprocessing, limits, metrics and the worker pools."""

    def __init__(self, explainer: Explainer, spec: PreprocessSpec, config: ServeConfig):
        layer = explainer.layer
        if not isinstance(layer, str):
            raise LayerError(
                f"the server needs an Explainer of one layer, this one has {len(layer)} "
                f"({', '.join(layer)}); build it with layer='auto' or a single name"
            )
        self.spec = spec
        self.config = config
        self.metrics = Metrics(ROUTES)
        self.infer_executor = ThreadPoolExecutor(1, thread_name_prefix="onnxcam-infer")
        self.workers = WorkerPool(config.workers, on_cancelled=self._cancelled)
        pixel_budget, upload_budget = config.limits.pixel_budget, config.limits.upload_budget
        assert pixel_budget is not None and upload_budget is not None  # Limits.__post_init__ fills both in
        self.pixels = PixelBudget(pixel_budget)
        self.uploads = PixelBudget(upload_budget)  # in bytes, taken as bodies arrive, never waited for
        self.default_layer_name = layer  # the tensor that "auto" or a node name resolved to
        self.default_key: Key = (explainer.method, self.default_layer_name)
        self.pool = ExplainerPool(
            self.default_key, self._slot(explainer), self._build, self.infer_executor, capacity=config.cache_size
        )

    # -- explainers ---------------------------------------------------------------------------

    def _slot(self, explainer: Explainer) -> Slot:
        spec = self.spec

        def run(items: list[tuple[np.ndarray, Wish]]):
            batch = np.stack([x for x, _ in items])
            return explain_batch(explainer, batch, [w for _, w in items], spec.input_name)

        return Slot(
            explainer,
            MicroBatcher(
                run,
                self.infer_executor,
                self.config.batching,
                on_batch=self.metrics.observe_batch,
                on_dropped=lambda n: self._cancelled("explain", n),
            ),
        )

    def _cancelled(self, step: str, n: int = 1) -> None:
        self.metrics.count("onnxcam_jobs_cancelled_total", step, n)

    def _build(self, key: Key) -> Slot:
        method, layer = key
        config = self.config
        return self._slot(
            Explainer(
                config.model,
                layer=layer,
                method=method,
                threads=config.threads,
                token_grid=config.token_grid,
                prefix_tokens=config.prefix_tokens,
                input_size=config.input_size,
            )
        )

    def key_for(self, method: str, layer: str) -> Key:
        """(method, the layer's tensor name); a name that is no candidate layer is a LayerError (400).

        The name is checked on the default Explainer's graph, so that a request
        with a bad layer never makes the server load the model again; a node
        name and its output tensor share one Explainer.
        """
        if layer == "auto" and self.config.layer == "auto":
            return (method, self.default_layer_name)
        if layer == "auto":  # the server's default layer was chosen by hand; "auto" asks for the automatic one
            return (method, "auto")
        ex = self.pool.default.explainer
        return (method, resolve_layer(ex.index, layer, ex.candidates).name)

    # -- one request --------------------------------------------------------------------------

    async def explain(self, request: Request) -> Response:
        """The answer to ``POST /explain``, or an exception: HTTPProblem, a client error, TimeoutError, ClientGone.

        Within the request timeout, reading the body included; a timeout while waiting for room in the pixel
        budget is a 503 (busy, retry), any other a 504. The body's bytes count in the upload budget until no
        step of the request holds them any more.
        """
        loop = asyncio.get_running_loop()
        limits = self.config.limits
        deadline = loop.time() + limits.timeout_s
        errand = self.workers.errand()
        progress = _Progress()
        held = 0

        def keep(size: int) -> bool:
            nonlocal held
            if not self.uploads.try_acquire(size):
                return False
            held += size
            return True

        def drop() -> None:  # a refused upload gives its bytes back before its rest is drained
            nonlocal held
            self.uploads.release(held)
            held = 0

        try:
            try:
                body = await asyncio.wait_for(
                    read_body(
                        request.stream(), request.headers.get("content-length"), limits.max_upload_bytes, keep, drop
                    ),
                    limits.timeout_s,
                )
            except ClientDisconnect:  # gone in the middle of its upload
                raise ClientGone() from None
            work = self._answer(request, body, errand, progress)
            del body  # _answer lets it go once the form is split: a multipart body is not kept twice
            return await answer_unless_given_up(work, request.receive, deadline - loop.time())
        except asyncio.TimeoutError:
            self.metrics.count("onnxcam_requests_abandoned_total", "timeout")
            if progress.stage == _WAITING_FOR_PIXELS:
                raise busy(
                    "the server is busy with other large images (its pixel budget is in use); "
                    "retry in a moment or send a smaller image"
                ) from None
            raise
        except ClientGone:
            self.metrics.count("onnxcam_requests_abandoned_total", "disconnect")
            raise
        finally:
            errand.when_idle(lambda: self.uploads.release(held))
            errand.cancel()  # stops whatever step of this request a worker thread still runs

    async def _answer(self, request: Request, body: bytes, errand: Errand, progress: _Progress) -> Response:
        upload, header = await errand.run(
            "parse", self._read_upload, body, request.headers.get("content-type"), errand.token
        )
        del body  # the form's parts are copies
        explainer = self.pool.default.explainer
        params = parse_params(
            dict(request.query_params),
            upload.fields,
            methods=SERVED_METHODS,
            default_method=self.default_key[0],
            default_layer=self.config.layer,
            num_classes=explainer.num_classes,
            max_targets=self.config.limits.max_targets,
        )
        slot = await self.pool.get(self.key_for(params.method, params.layer))  # may build one: see pool.py
        progress.stage = _WAITING_FOR_PIXELS
        await self.pixels.acquire(header.pixels)
        progress.stage = "working"
        try:
            return await self._explain_image(request, header, params, slot, errand)
        finally:
            errand.when_idle(lambda: self.pixels.release(header.pixels))  # once no thread holds the decoded image

    async def _explain_image(
        self, request: Request, header: ImageHeader, params: ExplainParams, slot: Slot, errand: Errand
    ) -> Response:
        check = errand.token.check
        if params.detect is not None:  # a detector: its detections, explained (see detections.py)
            photo, x, geometry = await errand.run("decode", self._prepare, header, errand.token)
            ex = slot.explainer
            found = await errand.run("explain", explain_detections, ex, x, photo, geometry, params, self.spec, check)
            body = {"model": self.config.model.name, "method": params.method, "layer": slot.explainer.layer}
            return JSONResponse(finite_json({**body, "colormap": params.colormap, "alpha": params.alpha, **found}))
        with slot.batcher.expecting():
            photo, x, geometry = await errand.run("decode", self._prepare, header, errand.token)
        try:
            result = await slot.batcher.submit((x, Wish(params.targets, params.top_k)))
        except QueueFull:
            raise busy("the server is busy (its request queue is full); retry in a moment") from None
        if wants_png(request.headers.get("accept", "")):
            class_id, cam = result.cams[0]
            png = await errand.run("render", overlay_png, photo, cam, geometry, params.colormap, params.alpha, check)
            return Response(
                png,
                media_type="image/png",
                headers={"X-Onnxcam-Class": str(class_id), "X-Onnxcam-Score": repr(float(result.scores[class_id]))},
            )
        answer = await errand.run(
            "render", describe, result, photo, geometry, self.spec.labels, params.colormap, params.alpha, check
        )
        layer = slot.explainer.layer
        return JSONResponse(
            finite_json(
                {
                    "model": self.config.model.name,
                    "method": params.method,
                    "layer": layer,
                    "colormap": params.colormap,
                    "alpha": params.alpha,
                    **answer,
                }
            )
        )

    def _read_upload(self, body: bytes, content_type: str | None, token: CancelToken) -> tuple[Upload, ImageHeader]:
        """The upload, and its image's header, read once and checked (one worker step: each hop costs latency).

        An upload that is no image of an accepted format, or declares more than ``--max-pixels``, is a 400 here,
        before it takes anything from the pixel budget.
        """
        upload = parse_upload(body, content_type, token.check)
        name = f"upload {upload.filename!r}" if upload.filename else "upload"
        return upload, read_header(upload.data, self.config.limits.max_pixels, name)

    def _prepare(self, header: ImageHeader, token: CancelToken):
        photo, _ = header.decode()
        token.check()
        x, geometry = preprocess_image(photo, self.spec, max_pixels=None)
        return photo, x, geometry

    # -- read-only endpoints ------------------------------------------------------------------

    def layers(self) -> dict:
        ex = self.pool.default.explainer
        rows = [c.row() for c in ex.candidates]
        return {"layers": rows, "default": self.default_layer_name, "reason": ex.layer_reason}

    def info(self) -> dict:
        ex = self.pool.default.explainer
        return {
            "model": self.config.model.name,
            "method": self.default_key[0],
            "methods": list(SERVED_METHODS),
            "layer": self.default_layer_name,
            "num_classes": ex.num_classes,
            "detector": detector_info(ex),
            "labels": list(self.spec.labels) if self.spec.labels else None,
            "input_size": list(self.spec.size),
            "preprocess": self.spec.describe(),
            "colormaps": {name: colormap_lut(name).tobytes().hex() for name in COLORMAPS},
            "default_colormap": DEFAULT_COLORMAP,
            "limits": self.config.limits.describe(),
            "batching": {
                "max_batch": self.config.batching.max_batch,
                "window_ms": self.config.batching.window_ms,
                "queue_size": self.config.batching.queue_size,
            },
        }

    def metrics_text(self, requests_in_flight: int, connections_open: int) -> str:
        slots = self.pool.slots
        return self.metrics.render(
            {
                "onnxcam_queue_depth": (
                    "Requests waiting for a batch, all (method, layer) pairs.",
                    sum(s.batcher.depth for _, s in slots),
                ),
                "onnxcam_explainers_loaded": ("(method, layer) pairs with a live ONNX Runtime session.", len(slots)),
                "onnxcam_requests_in_flight": (
                    "Requests being worked on (not counting /healthz and /metrics).",
                    requests_in_flight,
                ),
                "onnxcam_connections_open": ("Open HTTP connections, idle ones included.", connections_open),
                "onnxcam_worker_steps_running": (
                    "Steps (form parsing, decoding, rendering) queued or running on the worker threads.",
                    self.workers.steps,
                ),
                "onnxcam_pixel_budget": (
                    "Decoded pixels the server holds at most at once (--pixel-budget).",
                    self.pixels.capacity,
                ),
                "onnxcam_pixels_in_flight": (
                    "Pixels of the images being decoded, explained or rendered now.",
                    self.pixels.in_use,
                ),
                "onnxcam_pixels_in_flight_peak": (
                    "The most pixels held at once since the server started.",
                    self.pixels.peak,
                ),
                "onnxcam_pixel_budget_waiting": ("Requests waiting for room in the pixel budget.", self.pixels.waiting),
                "onnxcam_upload_budget_bytes": (
                    "Bytes of request bodies the server holds at most at once (--upload-budget-mb).",
                    self.uploads.capacity,
                ),
                "onnxcam_upload_bytes_in_flight": ("Bytes of request bodies held now.", self.uploads.in_use),
            }
        )

    async def close(self) -> None:
        await self.pool.close()
        self.infer_executor.shutdown(wait=False, cancel_futures=True)
        self.workers.shutdown()


_WAITING_FOR_PIXELS = "waiting for pixels"


class _Progress:
    """How far a request got: a timeout while it waits for the pixel budget is a 503, not a 504."""

    stage = "starting"


def wants_png(accept: str) -> bool:
    """True when ``Accept`` names image/png before (or without) application/json."""
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if "image/png" not in types:
        return False
    return "application/json" not in types or types.index("image/png") < types.index("application/json")


def problem(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(problem_content(status, message), status_code=status, headers=headers)


#: onnxcam errors a request can cause, and the status that says so.
CLIENT_ERRORS = (ImageError, LayerError, TargetError, PreprocessError)


def create_app(explainer: Explainer, spec: PreprocessSpec, config: ServeConfig) -> ObservedApp:
    """The Starlette app serving ``explainer`` (the default method and layer) with ``spec``'s preprocessing."""
    service = ExplainService(explainer, spec, config)
    page = resources.files("onnxcam.server").joinpath("page.html").read_text(encoding="utf-8")
    # The colouring and blending the client-side page uses too, inlined (the page's CSP allows inline scripts only).
    overlay_js = resources.files("onnxcam.web").joinpath("static/overlay.js").read_text(encoding="utf-8")
    page = page.replace("/*ONNXCAM_OVERLAY_JS*/", overlay_js)
    page_css = resources.files("onnxcam.web").joinpath("static/page.css").read_text(encoding="utf-8")
    page = page.replace("/*ONNXCAM_PAGE_CSS*/", page_css)

    async def explain(request: Request) -> Response:
        try:
            return await service.explain(request)
        except HTTPProblem as e:
            return problem(e.status, e.message, e.headers)
        except asyncio.TimeoutError:
            return problem(
                504,
                f"the request took longer than the server's limit of {config.limits.timeout_s:g} s; "
                "retry later or send a smaller image",
            )
        except ClientGone:  # nobody reads this; the status shows in /metrics and the access log, as nginx's 499
            return problem(499, "the client closed the connection before the answer was ready")
        except CLIENT_ERRORS as e:
            return problem(400, str(e))
        except OnnxcamError as e:
            return problem(500, str(e))
        except Exception:
            traceback.print_exc(file=sys.stderr)
            return problem(500, "internal error while explaining; see the server's log")

    async def index(request: Request) -> Response:
        if config.client_dir is not None:  # --client-side: the page that explains in the browser
            return RedirectResponse("/client/", status_code=307)
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_CSP})

    async def client_file(request: Request) -> Response:
        from onnxcam.web.files import HEADERS, page_file

        found = None if config.client_dir is None else page_file(config.client_dir, request.path_params["path"])
        if found is None:
            return problem(404, "not a file of the client-side page")
        return FileResponse(found[0], media_type=found[1], headers=HEADERS)

    async def layers(request: Request) -> Response:
        return JSONResponse(service.layers())

    async def info(request: Request) -> Response:
        return JSONResponse(service.info())

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": config.model.name,
                "queue_depth": sum(s.batcher.depth for _, s in service.pool.slots),
            }
        )

    async def metrics(request: Request) -> Response:
        return Response(service.metrics_text(admitted.in_flight, guard.open), media_type=PROM_CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # the only exception type it is registered for
        hint = f"; endpoints: {', '.join(ROUTES)}" if exc.status_code == 404 else ""
        return problem(exc.status_code, f"{exc.detail}{hint}", getattr(exc, "headers", None))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await service.close()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/client", lambda request: RedirectResponse("/client/", status_code=307)),
            Route("/client/{path:path}", client_file),
            Route("/explain", explain, methods=["POST"]),
            Route("/layers", layers),
            Route("/info", info),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.service = service
    # uvicorn's limit_concurrency stays off: it counted idle connections and answered in plain text.
    admitted = InFlightLimit(app, config.limits.max_in_flight)
    guard = ConnectionGuard(
        config.limits.header_timeout_s,
        config.limits.max_connections,
        on_closed=lambda reason: service.metrics.count("onnxcam_connections_closed_total", reason),
    )
    app.state.connection_guard = guard  # serve_command hands its protocol class to uvicorn
    return ObservedApp(admitted, service.metrics, app.state)


class ObservedApp:
    """ASGI wrapper: counts every HTTP answer by path and status, times it, and adds ``nosniff``."""

    def __init__(self, app, metrics: Metrics, state):
        self.app = app
        self.metrics = metrics
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def observe(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-content-type-options", b"nosniff")]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self.metrics.observe_request(scope.get("path", ""), status, time.perf_counter() - start)

"""``onnxcam serve``: the HTTP API and web page for one model (needs ``onnxcam[serve]``).

The model is loaded and its default Explainer built before the port opens, so
a bad model or option fails with the usual one-line error instead of a server
that answers 500. The listening socket is bound here (port 0 picks a free
one) and the real address is printed once, for people and for scripts.
"""

from __future__ import annotations

import ipaddress
import math
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

from onnxcam.cli.explain_files import check_labels
from onnxcam.cli.options import (
    add_preprocess_options,
    add_token_options,
    flush_notices,
    explainer_and_spec,
    token_options,
)
from onnxcam.errors import OnnxcamError
from onnxcam.methods import method_names
from onnxcam.server.batching import (
    DEFAULT_MAX_BATCH,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_WINDOW_MS,
    BatchPolicy,
)
from onnxcam.server.limits import (
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_TIMEOUT_S,
    IN_FLIGHT_PER_QUEUED,
    IN_FLIGHT_SPARE,
    UPLOADS_PER_BUDGET,
    Limits,
    default_max_in_flight,
)
from onnxcam.server.params import SERVED_METHODS

INSTALL_HINT = "onnxcam serve needs the server packages: pip install 'onnxcam[serve]'"


class ServeCommand:
    name = "serve"

    def register(self, sub, common) -> None:
        p = sub.add_parser(
            self.name,
            parents=[common],
            help="serve explanations over HTTP, with a web page",
            description="Serve MODEL's explanations: POST /explain (an image upload; JSON or PNG), "
            "GET /layers, /info, /healthz, /metrics (Prometheus), and a web page at /. "
            "Concurrent requests are micro-batched into one ONNX Runtime call.",
        )
        p.add_argument("model", nargs="?", help="path to the .onnx file (or --demo)")
        p.add_argument("--demo", action="store_true", help="serve the small demo model bundled with onnxcam")
        net = p.add_argument_group("network")
        net.add_argument(
            "--host",
            default="127.0.0.1",
            help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)",
        )
        net.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
        net.add_argument("--access-log", action="store_true", help="log every request on stderr")
        p.add_argument("--layer", default="auto", help="default layer (default: auto); requests may name another")
        add_token_options(p)
        p.add_argument(
            "--method",
            default="gradcam",
            choices=sorted(SERVED_METHODS),
            help="default CAM method; requests may name another",
        )
        p.add_argument("--threads", type=int, help="ONNX Runtime threads per session (default: all cores)")
        p.add_argument(
            "--client-side",
            action="store_true",
            help="serve the page that explains in the browser (ONNX Runtime Web) at /client/, the image never "
            "uploaded; / leads there, the HTTP API stays (docs/browser.md)",
        )
        p.add_argument(
            "--ort-web",
            metavar="DIR",
            help="onnxruntime-web's files for --client-side (node_modules/onnxruntime-web/dist); default: the "
            "pinned version, installed with npm into a cache on first use",
        )
        add_preprocess_options(p)
        batching = p.add_argument_group("batching")
        batching.add_argument(
            "--max-batch",
            type=int,
            default=DEFAULT_MAX_BATCH,
            help=f"images per ONNX Runtime call (default {DEFAULT_MAX_BATCH}; 1 turns batching off)",
        )
        batching.add_argument(
            "--batch-window-ms",
            type=float,
            default=DEFAULT_WINDOW_MS,
            help=f"how long a request waits for others to share its call (default {DEFAULT_WINDOW_MS:g})",
        )
        batching.add_argument(
            "--queue-size",
            type=int,
            default=DEFAULT_QUEUE_SIZE,
            help=f"requests waiting per (method, layer) before 503 (default {DEFAULT_QUEUE_SIZE})",
        )
        batching.add_argument(
            "--cache-size",
            type=int,
            default=4,
            help="other (method, layer) pairs kept loaded besides the default (default 4)",
        )
        limits = p.add_argument_group("limits")
        limits.add_argument(
            "--max-upload-mb",
            type=float,
            default=DEFAULT_MAX_UPLOAD_BYTES / 2**20,
            help=f"largest request body, MiB (default {DEFAULT_MAX_UPLOAD_BYTES / 2**20:g})",
        )
        limits.add_argument(
            "--max-pixels",
            type=int,
            default=DEFAULT_MAX_PIXELS,
            help=f"largest image, width x height (default {DEFAULT_MAX_PIXELS}); checked from the "
            "header, before decoding",
        )
        limits.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT_S,
            help=f"seconds per request, upload and queueing included (default {DEFAULT_TIMEOUT_S:g}); "
            "then 504, and the request's work stops",
        )
        limits.add_argument(
            "--pixel-budget",
            type=int,
            help="decoded pixels held at once by all requests together (default: --max-pixels, one "
            "image of the largest size at a time); more requests wait, then 503",
        )
        limits.add_argument(
            "--upload-budget-mb",
            type=float,
            help=f"request bodies held at once by all requests together, MiB (default "
            f"{UPLOADS_PER_BUDGET} x --max-upload-mb); counted as they arrive, and a request "
            "whose body does not fit gets 503 with Retry-After",
        )
        limits.add_argument(
            "--max-in-flight",
            type=int,
            help=f"requests worked on at once (default {IN_FLIGHT_PER_QUEUED} x --queue-size + "
            f"{IN_FLIGHT_SPARE}); more get 503 with Retry-After at once. /healthz and /metrics "
            "do not count",
        )
        limits.add_argument(
            "--header-timeout",
            type=float,
            default=DEFAULT_HEADER_TIMEOUT_S,
            help="seconds a connection gets to send each request head (after it opens or after an "
            "answer), and a client that stopped reading its answer gets to read on (default "
            f"{DEFAULT_HEADER_TIMEOUT_S:g}); then the connection is closed",
        )
        limits.add_argument(
            "--max-connections",
            type=int,
            default=DEFAULT_MAX_CONNECTIONS,
            help=f"open connections (default {DEFAULT_MAX_CONNECTIONS}); beyond, the one idle the "
            "longest is closed to make room",
        )
        p.set_defaults(run=self.run)

    def run(self, args) -> int:
        try:
            import uvicorn

            from onnxcam.server.app import ServeConfig, create_app
        except ImportError:
            raise OnnxcamError(INSTALL_HINT) from None
        model = _model_path(args)
        limits, policy = serve_settings(args)
        ex, spec = explainer_and_spec(
            model, args, layer=args.layer, method=args.method, threads=args.threads, **token_options(args)
        )
        check_labels(spec.labels, ex)
        client_dir = _client_page(ex, spec, args) if args.client_side else None
        config = ServeConfig(
            model=model,
            method=args.method,
            layer=args.layer,
            **token_options(args),
            input_size=ex.input_size,
            limits=limits,
            batching=policy,
            cache_size=args.cache_size,
            threads=args.threads,
            client_dir=client_dir,
        )
        app = create_app(ex, spec, config)
        sock = _listen(args.host, args.port)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(
            f"onnxcam: serving {model.name} (layer {ex.layer}) on http://{shown}:{port}/ - Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        flush_notices()  # the preprocessing onnxcam assumed, if any: now, not when the server stops
        if not _is_loopback(host):
            print(
                f"onnxcam: note: {args.host} is reachable from other machines; the API has no authentication",
                file=sys.stderr,
                flush=True,
            )
        _fit_file_limit(limits.max_connections)
        # No limit_concurrency: it counted idle sockets and answered in plain text. The app limits requests in
        # flight (JSON 503), and the guard's protocol times out request heads and makes room by closing idle
        # connections (onnxcam/server/connections.py). No WebSocket route: upgrades are not offered.
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                http=app.state.connection_guard.protocol_class(),
                ws="none",
                log_level="warning",
                access_log=args.access_log,
                timeout_graceful_shutdown=5,
                server_header=False,
            )
        )
        # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler it found. The
        # default one would end the process on the spot, before the Explainers' temporary weight folders are
        # removed; this one exits normally, so they are.
        signal.signal(signal.SIGTERM, _exit_normally)
        try:
            server.run(sockets=[sock])
        finally:
            if client_dir is not None:
                shutil.rmtree(client_dir, ignore_errors=True)
        return 0


def _client_page(ex, spec, args) -> Path:
    """--client-side: the browser page for the server's default method and layer, written to a temporary folder."""
    from onnxcam.web import DEFAULT_MAX_PIXELS as PAGE_MAX_PIXELS, write_web_page

    if args.method not in method_names("gradient", "attention"):
        raise OnnxcamError(
            f"--client-side runs methods computed in the graph, not {args.method}; pick another --method"
        )
    folder = Path(tempfile.mkdtemp(prefix="onnxcam-page-"))
    try:
        return write_web_page(
            ex,
            spec,
            folder,
            ort_web=args.ort_web,
            max_pixels=min(args.max_pixels, PAGE_MAX_PIXELS),
            max_bytes=_bytes(args.max_upload_mb, "--max-upload-mb"),
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def serve_settings(args) -> tuple[Limits, BatchPolicy]:
    """The server's limits and batching from the parsed flags; a bad value is a one-line OnnxcamError."""
    in_flight = args.max_in_flight if args.max_in_flight is not None else default_max_in_flight(args.queue_size)
    upload_budget = None if args.upload_budget_mb is None else _bytes(args.upload_budget_mb, "--upload-budget-mb")
    try:
        limits = Limits(
            max_upload_bytes=_bytes(args.max_upload_mb, "--max-upload-mb"),
            max_pixels=args.max_pixels,
            timeout_s=args.timeout,
            pixel_budget=args.pixel_budget,
            max_in_flight=in_flight,
            header_timeout_s=args.header_timeout,
            max_connections=args.max_connections,
            upload_budget=upload_budget,
        )
        policy = BatchPolicy(max_batch=args.max_batch, window_ms=args.batch_window_ms, queue_size=args.queue_size)
    except ValueError as e:
        raise OnnxcamError(str(e)) from None
    if args.cache_size < 1:
        raise OnnxcamError("--cache-size must be at least 1")
    return limits, policy


def _bytes(mib: float, flag: str) -> int:
    if not math.isfinite(mib):
        raise OnnxcamError(f"{flag} must be a number of MiB, such as 20, not {mib}")
    return int(mib * 2**20)


def _fit_file_limit(max_connections: int) -> None:
    """Raise the soft limit on open files to fit ``max_connections`` sockets, or say that it cannot.

    Past the limit, accept() fails and the server stops accepting for a second at a time, for everyone:
    --max-connections would never be reached.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    wanted = max_connections + 128  # the model, its sessions, the listening socket, Python's own files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < wanted:
        print(
            f"onnxcam: note: only {target} open files are allowed (ulimit -n); lower --max-connections to "
            f"{max(1, target - 128)} or raise the limit",
            file=sys.stderr,
            flush=True,
        )


def _exit_normally(signum, frame) -> None:
    raise SystemExit(0)


def _model_path(args) -> Path:
    if args.demo and args.model:
        raise OnnxcamError("give a model or --demo, not both")
    if args.demo:
        from onnxcam import demo

        return demo.DEMO_MODEL
    if not args.model:
        raise OnnxcamError("which model? onnxcam serve MODEL.onnx (or --demo for the bundled demo model)")
    return Path(args.model)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); the OS picks the port when it is 0."""
    if not 0 <= port <= 65535:
        raise OnnxcamError(f"--port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise OnnxcamError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port or --host"
        ) from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

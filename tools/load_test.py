"""Load test of ``onnxcam serve`` on loopback: throughput and latency at 1, 4 and 16 clients, batching on and off.

Two servers run side by side on 127.0.0.1 (free ports): one with
micro-batching (the defaults: up to 16 images per call, a 2 ms window) and
one with ``--max-batch 1``. For each client count the two are measured in
``--rounds`` alternating rounds (A B, B A, ...), so background load hits both
alike; throughput is the median over rounds, the gain the median of the
paired per-round ratios, and latency percentiles pool every answer. Each
round is bounded: it stops after ``--requests`` / ``--rounds`` answers or
``--duration`` / ``--rounds`` seconds, whichever comes first, after a short
warm-up. Every client keeps one connection and
uploads the sample images in turn (multipart, JSON answer with heatmap and
overlay PNGs, as the web page asks).

    python tools/load_test.py                      # the bundled demo model
    python tools/load_test.py --model resnet50.onnx --image cat.jpg --serve-arg=--preprocess=imagenet

Prints a Markdown table: requests/s, p50 and p99 latency, the mean batch the
server formed (from its /metrics), and the batching gain (throughput with
micro-batching / without). On a shared machine quote the ratios, not the
absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxcam import demo  # noqa: E402
from onnxcam.server.child import ServerProcess  # noqa: E402

CLIENTS = (1, 4, 16)


#: How long a client may take to warm up before the round is abandoned.
BARRIER_TIMEOUT_S = 300.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere).

    Unlike throughput, the CPU a server spends per answer barely depends on what
    else the machine runs, so it shows the effect of batching on a busy box.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_counters(client: httpx.Client) -> tuple[float, float]:
    """(batches, images) so far, from the server's Prometheus text."""
    values = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(("onnxcam_batch_size_count", "onnxcam_batch_size_sum")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("onnxcam_batch_size_count", 0.0), values.get("onnxcam_batch_size_sum", 0.0)


def run_round(
    server: ServerProcess, images: list[bytes], clients: int, max_requests: int, duration_s: float, warmup: int
) -> dict:
    """``clients`` threads, each on its own connection, until ``max_requests`` answers or ``duration_s``."""
    url = server.url
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    issued = [0]
    stop_at = [float("inf")]
    # A client that dies (server gone, connection refused) breaks both barriers, so nobody waits for it forever.
    warmed = threading.Barrier(clients + 1, timeout=BARRIER_TIMEOUT_S)  # all warm-ups done: read the counters
    start_gate = threading.Barrier(clients + 1, timeout=BARRIER_TIMEOUT_S)

    def worker(k: int) -> None:
        try:
            client_loop(k)
        except Exception as e:  # noqa: BLE001 - reported by the main thread, whatever the client hit
            with lock:
                failures.append(f"client {k} stopped: {type(e).__name__}: {e}")
            warmed.abort()
            start_gate.abort()

    def client_loop(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            for i in range(warmup):
                c.post("/explain", files={"image": ("w.png", images[(k + i) % len(images)], "image/png")})
            warmed.wait()
            start_gate.wait()
            i = 0
            while True:
                with lock:
                    if issued[0] >= max_requests or time.perf_counter() > stop_at[0]:
                        return
                    issued[0] += 1
                t0 = time.perf_counter()
                r = c.post("/explain", files={"image": ("p.png", images[(k + i) % len(images)], "image/png")})
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    else:
                        failures.append(f"{r.status_code}: {r.text[:120]}")
                i += 1

    with httpx.Client(base_url=url, timeout=30) as probe:
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        try:
            warmed.wait()
            batches0, images0 = batch_counters(probe)
            cpu0 = cpu_seconds(server.pid)
            t0 = time.perf_counter()
            stop_at[0] = t0 + duration_s
            start_gate.wait()
        except threading.BrokenBarrierError:
            for t in threads:
                t.join(timeout=BARRIER_TIMEOUT_S)
            raise SystemExit(
                f"load_test: a client failed before the timed part of the {clients}-client round: "
                f"{failures[0] if failures else f'no answer within {BARRIER_TIMEOUT_S:g} s'}"
            ) from None
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(server.pid) - cpu0
        batches1, images1 = batch_counters(probe)
    return {
        "latencies": latencies,
        "failures": failures,
        "seconds": elapsed,
        "throughput": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "batches": batches1 - batches0,
        "images": images1 - images0,
        "cpu_s": cpu,
    }


def summarize(clients: int, rounds: list[dict]) -> dict:
    lat = np.concatenate([r["latencies"] for r in rounds]) * 1000.0
    failures = [f for r in rounds for f in r["failures"]]
    batches, images = sum(r["batches"] for r in rounds), sum(r["images"] for r in rounds)
    return {
        "clients": clients,
        "answers": int(lat.size),
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "round_throughputs": [r["throughput"] for r in rounds],
        "throughput": float(np.median([r["throughput"] for r in rounds])),
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "mean_batch": images / batches if batches else float("nan"),
        "cpu_ms_per_answer": 1000.0 * sum(r["cpu_s"] for r in rounds) / lat.size if lat.size else float("nan"),
    }


def model_cost(model: Path, images: list[bytes], batch_sizes: tuple[int, ...], repeats: int = 10) -> dict[int, float]:
    """Median ms per image of ``Explainer.explain`` alone, in this process, at each batch size."""
    from onnxcam import Explainer
    from onnxcam.preprocess import derive_spec, load_image, preprocess_image

    ex = Explainer(model)
    spec = derive_spec(ex.index, model_path=model)
    one = [preprocess_image(load_image(data)[0], spec)[0] for data in images]
    cost = {}
    for n in batch_sizes:
        x = np.stack([one[i % len(one)] for i in range(n)])
        feeds = x if spec.input_name is None else {spec.input_name: x}
        ex.explain(feeds)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ex.explain(feeds)
            times.append(time.perf_counter() - t0)
        cost[n] = float(np.median(times)) / n * 1000.0
    return cost


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="the .onnx to serve (default: the bundled demo model)")
    p.add_argument("--image", action="append", help="image(s) to upload (default: the demo images)")
    p.add_argument("--serve-arg", action="append", default=[], help="extra `onnxcam serve` argument (repeatable)")
    p.add_argument(
        "--requests", type=int, default=400, help="answers per client count and server, at most (default 400)"
    )
    p.add_argument(
        "--duration", type=float, default=20.0, help="seconds per client count and server, at most (default 20)"
    )
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per client count (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="requests per client before timing (default 2)")
    p.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS), help="client counts (default 1 4 16)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.requests < args.rounds or args.duration <= 0 or args.rounds < 1:
        p.error("--rounds, --duration and --requests must be positive, with at least one request per round")

    model = ["--demo"] if not args.model else [args.model]
    images = [Path(i).read_bytes() for i in (args.image or demo.DEMO_IMAGES)]
    common = [*model, *args.serve_arg, "--queue-size", str(4 * max(args.clients))]
    rows = []
    with ServerProcess(common) as batched, ServerProcess([*common, "--max-batch", "1"]) as single:
        servers = {"batched": batched, "single": single}
        for clients in args.clients:
            rounds: dict[str, list[dict]] = {name: [] for name in servers}
            for k in range(args.rounds):
                for name in ("batched", "single") if k % 2 == 0 else ("single", "batched"):
                    rounds[name].append(
                        run_round(
                            servers[name],
                            images,
                            clients,
                            args.requests // args.rounds,
                            args.duration / args.rounds,
                            args.warmup if k < 2 else 0,
                        )
                    )
            cell = {name: summarize(clients, rounds[name]) for name in servers}
            cell["gain"] = float(
                np.median(
                    [
                        b["throughput"] / s["throughput"]
                        for b, s in zip(rounds["batched"], rounds["single"])
                        if s["throughput"]
                    ]
                )
            )
            for name in servers:
                r = cell[name]
                print(
                    f"{name:8s} clients={clients:2d}: {r['answers']} answers, rounds "
                    + ", ".join(f"{t:.0f}" for t in r["round_throughputs"])
                    + f" req/s, p50 {r['p50_ms']:.1f} ms, "
                    f"p99 {r['p99_ms']:.1f} ms, mean batch {r['mean_batch']:.2f}, "
                    f"server CPU {r['cpu_ms_per_answer']:.1f} ms/answer"
                    + (f", {r['failures']} failed ({r['first_failure']})" if r["failures"] else ""),
                    file=sys.stderr,
                )
            rows.append(cell)

    print(
        "| clients | batching: req/s | p50 | p99 | mean batch | CPU/answer | no batching: req/s | p50 | p99 | "
        "CPU/answer | batching gain: req/s | CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cell in rows:
        b, s, gain = cell["batched"], cell["single"], cell["gain"]
        print(
            f"| {b['clients']} | {b['throughput']:.1f} | {b['p50_ms']:.1f} ms | {b['p99_ms']:.1f} ms | "
            f"{b['mean_batch']:.2f} | {b['cpu_ms_per_answer']:.1f} ms | {s['throughput']:.1f} | "
            f"{s['p50_ms']:.1f} ms | {s['p99_ms']:.1f} ms | {s['cpu_ms_per_answer']:.1f} ms | {gain:.2f}x | "
            f"{s['cpu_ms_per_answer'] / b['cpu_ms_per_answer']:.2f}x |"
        )
    cost = model_cost(Path(args.model) if args.model else demo.DEMO_MODEL, images, (1, 4, 16))
    print(
        "\nexplain alone, per image (median of 10 calls): "
        + ", ".join(f"batch {n}: {ms:.2f} ms" for n, ms in cost.items())
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "explain_ms_per_image": cost}, indent=2) + "\n")
    return 1 if any(c[k]["failures"] for c in rows for k in ("batched", "single")) else 0


if __name__ == "__main__":
    sys.exit(main())

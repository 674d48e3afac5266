"""Measurements that each want a fresh process: peak memory, and latency with one side per process.

The parent runs these before it imports torch, so that nothing of its own leaks into the children: each child
is ``python -m tools.bench --memory-child|--latency-child MODE MODEL BATCH`` and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tools.bench.models import log, make_input, one_side, onnx_path

REPO = Path(__file__).resolve().parents[2]


def proc_status_kib(key: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in KiB; -1 where there is none (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith(key + ":")), -1)
    except OSError:
        return -1


def memory_child(mode: str, name: str, batch: int, args) -> dict:
    """Setup and ``runs`` calls of one side; the peak resident set, and the peak of each phase.

    The peak is VmHWM, this process's own high-water mark: ``ru_maxrss`` can inherit the parent's across
    fork/exec, so it is only recorded beside it. VmHWM is reset after setup where Linux allows it
    (``/proc/self/clear_refs``), so that the calls' own peak is seen apart from the setup's.
    """
    import numpy  # noqa: F401  (the same imports in every mode: the same baseline)
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    import onnxcam  # noqa: F401

    if mode == "gradcam":
        import pytorch_grad_cam  # noqa: F401
    x, path = make_input(batch), onnx_path(args.cache_dir, name)
    baseline, hwm_after_imports = proc_status_kib("VmRSS"), proc_status_kib("VmHWM")
    ru_after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    can_reset = os.access("/proc/self/clear_refs", os.W_OK)
    phases, t0 = [], time.perf_counter()

    def mark(phase: str, reset: bool = False) -> None:
        phases.append({"phase": phase, "rss_kib": proc_status_kib("VmRSS"), "hwm_kib": proc_status_kib("VmHWM")})
        if reset and can_reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    call, _ = one_side(mode, name, path, x, args.threads, args.layer, mark)
    for _ in range(args.memory_runs):
        call()
    mark("runs_done")
    setup_peak = max((p["hwm_kib"] for p in phases[:-1]), default=None)
    peak = max(p["hwm_kib"] for p in phases)
    return {
        "mode": mode,
        "model": name,
        "batch": batch,
        "runs": args.memory_runs,
        "baseline_rss_kib": baseline,
        "vmhwm_after_imports_kib": hwm_after_imports,
        "maxrss_after_imports_kib": ru_after_imports,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "phases": phases,
        "setup_peak_kib": setup_peak,
        "run_peak_kib": phases[-1]["hwm_kib"] if setup_peak and can_reset else None,
        "peak_rss_kib": peak,
        "peak_minus_baseline_kib": peak - baseline,
        "elapsed_s": time.perf_counter() - t0,
    }


def latency_child(mode: str, name: str, batch: int, args) -> dict:
    """``--solo-calls`` timed calls of one side alone, after 10 untimed ones; one thread pool per process, as deployed.

    ``--solo-idle-ms`` > 0 sleeps that long (untimed) before each call: sporadic requests, whose caches and thread
    pool have gone cold, instead of sustained load.
    """
    from tools.bench.timing import summarize

    call, _ = one_side(mode, name, onnx_path(args.cache_dir, name), make_input(batch), args.threads, args.layer)
    for _ in range(10):
        call()
    times = []
    for _ in range(args.solo_calls):
        time.sleep(args.solo_idle_ms / 1e3)
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {
        "mode": mode,
        "model": name,
        "batch": batch,
        "calls": args.solo_calls,
        "idle_ms": args.solo_idle_ms,
        **summarize(times),
    }


def run_child(args, *flags: str) -> dict:
    """``python -m tools.bench FLAGS`` in a fresh process; its last JSON line, or what went wrong."""
    cmd = [
        sys.executable,
        "-m",
        "tools.bench",
        "--threads",
        str(args.threads),
        "--cache-dir",
        str(args.cache_dir),
        "--layer",
        args.layer,
        "--omp-wait-policy",
        args.omp_wait_policy,
        *flags,
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
    line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith("{")), None)
    if p.returncode or line is None:
        return {"error": f"child exited {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"}
    return json.loads(line)


def memory(name: str, batch: int, modes: list[str], args) -> dict:
    entry = {"model": name, "batch": batch}
    for mode in modes:
        log(f"memory: {mode} {name} b{batch} (fresh process)")
        entry[mode] = run_child(args, "--memory-child", mode, name, str(batch), "--memory-runs", str(args.memory_runs))
    return entry


def solo_latency(name: str, batch: int, args, idle_ms: float) -> dict:
    """``--solo-rounds`` alternations of fresh inference and explain processes; the median of their medians."""
    calls = (args.solo_calls if batch == 1 else args.solo_calls // 5) // (2 if idle_ms else 1)
    rec = {"model": name, "batch": batch, "idle_ms": idle_ms, "loadavg_before": os.getloadavg()}
    medians: dict[str, list[float]] = {"infer": [], "explain": []}
    for r in range(args.solo_rounds):
        for mode in ("infer", "explain")[:: 1 if r % 2 == 0 else -1]:
            out = run_child(
                args,
                "--latency-child",
                mode,
                name,
                str(batch),
                "--solo-calls",
                str(calls),
                "--solo-idle-ms",
                str(idle_ms),
            )
            if "error" in out:
                return {**rec, **out}
            medians[mode].append(out["median_ms"])
    return {
        **rec,
        "loadavg_after": os.getloadavg(),
        "rounds": args.solo_rounds,
        "calls": calls,
        "infer_ms": statistics.median(medians["infer"]),
        "explain_ms": statistics.median(medians["explain"]),
        "medians": medians,
    }


def export_missing(args) -> None:
    """Export the models not cached yet, in a child: this process must not import torch before the others."""
    if any(not onnx_path(args.cache_dir, m).exists() for m in args.models):
        out = run_child(args, "--export-only", "--models", ",".join(args.models))
        if "error" in out:
            raise SystemExit(out["error"])

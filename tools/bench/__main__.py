"""python -m tools.bench: onnxcam's explain beside plain onnxruntime inference and pytorch-grad-cam.

For every model and batch size: peak memory of each side in a fresh process, latency of inference and explain
each alone in fresh processes (back to back, and after idle), the three sides interleaved in one process, and
every ``method=`` against inference. Prints markdown tables; ``--json`` keeps everything, raw timings included.

The ViT-B/16 run behind docs/performance.md's transformer tables is a separate, shorter one, stored in the same
JSON file under its own key::

    python -m tools.bench --models vit_b_16 --skip-memory --solo-rounds 0 --skip-methods \
        --profile /tmp/vit_profile --profile-runs 10 --json docs/data/bench.json --section vit
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from tools.bench import children, report, timing
from tools.bench.models import DEFAULT_MODELS, MODELS, ensure_model, log

REPO = Path(__file__).resolve().parents[2]


def words(values: list[str]) -> list[str]:
    """``--models a b`` and ``--models a,b`` alike."""
    return [w for v in values for w in v.split(",") if w.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help=f"torchvision models ({', '.join(MODELS)}; default {' '.join(DEFAULT_MODELS)})",
    )
    p.add_argument("--batches", nargs="+", default=["1", "8"], help="batch sizes (default 1 8)")
    p.add_argument(
        "--repeats",
        nargs="+",
        default=None,
        help="interleaved rounds: one number, or one per batch size (default 20 for batch 1, else 10)",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed interleaved rounds first (default 3)")
    p.add_argument("--threads", type=int, default=2, help="threads of onnxruntime, onnxcam and torch (default 2)")
    p.add_argument("--layer", default="auto", help="onnxcam's layer (default auto)")
    for part, what in (
        ("gradcam", "pytorch-grad-cam"),
        ("onnxcam", "onnxcam"),
        ("memory", "the peak-memory processes"),
        ("latency", "all timing (peak memory only)"),
        ("methods", "the per-method rows"),
    ):
        p.add_argument(f"--skip-{part}", action="store_true", help=f"leave out {what}")
    p.add_argument("--memory-runs", type=int, default=3, help="calls per memory process after setup (default 3)")
    p.add_argument(
        "--gap-ms",
        type=float,
        default=50.0,
        help="untimed sleep after each interleaved call (default 50: an onnxruntime 1.32 worker spins "
        "about 26 ms after a run, and would steal a core from the next side)",
    )
    p.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY for torch's OpenMP pool, set before torch loads (default PASSIVE: idle "
        "workers sleep instead of spinning on the cores the ORT runs need); 'keep' leaves it",
    )
    p.add_argument("--cache-dir", type=Path, default=REPO / ".bench_cache", help="exported .onnx files")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also profile the model and its explainer graph in onnxruntime, traces to DIR",
    )
    p.add_argument("--profile-runs", type=int, default=20, help="profiled runs per session (default 20)")
    p.add_argument("--json", type=Path, help="write all results here (docs/data/bench.json for the docs)")
    p.add_argument(
        "--section",
        metavar="KEY",
        help="store the results under KEY of the --json file, keeping the rest of it (the ViT run: vit)",
    )
    p.add_argument("--perturbation-repeats", type=int, default=2, help="timed Score-CAM/Ablation-CAM calls")
    p.add_argument("--perturbation-batch", type=int, default=64, help="copies per session run (default 64)")
    p.add_argument(
        "--solo-rounds",
        type=int,
        default=5,
        help="fresh processes per side for latency alone, alternated (default 5; 0 skips)",
    )
    p.add_argument(
        "--solo-idle",
        default="0,30",
        metavar="MS[,MS]",
        help="idle before each call alone, one row each (default 0,30: sustained load, sporadic requests)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short check that everything runs: mobilenet_v3_large, batch 1, 5 rounds, no memory",
    )
    p.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--solo-calls",
        type=int,
        default=200,
        help="timed calls per process alone at batch 1 (default 200); a fifth of that at larger batches, "
        "half after idle",
    )
    p.add_argument("--solo-idle-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--latency-child", nargs=3, metavar=("MODE", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    p.add_argument(
        "--memory-child",
        nargs=3,
        metavar=("MODE", "MODEL", "BATCH"),
        help="internal: one peak-memory measurement (MODE: infer, explain or gradcam), printed as JSON",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.repeats, args.warmup = ["mobilenet_v3_large"], ["1"], ["5"], 1
        args.skip_memory, args.perturbation_repeats, args.solo_rounds = True, 1, min(args.solo_rounds, 2)
    args.models, args.batches = words(args.models), [int(b) for b in words(args.batches)]
    if unknown := set(args.models) - set(MODELS):
        p.error(f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}")
    args.solo_idle = [float(v) for v in words([args.solo_idle])]
    repeats = [int(r) for r in words(args.repeats or [])]
    if len(repeats) not in (0, 1, len(args.batches)):
        p.error("--repeats takes one number or one per batch size")
    args.repeats = {
        b: repeats[i % len(repeats)] if repeats else (20 if b == 1 else 10) for i, b in enumerate(args.batches)
    }
    args.repeats_for = args.repeats.get
    args.cache_dir = args.cache_dir.resolve()
    return args


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())


def machine(argv: list[str], args) -> dict:
    def git(*cmd: str) -> str:
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: no index refresh under others' feet
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, env=env).stdout.strip()

    settings = ("threads", "repeats", "warmup", "gap_ms", "solo_rounds", "memory_runs")
    return {
        "command": " ".join(["python -m tools.bench", *argv]),
        "cpu": cpu_name(),
        "nproc": os.cpu_count(),
        **{k: getattr(args, k) for k in settings},
        "solo_idle_ms": args.solo_idle,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "loadavg_start": os.getloadavg(),
        "git": {
            "head": git("rev-parse", "--short", "HEAD") or None,
            "onnxcam_dirty": bool(git("status", "--porcelain", "--", "onnxcam")),
        },
    }


def versions() -> dict:
    from importlib import import_module
    from importlib.metadata import version

    modules = ("onnxruntime", "torch", "torchvision", "numpy", "onnx", "onnxcam")
    return {
        "python": platform.python_version(),
        "pytorch_grad_cam": version("grad-cam"),
        **{m: import_module(m).__version__ for m in modules},
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.omp_wait_policy.lower() != "keep":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # before torch (libgomp) loads; children inherit it
    if args.memory_child or args.latency_child:
        mode, name, batch = args.memory_child or args.latency_child
        child = children.memory_child if args.memory_child else children.latency_child
        print(json.dumps(child(mode, name, int(batch), args)))
        return 0
    if args.export_only:
        print(json.dumps({m: ensure_model(m, args.cache_dir, args.threads)[2] for m in args.models}))
        return 0

    t0, res = time.time(), {"meta": machine(argv, args), "latency": [], "solo": [], "memory": [], "methods": []}
    configs = [(m, b) for m in args.models for b in args.batches]
    # Fresh processes first, while this one is small and has not imported torch.
    children.export_missing(args)
    if not args.skip_memory:
        modes = ["infer"] + ["explain"] * (not args.skip_onnxcam) + ["gradcam"] * (not args.skip_gradcam)
        res["memory"] = [children.memory(m, b, modes, args) for m, b in configs]
    if not (args.skip_onnxcam or args.skip_latency):
        for (m, b), idle in ((c, i) for c in configs for i in args.solo_idle if args.solo_rounds):
            log(f"alone: {m} b{b}, {idle:g} ms idle before each call, {args.solo_rounds} processes per side")
            res["solo"].append(children.solo_latency(m, b, args, idle))

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    for name in [] if args.skip_latency else args.models:
        path, rel = ensure_model(name, args.cache_dir, args.threads)[1:]
        for batch in args.batches:
            res["latency"].append({**timing.interleaved(name, batch, path, args), "export_rel_diff": rel})
            log(
                f"{name} b{batch}: "
                + ", ".join(f"{n} {t['median_ms']:.1f} ms" for n, t in res["latency"][-1]["timings"].items())
            )
        if not (args.skip_onnxcam or args.skip_methods):
            res["methods"].append(
                {"model": name, "batch": args.batches[0], "rows": timing.methods(path, args.batches[0], args)}
            )
    res["meta"].update(versions=versions(), loadavg_end=os.getloadavg(), duration_s=time.time() - t0)
    res["notes"] = [
        f"memory {e['model']} b{e['batch']} {mode}: {e[mode]['error']}"
        for e in res["memory"]
        for mode in ("infer", "explain", "gradcam")
        if "error" in e.get(mode, {})
    ]
    res["notes"] += [f"alone {e['model']} b{e['batch']}: {e['error']}" for e in res["solo"] if "error" in e]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # The sections of other runs (--section) are kept; a run with --section replaces only its own.
        whole = json.loads(args.json.read_text(encoding="utf-8")) if args.json.exists() else {}
        kept = {k: v for k, v in whole.items() if k in report.SECTION_TABLES}
        res = {**whole, args.section: res} if args.section else {**res, **kept}
        args.json.write_text(json.dumps(res, indent=1, default=str) + "\n")
        log(f"wrote {args.json}")
    print(report.console(res[args.section] if args.json and args.section else res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

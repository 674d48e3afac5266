"""Run explainer files on OpenVINO (its onnxruntime EP and its own runtime) and compare with onnxruntime's CPU EP.

Runs where ``onnxruntime-openvino`` and ``openvino`` are installed, which is
never the main environment (onnxruntime-openvino replaces onnxruntime): make
one with ``tools/make_openvino_venv.sh`` and run this file with its Python::

    /tmp/ovenv/bin/python tools/openvino_compare.py CASES_DIR [--repeat 20] [--json]

``CASES_DIR`` holds ``NAME.onnx`` explainer files, each with ``NAME.npz``: the
feeds (``python -m onnxcam export`` writes the file; ``tools/bench_portable.py
--openvino-cases DIR`` writes files and feeds for the demo model and the zoo). For each file it

* loads it with the OpenVINO EP and ``session.disable_cpu_ep_fallback`` set
  (the load fails if any node would fall back to the CPU EP);
* runs it there, on the CPU EP, and in the OpenVINO runtime (``Core.read_model``,
  FP32 inference precision), and reports the largest absolute difference of
  each float output from the CPU EP's, and whether the int64 outputs (the
  explained class) agree;
* with ``--repeat N``, times N runs of each (after one warm-up) and prints
  their medians and the ratios to the CPU EP.

Only numpy, onnxruntime(-openvino) and openvino are imported, so it runs in
that lean environment without onnxcam installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

OV_EP = "OpenVINOExecutionProvider"
CPU_EP = "CPUExecutionProvider"


def _sessions(path: Path, threads: int = 0) -> dict[str, Callable[[dict[str, np.ndarray]], list[np.ndarray]]]:
    """name -> run(feeds) for the CPU EP, the OpenVINO EP (no CPU fallback) and the OpenVINO runtime."""
    import onnxruntime as ort
    import openvino as ov

    quiet = ort.SessionOptions()
    quiet.log_severity_level = 3
    strict = ort.SessionOptions()
    strict.log_severity_level = 3
    strict.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    ov_ep_options = {"device_type": "CPU", "precision": "FP32"}
    ov_config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:  # 0: each runtime's own default
        quiet.intra_op_num_threads = threads
        ov_ep_options["num_of_threads"] = str(threads)
        ov_config["INFERENCE_NUM_THREADS"] = threads
    cpu = ort.InferenceSession(str(path), quiet, providers=[CPU_EP])
    ep = ort.InferenceSession(str(path), strict, providers=[OV_EP], provider_options=[ov_ep_options])
    names = [o.name for o in cpu.get_outputs()]
    compiled = ov.Core().compile_model(str(path), "CPU", ov_config)

    def runtime(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = compiled(feeds)
        by_name = {name: value for port, value in result.items() for name in port.get_names()}
        return [np.asarray(by_name[n]) for n in names]

    return {
        "cpu_ep": lambda feeds: cpu.run(names, feeds),
        "openvino_ep": lambda feeds: ep.run(names, feeds),
        "openvino_runtime": runtime,
        "_names": names,  # type: ignore[dict-item]
    }


def _median_ms(
    runs: dict[str, Callable[[dict[str, np.ndarray]], Any]], feeds: dict[str, np.ndarray], repeat: int
) -> dict[str, float]:
    """Each runner's median time; the runs interleaved so that load on the machine hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():
        run(feeds)  # warm-up: first-run allocations and compilation
    for _ in range(repeat):
        for k, run in runs.items():
            start = time.perf_counter()
            run(feeds)
            times[k].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(t) for k, t in times.items()}


def compare(path: Path, repeat: int = 0, threads: int = 0) -> dict[str, Any]:
    """One file's row: loads without CPU fallback, largest differences from the CPU EP, timings."""
    feeds = dict(np.load(path.with_suffix(".npz")))
    row: dict[str, Any] = {"file": path.name}
    try:
        runs = _sessions(path, threads)
    except Exception as e:  # onnxruntime's and openvino's own exception types
        row["loads_without_fallback"] = False
        row["error"] = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return row
    row["loads_without_fallback"] = True
    names = runs.pop("_names")  # type: ignore[arg-type]
    outs = {k: run(feeds) for k, run in runs.items()}
    for other in ("openvino_ep", "openvino_runtime"):
        diffs, rel, same_ints = {}, {}, True
        for name, ref, got in zip(names, outs["cpu_ep"], outs[other]):  # type: ignore[call-overload]
            if np.issubdtype(ref.dtype, np.floating):
                diffs[name] = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)), initial=0.0))
                rel[name] = diffs[name] / max(float(np.max(np.abs(ref), initial=0.0)), 1e-30)
            else:
                same_ints &= bool(np.array_equal(ref, got))
        row[f"{other}_max_abs_diff"] = diffs
        row[f"{other}_max_rel_diff"] = rel  # max |difference| / max |CPU EP value|, per output
        row[f"{other}_ints_equal"] = same_ints
    if repeat:
        for k, ms in _median_ms(runs, feeds, repeat).items():  # type: ignore[arg-type]
            row[f"{k}_ms"] = ms
        for k in ("openvino_ep", "openvino_runtime"):
            row[f"{k}_ratio"] = row[f"{k}_ms"] / row["cpu_ep_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", type=Path, help="folder of NAME.onnx explainer files with NAME.npz feeds")
    parser.add_argument("--repeat", type=int, default=0, help="time this many runs of each (median); 0: no timing")
    parser.add_argument("--threads", type=int, default=0, help="threads for every runtime (default: their own)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file instead of the table")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.cases.glob("*.onnx") if p.with_suffix(".npz").exists())
    if not files:
        print(f"no NAME.onnx with NAME.npz in {args.cases}", file=sys.stderr)
        return 2
    rows = [compare(p, args.repeat, args.threads) for p in files]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        _print_table(rows, bool(args.repeat))
        if args.repeat:
            ratios = sorted(r["openvino_ep_ratio"] for r in rows if "openvino_ep_ratio" in r)
            if ratios:
                print(f"median OpenVINO EP / CPU EP time: {statistics.median(ratios):.2f} over {len(ratios)} files")
    return 0 if all(r["loads_without_fallback"] for r in rows) else 1


def _print_table(rows: list[dict[str, Any]], timed: bool) -> None:
    import onnxruntime as ort
    import openvino as ov

    print(f"onnxruntime {ort.__version__} (OpenVINO EP), OpenVINO runtime {ov.__version__}")
    head = f"{'file':<48} {'no fallback':>11} {'EP max|diff|':>12} {'runtime max|diff|':>17}"
    if timed:
        head += f" {'CPU EP ms':>9} {'OV EP ms':>8} {'ratio':>6} {'OV rt ms':>8} {'ratio':>6}"
    print(head)
    for r in rows:
        if not r["loads_without_fallback"]:
            print(f"{r['file']:<48} {'NO':>11}  {r.get('error', '')}")
            continue
        ep = max(r["openvino_ep_max_abs_diff"].values(), default=0.0)
        rt = max(r["openvino_runtime_max_abs_diff"].values(), default=0.0)
        line = f"{r['file']:<48} {'yes':>11} {ep:>12.2e} {rt:>17.2e}"
        if timed:
            line += (
                f" {r['cpu_ep_ms']:>9.2f} {r['openvino_ep_ms']:>8.2f} {r['openvino_ep_ratio']:>6.2f}"
                f" {r['openvino_runtime_ms']:>8.2f} {r['openvino_runtime_ratio']:>6.2f}"
            )
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())

"""The "methods" part of tools/bench.py: what each ``method=`` costs next to plain inference.

Gradient methods run in the explainer graph, so their cost is one call each,
reported as a ratio to plain ONNX Runtime inference on the same batch
(interleaved round-robin with it, like the main benchmark). Score-CAM and
Ablation-CAM run one forward pass per channel of the layer and image, so
they are reported as throughput: images per second and passes per second.
This measures and reports; it never asserts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path


def bench_methods(path: Path, x, threads: int, repeats: int, perturbation_repeats: int, gap_ms: float,
                  perturbation_batch: int, log: Callable[[str], None]) -> list[dict]:
    """One row per method: median seconds per ``explain(x)`` and its ratio to plain inference."""
    import onnxruntime as ort

    import onnxcam
    from onnxcam.methods.perturbation import PERTURBATION_METHODS

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    rows = []
    for method in onnxcam.ALL_METHODS:
        perturbation = method in PERTURBATION_METHODS
        ex = onnxcam.Explainer(str(path), method=method, providers=["CPUExecutionProvider"], threads=threads,
                               perturbation_batch=perturbation_batch)
        ex.explain(x)  # warm-up and first-call costs (sessions, tails) outside the timing
        calls = {"infer": lambda: sess.run(None, feed), "explain": lambda ex=ex: ex.explain(x)}
        times: dict[str, list[float]] = {"infer": [], "explain": []}
        for r in range(perturbation_repeats if perturbation else repeats):
            for name in (["infer", "explain"] if r % 2 == 0 else ["explain", "infer"]):
                t0 = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - t0)
                time.sleep(gap_ms / 1e3)
        infer, explain = statistics.median(times["infer"]), statistics.median(times["explain"])
        row = {"method": method, "kind": "perturbation" if perturbation else "graph", "runs": len(times["explain"]),
               "infer_ms": infer * 1e3, "explain_ms": explain * 1e3, "explain_over_infer": explain / infer,
               "images_per_s": len(x) / explain}
        if perturbation:
            layer = next(c for c in ex.candidates if c.name == ex.layer)
            row["channels"] = layer.channels
            row["passes_per_s"] = len(x) * layer.channels / explain
        rows.append(row)
        log(f"methods: {method} {explain * 1e3:.1f} ms ({explain / infer:.2f}x inference)")
    return rows


def render_methods(model: str, batch: int, rows: list[dict]) -> str:
    """Two markdown tables: gradient methods relative to inference, perturbation methods as throughput."""
    lines = [f"Methods on {model}, batch {batch} (median per `explain` call, interleaved with plain inference):", "",
             "| method | runs | explain ms | ORT infer ms | explain / infer | images/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "graph":
            lines.append(f"| {r['method']} | {r['runs']} | {r['explain_ms']:.1f} | {r['infer_ms']:.1f} | "
                         f"{r['explain_over_infer']:.2f} | {r['images_per_s']:.1f} |")
    lines += ["", "| perturbation method | runs | channels | explain ms | images/s | passes/s | explain / infer |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "perturbation":
            lines.append(f"| {r['method']} | {r['runs']} | {r['channels']} | {r['explain_ms']:.0f} | "
                         f"{r['images_per_s']:.3f} | {r['passes_per_s']:.0f} | {r['explain_over_infer']:.0f} |")
    return "\n".join(lines)

"""Timing in one process: inference, explain and pytorch-grad-cam interleaved round-robin, each method's cost,
and onnxruntime profiles of the model beside its explainer graph (``--profile``).

Interleaving makes machine noise hit every side alike. The sides take turns in a rotating order, with an
untimed pause after each call (``--gap-ms``): an onnxruntime worker keeps spinning for a while after a run,
and on a 2-core machine it would steal a core from the next side.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from tools.bench.models import (
    explainer,
    expected_onnx_tensor,
    log,
    make_input,
    one_side,
    ort_session,
    torch_layer,
    torch_model,
)


def summarize(times_s: list[float]) -> dict:
    ms = [t * 1e3 for t in times_s]
    deciles = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else ms * 9
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p10_ms": deciles[0],
        "p90_ms": deciles[-1],
        "min_ms": min(ms),
        "max_ms": max(ms),
        "all_ms": ms,
    }


def interleave(calls: dict, rounds: int, gap_ms: float, warmup: int = 0) -> tuple[dict, dict]:
    """Wall and process CPU seconds per call of each side, ``warmup`` untimed rounds first."""
    names = list(calls)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            c0, t0 = time.process_time(), time.perf_counter()
            calls[n]()
            if r >= warmup:
                wall[n].append(time.perf_counter() - t0)
                cpu[n].append(time.process_time() - c0)
            time.sleep(gap_ms / 1e3)
    return wall, cpu


def pearson(a, b) -> float | None:
    import numpy as np

    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None


def interleaved(name: str, batch: int, path: Path, args) -> dict:
    """Inference, explain and pytorch-grad-cam on the same input in one process, then untimed checks."""
    import numpy as np
    import onnx

    x = make_input(batch)
    modes = [
        m for m, skip in (("infer", False), ("explain", args.skip_onnxcam), ("gradcam", args.skip_gradcam)) if not skip
    ]
    rec = {"model": name, "batch": batch, "repeats": args.repeats_for(batch), "warmup": args.warmup, "setup_s": {}}
    calls, handles = {}, {}
    for mode in modes:
        t0 = time.perf_counter()
        calls[mode], handles[mode] = one_side(mode, name, path, x, args.threads, args.layer)
        rec["setup_s"][mode] = time.perf_counter() - t0
    log(f"{name} b{batch}: {args.warmup} + {rec['repeats']} interleaved rounds of {', '.join(calls)}")
    rec["loadavg_before"] = os.getloadavg()
    wall, cpu = interleave(calls, rec["repeats"], args.gap_ms, args.warmup)
    rec["loadavg_after"] = os.getloadavg()
    rec["timings"] = {n: summarize(t) for n, t in wall.items()}
    # process CPU time (all threads): less sensitive to other load, inflated by spin-waiting thread pools
    rec["cpu_timings"] = {n: summarize(t) for n, t in cpu.items()}

    qn = torch_layer(torch_model(name), name)[0]
    rec.update(torch_layer=qn, expected_onnx_tensor=expected_onnx_tensor(path, qn))
    y = calls["infer"]()
    if "explain" in calls:
        ex, res = handles["explain"], calls["explain"]()
        rec["onnxcam"] = {
            "layer": ex.layer,
            "providers": ex.providers_in_use,
            "intra_op_num_threads": ex.session.get_session_options().intra_op_num_threads,
            "model_nodes": len(onnx.load(str(path), load_external_data=False).graph.node),
            "explainer_nodes": len(ex.explainer_model.graph.node),
        }
        rec["layer_matches_torch"] = ex.layer == rec["expected_onnx_tensor"]
        rec["targets"] = {"onnxcam": np.asarray(res.targets).tolist(), "ort_top1": y.argmax(-1).tolist()}
        if res.outputs:
            rec["explain_outputs_max_abs_diff_vs_ort"] = float(np.max(np.abs(next(iter(res.outputs.values())) - y)))
        if "gradcam" in calls:
            rec["cam_pearson_vs_gradcam"] = [pearson(a, b) for a, b in zip(res.cam, calls["gradcam"]())]
        if args.profile:
            log(f"{name} b{batch}: onnxruntime profiles (model and explainer graph)")
            rec["profile"] = profile_pair(path, ex, batch, args.threads, args.profile_runs, args.profile)
    if "gradcam" in handles:
        handles["gradcam"].activations_and_grads.release()  # its hooks on the torch model
    return rec


def methods(path: Path, batch: int, args) -> list[dict]:
    """Every ``method=``, interleaved with plain inference on the same batch: median ms of each."""
    import onnxcam
    from onnxcam.methods import method_spec

    x = make_input(batch)
    infer, _ = one_side("infer", "", path, x, args.threads)
    rows = []
    for method in onnxcam.ALL_METHODS:
        perturbation = method_spec(method).kind == "perturbation"  # a pass per channel: reported as throughput
        ex = explainer(path, args.threads, args.layer, method=method, perturbation_batch=args.perturbation_batch)
        ex.explain(x)  # first-call costs (sessions, tails) outside the timing
        rounds = args.perturbation_repeats if perturbation else args.repeats_for(batch)
        wall, _ = interleave({"infer": infer, "explain": lambda ex=ex: ex.explain(x)}, rounds, args.gap_ms)
        med = {n: statistics.median(t) * 1e3 for n, t in wall.items()}
        row = {
            "method": method,
            "kind": "perturbation" if perturbation else "graph",
            "runs": rounds,
            "infer_ms": med["infer"],
            "explain_ms": med["explain"],
        }
        if perturbation:
            row["channels"] = next(c for c in ex.candidates if c.name == ex.layer).channels
        rows.append(row)
        log(f"methods: {method} {row['explain_ms']:.1f} ms ({row['explain_ms'] / row['infer_ms']:.2f}x inference)")
    return rows


def profiled_nodes(profile_file: str, warm: int) -> tuple[list[dict], dict[str, tuple[str, list[float]]]]:
    """An onnxruntime profile after ``warm`` runs: (its model_run events, per node (op, kernel µs of each run))."""
    events = json.loads(Path(profile_file).read_text())
    model_runs = [e for e in events if e.get("name") == "model_run"][warm:]
    per_node: dict[str, tuple[str, list[float]]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= model_runs[0]["ts"]:
            per_node.setdefault(e["name"], (e["args"].get("op_name"), []))[1].append(e["dur"])
    return model_runs, per_node


def onnxcam_nodes(profile_file: str, warm: int, top: int = 20) -> dict:
    """The explainer graph's own nodes (named ``onnxcam/...``, the gradient tail and the CAM head, fused ones
    included) in its profile: their count, summed median kernel ms, and the ``top`` slowest with output shapes."""
    _, per_node = profiled_nodes(profile_file, warm)
    events = json.loads(Path(profile_file).read_text())
    shapes = {e["name"]: e["args"].get("output_type_shape") for e in events if e.get("cat") == "Node"}
    ours = {n: (op, statistics.median(d) / 1e3) for n, (op, d) in per_node.items() if n.startswith("onnxcam/")}
    slowest = sorted(ours.items(), key=lambda kv: -kv[1][1])[:top]
    return {
        "onnxcam_nodes": len(ours),
        "onnxcam_nodes_ms": sum(ms for _, ms in ours.values()),
        "onnxcam_top_nodes": [
            {"ms": ms, "op": op, "node": n.removesuffix("_kernel_time"), "output": shapes.get(n)}
            for n, (op, ms) in slowest
        ],
    }


def profile_pair(path: Path, ex, batch: int, threads: int, runs: int, out_dir: Path) -> dict:
    """onnxruntime profiles of the model and of ``ex.explainer_model`` under the same session options.

    Per node the median kernel time over the runs (robust to preemption on a shared machine), summed per op.
    """
    import numpy as np

    x, res, warm = make_input(batch), {}, 3
    out_dir.mkdir(parents=True, exist_ok=True)
    for tag, src in (("infer", path), ("explain", ex.explainer_model.SerializeToString())):
        sess = ort_session(src, threads, profile_prefix=str(out_dir / f"{path.stem}_b{batch}_{tag}"))
        # the explainer graph's integer input is its target: -1 = top-1
        feeds = {i.name: x if "float" in i.type else np.full((batch,), -1, np.int64) for i in sess.get_inputs()}
        for _ in range(warm + runs):
            sess.run(None, feeds)
        profile_file = sess.end_profiling()
        model_runs, per_node = profiled_nodes(profile_file, warm)
        ms_by_op: dict[str, float] = {}
        count_by_op: dict[str, int] = {}
        for op, durs in per_node.values():
            ms_by_op[op] = ms_by_op.get(op, 0.0) + statistics.median(durs) / 1e3
            count_by_op[op] = count_by_op.get(op, 0) + 1
        res[tag] = {
            "profile_file": profile_file,
            "nodes_executed": len(per_node),
            "median_model_run_ms": statistics.median(e["dur"] for e in model_runs) / 1e3,
            "sum_node_median_ms": sum(ms_by_op.values()),
            "ms_by_op": ms_by_op,
            "count_by_op": count_by_op,
            "top_nodes_ms": sorted(
                ((statistics.median(d) / 1e3, op, n) for n, (op, d) in per_node.items()), reverse=True
            )[:15],
        }
        if tag == "explain":
            res[tag].update(onnxcam_nodes(profile_file, warm))
    i, e = res["infer"], res["explain"]
    res["extra_ms_by_op"] = sorted(
        (
            (
                e["ms_by_op"].get(o, 0.0) - i["ms_by_op"].get(o, 0.0),
                o,
                i["count_by_op"].get(o, 0),
                e["count_by_op"].get(o, 0),
            )
            for o in set(i["ms_by_op"]) | set(e["ms_by_op"])
        ),
        reverse=True,
    )
    return res

#!/usr/bin/env python
"""Benchmark onnxcam against plain ONNX Runtime inference and pytorch-grad-cam.

This is a benchmark, not a test: it measures and reports, it never asserts.

For every (model, batch) pair it measures, side by side, in one process, on the
same input and with the same thread count:

1. ``infer``   -- plain ``onnxruntime.InferenceSession.run`` on the exported
                  .onnx (CPUExecutionProvider, ``intra_op_num_threads=T``);
2. ``explain`` -- ``onnxcam.Explainer(path, layer="auto").explain(x)``;
3. ``gradcam`` -- pytorch-grad-cam ``GradCAM`` on the same torch model (same
                  seeded random weights), ``ClassifierOutputTarget(top-1)``,
                  ``torch.set_num_threads(T)``.

The three are interleaved round-robin (rotating the order every round, with a
short untimed pause between calls so that spinning thread pools of one runtime
do not steal cores from the next), so machine noise hits all three equally.

Peak memory is measured separately, one fresh subprocess per measurement
(``--memory-child MODE MODEL BATCH``): the child imports the same modules in
every mode, records the RSS right after the imports (baseline), builds the
session/explainer, runs it a few times and reports ``ru_maxrss`` and the peak
minus the baseline.

Example::

    python tools/bench.py                       # full run, markdown tables
    python tools/bench.py --models resnet50 --batches 1 --repeats 5 --json out.json

Models are torchvision classifiers with random weights (``weights=None``,
seeded), exported once with ``torch.onnx.export(dynamo=False, opset 17,
dynamic batch)`` into ``--cache-dir`` (default ``<repo>/.bench_cache``) and
reused afterwards.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".bench_cache"

H = W = 224
SEED = 0
OPSET = 17

# torch module path of the last-stage layer pytorch-grad-cam explains, per model
MODELS = {
    "resnet50": "layer4.-1",
    "mobilenet_v3_large": "features.-1",
}

BARS = {
    "explain_over_infer_max": 1.10,
    "gradcam_over_explain_min": 5.0,
    "memory_ratio_max": 1.30,
}


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_now_kib() -> int:
    """Current resident set size of this process in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def proc_status_kib(key: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM, ...) in KiB (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def maxrss_kib() -> int:
    # On Linux ru_maxrss is in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def make_input(batch: int):
    import numpy as np

    rng = np.random.default_rng(SEED)
    return rng.standard_normal((batch, 3, H, W), dtype=np.float32)


def pct(values, q):
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarize(times_s):
    ms = [t * 1e3 for t in times_s]
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p10_ms": pct(ms, 10),
        "p90_ms": pct(ms, 90),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "all_ms": ms,
    }


def onnx_path(cache_dir: Path, model_name: str) -> Path:
    return cache_dir / f"{model_name}_opset{OPSET}.onnx"


def ort_session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads  # everything else: ORT defaults (as onnxcam's session)
    return so


# --------------------------------------------------------------------------
# torch side: models, export, pytorch-grad-cam
# --------------------------------------------------------------------------

def build_torch_model(name: str):
    import torch
    import torchvision

    torch.manual_seed(SEED)
    model = getattr(torchvision.models, name)(weights=None)
    return model.eval()


def resolve_module(model, path: str):
    mod = model
    for part in path.split("."):
        if part.lstrip("-").isdigit():
            mod = mod[int(part)]
        else:
            mod = getattr(mod, part)
    return mod


def module_qualname(model, target) -> str:
    for qn, m in model.named_modules():
        if m is target:
            return qn
    raise KeyError("module not found")


def export_onnx(model, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    os.replace(tmp, path)


def check_export(model, path: Path, threads: int) -> float:
    """Relative max abs difference between torch and ORT logits."""
    import numpy as np
    import onnxruntime as ort
    import torch

    x = make_input(2)
    sess = ort.InferenceSession(str(path), ort_session_options(threads),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return float(np.max(np.abs(got - ref)) / max(1e-12, float(np.max(np.abs(ref)))))


def ensure_model(name: str, cache_dir: Path, threads: int):
    """Torch model + path of its (cached) ONNX export with the same weights."""
    model = build_torch_model(name)
    path = onnx_path(cache_dir, name)
    if path.exists():
        rel = check_export(model, path, threads)
        if rel < 1e-3:
            log(f"{name}: reusing {path} (torch/ORT rel. diff {rel:.1e})")
            return model, path, rel
        log(f"{name}: cached export disagrees with torch (rel {rel:.1e}); re-exporting")
    log(f"{name}: exporting to {path}")
    export_onnx(model, path)
    rel = check_export(model, path, threads)
    log(f"{name}: exported (torch/ORT rel. diff {rel:.1e})")
    return model, path, rel


def expected_onnx_tensor(onnx_file: Path, module_qn: str):
    """The tensor the TorchScript exporter produced as the output of `module_qn`.

    The exporter names nodes by module scope, e.g. ``/layer4/layer4.2/relu_2/Relu``;
    the module output is the first output of the last node in that scope.
    """
    import onnx

    parts = module_qn.split(".")
    prefix = "/" + "/".join(".".join(parts[: i + 1]) for i in range(len(parts))) + "/"
    m = onnx.load(str(onnx_file), load_external_data=False)
    last = None
    for node in m.graph.node:
        if node.name.startswith(prefix):
            last = node
    return (last.output[0] if last is not None else None), prefix


# --------------------------------------------------------------------------
# onnxcam side
# --------------------------------------------------------------------------

def onnxcam_available():
    try:
        import onnxcam  # noqa: F401

        onnxcam.Explainer  # noqa: B018
        return True, None
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__}: {e}"


def make_explainer(path: Path, threads: int, layer: str = "auto", probe: bool = True):
    """Build the Explainer with the same thread count as plain ORT, if it has a knob.

    Returns (explainer, info) where info says which knob was used.
    """
    import onnxcam

    try:
        params = inspect.signature(onnxcam.Explainer).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = dict(layer=layer, method="gradcam", providers=["CPUExecutionProvider"])
    info = {"explainer_params": list(params)}
    if "threads" in params:
        kwargs["threads"] = threads
        info["thread_knob"] = "threads"
    elif "session_options" in params:
        kwargs["session_options"] = ort_session_options(threads)
        info["thread_knob"] = "session_options"
    elif "sess_options" in params:
        kwargs["sess_options"] = ort_session_options(threads)
        info["thread_knob"] = "sess_options"
    else:
        info["thread_knob"] = None
    if params and not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
        dropped = [k for k in kwargs if k not in params]
        kwargs = {k: v for k, v in kwargs.items() if k in params}
        if dropped:
            info["dropped_kwargs"] = dropped
    t0 = time.perf_counter()
    ex = onnxcam.Explainer(str(path), **kwargs)
    info["setup_s"] = time.perf_counter() - t0
    info["layer"] = getattr(ex, "layer", None)
    if not probe:
        return ex, info
    # What thread count did its session actually get?
    sess = getattr(ex, "session", None)
    if sess is not None:
        try:
            so = sess.get_session_options()
            info["session_intra_op_num_threads"] = so.intra_op_num_threads
            info["session_graph_optimization_level"] = str(so.graph_optimization_level)
        except Exception as e:  # noqa: BLE001
            info["session_options_error"] = repr(e)
        try:
            info["session_providers"] = sess.get_providers()
        except Exception:  # noqa: BLE001
            pass
    info["augmented_nodes"] = count_augmented_nodes(ex)
    try:
        import onnx

        info["original_nodes"] = len(onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:  # noqa: BLE001
        pass
    return ex, info


def count_augmented_nodes(ex):
    """Node count of the model the explainer runs, if it exposes a ModelProto."""
    try:
        import onnx
    except ImportError:
        return None
    seen = {}
    for attr in dir(ex):
        if attr.startswith("__"):
            continue
        try:
            v = getattr(ex, attr)
        except Exception:  # noqa: BLE001
            continue
        if isinstance(v, onnx.ModelProto):
            seen[attr] = len(v.graph.node)
    return seen or None


def result_outputs_first(res):
    outs = getattr(res, "outputs", None)
    if outs is None:
        return None
    if isinstance(outs, dict):
        outs = list(outs.values())
    if isinstance(outs, (list, tuple)):
        return outs[0] if outs else None
    return outs


# --------------------------------------------------------------------------
# memory child
# --------------------------------------------------------------------------

def memory_child(mode: str, model_name: str, batch: int, threads: int, runs: int,
                 cache_dir: Path) -> dict:
    """Runs in a fresh process. Imports the same things for every mode."""
    import numpy as np  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime as ort

    if mode in ("infer", "explain"):
        try:
            import onnxcam  # noqa: F401  (imported in both modes: same baseline)
        except Exception:  # noqa: BLE001
            if mode == "explain":
                raise
    if mode == "gradcam":
        import torch
        import torchvision  # noqa: F401
        from pytorch_grad_cam import GradCAM  # noqa: F401

        torch.set_num_threads(threads)

    x = make_input(batch)
    baseline = rss_now_kib()
    maxrss_after_imports = maxrss_kib()
    hwm_after_imports = proc_status_kib("VmHWM")
    path = onnx_path(cache_dir, model_name)
    t0 = time.perf_counter()
    phases = []
    can_reset = os.access("/proc/self/clear_refs", os.W_OK)

    def mark(label):
        phases.append({"phase": label, "rss_kib": rss_now_kib(), "hwm_kib": proc_status_kib("VmHWM")})

    def reset_hwm():
        # Reset VmHWM to the current RSS so the next phase's peak is measured alone.
        if can_reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    if mode == "infer":
        sess = ort.InferenceSession(str(path), ort_session_options(threads),
                                    providers=["CPUExecutionProvider"])
        mark("session_created")
        reset_hwm()
        name = sess.get_inputs()[0].name
        for _ in range(runs):
            sess.run(None, {name: x})
        mark("runs_done")
    elif mode == "explain":
        ex, _ = make_explainer(path, threads, probe=False)
        mark("explainer_constructed")
        if hasattr(type(ex), "session") or hasattr(ex, "session"):
            try:
                ex.session  # noqa: B018  (sessions may be created lazily)
            except Exception:  # noqa: BLE001
                pass
            mark("session_created")
        reset_hwm()
        for _ in range(runs):
            ex.explain(x)
        mark("runs_done")
    elif mode == "gradcam":
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        model = build_torch_model(model_name)
        layer = resolve_module(model, MODELS[model_name])
        xt = torch.from_numpy(x)
        with torch.no_grad():
            top1 = model(xt).argmax(-1).tolist()
        cam = GradCAM(model=model, target_layers=[layer])
        for _ in range(runs):
            cam(input_tensor=xt, targets=[ClassifierOutputTarget(c) for c in top1])
        mark("runs_done")
    else:
        raise SystemExit(f"unknown memory-child mode {mode!r}")
    ru_peak = maxrss_kib()
    # VmHWM is the high-water mark of this process's own address space. ru_maxrss
    # can inherit the *parent's* high-water mark across fork/exec on Linux, so it is
    # only trusted when it did not already exceed VmHWM right after the imports.
    hwm = proc_status_kib("VmHWM")
    ru_clean = maxrss_after_imports <= hwm_after_imports + 16 * 1024
    # VmHWM may have been reset after setup: overall peak = max over phases.
    peak = max([hwm] + [ph["hwm_kib"] for ph in phases]) if hwm > 0 else ru_peak
    setup_phases = [ph for ph in phases if ph["phase"] != "runs_done"]
    setup_peak = max((ph["hwm_kib"] for ph in setup_phases), default=None)
    run_peak = hwm if (can_reset and setup_phases) else None
    return {
        "mode": mode,
        "model": model_name,
        "batch": batch,
        "runs": runs,
        "baseline_rss_kib": baseline,
        "maxrss_after_imports_kib": maxrss_after_imports,
        "vmhwm_after_imports_kib": hwm_after_imports,
        "ru_maxrss_kib": ru_peak,
        "ru_maxrss_clean": ru_clean,
        "vmhwm_kib": hwm,
        "phases": phases,
        "setup_peak_kib": setup_peak,
        "run_peak_kib": run_peak,
        "rss_after_setup_kib": setup_phases[-1]["rss_kib"] if setup_phases else None,
        "peak_rss_kib": peak,
        "peak_minus_baseline_kib": peak - baseline,
        "rss_end_kib": rss_now_kib(),
        "elapsed_s": time.perf_counter() - t0,
    }


def latency_child(mode: str, model_name: str, batch: int, threads: int, calls: int, cache_dir: Path,
                  idle_ms: float = 0.0) -> dict:
    """Runs in a fresh process: ``calls`` timed calls of one side only, after 10 untimed ones.

    ``idle_ms`` > 0 sleeps that long (untimed) before each timed call: a server
    with sporadic requests, whose caches and thread pool have gone cold, instead
    of one under sustained load (back-to-back calls).

    One onnxruntime thread pool per process, as in a deployment. In the
    interleaved measurement both sessions live in one process, and the pool
    that just ran keeps spinning while the other one starts; the penalty falls
    unevenly on the two and is largest where a call lasts a few milliseconds.
    """
    import onnxruntime as ort

    x = make_input(batch)
    path = onnx_path(cache_dir, model_name)
    if mode == "infer":
        sess = ort.InferenceSession(str(path), ort_session_options(threads), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def call():
            sess.run(None, {name: x})
    elif mode == "explain":
        ex, _ = make_explainer(path, threads, probe=False)

        def call():
            ex.explain(x)
    else:
        raise SystemExit(f"unknown latency-child mode {mode!r}")
    for _ in range(10):
        call()
    times = []
    for _ in range(calls):
        if idle_ms:
            time.sleep(idle_ms / 1e3)
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"mode": mode, "model": model_name, "batch": batch, "calls": calls, "idle_ms": idle_ms,
            **summarize(times)}


def solo_latency(model_name: str, batch: int, args, idle_ms: float = 0.0) -> dict:
    """``--solo-rounds`` alternations of fresh infer and explain processes; the median of their medians."""
    calls = (200 if batch == 1 else 40) // (2 if idle_ms else 1)
    medians: dict[str, list[float]] = {"infer": [], "explain": []}
    for r in range(args.solo_rounds):
        for mode in (medians if r % 2 == 0 else list(medians)[::-1]):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--latency-child", mode, model_name, str(batch),
                   "--threads", str(args.threads), "--cache-dir", str(args.cache_dir), "--solo-calls", str(calls),
                   "--solo-idle-ms", str(idle_ms)]
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
            line = next((ln for ln in reversed(p.stdout.strip().splitlines()) if ln.startswith("{")), None)
            if p.returncode != 0 or line is None:
                return {"model": model_name, "batch": batch, "error": (p.stderr or p.stdout).strip()[-300:]}
            medians[mode].append(json.loads(line)["median_ms"])
    infer, explain = statistics.median(medians["infer"]), statistics.median(medians["explain"])
    return {"model": model_name, "batch": batch, "rounds": args.solo_rounds, "calls": calls, "idle_ms": idle_ms,
            "infer_ms": infer, "explain_ms": explain, "explain_over_infer": explain / infer, "medians": medians}


def export_missing(args) -> None:
    """Export the models not yet cached, in a subprocess (this process must not import torch before the children)."""
    if any(not onnx_path(args.cache_dir, m).exists() for m in args.models):
        log("exporting models (subprocess)")
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--export-only",
                        "--models", ",".join(args.models), "--threads", str(args.threads),
                        "--cache-dir", str(args.cache_dir)], check=True, cwd=str(REPO))


def run_memory_child(mode, model_name, batch, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", mode, model_name,
           str(batch), "--threads", str(args.threads), "--memory-runs", str(args.memory_runs),
           "--cache-dir", str(args.cache_dir)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
    if p.returncode != 0:
        tail = (p.stderr or "").strip().splitlines()[-15:]
        return {"mode": mode, "error": f"child exited {p.returncode}", "stderr_tail": tail}
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"mode": mode, "error": "no JSON from child", "stdout": p.stdout[-2000:]}


# --------------------------------------------------------------------------
# latency benchmark
# --------------------------------------------------------------------------

def bench_config(model_name, batch, model, path, args, have_onnxcam):
    import numpy as np
    import onnxruntime as ort

    rec = {"model": model_name, "batch": batch}
    repeats = args.repeats_for(batch)
    rec["repeats"] = repeats
    rec["warmup"] = args.warmup
    x = make_input(batch)
    calls = {}

    # 1. plain ORT
    sess = ort.InferenceSession(str(path), ort_session_options(args.threads),
                                providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    ort_out = {}

    def do_infer():
        ort_out["y"] = sess.run(None, {in_name: x})[0]

    calls["infer"] = do_infer

    # 2. onnxcam
    expl = {}
    if have_onnxcam:
        try:
            ex, info = make_explainer(path, args.threads, layer=args.layer)
            rec["onnxcam"] = info
            log(f"{model_name} b{batch}: onnxcam picked layer {info.get('layer')!r}, "
                f"thread knob={info.get('thread_knob')}, setup {info['setup_s']:.2f}s")

            def do_explain():
                expl["res"] = ex.explain(x)

            do_explain()  # first call outside timing; surfaces errors early
            calls["explain"] = do_explain
        except Exception as e:  # noqa: BLE001
            rec["onnxcam_error"] = f"{type(e).__name__}: {e}"
            rec["onnxcam_traceback"] = traceback.format_exc()
            log(f"{model_name} b{batch}: onnxcam FAILED: {rec['onnxcam_error']}")
    else:
        rec["onnxcam_error"] = "onnxcam not importable"

    # 3. pytorch-grad-cam
    gc = {}
    if not args.skip_gradcam:
        import torch
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        layer_mod = resolve_module(model, MODELS[model_name])
        rec["gradcam_layer"] = module_qualname(model, layer_mod)
        xt = torch.from_numpy(x.copy())
        with torch.no_grad():
            top1 = model(xt).argmax(-1).tolist()  # targets chosen outside the timed call
        cam = GradCAM(model=model, target_layers=[layer_mod])
        targets = [ClassifierOutputTarget(c) for c in top1]
        rec["gradcam_targets"] = top1
        gc["cam_obj"] = cam

        def do_gradcam():
            gc["cam"] = cam(input_tensor=xt, targets=targets)

        calls["gradcam"] = do_gradcam

    names = list(calls)
    log(f"{model_name} b{batch}: warm-up x{args.warmup} of {names}")
    for _ in range(args.warmup):
        for n in names:
            calls[n]()
            time.sleep(args.gap_ms / 1e3)

    times = {n: [] for n in names}
    cpu_times = {n: [] for n in names}
    log(f"{model_name} b{batch}: {repeats} interleaved rounds")
    load_before = os.getloadavg()
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            c0 = time.process_time()
            t0 = time.perf_counter()
            calls[n]()
            times[n].append(time.perf_counter() - t0)
            cpu_times[n].append(time.process_time() - c0)
            time.sleep(args.gap_ms / 1e3)
    rec["loadavg_before"] = load_before
    rec["loadavg_after"] = os.getloadavg()
    rec["timings"] = {n: summarize(ts) for n, ts in times.items()}
    # CPU time of this process (all threads) per call: less sensitive to other
    # processes on a shared machine, but inflated by spin-waiting thread pools.
    rec["cpu_timings"] = {n: summarize(ts) for n, ts in cpu_times.items()}

    # ratios
    med = {n: rec["timings"][n]["median_ms"] for n in names}
    if "explain" in med:
        rec["explain_over_infer"] = med["explain"] / med["infer"]
        if "gradcam" in med:
            rec["gradcam_over_explain"] = med["gradcam"] / med["explain"]
    if "gradcam" in med:
        rec["gradcam_over_infer"] = med["gradcam"] / med["infer"]

    # sanity checks (not timed)
    module_qn = rec.get("gradcam_layer") or module_qualname(model, resolve_module(model, MODELS[model_name]))
    expected, prefix = expected_onnx_tensor(path, module_qn)
    rec["torch_layer"] = module_qn
    rec["expected_onnx_tensor"] = expected
    if "res" in expl:
        res = expl["res"]
        chosen = rec["onnxcam"].get("layer")
        rec["layer_matches_torch"] = chosen == expected
        try:
            y = result_outputs_first(res)
            if y is not None:
                y = np.asarray(y)
                rec["explain_outputs_max_abs_diff_vs_ort"] = float(np.max(np.abs(y - ort_out["y"])))
        except Exception as e:  # noqa: BLE001
            rec["explain_outputs_check_error"] = repr(e)
        try:
            rec["onnxcam_targets"] = np.asarray(res.targets).tolist()
        except Exception:  # noqa: BLE001
            pass
        try:
            c = np.asarray(res.cam, dtype=np.float64)
            rec["onnxcam_cam_shape"] = list(c.shape)
            if "cam" in gc and c.shape == gc["cam"].shape:
                g = np.asarray(gc["cam"], dtype=np.float64)
                cors = []
                for i in range(c.shape[0]):
                    a, b = c[i].ravel(), g[i].ravel()
                    if a.std() > 0 and b.std() > 0:
                        cors.append(float(np.corrcoef(a, b)[0, 1]))
                    else:
                        cors.append(None)
                rec["cam_pearson_vs_gradcam"] = cors
        except Exception as e:  # noqa: BLE001
            rec["cam_compare_error"] = repr(e)
    if "cam_obj" in gc:
        # GradCAM registers forward hooks on the shared torch model; remove them so the
        # next batch size does not run two sets of hooks.
        gc["cam_obj"].activations_and_grads.release()
    if args.profile and "res" in expl:
        log(f"{model_name} b{batch}: ORT profiling (infer vs explainer graph)")
        try:
            rec["profile"] = profile_pair(path, ex, batch, args.threads, args.profile_runs, args.profile)
        except Exception as e:  # noqa: BLE001
            rec["profile"] = {"error": f"{type(e).__name__}: {e}"}
    return rec


# --------------------------------------------------------------------------
# ORT profiling of plain vs explainer graph (--profile)
# --------------------------------------------------------------------------

def profile_pair(path: Path, ex, batch: int, threads: int, runs: int, out_dir: Path) -> dict:
    """ORT-profile the original model and onnxcam's explainer graph with identical options.

    onnxcam does not take SessionOptions, so its graph (``ex.explainer_model``) is
    loaded into a second session built here with the same options + profiling.
    Per node the *median* kernel time over the runs is used (robust to preemption
    on a shared machine), then summed per op type.
    """
    import numpy as np
    import onnxruntime as ort

    x = make_input(batch)
    em = getattr(ex, "explainer_model", None)
    if em is None:
        return {"error": "Explainer exposes no explainer_model"}
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {}
    warm = 3
    for tag, src in (("infer", str(path)), ("explain", em.SerializeToString())):
        so = ort_session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(out_dir / f"{path.stem}_b{batch}_{tag}")
        sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        feeds = {}
        for i in sess.get_inputs():
            if "float" in i.type:
                feeds[i.name] = x
            else:  # onnxcam's target input: -1 = top-1
                feeds[i.name] = np.full((batch,), -1, dtype=np.int64)
        for _ in range(warm + runs):
            sess.run(None, feeds)
        prof_file = sess.end_profiling()
        ev = json.loads(Path(prof_file).read_text())
        model_runs = [e for e in ev if e.get("name") == "model_run"]
        cut = model_runs[warm]["ts"] if len(model_runs) > warm else 0
        per_node = {}
        for e in ev:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= cut:
                per_node.setdefault(e["name"], (e["args"].get("op_name"), []))[1].append(e["dur"])
        by_op, n_by_op = {}, {}
        for op, durs in per_node.values():
            by_op[op] = by_op.get(op, 0.0) + statistics.median(durs) / 1e3
            n_by_op[op] = n_by_op.get(op, 0) + 1
        res[tag] = {
            "profile_file": prof_file,
            "nodes_executed": len(per_node),
            "median_model_run_ms": statistics.median(e["dur"] for e in model_runs[warm:]) / 1e3,
            "sum_node_median_ms": sum(by_op.values()),
            "ms_by_op": by_op,
            "count_by_op": n_by_op,
            "top_nodes_ms": sorted(((statistics.median(d) / 1e3, op, n) for n, (op, d) in per_node.items()),
                                   reverse=True)[:15],
        }
    ops = set(res["infer"]["ms_by_op"]) | set(res["explain"]["ms_by_op"])
    diff = sorted(((res["explain"]["ms_by_op"].get(o, 0.0) - res["infer"]["ms_by_op"].get(o, 0.0), o,
                    res["infer"]["count_by_op"].get(o, 0), res["explain"]["count_by_op"].get(o, 0)) for o in ops),
                  reverse=True)
    res["extra_ms_by_op"] = diff
    return res


def render_profile(model_name, batch, prof) -> str:
    if "error" in prof:
        return f"profile {model_name} b{batch}: {prof['error']}"
    i, e = prof["infer"], prof["explain"]
    out = [f"ORT profile {model_name} b{batch} (sum of per-node median kernel ms): "
           f"infer {i['sum_node_median_ms']:.2f} ms over {i['nodes_executed']} kernels, "
           f"explain {e['sum_node_median_ms']:.2f} ms over {e['nodes_executed']} kernels "
           f"(median model_run {i['median_model_run_ms']:.1f} vs {e['median_model_run_ms']:.1f} ms)", "",
           "| op | extra ms | kernels infer → explain |", "|---|---|---|"]
    for d, op, ni, ne in prof["extra_ms_by_op"]:
        if abs(d) >= 0.01 or ni != ne:
            out.append(f"| {op} | {d:+.2f} | {ni} → {ne} |")
    return "\n".join(out)


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------

def fmt_t(t):
    if not t:
        return "n/a"
    return f"{t['median_ms']:.1f} ({t['p10_ms']:.1f}–{t['p90_ms']:.1f})"


def verdict(ok):
    return "PASS" if ok else "**FAIL**"


def render(results: dict) -> str:
    lines = []
    meta = results["meta"]
    g = meta.get("git") or {}
    lines.append(f"### onnxcam benchmark — {meta['cpu']} ({meta['nproc']} CPUs), "
                 f"threads={meta['threads']}, OMP_WAIT_POLICY={meta.get('OMP_WAIT_POLICY')}, git {g.get('head')}"
                 f"{' (onnxcam dirty)' if g.get('onnxcam_dirty') else ''}")
    lines.append("")
    if results["latency"]:
        lines.append("Latency: median ms per call (p10–p90), interleaved round-robin.")
        lines.append("")
        lines.append("| model | batch | n | ORT infer | onnxcam explain | pytorch-grad-cam | "
                     "explain/infer (≤1.10) | grad-cam/explain (≥5) | explain/infer, min-based |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in results["latency"]:
            t = r.get("timings", {})
            ei = r.get("explain_over_infer")
            ge = r.get("gradcam_over_explain")
            ei_s = (f"{ei:.2f} {verdict(ei <= BARS['explain_over_infer_max'])}" if ei else
                    ("error" if r.get("onnxcam_error") else "n/a"))
            ge_s = (f"{ge:.1f} {verdict(ge >= BARS['gradcam_over_explain_min'])}" if ge else "n/a")
            mn = (f"{t['explain']['min_ms'] / t['infer']['min_ms']:.2f} "
                  f"({t['infer']['min_ms']:.1f} vs {t['explain']['min_ms']:.1f})" if "explain" in t else "n/a")
            lines.append(f"| {r['model']} | {r['batch']} | {r.get('repeats')} | {fmt_t(t.get('infer'))} | "
                         f"{fmt_t(t.get('explain'))} | {fmt_t(t.get('gradcam'))} | {ei_s} | {ge_s} | {mn} |")
        lines.append("")
    if results.get("solo"):
        lines.append("Latency, each side alone in a fresh process (one thread pool per process, as deployed; "
                     "median over alternated processes of each process's median ms). Idle 0: back-to-back calls "
                     "(sustained load); idle 30: 30 ms of sleep before each call (sporadic requests: caches and "
                     "the thread pool have gone cold):")
        lines.append("")
        lines.append("| model | batch | idle ms | processes × calls | ORT infer | onnxcam explain | "
                     "explain/infer (≤1.10) |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in results["solo"]:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['batch']} | {r.get('idle_ms', 0):g} | error: {r['error']} | | | |")
                continue
            ei = r["explain_over_infer"]
            lines.append(f"| {r['model']} | {r['batch']} | {r.get('idle_ms', 0):g} | {r['rounds']} × {r['calls']} | "
                         f"{r['infer_ms']:.2f} | {r['explain_ms']:.2f} | "
                         f"{ei:.2f} {verdict(ei <= BARS['explain_over_infer_max'])} |")
        lines.append("")
    if results["latency"]:
        lines.append("CPU time of this process per call (all threads; median ms) — less sensitive to other "
                     "load on a shared machine, inflated by spin-waiting thread pools:")
        lines.append("")
        lines.append("| model | batch | ORT infer | onnxcam explain | pytorch-grad-cam | explain/infer | "
                     "grad-cam/explain | load avg (1 min) before→after |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in results["latency"]:
            c = r.get("cpu_timings", {})
            med = {k: v["median_ms"] for k, v in c.items()}
            ei = f"{med['explain'] / med['infer']:.2f}" if "explain" in med and med.get("infer") else "n/a"
            ge = f"{med['gradcam'] / med['explain']:.1f}" if "explain" in med and "gradcam" in med else "n/a"
            la = (f"{r['loadavg_before'][0]:.1f}→{r['loadavg_after'][0]:.1f}"
                  if "loadavg_before" in r else "n/a")
            lines.append(f"| {r['model']} | {r['batch']} | "
                         + " | ".join(f"{med[k]:.1f}" if k in med else "n/a" for k in ("infer", "explain", "gradcam"))
                         + f" | {ei} | {ge} | {la} |")
        lines.append("")
        lines.append("Layers:")
        lines.append("")
        lines.append("| model | batch | torch layer (grad-cam) | expected ONNX tensor | onnxcam \"auto\" | match | "
                     "graph nodes orig → explainer | explain setup s | CAM corr. vs grad-cam |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in results["latency"]:
            oc = r.get("onnxcam", {})
            cors = r.get("cam_pearson_vs_gradcam")
            cor_s = ("n/a" if not cors else
                     ", ".join("nan" if c is None else f"{c:.3f}" for c in cors[:8]))
            setup = f"{oc['setup_s']:.2f}" if "setup_s" in oc else "n/a"
            aug = oc.get("augmented_nodes") or {}
            nodes = (f"{oc.get('original_nodes', '?')} → {', '.join(str(v) for v in aug.values())}"
                     if aug else "n/a")
            lines.append(f"| {r['model']} | {r['batch']} | {r.get('torch_layer')} | "
                         f"`{r.get('expected_onnx_tensor')}` | `{oc.get('layer', r.get('onnxcam_error', 'n/a'))}` | "
                         f"{r.get('layer_matches_torch', 'n/a')} | "
                         f"{nodes} | {setup} | {cor_s} |")
    if results.get("memory"):
        lines.append("")
        lines.append(f"Peak memory (fresh subprocess each, same imports, setup + {meta['memory_runs']} calls; "
                     "MiB; peak = VmHWM (= ru_maxrss when not inherited); baseline = RSS right after imports; "
                     "Δ = peak − baseline):")
        lines.append("")
        lines.append("| model | batch | infer peak | explain peak | peak ratio (≤1.3) | infer Δ | explain Δ | "
                     "Δ ratio | grad-cam peak / Δ |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for m in results["memory"]:
            inf, exp, gcm = m.get("infer", {}), m.get("explain", {}), m.get("gradcam", {})

            def mib(d, k):
                return f"{d[k] / 1024:.0f}" if k in d else ("err" if "error" in d else "n/a")

            pr = m.get("peak_ratio")
            dr = m.get("delta_ratio")
            pr_s = f"{pr:.2f} {verdict(pr <= BARS['memory_ratio_max'])}" if pr else "n/a"
            dr_s = f"{dr:.2f} {verdict(dr <= BARS['memory_ratio_max'])}" if dr else "n/a"
            gc_s = (f"{mib(gcm, 'peak_rss_kib')} / {mib(gcm, 'peak_minus_baseline_kib')}" if gcm else "n/a")
            lines.append(f"| {m['model']} | {m['batch']} | {mib(inf, 'peak_rss_kib')} | {mib(exp, 'peak_rss_kib')} | "
                         f"{pr_s} | {mib(inf, 'peak_minus_baseline_kib')} | {mib(exp, 'peak_minus_baseline_kib')} | "
                         f"{dr_s} | {gc_s} |")
    for entry in results.get("methods", []):
        from bench_methods import render_methods

        lines += ["", render_methods(entry["model"], entry["batch"], entry["rows"])]
    for r in results["latency"]:
        if r.get("profile"):
            lines.append("")
            lines.append(render_profile(r["model"], r["batch"], r["profile"]))
    notes = results.get("notes") or []
    if notes:
        lines.append("")
        lines.append("Notes:")
        for n in notes:
            lines.append(f"- {n}")
    return "\n".join(lines)


def git_state():
    """Commit and dirty flag of the repository (onnxcam version under test)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=str(REPO),
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "onnxcam"], cwd=str(REPO),
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"head": head or None, "onnxcam_dirty": bool(dirty)}
    except Exception:  # noqa: BLE001
        return None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark onnxcam explain() vs plain ONNX Runtime inference vs pytorch-grad-cam "
                    "(latency, interleaved) and peak memory (fresh subprocesses).")
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated torchvision models (choices: {', '.join(MODELS)})")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--repeats", default=None,
                   help="timed rounds: one int for all batches, or a comma list matching --batches "
                        "(default: 20 for batch 1, 10 otherwise)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up rounds (default 3)")
    p.add_argument("--threads", type=int, default=2,
                   help="thread count for ORT (intra_op), onnxcam and torch (default 2)")
    p.add_argument("--layer", default="auto", help="layer passed to onnxcam.Explainer (default auto)")
    p.add_argument("--skip-gradcam", action="store_true", help="do not run pytorch-grad-cam")
    p.add_argument("--skip-onnxcam", action="store_true", help="do not run onnxcam")
    p.add_argument("--skip-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--skip-latency", action="store_true", help="only run the peak-memory subprocesses")
    p.add_argument("--memory-runs", type=int, default=3,
                   help="calls per memory subprocess after setup (default 3)")
    p.add_argument("--gap-ms", type=float, default=50.0,
                   help="untimed sleep between interleaved calls so the session that just ran stops spinning "
                        "(default 50: an onnxruntime 1.32 worker spins about 26 ms after each run, measured as "
                        "process CPU time during the sleep)")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="OMP_WAIT_POLICY for torch's OpenMP pool, set before torch is imported "
                        "(default PASSIVE: idle OpenMP workers sleep instead of spin-waiting, which on a "
                        "2-core machine otherwise steals the cores from the interleaved ORT runs and makes "
                        "pytorch-grad-cam itself bimodal); 'keep' leaves the environment as it is")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                   help=f"where exported .onnx files are cached (default {DEFAULT_CACHE})")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="also ORT-profile plain vs explainer graph (same options), write traces to DIR "
                        "and print extra kernel time per op type")
    p.add_argument("--profile-runs", type=int, default=20, help="profiled runs per session (default 20)")
    p.add_argument("--json", type=Path, default=None, help="write all results (incl. raw timings) here")
    p.add_argument("--skip-methods", action="store_true",
                   help="skip the per-method rows (each method's cost relative to inference, Score-CAM and "
                        "Ablation-CAM throughput), measured at the first --batches entry")
    p.add_argument("--perturbation-repeats", type=int, default=2,
                   help="timed calls of Score-CAM and Ablation-CAM (default 2: each is one pass per channel)")
    p.add_argument("--perturbation-batch", type=int, default=64,
                   help="masked/ablated copies per session run for Score-CAM and Ablation-CAM (default 64)")
    p.add_argument("--quick", action="store_true",
                   help="a short check that everything runs: mobilenet_v3_large, batch 1, 5 rounds, "
                        "1 warm-up, no memory subprocesses, one timed perturbation call, at most 2 processes "
                        "per side alone")
    p.add_argument("--export-only", action="store_true",
                   help="internal: only export/verify the cached .onnx files, then exit")
    p.add_argument("--solo-rounds", type=int, default=5,
                   help="alternated fresh processes per side for the one-side-per-process latency table "
                        "(default 5; 0 skips it)")
    p.add_argument("--solo-idle", default="0,30", metavar="MS[,MS]",
                   help="idle time before each call of the one-side-per-process rounds, one table row per value "
                        "(default 0,30: back-to-back calls as under sustained load, and calls after 30 ms idle as "
                        "with sporadic requests)")
    p.add_argument("--solo-calls", type=int, default=200, help=argparse.SUPPRESS)
    p.add_argument("--solo-idle-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--latency-child", nargs=3, metavar=("MODE", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    p.add_argument("--memory-child", nargs=3, metavar=("MODE", "MODEL", "BATCH"),
                   help="internal: run one memory measurement (MODE: infer|explain|gradcam) and print JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.repeats, args.warmup = "mobilenet_v3_large", "1", "5", 1
        args.skip_memory, args.perturbation_repeats, args.solo_rounds = True, 1, min(args.solo_rounds, 2)

    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    try:
        args.solo_idle = [float(v) for v in str(args.solo_idle).split(",") if v.strip()]
    except ValueError:
        p.error(f"--solo-idle takes milliseconds separated by commas, not {args.solo_idle!r}")
    if any(v < 0 for v in args.solo_idle):
        p.error("--solo-idle values must be >= 0 ms")
    if args.repeats is None:
        rep = {b: (20 if b == 1 else 10) for b in args.batches}
    else:
        vals = [int(v) for v in str(args.repeats).split(",") if v.strip()]
        if len(vals) == 1:
            rep = {b: vals[0] for b in args.batches}
        elif len(vals) == len(args.batches):
            rep = dict(zip(args.batches, vals))
        else:
            p.error("--repeats must be one int or one per --batches entry")
    args.repeats_for = lambda b, _rep=rep: _rep.get(b, 10)
    args.repeats_map = rep
    return args


def main(argv=None):
    args = parse_args(argv)
    args.cache_dir = args.cache_dir.resolve()
    if args.omp_wait_policy.lower() != "keep" and "torch" not in sys.modules:
        # Must happen before torch (libgomp) is loaded; children inherit it.
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy

    if args.latency_child:
        mode, model_name, batch = args.latency_child
        print(json.dumps(latency_child(mode, model_name, int(batch), args.threads, args.solo_calls, args.cache_dir,
                                       args.solo_idle_ms)))
        return 0

    if args.memory_child:
        mode, model_name, batch = args.memory_child
        out = memory_child(mode, model_name, int(batch), args.threads, args.memory_runs, args.cache_dir)
        print(json.dumps(out))
        return 0

    if args.export_only:
        import torch

        torch.set_num_threads(args.threads)
        for model_name in args.models:
            ensure_model(model_name, args.cache_dir, args.threads)
        return 0

    notes = []
    have_onnxcam, why = (False, "skipped") if args.skip_onnxcam else onnxcam_available()
    if not have_onnxcam:
        notes.append(f"onnxcam not measured: {why}")
        log(f"onnxcam unavailable: {why}")

    results = {
        "meta": {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "cpu": cpu_name(),
            "nproc": os.cpu_count(),
            "threads": args.threads,
            "repeats": args.repeats_map,
            "warmup": args.warmup,
            "gap_ms": args.gap_ms,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "memory_runs": args.memory_runs,
            "bars": BARS,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "loadavg_start": os.getloadavg(),
            "git": git_state(),
        },
        "latency": [],
        "solo": [],
        "memory": [],
        "methods": [],
        "notes": notes,
    }

    # ---- memory first, while this parent process is still small (it has not
    # imported torch yet), so the children's ru_maxrss is not polluted by ours.
    if not args.skip_memory:
        export_missing(args)
        for model_name in args.models:
            for batch in args.batches:
                entry = {"model": model_name, "batch": batch}
                modes = ["infer"]
                if have_onnxcam:
                    modes.append("explain")
                if not args.skip_gradcam:
                    modes.append("gradcam")
                for mode in modes:
                    log(f"memory: {mode} {model_name} b{batch} (fresh subprocess)")
                    entry[mode] = run_memory_child(mode, model_name, batch, args)
                    if "error" in entry[mode]:
                        log(f"memory child {mode} failed: {entry[mode]}")
                        if mode == "explain":
                            notes.append(f"memory {model_name} b{batch}: explain child failed: "
                                         + " | ".join(entry[mode].get("stderr_tail", [])[-2:]))
                inf, exp = entry.get("infer", {}), entry.get("explain", {})
                if "peak_rss_kib" in inf and "peak_rss_kib" in exp:
                    entry["peak_ratio"] = exp["peak_rss_kib"] / inf["peak_rss_kib"]
                    entry["delta_ratio"] = (exp["peak_minus_baseline_kib"] /
                                            max(1, inf["peak_minus_baseline_kib"]))
                results["memory"].append(entry)

    # ---- one side per process, also before this process imports torch
    if have_onnxcam and args.solo_rounds > 0 and not args.skip_latency:
        export_missing(args)
        for model_name in args.models:
            for batch in args.batches:
                for idle in args.solo_idle:
                    log(f"solo latency: {model_name} b{batch}, idle {idle:g} ms before each call "
                        f"({args.solo_rounds} fresh processes per side)")
                    results["solo"].append(solo_latency(model_name, batch, args, idle))

    # ---- latency
    import numpy as np
    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    import pytorch_grad_cam
    import torchvision
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "pytorch_grad_cam": getattr(pytorch_grad_cam, "__version__", "1.5.x"),
    }
    try:
        import onnx
        versions["onnx"] = onnx.__version__
    except ImportError:
        pass
    if have_onnxcam:
        import onnxcam
        versions["onnxcam"] = getattr(onnxcam, "__version__", "unknown")
    results["meta"]["versions"] = versions

    for model_name in ([] if args.skip_latency else args.models):
        model, path, rel = ensure_model(model_name, args.cache_dir, args.threads)
        for batch in args.batches:
            rec = bench_config(model_name, batch, model, path, args, have_onnxcam)
            rec["export_rel_diff"] = rel
            results["latency"].append(rec)
            if rec.get("onnxcam_error") and have_onnxcam:
                notes.append(f"{model_name} b{batch}: onnxcam error: {rec['onnxcam_error']}")
            if "timings" in rec:
                t = rec["timings"]
                log(f"{model_name} b{batch}: " + ", ".join(f"{n} {v['median_ms']:.1f} ms" for n, v in t.items()))
        if have_onnxcam and not args.skip_methods:
            from bench_methods import bench_methods

            rows = bench_methods(path, make_input(args.batches[0]), args.threads, args.repeats_for(args.batches[0]),
                                 args.perturbation_repeats, args.gap_ms, args.perturbation_batch, log)
            results["methods"].append({"model": model_name, "batch": args.batches[0], "rows": rows})

    # thread-knob note
    for rec in results["latency"]:
        info = rec.get("onnxcam")
        if info:
            if info.get("thread_knob") is None:
                notes.append("onnxcam.Explainer has no threads/session_options parameter: its session used "
                             f"ORT's default intra-op thread count (reported: "
                             f"{info.get('session_intra_op_num_threads', 'unknown')}; 0 = ORT default = "
                             f"#physical cores), not --threads={args.threads}.")
            break
    results["meta"]["loadavg_end"] = os.getloadavg()

    table = render(results)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

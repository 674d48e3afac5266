"""What carrying a class token's gradient as a band saves (``onnxcam/autodiff/bands.py``), side by side.

    python tools/bench_bands.py --model .bench_cache/vit_b_16_opset17.onnx   # written by python -m tools.bench
    python tools/bench_bands.py --model vit.onnx --batch 8 --rounds 10 --threads 2 --wall

Builds two Explainers of the same model and layer in one process: the
engine as it is, and the engine with every node refused as row-wise
(:func:`onnxcam.autodiff.bands.band_axes` answering None), so each band is
padded back to all tokens where it starts, as the dense engine would. It
prints the multiply-adds of the MatMuls each appends (from ONNX shape
inference: a count, free of load), checks both give the same ``cam_lowres``,
then times plain onnxruntime inference and both explains, interleaved, in
``--rounds`` rounds and prints medians and ratios. By default the clock is
the calling thread's CPU time with one ONNX Runtime thread (which runs the
graph on the calling thread), so other jobs on a shared machine slow it
little; ``--wall`` uses the wall clock with ``--threads`` threads instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import onnx

import onnxcam
import onnxcam.autodiff.engine as engine


def appended_matmul_macs(ex: onnxcam.Explainer) -> float:
    """Multiply-adds (G) of the MatMuls the explainer appends, for one image (the batch axis counted as 1)."""
    model = ex.explainer_model
    inferred = onnx.shape_inference.infer_shapes(model)
    dims = {
        v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    dims.update({i.name: list(i.dims) for i in model.graph.initializer})
    original = {o for n in ex.index.nodes for o in n.output}
    macs = 0
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.output[0] not in original:
            macs += int(np.prod(dims[node.output[0]])) * dims[node.input[0]][-1]
    return macs / 1e9


def without_bands(build: Callable[[], onnxcam.Explainer]) -> onnxcam.Explainer:
    """``build()`` with no node taken as row-wise: every band is padded back to full size where it starts."""
    kept = engine.band_axes
    engine.band_axes = lambda *_: None
    try:
        return build()
    finally:
        engine.band_axes = kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a class-token transformer's .onnx file")
    ap.add_argument("--layer", default="auto", help="the layer explained (default auto)")
    ap.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    ap.add_argument("--rounds", type=int, default=12, help="interleaved timed rounds (default 12)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    ap.add_argument("--wall", action="store_true", help="time the wall clock instead of the thread's CPU time")
    args = ap.parse_args()
    import onnxruntime as ort

    def build() -> onnxcam.Explainer:
        return onnxcam.Explainer(args.model, layer=args.layer, threads=args.threads)

    banded, dense = build(), without_bands(build)
    print(f"layer {banded.layer}; appended MatMuls, G multiply-adds per image:")
    print(f"  with bands {appended_matmul_macs(banded):.3f}, without {appended_matmul_macs(dense):.3f}")
    image = banded.index.inputs[0]
    shape = [args.batch, *(int(d) for d in banded.index.shape(image)[1:])]  # type: ignore[index, arg-type]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    diff = np.abs(banded.explain(x).cam_lowres - dense.explain(x).cam_lowres).max()
    print(f"largest cam_lowres difference between the two: {diff:.2e}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    clock = time.perf_counter if args.wall else time.thread_time
    runs: dict[str, Callable[[], object]] = {
        "inference": lambda: session.run(None, {image: x}),
        "explain, bands": lambda: banded.explain(x),
        "explain, no bands": lambda: dense.explain(x),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, run in runs.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    median = {k: statistics.median(v[1:]) for k, v in times.items()}
    what = "wall clock" if args.wall else "CPU time of the calling thread"
    print(f"medians of {args.rounds} rounds ({what}, batch {args.batch}, load {os.getloadavg()[0]:.1f}):")
    for name, seconds in median.items():
        print(f"  {name:18s} {seconds * 1000:8.1f} ms  {seconds / median['inference']:.3f}x inference")


if __name__ == "__main__":
    main()

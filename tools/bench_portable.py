"""What a portable export costs: default and portable explainers side by side on onnxruntime's CPU EP.

    python tools/bench_portable.py [--zoo DIR] [--repeat 30] [--batch 1] [--openvino-cases DIR]

For the demo model (at its automatic layer, and at layers one and two MaxPools
deep) and, with ``--zoo``, every model of a built zoo (``python -m
model_zoo.build``) at its automatic and earlier layer, both files are
exported, checked to compute the same heatmap, and timed: the median of
``--repeat`` ``session.run`` calls each after a warm-up, the ratio
portable / default, and the files' sizes and node counts.
``--openvino-cases DIR`` also writes each portable file with its feeds there,
for ``tools/openvino_compare.py`` (the OpenVINO EP and runtime against the CPU EP,
run in the onnxruntime-openvino environment).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import onnxcam
from onnxcam.demo import DEMO_MODEL

DEMO_LAYERS = (("auto", "auto"), ("1 MaxPool", "/0/0.9/Relu_output_0"), ("2 MaxPools", "/0/0.2/Relu_output_0"))


def _cases(zoo: Path | None) -> list[tuple[str, str, str, str | int]]:
    """(label, model path, layer, output) to measure."""
    cases: list[tuple[str, str, str, str | int]] = [
        (f"demo {label}", str(DEMO_MODEL), layer, 0) for label, layer in DEMO_LAYERS
    ]
    if zoo is not None:
        from model_zoo.zoo import load_manifest

        for name, entry in sorted(load_manifest(zoo).items()):
            if entry.ok:
                for label, layer in (("auto", "auto"), ("earlier", entry.earlier_layer)):
                    if layer:
                        cases.append((f"{name} {label}", str(zoo / entry.file), layer, entry.explain_output or 0))
    return cases


def _feeds(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    rng, feeds = np.random.default_rng(0), {}
    for i in session.get_inputs():
        n = i.shape[0] if isinstance(i.shape[0], int) and i.shape[0] > 0 else batch
        dims = [n, *(d if isinstance(d, int) and d > 0 else 64 for d in i.shape[1:])]  # 64: a dynamic image side
        if i.type == "tensor(int64)":
            feeds[i.name] = np.full(n, -1, np.int64)
        else:
            dtype = np.float16 if i.type == "tensor(float16)" else np.float32
            feeds[i.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads  # on a shared machine, more threads mostly measure the neighbours
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _median_ms(sessions: list[ort.InferenceSession], feeds: dict[str, np.ndarray], repeat: int) -> list[float]:
    """Each session's median run time, the runs interleaved so that load on the machine hits all alike."""
    times: list[list[float]] = [[] for _ in sessions]
    for s in sessions:
        s.run(None, feeds)  # warm-up
    for _ in range(repeat):
        for s, t in zip(sessions, times):
            start = time.perf_counter()
            s.run(None, feeds)
            t.append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", type=Path, help="a built model zoo folder (with manifest.json)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--openvino-cases", type=Path, help="also write portable files + feeds here")
    args = parser.parse_args(argv)
    print(
        f"onnxruntime {ort.__version__}, CPU EP, {args.threads} thread(s), batch {args.batch}, "
        f"median of {args.repeat} interleaved runs"
    )
    print(f"{'model, layer':<44} {'default ms':>10} {'portable ms':>11} {'ratio':>6} {'MB':>11} {'nodes':>9}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, layer, output in _cases(args.zoo):
            ex = onnxcam.Explainer(model, layer=layer, output=output)
            files = Path(tmp) / "default.onnx", Path(tmp) / "portable.onnx"
            ex.export(files[0])
            ex.export(files[1], portable=True)
            sessions = [_session(f, args.threads) for f in files]
            feeds = _feeds(sessions[0], args.batch)
            cams = [s.run(["cam"], feeds)[0] for s in sessions]
            if not np.allclose(cams[0], cams[1], atol=1e-4):
                print(f"{label:<44} the portable heatmap differs from the default one: not timed")
                continue
            ms = _median_ms(sessions, feeds, args.repeat)
            ratios.append(ms[1] / ms[0])
            size = "/".join(f"{f.stat().st_size / 1e6:.1f}" for f in files)
            nodes = "/".join(str(len(onnx.load(str(f), load_external_data=False).graph.node)) for f in files)
            print(f"{label:<44} {ms[0]:>10.2f} {ms[1]:>11.2f} {ratios[-1]:>6.2f} {size:>11} {nodes:>9}")
            if args.openvino_cases:
                args.openvino_cases.mkdir(parents=True, exist_ok=True)
                stem = label.replace(" ", "_")
                (args.openvino_cases / f"{stem}.onnx").write_bytes(files[1].read_bytes())
                np.savez(args.openvino_cases / f"{stem}.npz", **feeds)
    if ratios:
        print(f"median ratio portable / default: {statistics.median(ratios):.2f} over {len(ratios)} explainers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

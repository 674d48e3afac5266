"""Benchmark of ``onnxcam batch``'s engines: images/s, scaling with workers, and the cost over a plain loop.

    python tools/bench_batch.py                           # 3000 images, 3 rounds, the bundled demo model
    python tools/bench_batch.py --images 1000 --rounds 2 --engines local
    python tools/bench_batch.py --model resnet50.onnx --size 256 --json bench.json

Generates ``--images`` noise PNGs of ``--size`` px, then times, in ``--rounds``
rounds whose order rotates (so background load hits every configuration
alike; the figures are medians over rounds):

* ``explain only``: ``Explainer.explain`` on the batches, already decoded and preprocessed (the model's own cost);
* ``explain loop``: read, decode, preprocess and ``Explainer.explain`` each batch (what any script does);
* ``rows, no write``: :func:`~onnxcam.batch.rows.explain_jobs`, the engines' shared work (adds the rows:
  top classes, peak, threshold box, float16 map), nothing written;
* ``local`` with 1 and 2 worker processes and ``ray`` with 1 and 2 actors, all 1 ONNX Runtime thread each,
  through :func:`~onnxcam.batch.run_batch` into a Parquet dataset (``--overwrite`` each time).

``img/s`` is the run's own clock (after the local pool started; Ray's actors start inside it), ``steady`` the
rate from the first batch back to the last. ``ms/img/worker`` is ``1000 * workers / img/s``; its excess over
``explain loop`` is each engine's per-image overhead. The 1-minute load average is printed with every round:
on a shared machine quote the ratios, and only beside the load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from onnxcam import TopK
from onnxcam.batch import BatchOptions, run_batch
from onnxcam.batch import run as run_module
from onnxcam.batch.engines import ExplainerConfig
from onnxcam.batch.rows import RowOptions, explain_jobs
from onnxcam.batch.sources import Job, read_source
from onnxcam.demo import DEMO_MODEL
from onnxcam.preprocess import derive_spec, load_image, preprocess_image

ENGINES = {"local": (1, 2), "ray": (1, 2)}


def make_images(folder: Path, n: int, size: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"i{i:06d}.png")


def batches(jobs: list[Job], size: int) -> list[list[Job]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


class TimedEngine:
    """Wraps an engine: notes when its first outcome came and how many images it carried (for ``steady``)."""

    def __init__(self, engine: Any, marks: dict[str, float]):
        self.engine, self.marks = engine, marks

    def __enter__(self) -> TimedEngine:
        self.engine.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.__exit__(*exc)

    def map(self, todo: Any) -> Iterator[Any]:
        for outcome in self.engine.map(todo):
            now = time.monotonic()
            if "first" not in self.marks:
                self.marks["first"], self.marks["first_images"] = now, outcome.images
            self.marks["last"] = now
            yield outcome


def timed_run(
    config: ExplainerConfig,
    rows: RowOptions,
    jobs: list[Job],
    out: Path,
    engine: str,
    workers: int,
    batch_size: int,
    shard_size: int,
) -> dict[str, float]:
    marks: dict[str, float] = {}
    real = run_module.make_engine
    run_module.make_engine = lambda *a, **k: TimedEngine(real(*a, **k), marks)  # type: ignore[assignment]
    try:
        options = BatchOptions(batch_size, shard_size, engine=engine, workers=workers, overwrite=True)
        with contextlib.redirect_stderr(io.StringIO()):  # the run's progress bar
            summary = run_batch(config, jobs, out, rows, options)
    finally:
        run_module.make_engine = real
    assert summary.explained == len(jobs) and summary.failed == 0, summary.line()
    steady_images = summary.explained - marks["first_images"]
    steady = steady_images / (marks["last"] - marks["first"]) if marks["last"] > marks["first"] else float("nan")
    return {"seconds": summary.seconds, "rate": summary.explained / summary.seconds, "steady": steady}


def plain(fn: Callable[[], int]) -> dict[str, float]:
    start = time.monotonic()
    images = fn()
    seconds = time.monotonic() - start
    return {"seconds": seconds, "rate": images / seconds, "steady": images / seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEMO_MODEL), help="the .onnx file (default: the bundled demo model)")
    p.add_argument("--images", type=int, default=3000, help="images to generate and explain (default 3000)")
    p.add_argument("--size", type=int, default=64, help="their side in pixels (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, order rotating; medians over them (default 3)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    p.add_argument("--json", metavar="PATH", help="also write every round's figures here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="onnxcam-bench-batch-") as folder:
        return bench(args, Path(folder))


def bench(args: argparse.Namespace, work: Path) -> int:
    """Every configuration, ``--rounds`` times, on images generated in ``work``; prints the table."""
    make_images(work / "imgs", args.images, args.size)
    jobs = read_source(str(work / "imgs"))
    config = ExplainerConfig(args.model, "auto", "gradcam", 0, 1, {})
    explainer = config.build()
    config = ExplainerConfig(args.model, str(explainer.layer), "gradcam", 0, 1, {})
    spec = derive_spec(explainer.index, model_path=args.model)
    rows = RowOptions(spec)
    name = spec.input_name or explainer.index.inputs[0]
    cut = batches(jobs, args.batch_size)
    arrays = [np.stack([preprocess_image(load_image(j.file)[0], spec)[0] for j in b]) for b in cut]

    def explain_only() -> int:
        for x in arrays:
            explainer.explain({name: x}, target=TopK(1))
        return len(jobs)

    def explain_loop() -> int:
        for b in cut:
            x = np.stack([preprocess_image(load_image(j.file)[0], spec)[0] for j in b])
            explainer.explain({name: x}, target=TopK(1))
        return len(jobs)

    def rows_only() -> int:
        return sum(explain_jobs(explainer, rows, b).images for b in cut)

    configs: dict[str, Callable[[], dict[str, float]]] = {
        "explain only": lambda: plain(explain_only),
        "explain loop": lambda: plain(explain_loop),
        "rows, no write": lambda: plain(rows_only),
    }
    for engine in args.engines:
        for workers in ENGINES[engine]:
            out = work / f"out-{engine}-{workers}"
            configs[f"{engine} x{workers}"] = lambda e=engine, w=workers, o=out: timed_run(
                config, rows, jobs, o, e, w, args.batch_size, args.shard_size
            )

    undo = None
    if "ray" in args.engines:  # one runtime for every ray run; its start-up is not what is measured
        import ray

        from onnxcam.batch.ray_engine import _loopback_only

        undo = _loopback_only()
        cpus = max(2, os.cpu_count() or 2)
        ray.init(
            address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
    results: dict[str, list[dict[str, float]]] = {k: [] for k in configs}
    loads: list[float] = []
    names = list(configs)
    started = time.monotonic()
    try:
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for key in order:
                load = os.getloadavg()[0]
                figures = configs[key]()
                figures["load"] = load
                loads.append(load)
                results[key].append(figures)
                print(f"round {r + 1} {key:15s} {figures['rate']:7.1f} img/s  load {load:.2f}", file=sys.stderr)
    finally:
        if undo is not None:
            import ray

            ray.shutdown()
            undo()
    report(results, loads, args, time.monotonic() - started)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "loads": loads}, indent=1))
    return 0


def report(
    results: dict[str, list[dict[str, float]]], loads: list[float], args: argparse.Namespace, seconds: float
) -> None:
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("rate", "steady")} for k, v in results.items()}
    loop = med["explain loop"]["rate"]
    print(
        f"\n{args.images} images of {args.size}x{args.size} px, batch {args.batch_size}, shard {args.shard_size}, "
        f"{os.cpu_count()} cores, {args.rounds} rounds in {seconds:.0f} s; 1-min load average during the rounds: "
        f"median {statistics.median(loads):.2f} (min {min(loads):.2f}, max {max(loads):.2f})\n"
    )
    print("| configuration | img/s (median) | steady img/s | vs explain loop | ms/img/worker | overhead ms/img |")
    print("|---|---|---|---|---|---|")
    for key, m in med.items():
        workers = int(key.rsplit("x", 1)[1]) if " x" in key else 1
        per = 1000 * workers / m["rate"]
        over = per - 1000 / loop
        print(f"| {key} | {m['rate']:.0f} | {m['steady']:.0f} | {m['rate'] / loop:.2f}x | {per:.2f} | {over:+.2f} |")
    for engine in args.engines:
        one, two = med.get(f"{engine} x1"), med.get(f"{engine} x2")
        if one and two:
            print(
                f"\n{engine}: 2 workers / 1 worker = {two['rate'] / one['rate']:.2f}x "
                f"(steady {two['steady'] / one['steady']:.2f}x)",
                end="",
            )
    print()


if __name__ == "__main__":
    sys.exit(main())

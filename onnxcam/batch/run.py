"""The batch loop: skip what is done, feed the engine bounded batches, commit a shard every ``shard_size`` images.

Memory stays flat however many images: the engine holds a few batches in
flight, and the parent holds at most one shard's rows (``--shard-size``
images) before committing it. A run stopped by Ctrl-C or SIGTERM keeps every
shard already committed and drops the rows not yet in one; rerunning the same
command picks up from there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxcam.batch.engines import Engine, ExplainerConfig, make_engine
from onnxcam.batch.rows import BatchOutcome, RowOptions
from onnxcam.batch.sources import Job
from onnxcam.batch.shards import ShardWriter
from onnxcam.cli.progress import Progress
from onnxcam.errors import OnnxcamError
from onnxcam.explainer import Explainer


@dataclass(frozen=True)
class BatchOptions:
    """How the run is cut up and spread: images per ONNX Runtime call and per shard, the engine and its workers."""

    batch_size: int = 8
    shard_size: int = 256
    engine: str = "local"
    workers: int | None = 1  # None: ray sizes its actor pool from the cluster's CPUs
    overwrite: bool = False
    address: str | None = None  # ray: the cluster to join; None starts a local runtime
    gpus_per_worker: float = 0.0  # ray: GPUs each actor reserves (and runs ONNX Runtime's CUDA provider on)


@dataclass
class BatchSummary:
    """What one run did, for the final line and the exit status."""

    out: Path
    todo: int = 0  # images this run set out to explain
    explained: int = 0
    failed: int = 0
    rows: int = 0
    done_before: int = 0  # images found in committed shards, skipped
    failed_before: int = 0  # of those, the ones in the failures table
    shards: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rate = f", {self.explained / self.seconds:.1f} img/s" if self.seconds > 0 and self.explained else ""
        before = f"; {self.done_before} done before, skipped" if self.done_before else ""
        failed = f"; {self.failed} failed (see {self.out / 'failures'})" if self.failed else ""
        return (
            f"explained {self.explained} image(s), {self.rows} row(s) in {self.seconds:.1f} s{rate}{failed}"
            f"{before}; {self.shards} new shard(s) in {self.out}"
        )


def run_batch(
    config: ExplainerConfig,
    jobs: list[Job],
    out: Path,
    rows: RowOptions,
    options: BatchOptions = BatchOptions(),
    explainer: Explainer | None = None,
) -> BatchSummary:
    """Explain ``jobs`` into the Parquet dataset ``out``, skipping images already in it (unless ``overwrite``).

    ``explainer``: one already built from ``config``, reused when the engine runs in-process.
    """
    if options.batch_size < 1 or options.shard_size < 1:
        raise OnnxcamError("--batch-size and --shard-size must be at least 1")
    metadata: dict[str, Any] = {"model": Path(config.model).resolve(), "layer": config.layer, "method": config.method}
    writer = ShardWriter(out, metadata, overwrite=options.overwrite)
    done, failed_before = writer.done()
    todo, seen = [], set(done)
    for job in jobs:  # an image listed twice, or done before, is explained at most once
        if job.key not in seen:
            seen.add(job.key)
            todo.append(job)
    summary = BatchSummary(out, todo=len(todo), done_before=len(done), failed_before=failed_before)
    engine: Engine = make_engine(
        options.engine,
        config,
        rows,
        options.workers,
        explainer,
        batch_size=options.batch_size,
        address=options.address,
        gpus_per_worker=options.gpus_per_worker,
    )
    emitted: set[str] = set()  # images given rows or a failure in this run
    pending_rows: list[dict[str, Any]] = []
    pending_failures: list[dict[str, str]] = []
    in_shard = 0
    batches = (todo[i : i + options.batch_size] for i in range(0, len(todo), options.batch_size))
    try:
        with engine, Progress(len(todo), "explaining") as bar:
            started = time.monotonic()  # workers are up: from here on the clock times the work
            for outcome in engine.map(batches):
                outcome = _first_time(outcome, emitted)
                pending_rows += outcome.rows
                pending_failures += outcome.failures
                in_shard += outcome.images
                summary.failed += len(outcome.failures)
                summary.explained += outcome.images - len(outcome.failures)
                summary.rows += len(outcome.rows)
                bar.advance(outcome.images)
                if in_shard >= options.shard_size:
                    writer.commit(pending_rows, pending_failures)
                    pending_rows, pending_failures, in_shard = [], [], 0
            writer.commit(pending_rows, pending_failures)
            summary.seconds = time.monotonic() - started
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"{writer.written} new shard(s) committed to {out}; rerun the same command to go on from there"
        ) from None
    summary.shards = writer.written
    return summary


def _first_time(outcome: BatchOutcome, emitted: set[str]) -> BatchOutcome:
    """``outcome`` without the images already handled in this run, which joins ``emitted``.

    An engine hands each image back once, but one that retries work (Ray re-runs the batches of an actor that
    died) must never make a second row reach a shard: this is the last guard before the writer.
    """
    keys = {r["path"] for r in outcome.rows} | {f["path"] for f in outcome.failures}
    if emitted.isdisjoint(keys):
        emitted |= keys
        return outcome
    rows = [r for r in outcome.rows if r["path"] not in emitted]
    failures = [f for f in outcome.failures if f["path"] not in emitted]
    fresh = {r["path"] for r in rows} | {f["path"] for f in failures}
    emitted |= fresh
    return BatchOutcome(rows, failures, len(fresh))

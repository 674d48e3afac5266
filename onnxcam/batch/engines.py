"""Where batches are explained. An engine is a small pluggable piece: it maps batches of jobs to outcomes.

The parent process owns the source, the order and the output; an engine only
turns each batch into a :class:`~onnxcam.batch.rows.BatchOutcome`, in the order
the batches came, holding at most a few in flight so memory stays bounded.
``local`` runs in-process for one worker, else on a pool of worker processes,
each with one Explainer built once (an ONNX Runtime session is expensive to
make, cheap to reuse) and its share of the cores as ONNX Runtime threads.
``ray`` (:mod:`.ray_engine`, imported only when chosen) runs the same
:func:`~onnxcam.batch.rows.explain_jobs` on a pool of Ray actors, on this
machine or a cluster. Either way only the parent writes shards.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Protocol

from onnxcam.batch.rows import BatchOutcome, RowOptions, explain_jobs
from onnxcam.batch.sources import Job
from onnxcam.errors import OnnxcamError
from onnxcam.explainer import Explainer

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ExplainerConfig:
    """How to build the same Explainer in every worker: plain values, pickled to each process."""

    model: str
    layer: str | tuple[str, ...]  # a name, or several (a tuple: the config is frozen and hashable)
    method: str
    output: str | int = 0
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # aug_smooth, eigen_smooth, perturbation_batch
    providers: tuple[str, ...] | None = None  # ONNX Runtime's execution providers (CUDA on a GPU worker)

    def build(self) -> Explainer:
        return Explainer(
            self.model,
            layer=self.layer,
            method=self.method,
            providers=list(self.providers) if self.providers else None,
            output=self.output,
            threads=self.threads,
            **self.options,
        )


class Engine(Protocol):
    """``with engine: for outcome in engine.map(batches): ...``: one outcome per batch of jobs.

    ``local`` yields them in the batches' order, ``ray`` as they finish; the caller depends on neither.
    """

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...

    def map(self, batches: Iterable[list[Job]]) -> Iterator[BatchOutcome]: ...


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, as in a container), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def split_cores(workers: int | None, threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """``(workers, ONNX Runtime threads per worker)``: the one not given fills the cores with the other."""
    cores = cores or cpu_cores()
    if workers is not None and workers < 1:
        raise OnnxcamError("--workers must be at least 1")
    if threads is not None and threads < 1:
        raise OnnxcamError("--threads must be at least 1")
    if workers is None:
        threads = threads or 1
        return max(1, cores // threads), threads
    return workers, threads or max(1, cores // workers)


class InProcessEngine:
    """One worker: the batches run here, on an Explainer the caller may already hold."""

    def __init__(self, config: ExplainerConfig, options: RowOptions, explainer: Explainer | None = None):
        self.options = options
        self.explainer = explainer or config.build()

    def __enter__(self) -> InProcessEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def map(self, batches: Iterable[list[Job]]) -> Iterator[BatchOutcome]:
        for batch in batches:
            yield explain_jobs(self.explainer, self.options, batch)


_worker: tuple[Explainer, RowOptions] | None = None


def _start_worker(config: ExplainerConfig, options: RowOptions) -> None:
    """Pool initializer: build this process's Explainer once; leave Ctrl-C to the parent, which stops the pool."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = (config.build(), options)


def _ready() -> bool:
    return _worker is not None


def _explain_in_worker(jobs: list[Job]) -> BatchOutcome:
    assert _worker is not None, "the pool's initializer builds the worker's Explainer"
    return explain_jobs(_worker[0], _worker[1], jobs)


class ProcessPoolEngine:
    """``workers`` processes (started fresh with ``spawn``: forking a process that holds ONNX Runtime's thread
    pools is unsafe), at most ``2 * workers`` batches in flight."""

    def __init__(self, config: ExplainerConfig, options: RowOptions, workers: int):
        self.config, self.options, self.workers = config, options, workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ProcessPoolEngine:
        """Start every worker and wait until each has built its Explainer, so the run's clock times only work."""
        self._pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.config, self.options),
        )
        try:
            for ready in [self._pool.submit(_ready) for _ in range(self.workers)]:
                ready.result()
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise OnnxcamError("a worker process could not start (out of memory?); try fewer --workers") from None
        except BaseException:
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=exc[0] is None, cancel_futures=True)
            self._pool = None

    def map(self, batches: Iterable[list[Job]]) -> Iterator[BatchOutcome]:
        assert self._pool is not None, "use the engine in a with block"
        pending: deque[Future[BatchOutcome]] = deque()
        todo = iter(batches)
        try:
            for batch in todo:
                pending.append(self._pool.submit(_explain_in_worker, batch))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise OnnxcamError(
                "a worker process died (out of memory, or killed); the shards written are kept: "
                "rerun the same command to go on"
            ) from None


def make_engine(
    name: str,
    config: ExplainerConfig,
    options: RowOptions,
    workers: int | None,
    explainer: Explainer | None = None,
    *,
    batch_size: int = 8,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
) -> Engine:
    """The engine called ``name``; ``explainer``: one already built with ``config``, reused in-process.

    ``workers``: processes (``local``) or Ray actors (``ray``; None: as many as the cluster's CPUs allow).
    ``batch_size``, ``address`` and ``gpus_per_worker`` are for ``ray``, which cuts its own batches.
    """
    if name == "ray":
        from onnxcam.batch.ray_engine import RayEngine  # imports ray only now

        return RayEngine(config, options, workers, batch_size=batch_size, address=address, gpus=gpus_per_worker)
    if name != "local":
        raise OnnxcamError(f"unknown engine {name!r}; this version has: {', '.join(ENGINES)}")
    if address is not None or gpus_per_worker:
        raise OnnxcamError("--address and --gpus-per-worker are for --engine ray")
    if workers is None or workers == 1:
        return InProcessEngine(config, options, explainer)
    return ProcessPoolEngine(config, options, workers)

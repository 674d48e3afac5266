"""Micro-batching: requests that arrive within a short window share one ONNX Runtime call.

Each request puts a job on a bounded asyncio queue and awaits its future. One
worker task per batcher takes the first waiting job together with every job
already queued behind it (those that arrived while the previous batch ran).
Only when it is alone does it wait, up to ``window_ms``, for the requests that
are on their way at that moment (announced with
:meth:`MicroBatcher.expecting` while their image is decoded): a lone request
is not delayed at all, and under a steady stream the model is never left idle
waiting for requests that have not arrived yet (measured: a fixed window
costs throughput, because the worker wakes late on a busy event loop). It runs
the batch function on the shared inference executor (one thread: the session's
own thread pool is what makes a call fast; two calls at once would only fight
over the cores). While a batch runs, new jobs queue up and form the next one.
A full queue is refused at once (:class:`QueueFull`, answered with 503) rather
than letting latency grow without bound; a job whose request gave up (timeout,
disconnect) is dropped before it reaches the model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

#: Defaults of ``onnxcam serve``: 16 images per call, a 2 ms window, 64 waiting requests.
DEFAULT_MAX_BATCH = 16
DEFAULT_WINDOW_MS = 2.0
DEFAULT_QUEUE_SIZE = 64


@dataclass(frozen=True)
class BatchPolicy:
    max_batch: int = DEFAULT_MAX_BATCH
    window_ms: float = DEFAULT_WINDOW_MS
    queue_size: int = DEFAULT_QUEUE_SIZE

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.queue_size < 1 or self.window_ms < 0:
            raise ValueError("max_batch and queue_size must be at least 1 and window_ms not negative")


class QueueFull(Exception):
    """The batcher's queue holds ``queue_size`` jobs already."""


@dataclass
class _Job:
    item: Any
    future: asyncio.Future


class MicroBatcher:
    """``await batcher.submit(item)`` -> that item's result from ``run_batch(items)`` (a list, same order)."""

    def __init__(
        self,
        run_batch: Callable[[list], list],
        executor: Executor,
        policy: BatchPolicy,
        on_batch: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ):
        self._run_batch = run_batch
        self._executor = executor
        self.policy = policy
        self._on_batch = on_batch or (lambda size: None)
        self._on_dropped = on_dropped or (lambda count: None)  # jobs whose request gave up before the model
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=policy.queue_size)
        self._worker: asyncio.Task | None = None
        self._running = 0  # jobs in the batch on the executor now
        self._incoming = 0  # requests announced but not yet submitted
        self._settled = 0  # announced requests that have since submitted (or failed), ever
        self._arrival = asyncio.Event()  # set whenever an announced request settles
        self._closed = False  # after close(): no new worker, new jobs are refused

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run: new jobs are refused."""
        return self._closed

    @property
    def depth(self) -> int:
        """Jobs waiting for a batch (not counting the one running)."""
        return self._queue.qsize()

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce a request that will submit soon (its image is being decoded), so a batch waits for it."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            self._settled += 1
            self._arrival.set()

    async def submit(self, item: Any) -> Any:
        """Queue ``item`` and wait for its result; raises :class:`QueueFull` when the queue is full or closed.

        A closed batcher (its pool slot was evicted while the request decoded its image) refuses rather than
        start a worker nobody would stop: the client gets a 503 and retries on the pool's new slot.
        """
        if self._closed:
            raise QueueFull()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(item, future))
        except asyncio.QueueFull:
            raise QueueFull() from None
        return await future

    async def close(self, drain_s: float = 0.0) -> None:
        """Stop the worker, after up to ``drain_s`` seconds for queued and running jobs to finish.

        Jobs still waiting then fail with :class:`QueueFull` (a 503 that says retry), not CancelledError: that is a
        BaseException, which would pass the request's error handling and end as a plain-text 500.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_s
        while (self._running or self._incoming or not self._queue.empty()) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while not self._queue.empty():
            future = self._queue.get_nowait().future
            if not future.done():
                future.set_exception(QueueFull())

    async def _wait_for_announced(self, deadline: float) -> None:
        """Until the requests decoding now have submitted, ``max_batch`` jobs wait, or ``deadline``."""
        loop = asyncio.get_running_loop()
        expected = self._settled + self._incoming
        while self._settled < expected and self._queue.qsize() < self.policy.max_batch - 1:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            if self._queue.empty() and self.policy.max_batch > 1:
                await self._wait_for_announced(loop.time() + self.policy.window_ms / 1000.0)
            while len(jobs) < self.policy.max_batch and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            alive = [j for j in jobs if not j.future.done()]
            if len(alive) < len(jobs):
                self._on_dropped(len(jobs) - len(alive))  # their requests gave up: never reach the model
            jobs = alive
            if not jobs:
                continue
            self._on_batch(len(jobs))
            self._running = len(jobs)
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, [j.item for j in jobs])
            except Exception as e:  # handed to every request of the batch; the worker goes on
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            finally:
                self._running = 0
            for j, r in zip(jobs, results):
                if not j.future.done():
                    j.future.set_result(r)

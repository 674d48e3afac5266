"""A small, bounded set of Explainers keyed by (method, layer), each with its own micro-batcher.

The server's default (method, layer) is built before the server starts and
never evicted. Another pair is built on first use, on the inference executor
(building means graph surgery and a new ONNX Runtime session: it should not
compete with running batches), and the least recently used extra pair is
dropped once there are more than ``capacity``. Concurrent first requests for
one pair share one build; a failed build (an unknown layer) is not cached.

Requests give up (timeout, disconnect) while a build is queued or running,
and a client may name many pairs, so a build belongs to the pool, not to
the requests waiting for it:

* a finished build joins the pool in its own callback, whether or not
  anyone still waits for it, so it counts against ``capacity`` and is
  evicted like any other (before, a build whose requests had all given up
  stayed referenced for ever, outside the capacity);
* a build whose requests have all given up before it started is cancelled
  and never runs;
* a slot is inserted once, by that callback: a request that resumes after
  its pair was already evicted gets the evicted slot, whose closed batcher
  answers a retryable 503, and never puts it back.

Everything here runs on the event loop's thread; only ``build`` runs on the
executor, so the slot table needs no lock.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from onnxcam.explainer import Explainer
from onnxcam.server.batching import MicroBatcher

Key = tuple[str, str]  # (method, layer)
#: How long an evicted pair may take to answer the requests it had already queued.
EVICT_DRAIN_S = 60.0


@dataclass
class Slot:
    explainer: Explainer
    batcher: MicroBatcher


@dataclass
class _Build:
    job: Future  # the build on the executor, cancellable until a thread takes it
    future: asyncio.Future  # the same, awaitable on the event loop
    waiting: int = 0  # requests waiting for it


class ExplainerPool:
    def __init__(
        self, default_key: Key, default: Slot, build: Callable[[Key], Slot], executor: Executor, capacity: int = 4
    ):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.default_key = default_key
        self._build = build
        self._executor = executor
        self.capacity = capacity
        self._slots: OrderedDict[Key, Slot] = OrderedDict({default_key: default})
        self._building: dict[Key, _Build] = {}
        self._closing: set[asyncio.Task] = set()  # evicted batchers finishing their queued requests

    @property
    def slots(self) -> list[tuple[Key, Slot]]:
        return list(self._slots.items())

    @property
    def default(self) -> Slot:
        return self._slots[self.default_key]

    async def get(self, key: Key) -> Slot:
        """The slot for ``key``, built on first use; build errors (OnnxcamError) propagate."""
        if key in self._slots:
            self._slots.move_to_end(key)
            return self._slots[key]
        build = self._building.get(key)
        if build is None:
            job = self._executor.submit(self._build, key)
            build = self._building[key] = _Build(job, asyncio.wrap_future(job))
            build.future.add_done_callback(lambda f: self._built(key, build))
        build.waiting += 1
        try:
            return await asyncio.shield(build.future)
        finally:
            build.waiting -= 1
            if not build.waiting and build.job.cancel():  # nobody wants it: a build not started never starts
                del self._building[key]  # the next request for the pair starts a new one

    def _built(self, key: Key, build: _Build) -> None:
        if self._building.get(key) is build:
            del self._building[key]
        if build.future.cancelled() or build.future.exception() is not None:
            return  # a failure is not cached: the next request for the pair tries again
        self._slots[key] = build.future.result()
        self._evict()

    def _evict(self) -> None:
        while len(self._slots) > self.capacity + 1:  # the default does not count against the capacity
            oldest = next(k for k in self._slots if k != self.default_key)
            slot = self._slots.pop(oldest)
            task = asyncio.get_running_loop().create_task(slot.batcher.close(drain_s=EVICT_DRAIN_S))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for _, slot in self.slots:
            await slot.batcher.close()
        for task in list(self._closing):
            task.cancel()

"""A small, bounded set of Explainers keyed by (method, layer), each with its own micro-batcher.

The server's default (method, layer) is built before the server starts and
never evicted. Another pair is built on first use, on the inference executor
(building means graph surgery and a new ONNX Runtime session: it should not
compete with running batches), and the least recently used extra pair is
dropped once there are more than ``capacity``. Concurrent first requests for
one pair share one build; a failed build (an unknown layer) is not cached.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
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


class ExplainerPool:
    def __init__(self, default_key: Key, default: Slot, build: Callable[[Key], Slot], executor: Executor,
                 capacity: int = 4):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.default_key = default_key
        self._build = build
        self._executor = executor
        self.capacity = capacity
        self._slots: OrderedDict[Key, Slot] = OrderedDict({default_key: default})
        self._building: dict[Key, asyncio.Future] = {}
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
        if key not in self._building:
            loop = asyncio.get_running_loop()
            self._building[key] = loop.run_in_executor(self._executor, self._build, key)
        pending = self._building[key]
        try:
            slot = await asyncio.shield(pending)
        finally:
            if pending.done():
                self._building.pop(key, None)
        if key not in self._slots:
            self._slots[key] = slot
            await self._evict()
        return self._slots[key]

    async def _evict(self) -> None:
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


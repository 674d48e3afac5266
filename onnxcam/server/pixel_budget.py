"""A server-wide budget of decoded pixels: a first-come, first-served semaphore weighted by width x height.

``--max-pixels`` bounds one image; it does not bound twelve of them at once.
A 100 kB PNG can declare 25 megapixels, and answering it holds the decoded
photo, the map on its pixels and the overlay, tens of bytes per pixel, for
seconds. So every request takes its image's declared width x height (read
from the header, before decoding: :func:`onnxcam.preprocess.images.read_header`)
from this budget before it decodes, and gives it back once its answer is built
and no worker thread uses the pixels any more. A request that does not fit
waits, in arrival order (a large image is never starved by a stream of small
ones), within its own timeout.

The server's upload budget is the same class counted in bytes, taken with
:meth:`PixelBudget.try_acquire` as a body arrives: a request never waits for
it holding part of a body, so two half-read uploads can never wait for each
other.

Used on the event loop's thread only, so it needs no lock.
"""

from __future__ import annotations

import asyncio
from collections import deque


class PixelBudget:
    """``await budget.acquire(w * h)`` ... ``budget.release(w * h)``; at most ``capacity`` pixels at once."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"the pixel budget must be positive, got {capacity}")
        self.capacity = capacity
        self.in_use = 0
        self.peak = 0  # the most pixels ever held at once, for /metrics and the tests
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for _, f in self._waiters if not f.done())

    async def acquire(self, pixels: int) -> None:
        """Wait until ``pixels`` fit, behind everyone who asked earlier; ValueError if they never can."""
        if pixels > self.capacity:
            raise ValueError(f"{pixels} pixels exceed the whole budget of {self.capacity}")
        if not self._waiters and self.in_use + pixels <= self.capacity:
            self._take(pixels)
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append((pixels, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # granted in the same instant: give it back
                self.release(pixels)
            else:
                self._waiters = deque(w for w in self._waiters if w[1] is not granted)
                self._grant()  # the head of the line may have changed
            raise

    def try_acquire(self, amount: int) -> bool:
        """Take ``amount`` at once if it fits and nobody waits; False (and nothing taken) otherwise."""
        if self._waiters or self.in_use + amount > self.capacity:
            return False
        self._take(amount)
        return True

    def release(self, pixels: int) -> None:
        self.in_use -= pixels
        self._grant()

    def _take(self, pixels: int) -> None:
        self.in_use += pixels
        self.peak = max(self.peak, self.in_use)

    def _grant(self) -> None:
        while self._waiters:
            pixels, granted = self._waiters[0]
            if granted.done():  # its request gave up
                self._waiters.popleft()
                continue
            if self.in_use + pixels > self.capacity:
                return
            self._waiters.popleft()
            self._take(pixels)
            granted.set_result(None)

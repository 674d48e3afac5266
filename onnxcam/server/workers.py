"""The decode/render thread pool, whose work stops when the request it is for gives up.

A request's blocking steps (parsing the form, decoding the image, drawing the
overlay) run on a small pool of worker threads, so that the event loop keeps
answering. ``asyncio.wait_for`` cancelling a request does not stop a thread,
though: measured before this module, a 25-megapixel upload that timed out
after 2 s kept a core busy for 8 s more. So each request gets an
:class:`Errand`:

* a step whose request gave up before a thread took it never starts (its
  ``concurrent.futures`` future is cancelled, and a step checks the token
  again when it starts);
* a running step stops at its next checkpoint: the step functions call
  ``token.check()`` between stages (decode / preprocess, each band of the
  overlay, each part of a form), which raises :class:`Cancelled`;
* :meth:`Errand.when_idle` runs a callback (giving back the request's
  pixel budget) only once no step of the request is left on a thread, so the
  budget never claims memory is free that a thread still fills.

A step inside a C call (Pillow decoding one image) cannot be interrupted; the
checkpoints bound the waste to one stage.

Reading an upload (splitting the form, peeking at the image header) is a
short step of every request; it runs on a thread of its own
(:data:`INTAKE_STEPS`), so that it never queues behind seconds of decoding
and rendering of large images: measured, with it on the shared threads a
burst of small requests reached the batch queue later, spread out by the
decodes of those ahead of them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: Steps that run on the intake thread rather than the decode/render threads: short, and on every request's path.
INTAKE_STEPS = ("parse",)


class Cancelled(BaseException):
    """Raised at a checkpoint of a step whose request has given up (timeout or disconnect).

    A BaseException, like ``asyncio.CancelledError``, so that no ``except Exception`` in the step's code
    (an error turned into a 400, say) swallows it.
    """


class CancelToken:
    """Set once, from the event loop, when a request gives up; read by its steps on worker threads."""

    def __init__(self) -> None:
        self._event = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        self._event.set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the request gave up: call between stages of a long step."""
        if self._event.is_set():
            raise Cancelled()


class WorkerPool:
    """The worker threads (and the intake thread), with the number of steps queued or running and a callback
    per abandoned step."""

    def __init__(self, threads: int, on_cancelled: Callable[[str], None] = lambda step: None):
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="onnxcam-work")
        self.intake = ThreadPoolExecutor(1, thread_name_prefix="onnxcam-intake")
        self.on_cancelled = on_cancelled
        self.steps = 0  # queued or running; updated on the event loop's thread

    def errand(self) -> Errand:
        return Errand(self)

    def executor_for(self, step: str) -> ThreadPoolExecutor:
        return self.intake if step in INTAKE_STEPS else self.executor

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.intake.shutdown(wait=False, cancel_futures=True)


class Errand:
    """One request's steps on the worker threads, all stopped by :meth:`cancel`."""

    def __init__(self, pool: WorkerPool):
        self.pool = pool
        self.token = CancelToken()
        self._active = 0
        self._on_idle: list[Callable[[], None]] = []

    def cancel(self) -> None:
        self.token.cancel()

    async def run(self, step: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread; ``step`` names it in ``onnxcam_jobs_cancelled_total``."""
        self.token.check()
        loop = asyncio.get_running_loop()
        future = self.pool.executor_for(step).submit(self._call, fn, args)
        self._active += 1
        self.pool.steps += 1
        future.add_done_callback(lambda f: _call_soon(loop, self._finished, step, f))
        return await asyncio.wrap_future(future, loop=loop)  # cancelling this cancels a step not yet started

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the event loop once no step of this errand is queued or running (maybe now)."""
        if self._active:
            self._on_idle.append(callback)
        else:
            callback()

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        self.token.check()  # given up between the thread taking the step and the future's cancel()
        return fn(*args)

    def _finished(self, step: str, future: Future) -> None:
        self._active -= 1
        self.pool.steps -= 1
        if future.cancelled() or isinstance(future.exception(), Cancelled):
            self.pool.on_cancelled(step)
        if not self._active:
            callbacks, self._on_idle = self._on_idle, []
            for callback in callbacks:
                callback()


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable, *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: the server is stopping and nobody counts any more
        pass

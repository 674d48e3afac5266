"""When a request gives up: its timeout passes, or its client disconnects while it waits for the answer.

``asyncio.wait_for`` alone notices only the timeout, and a client that closes
its connection would keep its decode, its place in the batch queue and its
overlay rendering going for nothing. :func:`answer_unless_given_up` runs the
request's work next to a watcher of the ASGI ``receive`` channel: once the
body has been read, the next message uvicorn delivers is
``http.disconnect``, sent when the client goes away. Whichever comes first,
the answer, the timeout or the disconnect, the others are cancelled and
awaited, so that no task of the request outlives it (worker threads are
stopped by :class:`onnxcam.server.workers.Errand`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
#: The ASGI ``receive`` channel (``starlette.types.Receive``).
Receive = Callable[[], Awaitable[Mapping[str, Any]]]


class ClientGone(Exception):
    """The client closed its connection before the answer was ready."""


async def until_disconnect(receive: Receive) -> None:
    """Return when the client disconnects; call only after the request body has been read."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def answer_unless_given_up(work: Awaitable[T], receive: Receive, timeout_s: float) -> T:
    """``await work``; raises ``asyncio.TimeoutError`` after ``timeout_s`` or :class:`ClientGone`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnect(receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if watcher in done:
            watcher.result()  # a failing receive (it should not) is an error of its own
            raise ClientGone()
        raise asyncio.TimeoutError()
    finally:
        for t in (task, watcher):
            t.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)

"""Connections that cannot shut clients out: a time limit on request heads, and room made by closing idle sockets.

Measured against uvicorn 0.55 as configured before: a few hundred TCP
connections that sent nothing (or half a request line) stayed open for as
long as the client liked, since uvicorn starts its keep-alive timer only
*after* a first response and restarts nothing while bytes trickle in; and
they counted toward ``limit_concurrency``, so every real request got a
plain-text 503. uvicorn, h11 and Starlette offer no limit on the time to
receive a request head (h11's ``max_incomplete_event_size`` bounds its
*size*, 16 KiB by default, which uvicorn keeps), so this module adds the
smallest thing that does, as a subclass of uvicorn's own h11 protocol
(hypercorn's idle timeout closes silent sockets too, but it has no
connection limit at all; see the report of issue 12 for the measurement):

* **header timeout**: a connection that is waiting for a request head (just
  opened, or idle after an answer) and has not completed one within
  ``header_timeout_s`` seconds is closed, however slowly it trickles bytes;
* **a connection table idle sockets cannot fill**: when more than
  ``max_connections`` are open, the one idle the longest is closed to make
  room; only if none is idle is the new connection refused, with the usual
  JSON 503 and ``Retry-After``;
* **a client that stops reading its answer**: when the answer fills the
  socket's buffers and nothing drains for ``header_timeout_s`` seconds, the
  connection is aborted (uvicorn would otherwise wait for ever, holding the
  request's place among those in flight and its answer in memory);
* a malformed or oversized request head gets a JSON 400 instead of
  uvicorn's plain-text one.

Slow request *bodies* are bounded by the request timeout instead (the body is
read inside it), and the number of requests worked on at once by
:class:`onnxcam.server.admission.InFlightLimit`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from onnxcam.server.limits import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS
from onnxcam.server.problems import RETRY_AFTER_S, problem_json


class ConnectionGuard:
    """Shared by every connection of one server: the limits, the idle connections oldest first, and counts."""

    def __init__(
        self,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        on_closed: Callable[[str], None] = lambda reason: None,
    ):
        if not header_timeout_s > 0 or max_connections < 1:
            raise ValueError("the header timeout and the connection limit must be positive")
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.on_closed = on_closed  # reason: "header_timeout", "stalled_reader", "evicted" or "refused"
        self.open = 0
        self._idle: OrderedDict[GuardedH11Protocol, None] = OrderedDict()

    def protocol_class(self) -> type[H11Protocol]:
        """The class to pass as ``uvicorn.Config(http=...)``."""
        return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": self})

    def opened(self, conn: GuardedH11Protocol) -> bool:
        """Count a new connection; False when it must be refused (the table is full of busy ones)."""
        self.open += 1
        if self.open <= self.max_connections:
            return True
        if self._idle:
            oldest = next(iter(self._idle))
            self.on_closed("evicted")
            oldest.close_idle()
            return True
        self.on_closed("refused")
        return False

    def closed(self, conn: GuardedH11Protocol) -> None:
        self.open -= 1
        self._idle.pop(conn, None)

    def idle(self, conn: GuardedH11Protocol) -> None:
        self._idle[conn] = None
        self._idle.move_to_end(conn)

    def busy(self, conn: GuardedH11Protocol) -> None:
        self._idle.pop(conn, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the header timeout and the idle accounting of its :class:`ConnectionGuard`."""

    guard: ConnectionGuard  # set by ConnectionGuard.protocol_class

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        if not self.guard.opened(self):
            self._refuse()
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_write_timer()
        self.guard.closed(self)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a complete request head arrived: a request is under way
            self._stop_head_timer()
            self.guard.busy(self)

    def on_response_complete(self) -> None:
        self._await_head()  # first: the base class may start a pipelined request right away
        super().on_response_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        if getattr(self, "_write_timer", None) is None:
            self._write_timer = self.loop.call_later(self.guard.header_timeout_s, self._reader_stalled)

    def resume_writing(self) -> None:
        self._stop_write_timer()
        super().resume_writing()

    def send_400_response(self, msg: str) -> None:
        body = problem_json(400, "malformed HTTP request, or a request head over 16 KiB; send a valid HTTP/1.1 request")
        self._send_and_close(400, body, [])

    def close_idle(self) -> None:
        """Close this connection, which is waiting for a request head (timed out, or evicted for room)."""
        self._stop_head_timer()
        self.guard.busy(self)
        if not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self.transport.close()

    # -- internals -------------------------------------------------------------------------------

    def _await_head(self) -> None:
        self._stop_head_timer()
        self.guard.idle(self)
        self._head_timer = self.loop.call_later(self.guard.header_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)  # None too before connection_made set it
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _stop_write_timer(self) -> None:
        timer = getattr(self, "_write_timer", None)  # None too before connection_made set it
        if timer is not None:
            timer.cancel()
            self._write_timer = None

    def _reader_stalled(self) -> None:
        self._write_timer = None
        self.guard.on_closed("stalled_reader")
        self.transport.abort()  # close() would wait for the unread answer to drain, that is for ever

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self.guard.on_closed("header_timeout")
        self.close_idle()

    def _refuse(self) -> None:
        body = problem_json(
            503, f"the server has {self.guard.max_connections} connections open, all busy; retry in a moment"
        )
        self._send_and_close(503, body, [(b"retry-after", str(RETRY_AFTER_S).encode())])

    def _send_and_close(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """Write a whole answer and close; raw bytes, since h11 refuses an answer before a request arrived."""
        head = [
            b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode()),
            b"content-type: application/json",
            b"content-length: %d" % len(body),
            b"connection: close",
            *(k + b": " + v for k, v in headers),
        ]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()

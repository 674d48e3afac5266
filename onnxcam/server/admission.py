"""How many requests the app works on at once; beyond that, a JSON 503 with ``Retry-After`` at once.

uvicorn's own ``limit_concurrency`` counted open *connections*, idle ones
included, and answered a plain-text 503 without ``Retry-After``: measured,
300 idle sockets shut every client out, and a burst of 64 against
``--queue-size 4`` got 7 plain-text answers. This limit counts *requests*
being worked on (an idle socket is no request) and answers the same JSON
problem as onnxcam's own queue. ``/healthz`` and ``/metrics`` are exempt, so
that monitoring sees an overloaded server as alive and can tell why.
"""

from __future__ import annotations

from onnxcam.server.problems import busy, send_problem

#: Paths answered whatever the load: they are cheap, and probes must see the truth under load.
EXEMPT_PATHS = ("/healthz", "/metrics")


class InFlightLimit:
    """ASGI middleware: at most ``limit`` HTTP requests inside ``app`` at once (exempt paths aside)."""

    def __init__(self, app, limit: int):
        if limit < 1:
            raise ValueError(f"the in-flight limit must be positive, got {limit}")
        self.app = app
        self.limit = limit
        self.in_flight = 0  # updated on the event loop's thread only

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limit:
            return await send_problem(
                send, busy(f"the server is busy ({self.limit} requests in progress); retry in a moment")
            )
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

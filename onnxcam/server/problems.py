"""Every error answer of ``onnxcam serve``: ``{"error": message, "status": code}``, whoever sends it.

A request handler raises :class:`HTTPProblem`. The layers below Starlette
(the admission limit, the connection guard) answer in the same format with
:func:`problem_json` and :func:`send_problem`, so that a client never sees a
plain-text error, whichever layer refused it. Nothing here imports Starlette:
``onnxcam serve`` must be able to say "install onnxcam[serve]" without it.
"""

from __future__ import annotations

import json

#: Seconds a client should wait before retrying a 503 (the ``Retry-After`` header).
RETRY_AFTER_S = 1


class HTTPProblem(Exception):
    """An error the client caused (4xx) or the server cannot serve now (503/504), with a one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def busy(message: str) -> HTTPProblem:
    """A 503 with ``Retry-After``: the server is overloaded now; the same request may succeed in a moment."""
    return HTTPProblem(503, message, {"Retry-After": str(RETRY_AFTER_S)})


def problem_content(status: int, message: str) -> dict:
    return {"error": message, "status": status}


def problem_json(status: int, message: str) -> bytes:
    """The body of an error answer, as Starlette's JSONResponse writes it."""
    return json.dumps(problem_content(status, message), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def send_problem(send, problem: HTTPProblem) -> None:
    """Answer an ASGI HTTP request with ``problem``, without Starlette (for ASGI middleware)."""
    body = problem_json(problem.status, problem.message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items()]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

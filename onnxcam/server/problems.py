"""The one exception type a request handler raises to answer with a JSON error."""

from __future__ import annotations


class HTTPProblem(Exception):
    """An error the client caused (4xx) or the server cannot serve now (503/504), with a one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

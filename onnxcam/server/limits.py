"""What one request, and all of them together, may cost the server, with defaults sized for a photo from a phone.

A request is refused with a 4xx before any pixel is decoded when its body is
over ``max_upload_bytes``, and with a 4xx from the image header when it
declares more than ``max_pixels`` (a decompression bomb: a 50 kB PNG can
declare 50 000 x 50 000 pixels). ``timeout_s`` bounds the wait in the queue
plus the explanation, so a stuck client or a flood never holds a connection
for ever.

Together: at most ``pixel_budget`` decoded pixels are held at once (see
:mod:`.pixel_budget`; more waits), at most ``max_in_flight`` requests are
worked on at once (more get a 503 at once, see :mod:`.admission`), at most
``max_connections`` connections are open (idle ones are closed to make room)
and a connection gets ``header_timeout_s`` seconds to send each request head
(see :mod:`.connections`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: 20 MiB: a 48-megapixel JPEG straight from a phone fits, a video does not.
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: 25 megapixels (5000 x 5000): decoded as RGB that is 75 MB of memory per request in flight.
DEFAULT_MAX_PIXELS = 25_000_000
#: Seconds from the upload's arrival to the answer, queueing included.
DEFAULT_TIMEOUT_S = 30.0
#: Classes one request may ask for (``target=`` or ``top_k=``): each costs about one inference.
DEFAULT_MAX_TARGETS = 8
#: Requests worked on at once: as uvicorn's limit_concurrency was for the default queue of 64.
DEFAULT_MAX_IN_FLIGHT = 4 * 64 + 16
#: Seconds a connection gets to send a request head: enough for a phone on a bad network.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Open connections; beyond, the longest-idle one is closed. Each costs a file descriptor and ~20 kB.
DEFAULT_MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class Limits:
    """Per-request and server-wide caps; see the module docstring for why each exists.

    ``pixel_budget`` None means ``max_pixels``: one image of the largest size at a time, any number of
    small ones.
    """

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_targets: int = DEFAULT_MAX_TARGETS
    pixel_budget: int | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if self.pixel_budget is None:
            object.__setattr__(self, "pixel_budget", self.max_pixels)
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.pixel_budget < self.max_pixels:
            raise ValueError(f"pixel_budget ({self.pixel_budget}) must be at least max_pixels ({self.max_pixels}), "
                             "or an image of the largest size allowed could never be decoded")

    def describe(self) -> dict:
        return asdict(self)

"""What one request, and all of them together, may cost the server, with defaults sized for a photo from a phone.

A request is refused with a 4xx before any pixel is decoded when its body is
over ``max_upload_bytes``, and with a 4xx from the image header when it
declares more than ``max_pixels`` (a decompression bomb: a 50 kB PNG can
declare 50 000 x 50 000 pixels). ``timeout_s`` bounds the wait in the queue
plus the explanation, so a stuck client or a flood never holds a connection
for ever.

Together: at most ``upload_budget`` bytes of request bodies are held at once
(counted as they arrive; a body that does not fit gets a 503 at once), at most
``pixel_budget`` decoded pixels are held at once (see
:mod:`.pixel_budget`; more waits), at most ``max_in_flight`` requests are
worked on at once (more get a 503 at once, see :mod:`.admission`), at most
``max_connections`` connections are open (idle ones are closed to make room)
and a connection gets ``header_timeout_s`` seconds to send each request head
(see :mod:`.connections`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from onnxcam.server.batching import DEFAULT_QUEUE_SIZE

#: 20 MiB: a 48-megapixel JPEG straight from a phone fits, a video does not.
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: 25 megapixels (5000 x 5000): decoded as RGB that is 75 MB of memory per request in flight.
DEFAULT_MAX_PIXELS = 25_000_000
#: Seconds from the upload's arrival to the answer, queueing included.
DEFAULT_TIMEOUT_S = 30.0
#: Classes one request may ask for (``target=`` or ``top_k=``): each costs about one inference.
DEFAULT_MAX_TARGETS = 8
#: Requests worked on at once per request a (method, layer) queue may hold, and a few more on top: with the default
#: queue of 64, as uvicorn's limit_concurrency was.
IN_FLIGHT_PER_QUEUED, IN_FLIGHT_SPARE = 4, 16
#: The default upload budget, in uploads of the largest size: eight big photos arriving together are read side by
#: side, and a flood of them holds 8 x 20 MiB of bodies, not 20 MiB per request in flight (272 x 20 MiB).
UPLOADS_PER_BUDGET = 8


def default_max_in_flight(queue_size: int) -> int:
    """Requests worked on at once when the batch queue holds ``queue_size`` (``--max-in-flight``'s default)."""
    return IN_FLIGHT_PER_QUEUED * queue_size + IN_FLIGHT_SPARE


DEFAULT_MAX_IN_FLIGHT = default_max_in_flight(DEFAULT_QUEUE_SIZE)
#: Seconds a connection gets to send a request head: enough for a phone on a bad network.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Open connections; beyond, the longest-idle one is closed. Each costs a file descriptor and ~20 kB.
DEFAULT_MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class Limits:
    """Per-request and server-wide caps; see the module docstring for why each exists.

    ``pixel_budget`` None means ``max_pixels``: one image of the largest size at a time, any number of
    small ones. ``upload_budget`` None means :data:`UPLOADS_PER_BUDGET` x ``max_upload_bytes``.
    """

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_targets: int = DEFAULT_MAX_TARGETS
    pixel_budget: int | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    upload_budget: int | None = None

    def __post_init__(self) -> None:
        pixel_budget = self.max_pixels if self.pixel_budget is None else self.pixel_budget
        upload_budget = UPLOADS_PER_BUDGET * self.max_upload_bytes if self.upload_budget is None else self.upload_budget
        object.__setattr__(self, "pixel_budget", pixel_budget)
        object.__setattr__(self, "upload_budget", upload_budget)
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if pixel_budget < self.max_pixels:
            raise ValueError(
                f"pixel_budget ({pixel_budget}) must be at least max_pixels ({self.max_pixels}), "
                "or an image of the largest size allowed could never be decoded"
            )
        if upload_budget < self.max_upload_bytes:
            raise ValueError(
                f"upload_budget ({upload_budget} bytes) must be at least max_upload_bytes "
                f"({self.max_upload_bytes}), or an upload of the largest size allowed could never be read"
            )

    def describe(self) -> dict:
        return asdict(self)

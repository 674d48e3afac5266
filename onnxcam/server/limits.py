"""What one request may cost the server, with defaults sized for a photo from a phone.

A request is refused with a 4xx before any pixel is decoded when its body is
over ``max_upload_bytes``, and with a 4xx from the image header when it
declares more than ``max_pixels`` (a decompression bomb: a 50 kB PNG can
declare 50 000 x 50 000 pixels). ``timeout_s`` bounds the wait in the queue
plus the explanation, so a stuck client or a flood never holds a connection
for ever.
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


@dataclass(frozen=True)
class Limits:
    """Per-request caps; see the module docstring for why each exists."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_targets: int = DEFAULT_MAX_TARGETS

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")

    def describe(self) -> dict:
        return asdict(self)

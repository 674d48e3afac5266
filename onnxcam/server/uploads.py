"""Read an upload into memory, bounded, from a multipart form or a raw image body.

Starlette's own form parser spools large parts to temporary files; here the
body is read into memory up to the byte limit and split with python-multipart's
streaming parser, so nothing from a request reaches the file system. A body
over the limit is still read (and dropped) up to :data:`DRAIN_FACTOR` times
the limit, so an ordinary client that sends the whole body before reading the
answer sees the 413 instead of a reset connection; a body that the server's
upload budget has no room for is drained the same way and answered 503.

Splitting a form is pure Python work proportional to its number of parts:
measured, a 17.5 MiB form of 300 000 one-byte fields took 7.5 s, during which
the event loop (and ``/healthz``) stood still. So :func:`parse_upload` runs on
a worker thread, refuses a form as soon as it has more than
:data:`MAX_FORM_PARTS` parts or a text field longer than
:data:`MAX_FIELD_BYTES` (python-multipart's ``MultipartParser`` has limits on
part headers only; ``MAX_FIELDS`` belongs to its ``FormParser``, which spools
to disk), and feeds the parser in chunks with a cancellation checkpoint
between them, so a request that timed out stops parsing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.multipart import MultipartParser, parse_options_header

from onnxcam.server.problems import HTTPProblem, busy

if TYPE_CHECKING:  # a TypedDict python-multipart defines for type checkers only
    from python_multipart.multipart import MultipartCallbacks

#: Field names taken as the image in a multipart form (else the first part with a file name).
IMAGE_FIELDS = ("image", "file")
RAW_TYPES = ("application/octet-stream",)
#: How far past the limit an oversized body is drained before the connection is dropped.
DRAIN_FACTOR = 4
#: Parts of a form: the image and a handful of parameters need 7; more is not a client of this API.
MAX_FORM_PARTS = 32
#: Bytes of one text field (a parameter): the longest legitimate value is a layer name.
MAX_FIELD_BYTES = 64 * 1024
#: Bytes handed to the form parser between two cancellation checkpoints.
PARSE_CHUNK_BYTES = 256 * 1024
HOW_TO_SEND = (
    "send the image as multipart/form-data (curl -F image=@photo.jpg) or as the raw body with "
    "Content-Type image/png, image/jpeg, ... (curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg')"
)


@dataclass
class Upload:
    """The image bytes of one request and its text fields (multipart forms only)."""

    data: bytes
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``"multipart/form-data; boundary=x"`` -> ``("multipart/form-data", {"boundary": "x"})``."""
    if not content_type:
        return "", {}
    try:
        kind, options = parse_options_header(content_type)
    except UnicodeEncodeError:  # HTTP headers are latin-1; a str from elsewhere may hold any character
        raise HTTPProblem(415, f"the Content-Type {content_type[:100]!r} is not latin-1 text; " + HOW_TO_SEND) from None
    return kind.decode("latin-1").lower(), {k.decode("latin-1"): v.decode("latin-1") for k, v in options.items()}


async def read_body(
    chunks: AsyncIterator[bytes],
    declared_length: str | None,
    limit: int,
    keep: Callable[[int], bool] = lambda size: True,
    drop: Callable[[], None] = lambda: None,
) -> bytes:
    """The whole body, or a 413 once it passes ``limit`` bytes (judged from Content-Length when given).

    ``keep(n)`` is asked before each chunk of ``n`` bytes is kept (the server's upload budget); once it says no,
    what was read is dropped (``drop()`` gives its bytes back to the budget at once, before the rest is drained),
    and the answer is a 503 with ``Retry-After``.
    """
    too_big = HTTPProblem(
        413,
        f"the upload is larger than the server's limit of {limit} bytes "
        f"({limit / 2**20:.1f} MiB); send a smaller image",
    )
    declared = None
    if declared_length is not None:
        try:
            declared = int(declared_length)
        except ValueError:
            raise HTTPProblem(400, f"Content-Length {declared_length!r} is not a number") from None
    if declared is not None and declared > limit * DRAIN_FACTOR:
        raise too_big  # not worth draining; the server closes the connection after answering
    body, seen, refused = bytearray(), 0, False
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit * DRAIN_FACTOR:
            break
        if seen <= limit and not refused:
            if keep(len(chunk)):
                body += chunk
            else:
                body, refused = bytearray(), True
                drop()
    if seen > limit:
        raise too_big
    if refused:
        raise busy(
            "the server holds as many uploads as it may at once (its upload budget, --upload-budget-mb); "
            "retry in a moment"
        )
    return bytes(body)


def parse_upload(body: bytes, content_type: str | None, check: Callable[[], None] = lambda: None) -> Upload:
    """Find the image in a multipart form or a raw ``image/*`` body; 4xx for anything else.

    ``check`` is called between chunks of a form (a cancellation checkpoint: it raises to stop).
    """
    kind, options = media_type(content_type)
    if kind == "multipart/form-data":
        return _from_form(body, options.get("boundary"), check)
    if kind.startswith("image/") or kind in RAW_TYPES:
        if not body:
            raise HTTPProblem(400, "the request body is empty; " + HOW_TO_SEND)
        return Upload(body)
    shown = kind or "no Content-Type"
    raise HTTPProblem(415, f"unsupported content type {shown!r}; " + HOW_TO_SEND)


def _from_form(body: bytes, boundary: str | None, check: Callable[[], None]) -> Upload:
    if not boundary:
        raise HTTPProblem(400, "multipart/form-data without a boundary; let your HTTP client build the form")
    if not body:
        raise HTTPProblem(400, "the request body is empty; " + HOW_TO_SEND)
    parts = _split_form(body, boundary, check)
    files = [p for p in parts if p.filename is not None or p.name in IMAGE_FIELDS]
    image = next((p for p in files if p.name in IMAGE_FIELDS), files[0] if files else None)
    if image is None:
        raise HTTPProblem(400, "the form has no image; add a file field named 'image' (curl -F image=@photo.jpg)")
    if not image.data:
        raise HTTPProblem(400, f"the form's image field {image.name!r} is empty; attach the file's contents")
    fields = {}
    for p in parts:
        if p is image or p.filename is not None:
            continue
        try:
            fields[p.name] = p.data.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPProblem(400, f"form field {p.name!r} is not UTF-8 text") from None
    return Upload(image.data, image.filename, fields)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    data: bytes = b""


def _split_form(body: bytes, boundary: str, check: Callable[[], None]) -> list[_Part]:
    """Parts of a multipart body, held in memory (python-multipart's callback parser, no temp files).

    413 as soon as the form has more than :data:`MAX_FORM_PARTS` parts or a text field grows past
    :data:`MAX_FIELD_BYTES`: the rest of the body is never parsed.
    """
    parts: list[_Part] = []
    state = {"field": b"", "value": b"", "headers": {}, "data": bytearray(), "part": _Part()}

    def on_part_begin():
        if len(parts) >= MAX_FORM_PARTS:
            raise HTTPProblem(
                413,
                f"the form has more than {MAX_FORM_PARTS} parts (fields); send the image "
                "and only the parameters you need",
            )
        state["headers"], state["data"] = {}, bytearray()

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        _, opts = parse_options_header(state["headers"].get("content-disposition", b""))
        filename = opts.get(b"filename")
        state["part"] = _Part(
            opts.get(b"name", b"").decode("utf-8", "replace"),
            None if filename is None else filename.decode("utf-8", "replace"),
        )

    def on_part_data(data, start, end):
        state["data"] += data[start:end]
        part = state["part"]
        if len(state["data"]) > MAX_FIELD_BYTES and part.filename is None and part.name not in IMAGE_FIELDS:
            raise HTTPProblem(
                413,
                f"form field {part.name[:100]!r} is longer than {MAX_FIELD_BYTES // 1024} KiB; "
                "parameters are short values (see GET /info)",
            )

    def on_part_end():
        part = state["part"]
        part.data = bytes(state["data"])
        parts.append(part)

    callbacks: MultipartCallbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        for start in range(0, len(body), PARSE_CHUNK_BYTES):
            check()
            parser.write(body[start : start + PARSE_CHUNK_BYTES])
        parser.finalize()
    except HTTPProblem:
        raise
    except Exception as e:  # python-multipart's MultipartParseError and friends
        raise HTTPProblem(400, f"malformed multipart/form-data body: {e}") from None
    return parts

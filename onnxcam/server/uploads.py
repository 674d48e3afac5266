"""Read an upload into memory, bounded, from a multipart form or a raw image body.

Starlette's own form parser spools large parts to temporary files; here the
body is read into memory up to the byte limit and split with python-multipart's
streaming parser, so nothing from a request reaches the file system. A body
over the limit is still read (and dropped) up to :data:`DRAIN_FACTOR` times
the limit, so an ordinary client that sends the whole body before reading the
answer sees the 413 instead of a reset connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from onnxcam.server.problems import HTTPProblem

#: Field names taken as the image in a multipart form (else the first part with a file name).
IMAGE_FIELDS = ("image", "file")
RAW_TYPES = ("application/octet-stream",)
#: How far past the limit an oversized body is drained before the connection is dropped.
DRAIN_FACTOR = 4
HOW_TO_SEND = ("send the image as multipart/form-data (curl -F image=@photo.jpg) or as the raw body with "
               "Content-Type image/png, image/jpeg, ... (curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg')")


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
    kind, options = parse_options_header(content_type)
    return kind.decode("latin-1").lower(), {k.decode("latin-1"): v.decode("latin-1") for k, v in options.items()}


async def read_body(chunks: AsyncIterator[bytes], declared_length: str | None, limit: int) -> bytes:
    """The whole body, or a 413 once it passes ``limit`` bytes (judged from Content-Length when given)."""
    too_big = HTTPProblem(413, f"the upload is larger than the server's limit of {limit} bytes "
                               f"({limit / 2 ** 20:.1f} MiB); send a smaller image")
    declared = None
    if declared_length is not None:
        try:
            declared = int(declared_length)
        except ValueError:
            raise HTTPProblem(400, f"Content-Length {declared_length!r} is not a number") from None
    if declared is not None and declared > limit * DRAIN_FACTOR:
        raise too_big  # not worth draining; the server closes the connection after answering
    body, seen = bytearray(), 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen <= limit:
            body += chunk
        elif seen > limit * DRAIN_FACTOR:
            break
    if seen > limit:
        raise too_big
    return bytes(body)


def parse_upload(body: bytes, content_type: str | None) -> Upload:
    """Find the image in a multipart form or a raw ``image/*`` body; 4xx for anything else."""
    kind, options = media_type(content_type)
    if kind == "multipart/form-data":
        return _from_form(body, options.get("boundary"))
    if kind.startswith("image/") or kind in RAW_TYPES:
        if not body:
            raise HTTPProblem(400, "the request body is empty; " + HOW_TO_SEND)
        return Upload(body)
    shown = kind or "no Content-Type"
    raise HTTPProblem(415, f"unsupported content type {shown!r}; " + HOW_TO_SEND)


def _from_form(body: bytes, boundary: str | None) -> Upload:
    if not boundary:
        raise HTTPProblem(400, "multipart/form-data without a boundary; let your HTTP client build the form")
    if not body:
        raise HTTPProblem(400, "the request body is empty; " + HOW_TO_SEND)
    parts = _split_form(body, boundary)
    files = [p for p in parts if p.filename is not None or p.name in IMAGE_FIELDS]
    image = next((p for p in files if p.name in IMAGE_FIELDS), files[0] if files else None)
    if image is None:
        raise HTTPProblem(400, "the form has no image; add a file field named 'image' "
                               "(curl -F image=@photo.jpg)")
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


def _split_form(body: bytes, boundary: str) -> list[_Part]:
    """Parts of a multipart body, held in memory (python-multipart's callback parser, no temp files)."""
    parts: list[_Part] = []
    state = {"field": b"", "value": b"", "headers": {}, "data": bytearray()}

    def on_part_begin():
        state["headers"], state["data"] = {}, bytearray()

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data, start, end):
        state["data"] += data[start:end]

    def on_part_end():
        _, opts = parse_options_header(state["headers"].get("content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        filename = opts.get(b"filename")
        parts.append(_Part(name, None if filename is None else filename.decode("utf-8", "replace"),
                           bytes(state["data"])))

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_part_data": on_part_data, "on_part_end": on_part_end}
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except Exception as e:  # python-multipart's MultipartParseError and friends
        raise HTTPProblem(400, f"malformed multipart/form-data body: {e}") from None
    return parts

"""The threat model for files onnxcam did not write, enforced in one place.

A model file, its external data, the settings file beside it and the labels
file they name may come from anyone (a model hub, a vendor, a colleague's
share). Whatever such a file says, it may make onnxcam:

* read only regular files **inside the model's own folder** (after following
  symlinks): no ``..``, no absolute path, no symlink out of the folder, no
  device, FIFO or folder, no NUL byte in a name (:func:`confined_file`);
* read at most a bounded number of bytes from each of them
  (:func:`read_bounded`; :data:`MAX_SETTINGS_BYTES`, :data:`MAX_LABELS_BYTES`);
* parse JSON, TOML and Python literals of bounded size and nesting
  (:func:`parse_json`, :func:`parse_toml`, :func:`parse_literal`);
* ask for a model input of at most ``max_pixels`` pixels, the same cap the
  user sets for image files (``--max-pixels``; :func:`check_input_size`);
* name at most :data:`MAX_LABELS` classes of at most :data:`MAX_LABEL_CHARS`
  characters each (:func:`check_labels`).

What the user types (command-line flags, arguments of the Python API) is the
user's own and stays free: a ``--labels`` path may point anywhere. Every
refusal is an :class:`~onnxcam.errors.OnnxcamError` subclass chosen by the
caller, so a broken settings file is a ``PreprocessError`` and a broken model
a ``ModelLoadError``, each with a message that says what to do.
"""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from onnxcam.errors import OnnxcamError

#: A settings file holds a handful of fields: 1 MiB is generous.
MAX_SETTINGS_BYTES = 1 << 20
#: A labels file of 100 000 classes with long names still fits in 16 MiB.
MAX_LABELS_BYTES = 16 << 20
#: Class names a model may bring; more is no classifier onnxcam can show.
MAX_LABELS = 100_000
#: A class name is shown in captions and JSON; a longer one is no name.
MAX_LABEL_CHARS = 1_000
#: Nesting of JSON, TOML and Python literals from untrusted files (onnxcam's own fields nest two levels).
MAX_NESTING = 32
#: Characters of one JSON text from an untrusted file (100,000 class names fit); its parse costs tens of bytes
#: per character at worst.
MAX_JSON_CHARS = 4 << 20
#: Characters of one Python literal (Ultralytics' ``names``, a few kB in practice): ``ast.literal_eval`` costs
#: about 500 bytes per character, so this keeps its worst case near 130 MB.
MAX_LITERAL_CHARS = 256 << 10

ErrorType = Callable[[str], OnnxcamError]
_STRUCTURE = re.compile(r"[\[\]{}()\"'\\]")


def file_name(location: str | os.PathLike[str], what: str, error: ErrorType) -> str:
    """``location`` as text, or ``error`` when it holds a NUL byte: no file has such a name (and the OS calls
    would raise a bare ValueError), whoever gave it."""
    text = os.fspath(location)
    if "\0" in text:
        raise error(
            f"{what} {text[:200]!r} contains a NUL byte, which no file name can hold; correct the name "
            "where it is given"
        )
    return text


def confined_file(location: str | os.PathLike[str], base_dir: Path, what: str, error: ErrorType) -> Path:
    """``location`` resolved inside ``base_dir``, or ``error``: it must name a regular file in that folder.

    Symlinks are followed before the check, so a link inside the folder that
    points outside it is refused like ``../x``.
    """
    text = file_name(location, what, error)
    if not text or os.path.isabs(text):
        raise error(
            f"{what} {text[:200]!r} must be a path relative to {base_dir}, not an absolute one; "
            "keep the file beside the model"
        )
    base = base_dir.resolve()
    shown = text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"
    try:
        target = (base / text).resolve()
        if not target.is_relative_to(base):
            raise error(
                f"{what} {shown!r} points outside the model's folder {base}; refusing to read it. "
                "Keep the file beside the model"
            )
        regular = target.is_file()
    except (OSError, RuntimeError) as e:  # a name too long, a symlink loop (RuntimeError on older Pythons)
        raise error(f"{what} {shown!r} cannot be resolved: {getattr(e, 'strerror', None) or e}") from None
    if not regular:
        raise error(f"{what} {shown!r} is missing or not a regular file in {base}; copy it next to the model")
    return target


def read_bounded(path: Path, limit: int, what: str, error: ErrorType) -> bytes:
    """The bytes of the regular file ``path``, or ``error`` when it is larger than ``limit``.

    The file is opened without blocking and checked with ``fstat``, so a FIFO
    or a device that replaced the file after a check is refused rather than
    read for ever (``/dev/zero``) or waited on (a FIFO).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as e:
        raise error(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise error(f"{what} {path} is not a regular file; refusing to read it")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > limit:
            raise error(f"{what} {path} has {info.st_size} bytes, more than the {limit} bytes onnxcam reads")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than the {limit} bytes onnxcam reads")
    return data


def parse_json(text: str, what: str, error: ErrorType) -> Any:
    """``json.loads`` of at most :data:`MAX_JSON_CHARS` characters nested at most :data:`MAX_NESTING` deep."""
    # ValueError: JSONDecodeError, or an int of over 4,300 digits
    return _parse(json.loads, text, MAX_JSON_CHARS, "valid JSON", (ValueError, RecursionError), what, error)


def parse_toml(text: str, what: str, error: ErrorType) -> Any:
    """``tomllib.loads``, refusing tables and arrays nested deeper than :data:`MAX_NESTING`."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        try:
            import tomli as tomllib
        except ImportError:
            raise error(f"reading {what} needs Python 3.11+ (or the tomli package); use JSON instead") from None
    # TOML also nests without brackets (dotted keys, [a.b.c] headers): its depth is measured on the parsed value
    data = _parse(
        tomllib.loads,
        text,
        MAX_JSON_CHARS,
        "valid TOML",
        (ValueError, RecursionError),
        what,
        error,
        count_brackets=False,
    )
    if _depth(data) > MAX_NESTING:
        raise error(f"{what} nests tables or arrays more than {MAX_NESTING} levels deep")
    return data


def parse_literal(text: str, what: str, error: ErrorType) -> Any:
    """``ast.literal_eval`` of a bounded string (Ultralytics stores class names as a Python dict repr)."""
    return _parse(
        ast.literal_eval,
        text,
        MAX_LITERAL_CHARS,
        "a Python literal",
        (ValueError, SyntaxError, TypeError, MemoryError, RecursionError),
        what,
        error,
    )


def check_input_size(size: tuple[int, int], max_pixels: int | None, source: str, error: ErrorType) -> None:
    """Refuse a model input of more than ``max_pixels`` pixels: a photo is resized to it before anything else."""
    h, w = size
    if max_pixels is not None and h * w > max_pixels:
        raise error(
            f"input size {h}x{w} from {source} is {h * w} pixels, more than the cap of {max_pixels} "
            "(--max-pixels, which also caps image files); pass a smaller size, or raise the cap if "
            "the model is trusted"
        )


def check_labels(names: tuple[str, ...], what: str, error: ErrorType) -> tuple[str, ...]:
    """``names`` if there are at most :data:`MAX_LABELS` of at most :data:`MAX_LABEL_CHARS` characters."""
    if len(names) > MAX_LABELS:
        raise error(f"{what} has {len(names)} class names, more than the {MAX_LABELS} onnxcam reads")
    long = next((n for n in names if len(n) > MAX_LABEL_CHARS), None)
    if long is not None:
        raise error(f"{what} has a class name of {len(long)} characters, more than {MAX_LABEL_CHARS}")
    return names


def check_line_count(text: str, what: str, error: ErrorType) -> str:
    """``text`` if it has at most :data:`MAX_LABELS` lines: counted before splitting it into that many strings."""
    if text.count("\n") > MAX_LABELS:
        raise error(f"{what} has more than {MAX_LABELS} lines, more class names than onnxcam reads")
    return text


def _parse(
    parse: Callable[[str], Any],
    text: str,
    limit: int,
    kind: str,
    failures: tuple[type[BaseException], ...],
    what: str,
    error: ErrorType,
    count_brackets: bool = True,
) -> Any:
    """``parse(text)`` behind the guards of every parser of untrusted text.

    At most ``limit`` characters, brackets nested at most :data:`MAX_NESTING` deep (counted before the parser
    sees them, when ``count_brackets``), and any of ``failures`` becomes ``error`` saying that ``what`` is not
    ``kind``.
    """
    if len(text) > limit:
        raise error(f"{what} has {len(text)} characters, more than the {limit} onnxcam parses")
    if count_brackets:
        _check_nesting(text, what, error)
    try:
        return parse(text)
    except failures as e:
        raise error(f"{what} is not {kind}: {e}") from None


def _check_nesting(text: str, what: str, error: ErrorType) -> None:
    """Count bracket depth outside strings before a recursive parser sees ``text``.

    Python's JSON and AST parsers recurse once per level: a few kilobytes of
    ``[[[[`` end in RecursionError, or worse, deep inside them.
    """
    depth = 0
    quote = None
    escaped_at = -2  # the position a backslash escapes
    for m in _STRUCTURE.finditer(text):
        ch, at = m.group(), m.start()
        if at == escaped_at:
            continue
        if ch == "\\":
            escaped_at = at + 1
        elif quote is not None:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
            if depth > MAX_NESTING:
                raise error(f"{what} nests brackets more than {MAX_NESTING} levels deep")
        else:
            depth -= 1


def _depth(value: Any) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        item, level = stack.pop()
        items: Iterable[Any]
        if isinstance(item, dict):
            items = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_NESTING:
            return deepest
        stack.extend((child, level + 1) for child in items)
    return deepest

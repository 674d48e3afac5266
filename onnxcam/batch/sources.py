"""What ``onnxcam batch`` explains: the SOURCE argument turned into a list of :class:`Job`.

A data set arrives in whatever form its owner keeps it: a folder of images, a
text file listing paths (``find data -name '*.jpg' > list.txt``), or a table
with a path column and perhaps a ground-truth label column (a CSV export, a
Parquet file from a data tool). Only paths and labels are read here, never
pixels, so the list stays small however large the images.

Relative paths in a list or table are taken from the list's own folder, so a
list and its images can move together. Each job keeps the path as written:
that is the key a rerun matches on, and what the result rows show.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from onnxcam.cli.explain_files import IMAGE_SUFFIXES, collect_images
from onnxcam.errors import OnnxcamError

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Job:
    """One image to explain.

    ``key``: the path as the source names it (the rows' ``path``); ``file``: where it is read from;
    ``target``: the class to explain instead of the top classes (``--label-column``), else None;
    ``error``: why it cannot be explained at all (a bad label), recorded as a failure without reading it;
    ``data``: the image file's bytes, when they come with the job (a Ray dataset of bytes) instead of from ``file``;
    ``name``: its name under the source folder, for its ``--panels`` picture (else the key is used).
    """

    key: str
    file: str
    target: int | None = None
    error: str | None = None
    data: bytes | None = None
    name: str | None = None


def read_source(source: str, path_column: str = "path", label_column: str | None = None) -> list[Job]:
    """The jobs of ``source``: a folder (walked recursively for image files), an image, a list or a table."""
    p = Path(source)
    if not p.exists():
        raise OnnxcamError(f"no such source: {source}; pass a folder, a text file of paths, or a CSV/Parquet table")
    kind = "folder" if p.is_dir() else TABLE_SUFFIXES.get(p.suffix.lower(), "list")
    if kind in ("folder", "list") and label_column:
        raise OnnxcamError("--label-column needs a CSV or Parquet table as SOURCE")
    if kind == "folder":
        return [Job(str(path), str(path), name=relative.as_posix()) for path, relative in collect_images([source])]
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return [Job(source, source, name=p.name)]
    if kind == "list":
        return _jobs(p.parent, ((line, None) for line in _read_lines(p)))
    rows = _read_csv(p, path_column, label_column) if kind == "csv" else _read_parquet(p, path_column, label_column)
    return _jobs(p.parent, rows)


def _read_lines(p: Path) -> list[str]:
    """Non-blank lines that are not ``#`` comments, stripped."""
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise OnnxcamError(f"cannot read the list of paths {p}: {e}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _check_columns(p: Path, names: list[str], wanted: list[str | None]) -> None:
    for name in wanted:
        if name is not None and name not in names:
            which = "--path-column" if name == wanted[0] else "--label-column"
            raise OnnxcamError(f"{p} has no column {name!r} (its columns: {', '.join(names)}); choose one with {which}")


def _read_csv(p: Path, path_column: str, label_column: str | None) -> list[tuple[str, object]]:
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            _check_columns(p, list(reader.fieldnames or []), [path_column, label_column])
            return [(row[path_column] or "", row[label_column] if label_column else None) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise OnnxcamError(f"cannot read the table {p}: {e}") from None


def _read_parquet(p: Path, path_column: str, label_column: str | None) -> list[tuple[str, object]]:
    from onnxcam.batch.shards import require_pyarrow

    _, pq = require_pyarrow()
    try:
        names = pq.read_schema(p).names
        _check_columns(p, names, [path_column, label_column])
        table = pq.read_table(p, columns=[c for c in (path_column, label_column) if c])
    except OSError as e:  # pyarrow's ArrowInvalid is a ValueError; its IO errors are OSError
        raise OnnxcamError(f"cannot read the table {p}: {e}") from None
    except ValueError as e:
        raise OnnxcamError(f"cannot read the table {p} as Parquet: {e}") from None
    paths = table.column(path_column).to_pylist()
    labels = table.column(label_column).to_pylist() if label_column else [None] * len(paths)
    return [("" if path is None else str(path), label) for path, label in zip(paths, labels)]


def _jobs(base: Path, rows: Iterable[tuple[str, object]]) -> list[Job]:
    jobs = []
    for key, label in rows:
        key = key.strip()
        if not key:
            continue  # an empty cell names no image
        file = str(base / key)
        target, error = parse_label(label)
        jobs.append(Job(key, file, target, error))
    return jobs


def parse_label(value: object) -> tuple[int | None, str | None]:
    """A label cell as a class id; empty is no label (explain the top classes); anything else is an error."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    try:
        number = float(value) if isinstance(value, (str, float)) else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None, f"label {value!r} is not a class id (a whole number)"
    if number != int(number) or number < 0:
        return None, f"label {value!r} is not a class id (a whole number, 0 or more)"
    return int(number), None


def check_targets(jobs: list[Job], classes: int | None) -> list[Job]:
    """Jobs whose label is outside the model's ``classes`` become failures, before any image is read."""
    if classes is None:
        return jobs
    return [
        Job(j.key, j.file, None, f"label {j.target} is not a class of the model (it has {classes})", j.data, j.name)
        if j.target is not None and j.target >= classes
        else j
        for j in jobs
    ]

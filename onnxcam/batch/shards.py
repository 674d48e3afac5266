"""The output dataset: Parquet shards committed atomically, so a run can stop anywhere and resume.

Layout of OUT::

    OUT/results/part-000001.parquet   one row per (image, explained class)
    OUT/failures/part-000001.parquet  one row per image that failed

Each shard is written under a temporary ``.part-....tmp`` name (ignored by
pyarrow, pandas and DuckDB, which skip dot-files), flushed to disk, then
renamed onto its final name with ``os.replace``: a reader sees a whole shard
or none. An image is in exactly one committed shard, of one table: a rerun
reads the ``path`` column of every committed shard and skips those images, so
a crash loses at most the shards in flight and no image ever gets two rows.
Only the parent process writes here.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from pathlib import Path
from typing import Any

from onnxcam.batch.schema import FAILURE_COLUMNS, RESULT_COLUMNS, SCHEMA_VERSION, arrow_schema
from onnxcam.cli.explain_files import prepare_output_dir, replacing
from onnxcam.errors import OnnxcamError

RESULTS, FAILURES = "results", "failures"
_SHARD = re.compile(r"part-(\d+)\.parquet")
_TEMPORARY = re.compile(r"\.part-\d+\.parquet\.[0-9a-f]+\.tmp")
#: Metadata that must match for a rerun to add shards to a dataset (other settings give other rows).
RUN_KEYS = ("schema_version", "model", "layer", "method")


def require_pyarrow() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``; when pyarrow is missing, say in one line which extra to install.

    Imported by name: pyarrow ships no type information, and onnxcam only hands it plain rows.
    """
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise OnnxcamError(
            "onnxcam batch writes Parquet with pyarrow, which is not installed; pip install 'onnxcam[batch]'"
        ) from None


class ShardWriter:
    """The dataset in ``out``: what is done already, and the next shards, committed one at a time."""

    def __init__(self, out: Path, metadata: dict[str, str], overwrite: bool = False):
        require_pyarrow()
        self.out = out
        self.metadata = {"schema_version": SCHEMA_VERSION, **{k: str(v) for k, v in metadata.items()}}
        self.written = 0
        prepare_output_dir(out)
        for table in (RESULTS, FAILURES):
            folder = out / table
            if overwrite and folder.is_dir():
                for shard in self._shards(table):
                    shard.unlink()
            folder.mkdir(exist_ok=True)
            for leftover in folder.iterdir():  # a killed run's half-written shard: never committed, never read
                if _TEMPORARY.fullmatch(leftover.name):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
        self._check_same_run()
        self._next = 1 + max(
            (int(m.group(1)) for t in (RESULTS, FAILURES) for s in self._shards(t) if (m := _SHARD.fullmatch(s.name))),
            default=0,
        )

    def _shards(self, table: str) -> list[Path]:
        folder = self.out / table
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if _SHARD.fullmatch(p.name))

    def _check_same_run(self) -> None:
        """Refuse to mix rows of another model, layer, method or schema into this dataset."""
        _, pq = require_pyarrow()
        for table in (RESULTS, FAILURES):
            for shard in self._shards(table)[:1]:
                found = {k.decode(): v.decode() for k, v in (pq.read_schema(shard).metadata or {}).items()}
                for key in RUN_KEYS:
                    if found.get(key) != self.metadata.get(key):
                        raise OnnxcamError(
                            f"{self.out} holds results with {key} {found.get(key)!r}, not "
                            f"{self.metadata.get(key)!r}; pass --overwrite to start over, or "
                            "choose another -o"
                        )

    def done(self) -> tuple[set[str], int]:
        """The paths of every image in a committed shard, and how many of them failed."""
        _, pq = require_pyarrow()
        paths: set[str] = set()
        failed = 0
        for table in (RESULTS, FAILURES):
            for shard in self._shards(table):
                column = set(pq.read_table(shard, columns=["path"]).column("path").to_pylist())
                paths |= column
                failed += len(column) if table == FAILURES else 0
        return paths, failed

    def commit(self, rows: list[dict[str, Any]], failures: list[dict[str, str]]) -> None:
        """Write one shard of each non-empty table under the next free number; failures first, each atomic."""
        for table, records, columns in ((FAILURES, failures, FAILURE_COLUMNS), (RESULTS, rows, RESULT_COLUMNS)):
            if records:
                self._write(self.out / table / f"part-{self._next:06d}.parquet", records, columns)
        if rows or failures:
            self._next += 1
            self.written += 1

    def _write(self, path: Path, records: list[dict[str, Any]], columns: dict[str, tuple[str, str]]) -> None:
        pa, pq = require_pyarrow()
        table = pa.Table.from_pylist(records, schema=arrow_schema(columns, self.metadata))
        try:
            with replacing(path) as temporary:
                pq.write_table(table, temporary)
                with open(temporary, "rb") as fh:
                    os.fsync(fh.fileno())  # the rename must never commit a file whose bytes are not on disk
        except OSError as e:
            raise OnnxcamError(f"cannot write {path}: {e.strerror or e}; choose another -o") from None

"""``--engine ray`` and :func:`explain_dataset`: the batch work on Ray actors, on this machine or a cluster.

One machine's cores run out; Ray Data spreads the same work over a cluster and
brings its own scheduling, backpressure and fault tolerance. Nothing about the
work itself changes: each actor holds one Explainer (built once, reused for
every batch) and runs :func:`~onnxcam.batch.rows.explain_jobs`, the very
function the local engine's workers run, and returns rows and failures as one
Arrow table (:data:`OUTPUT_COLUMNS`: the result columns plus ``error``).

* :func:`explain_dataset` is the Python API: a ``ray.data.Dataset`` of image
  paths (or bytes) in, a ``ray.data.Dataset`` of result rows out, for
  pipelines that already live in Ray.
* :class:`RayEngine` is what ``onnxcam batch --engine ray`` runs: the driver
  reads SOURCE and skips what is done exactly as for ``local``, hands the rest
  to Ray Data, and commits the rows that come back with the same
  :class:`~onnxcam.batch.shards.ShardWriter`, so resume, crash safety and the
  failures table are the same code for both engines.

Faults: Ray Data restarts an actor that died (``max_restarts=-1``) and retries
the batches it held (``max_task_retries=-1``), so a killed actor costs one
batch's time; a batch's rows reach the driver once, and the driver drops any
image it already has (:func:`~onnxcam.batch.run.run_batch`). A killed driver
loses only the shards not yet committed. Ray is imported only here, and only
when this engine or :func:`explain_dataset` is used.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from onnxcam.batch.engines import ExplainerConfig, cpu_cores
from onnxcam.batch.rows import BatchOutcome, RowOptions, explain_jobs
from onnxcam.batch.schema import RESULT_COLUMNS, arrow_schema
from onnxcam.batch.sources import Job, check_targets, parse_label
from onnxcam.errors import OnnxcamError
from onnxcam.preprocess import DEFAULT_MAX_PIXELS, PreprocessSpec

#: explain_dataset's rows: the results table's columns, and ``error`` for an image that could not be explained.
OUTPUT_COLUMNS: dict[str, tuple[str, str]] = {
    **RESULT_COLUMNS,
    "error": ("string", "why the image could not be explained (every other column but path is then null); else null"),
}
#: ONNX Runtime's providers for an actor given a GPU: CUDA, and the CPU for any op CUDA lacks.
CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")
#: Batches per Ray block: a block is one actor task; a few batches each keep Ray's per-task cost small.
BATCHES_PER_BLOCK = 4


def require_ray() -> Any:
    """The ``ray`` module (with Ray Data); when it is missing, say in one line which extra to install.

    Imported by name, like pyarrow: the lint environment has no Ray, and onnxcam hands it only plain tables.
    """
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError:
        raise OnnxcamError(
            "--engine ray and explain_dataset need Ray Data, which is not installed; pip install 'onnxcam[ray]'"
        ) from None
    return ray


@dataclass(frozen=True)
class JobColumns:
    """Which columns of an input batch make a :class:`~onnxcam.batch.sources.Job`.

    ``path``: the image's name, the rows' ``path`` (required: it keys the results); ``file``: where to read it
    (default: ``path``); ``data``: the image file's bytes instead; ``label``: a class id to explain;
    ``error``: a reason the job fails without being read (the CLI's bad labels); ``name``: the panel's name.
    """

    path: str = "path"
    file: str | None = None
    data: str | None = None
    label: str | None = None
    error: str | None = None
    name: str | None = None

    def jobs(self, table: Any) -> list[Job]:
        """The jobs of one Arrow batch, each path once (a repeated path would get its rows twice)."""
        jobs, seen = [], set()
        for record in table.to_pylist():
            key = record.get(self.path)
            key = "" if key is None else str(key)
            if key in seen:
                continue
            seen.add(key)
            target, error = parse_label(record.get(self.label)) if self.label else (None, None)
            error = (record.get(self.error) if self.error else None) or error
            data = record.get(self.data) if self.data else None
            file = record.get(self.file) if self.file else key
            if not key and data is None:
                error = error or f"no image: the {self.path!r} column is empty"
            name = record.get(self.name) if self.name else None
            data = bytes(data) if data is not None else None
            jobs.append(Job(key, str(file or ""), target, error, data, str(name) if name is not None else None))
        return jobs


def outcome_table(outcome: BatchOutcome) -> Any:
    """A batch's rows and failures as one Arrow table of :data:`OUTPUT_COLUMNS` (a failure: path and error)."""
    pa = importlib.import_module("pyarrow")
    failures = [{"path": f["path"], "error": f["error"]} for f in outcome.failures]
    return pa.Table.from_pylist(outcome.rows + failures, schema=arrow_schema(OUTPUT_COLUMNS, {}))


def outcome_from_table(table: Any) -> BatchOutcome:
    """The driver's side of :func:`outcome_table`: split the table back into rows and failures."""
    outcome = BatchOutcome()
    paths = set()
    for record in table.to_pylist():
        error = record.pop("error", None)
        paths.add(record["path"])
        if error is None:
            outcome.rows.append(record)
        else:
            outcome.failures.append({"path": record["path"], "error": error})
    outcome.images = len(paths)
    return outcome


class ExplainBatch:
    """Ray Data's callable class: one instance per actor, holding one Explainer built once for every batch."""

    def __init__(self, config: ExplainerConfig, rows: RowOptions, columns: JobColumns) -> None:
        self.explainer = config.build()
        self.rows, self.columns = rows, columns

    def __call__(self, batch: Any) -> Any:
        jobs = check_targets(self.columns.jobs(batch), self.explainer.num_classes)
        return outcome_table(explain_jobs(self.explainer, self.rows, jobs))


def _explain(
    ds: Any,
    config: ExplainerConfig,
    rows: RowOptions,
    columns: JobColumns,
    *,
    workers: int,
    batch_size: int,
    gpus: float,
) -> Any:
    """``ds`` of jobs -> a lazy dataset of :data:`OUTPUT_COLUMNS`, on ``workers`` actors of ``config.threads`` CPUs."""
    ray = require_ray()
    extra = {"num_gpus": gpus} if gpus > 0 else {}
    return ds.map_batches(
        ExplainBatch,
        fn_constructor_args=(config, rows, columns),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=config.threads or 1,
        **extra,
    )


def _check_counts(batch_size: int, workers: int, threads: int, gpus: float) -> None:
    if batch_size < 1 or workers < 1 or threads < 1:
        raise OnnxcamError("batch_size, workers and threads must be at least 1")
    if gpus < 0:
        raise OnnxcamError("gpus_per_worker must be 0 or more")


def explain_dataset(
    model: str | os.PathLike[str],
    ds: Any,
    *,
    layer: str = "auto",
    method: str = "gradcam",
    path_column: str = "path",
    bytes_column: str | None = None,
    label_column: str | None = None,
    top: int = 1,
    targets: Sequence[int] | None = None,
    topk_scores: int = 5,
    heatmaps: bool = False,
    spec: PreprocessSpec | None = None,
    output: str | int = 0,
    batch_size: int = 8,
    workers: int = 1,
    threads: int = 1,
    gpus_per_worker: float = 0.0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    explainer_options: dict[str, Any] | None = None,
) -> Any:
    """Explain every image of the Ray dataset ``ds``; returns a lazy ``ray.data.Dataset`` of result rows.

    For pipelines that already hold their images in Ray Data: nothing is written, and the result is a dataset to
    filter, join or write like any other. Its rows have the columns of ``onnxcam batch``'s results table
    (:data:`~onnxcam.batch.RESULT_COLUMNS`, docs/batch.md) plus ``error``: null for a result row; for an image
    that could not be explained (unreadable, too large, a bad label), one row with ``path`` and the reason, every
    other column null, so no image silently disappears.

    ``ds`` needs a ``path_column`` (the rows' ``path``, read from disk on the actor unless ``bytes_column`` holds
    the file's bytes, as ``ray.data.read_binary_files(..., include_paths=True)`` gives); on a cluster the model
    and the image paths must be readable on every node. ``label_column``: a class id per image to explain instead
    of its top ``top`` classes (``targets``: these classes for every image). The preprocessing is ``spec``, else
    what :func:`~onnxcam.preprocess.derive_spec` finds for ``model``. ``layer="auto"`` is resolved here, once,
    so every actor explains the same layer. ``workers`` actors of ``threads`` CPUs each (``gpus_per_worker``:
    GPUs each, run with ONNX Runtime's CUDA provider) each build one Explainer. Paths are not deduplicated
    across batches. Connect to Ray (``ray.init``) first, or Ray starts a local runtime.

    Example::

        import ray
        from onnxcam.batch import explain_dataset

        images = ray.data.read_binary_files("s3://bucket/val/", include_paths=True)
        rows = explain_dataset("model.onnx", images, bytes_column="bytes", top=3, workers=8)
        rows.filter(lambda r: r["error"] is None).write_parquet("s3://bucket/cams/")
    """
    require_ray()
    from onnxcam.batch.shards import require_pyarrow
    from onnxcam.preprocess import derive_spec

    require_pyarrow()
    _check_counts(batch_size, workers, threads, gpus_per_worker)
    if top < 1 or topk_scores < 0:
        raise OnnxcamError("top must be at least 1 and topk_scores at least 0")
    names = list(ds.columns() or [])
    for column in (path_column, bytes_column, label_column):
        if column is not None and column not in names:
            raise OnnxcamError(f"the dataset has no column {column!r} (its columns: {', '.join(names)})")
    # an absolute path: an actor's working folder is not the caller's
    config = ExplainerConfig(os.path.abspath(model), layer, method, output, 1, dict(explainer_options or {}))
    explainer = config.build()  # says now what is wrong with the model, and resolves layer="auto" once for all
    providers = CUDA if gpus_per_worker > 0 else None
    config = dataclasses.replace(config, layer=_as_layer(explainer.layer), threads=threads, providers=providers)
    spec = spec or derive_spec(explainer.index, model_path=config.model)
    classes = explainer.num_classes
    if targets and classes is not None and any(not 0 <= t < classes for t in targets):
        raise OnnxcamError(f"targets: the model has {classes} classes (0..{classes - 1})")
    rows = RowOptions(
        spec,
        top=top,
        targets=tuple(targets) if targets else None,
        topk_scores=topk_scores,
        heatmaps=heatmaps,
        max_pixels=max_pixels,
    )
    columns = JobColumns(path=path_column, data=bytes_column, label=label_column)
    return _explain(ds, config, rows, columns, workers=workers, batch_size=batch_size, gpus=gpus_per_worker)


def ray_error_line(error: BaseException) -> str:
    """One line for a failed Ray job: an onnxcam error's own text where one caused it, else the last line."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else current.__cause__
    for item in reversed(seen):
        if isinstance(item, OnnxcamError) and "Traceback" not in str(item):
            return str(item).strip().splitlines()[0]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _check_reachable(address: str, seconds: float = 10.0) -> None:
    """Fail in seconds, in one line, when nothing listens at a ``HOST:PORT`` address.

    Ray itself retries a cluster that is not there for minutes before it gives up. ``auto``, ``ray://`` (Ray
    Client) and other forms are left to Ray.
    """
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as e:
        raise OnnxcamError(
            f"cannot join the Ray cluster at {address}: {e.strerror or e}; is `ray start --head` running there?"
        ) from None


_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _loopback_only() -> Callable[[], None] | None:
    """Make the local runtime that ``ray.init`` starts listen on 127.0.0.1 only; returns what undoes it.

    On Linux Ray binds its GCS, raylet and workers to the machine's routable address even for a one-machine
    runtime (``_node_ip_address="127.0.0.1"`` is deliberately resolved to that address). Ray's own switch for
    one-machine runtimes (meant for macOS and Windows) keeps everything on the loopback interface: the variable
    for the processes ray.init starts, the constant for this one, which imported Ray already. Both are Ray
    internals: if they move, the runtime starts as Ray's default (token authentication on, as of Ray 2.5x).
    """
    try:
        constants = importlib.import_module("ray._private.ray_constants")
        before_constant = getattr(constants, "ENABLE_RAY_CLUSTER")  # noqa: B009 - a module mypy cannot see into
    except (ImportError, AttributeError):
        return None
    before_variable = os.environ.get(_CLUSTER_SWITCH)
    os.environ[_CLUSTER_SWITCH] = "0"
    setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010

    def undo() -> None:
        setattr(constants, "ENABLE_RAY_CLUSTER", before_constant)  # noqa: B010
        if before_variable is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = before_variable

    return undo


class RayEngine:
    """``--engine ray``: the driver's jobs explained on a pool of Ray actors, outcomes as they finish.

    Without ``address`` it starts a local Ray runtime on the loopback interface (no dashboard) and stops it
    afterwards; with one it joins that cluster. If Ray is already initialised (a program calling
    :func:`~onnxcam.batch.run_batch`), it uses that and leaves it running.
    """

    def __init__(
        self,
        config: ExplainerConfig,
        options: RowOptions,
        workers: int | None,
        *,
        batch_size: int = 8,
        address: str | None = None,
        gpus: float = 0.0,
    ):
        self.ray = require_ray()
        threads = config.threads or 1
        _check_counts(batch_size, workers or 1, threads, gpus)
        # an absolute path: an actor's working folder is not the command's
        config = dataclasses.replace(config, model=os.path.abspath(config.model))
        if gpus > 0 and not config.providers:
            config = dataclasses.replace(config, providers=CUDA)
        self.config, self.options, self.workers = config, options, workers
        self.batch_size, self.address, self.gpus = batch_size, address, gpus
        self._started = False
        self._loopback: Callable[[], None] | None = None

    def __enter__(self) -> RayEngine:
        ray = self.ray
        if not ray.is_initialized():
            self._init()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # onnxcam batch draws its own bar
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # "progress bars disabled", execution summaries
        if self.workers is None:
            cpus = float(ray.cluster_resources().get("CPU", 1))
            self.workers = max(1, int(cpus // (self.config.threads or 1)))
        return self

    def _init(self) -> None:
        """Start or join Ray; keep onnxcam's SIGTERM handling (ray.init replaces it with sys.exit)."""
        ray = self.ray
        main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGTERM) if main else None
        logging.getLogger("ray").setLevel(logging.ERROR)  # "started a local instance" and other chatter
        if self.address:
            _check_reachable(self.address)
        try:
            if self.address:
                ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                cpus = max(cpu_cores(), (self.workers or 1) * (self.config.threads or 1))
                self._loopback = _loopback_only()
                ray.init(
                    address="local",
                    num_cpus=cpus,
                    include_dashboard=False,
                    logging_level=logging.ERROR,
                    log_to_driver=False,
                )
        except Exception as e:  # ConnectionError, RuntimeError, ValueError: Ray's own, one line
            if self._loopback is not None:
                self._loopback()
                self._loopback = None
            where = f"join the Ray cluster at {self.address}" if self.address else "start a local Ray runtime"
            raise OnnxcamError(f"cannot {where}: {ray_error_line(e)}") from None
        finally:
            if main and handler is not None:
                signal.signal(signal.SIGTERM, handler)
        self._started = True

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False
        if self._loopback is not None:
            self._loopback()
            self._loopback = None

    def map(self, batches: Iterable[list[Job]]) -> Iterator[BatchOutcome]:
        """All the jobs as one Ray dataset (blocks of a few batches), explained by the actor pool, streamed back.

        Files are named by absolute path: an actor's working folder is not the command's.
        """
        ray = self.ray
        items = [
            {"key": j.key, "file": os.path.abspath(j.file), "target": j.target, "error": j.error, "name": j.name}
            for b in batches
            for j in b
        ]
        if not items:
            return
        workers = self.workers or 1
        blocks = max(min(len(items), workers), math.ceil(len(items) / (self.batch_size * BATCHES_PER_BLOCK)))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        columns = JobColumns(path="key", file="file", label="target", error="error", name="name")
        out = _explain(
            ds,
            self.config,
            self.options,
            columns,
            workers=workers,
            batch_size=self.batch_size,
            gpus=self.gpus,
        )
        try:
            for table in out.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield outcome_from_table(table)
        except OnnxcamError:
            raise
        except Exception as e:  # Ray's errors carry whole remote tracebacks: one line, and what to do
            raise OnnxcamError(
                f"the Ray job failed: {ray_error_line(e)}; the shards written are kept: rerun the same command to go on"
            ) from None


def _as_layer(layer: str | list[str]) -> str | tuple[str, ...]:
    """The Explainer's resolved layer(s) for the actors' config: a name, or a tuple of names (hashable, frozen)."""
    return layer if isinstance(layer, str) else tuple(layer)

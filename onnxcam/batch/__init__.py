"""Explain whole data sets into a Parquet dataset: ``onnxcam batch``.

A data set is too big for one PNG panel per image and one JSON summary: the
results must be queryable by a data tool, the run must survive a crash without
redoing (or doubling) the work done, and it must use every core. Each module
does one job:

* :mod:`.sources`: what to explain (a folder, a list of paths, a CSV or Parquet table);
* :mod:`.schema`: the columns written, documented and versioned;
* :mod:`.rows`: one batch of images -> result rows and failures (runs in a worker);
* :mod:`.engines`: where batches run (``local``: in-process or a pool of worker processes);
* :mod:`.ray_engine`: ``ray``: Ray actors on this machine or a cluster, and :func:`explain_dataset`,
  which explains a ``ray.data.Dataset`` into another;
* :mod:`.shards`: atomic, resumable Parquet shards, written by the parent only;
* :mod:`.run`: the loop that ties them together with bounded memory.

pyarrow is an optional extra (``pip install 'onnxcam[batch]'``); only :mod:`.shards`
and the Parquet reader in :mod:`.sources` import it, when a run starts. Ray is another
(``pip install 'onnxcam[ray]'``), imported only when the ray engine or
:func:`explain_dataset` runs: importing this package never imports it.
"""

from onnxcam.batch.ray_engine import OUTPUT_COLUMNS, explain_dataset
from onnxcam.batch.run import BatchOptions, BatchSummary, run_batch
from onnxcam.batch.schema import FAILURE_COLUMNS, RESULT_COLUMNS, SCHEMA_VERSION

__all__ = [
    "BatchOptions",
    "BatchSummary",
    "run_batch",
    "explain_dataset",
    "RESULT_COLUMNS",
    "FAILURE_COLUMNS",
    "OUTPUT_COLUMNS",
    "SCHEMA_VERSION",
]

"""``onnxcam batch --engine ray`` and ``explain_dataset`` on a local Ray runtime: rows, resume and faults.

The faults are real: an actor process that exits mid-job, a driver killed with SIGKILL mid-job and rerun, a
worker whose ONNX Runtime call raises for one image. After each, every image must have exactly one row (or one
failure), and no half-written shard may be readable as data.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from onnxcam.batch import ray_engine  # noqa: E402
from onnxcam.batch.ray_engine import ExplainBatch, explain_dataset  # noqa: E402
from onnxcam.cli.main import main  # noqa: E402
from onnxcam.errors import OnnxcamError  # noqa: E402

from tests.test_batch import MODEL, _noise_images, _rows, kill_after_first_shard  # noqa: E402

# The fault-injecting actor classes below run in Ray's worker processes, which cannot import this test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
# Ray Data warns about its own deprecated settings when its context is first used.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray runtime for the in-process tests (a start costs seconds): 2 CPUs, loopback, no dashboard."""
    undo = ray_engine._loopback_only()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if undo is not None:
        undo()


def _ray_batch(folder: Path, out: Path, *args: str) -> int:
    return main(["batch", MODEL, str(folder), "-o", str(out), "--engine", "ray", "--workers", "2", *args])


def _constant(x: np.ndarray) -> np.ndarray:
    """Which images of a batch are one flat colour (the poisoned image: noise images never are)."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return (flat.max(axis=2) == flat.min(axis=2)).all(axis=1)


class DiesOnce(ExplainBatch):
    """An actor whose process exits in the middle of the job, once (the marker file says it happened)."""

    marker = ""

    def __call__(self, batch):
        if "img0040.png" in " ".join(map(str, batch.column("key").to_pylist())) and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().__call__(batch)


class RaisesOnFlatImages(ExplainBatch):
    """An actor whose ONNX Runtime call raises for any batch holding a flat-coloured image."""

    def __init__(self, *args):
        super().__init__(*args)
        explain = self.explainer.explain

        def failing(inputs, **kwargs):
            if any(_constant(x).any() for x in inputs.values()):
                raise RuntimeError("injected fault\nsecond line")
            return explain(inputs, **kwargs)

        self.explainer.explain = failing


def _poisoned_folder(folder: Path, n: int) -> Path:
    from PIL import Image

    _noise_images(folder, n)
    poison = folder / "img0002_flat.png"  # sorts among the others: it shares a batch with them
    Image.new("RGB", (50, 40), (7, 7, 7)).save(poison)
    return poison


def test_explain_dataset_matches_the_local_engine(tmp_path, local_ray):
    folder = tmp_path / "imgs"
    images = _noise_images(folder, 12)
    (folder / "broken.png").write_bytes(b"not an image")
    local = tmp_path / "local"
    assert main(["batch", MODEL, str(folder), "-o", str(local), "--workers", "1", "--top", "2"]) == 1
    expected = _rows(local)

    paths = [str(p) for p in images] + [str(folder / "broken.png")]
    result = explain_dataset(MODEL, ray.data.from_items([{"path": p} for p in paths]), top=2, workers=2, batch_size=5)
    got = sorted(result.take_all(), key=lambda r: (r["path"], r["class_id"] or 0))
    failed = [r for r in got if r["error"] is not None]
    assert [r["path"] for r in failed] == [str(folder / "broken.png")] and failed[0]["class_id"] is None
    rows = [{k: v for k, v in r.items() if k != "error"} for r in got if r["error"] is None]
    assert rows == expected and len(rows) == 24

    # the file's bytes instead of its path (as read_binary_files gives them), and a label column
    by_bytes = [{"path": str(p), "bytes": p.read_bytes(), "y": 3} for p in images[:4]]
    by_path = [{"path": str(p), "y": 3} for p in images[:4]]
    from_bytes = explain_dataset(MODEL, ray.data.from_items(by_bytes), bytes_column="bytes", label_column="y")
    from_files = explain_dataset(MODEL, ray.data.from_items(by_path), label_column="y")
    got = sorted(from_bytes.take_all(), key=lambda r: r["path"])
    assert got == sorted(from_files.take_all(), key=lambda r: r["path"])
    assert [r["path"] for r in got] == [str(p) for p in images[:4]] and {r["class_id"] for r in got} == {3}

    with pytest.raises(OnnxcamError, match="no column 'file'"):
        explain_dataset(MODEL, ray.data.from_items([{"path": "x"}]), path_column="file")


def test_actor_killed_mid_job_every_image_once(tmp_path, local_ray, monkeypatch, capsys):
    folder = tmp_path / "imgs"
    _noise_images(folder, 80)
    marker = tmp_path / "died"
    monkeypatch.setattr(DiesOnce, "marker", str(marker))
    monkeypatch.setattr(ray_engine, "ExplainBatch", DiesOnce)
    out = tmp_path / "out"
    assert _ray_batch(folder, out, "--batch-size", "4", "--shard-size", "8") == 0
    assert marker.exists(), "the actor should have died once"
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in folder.glob("*.png"))
    assert not _rows(out, "failures")
    assert "explained 80 image(s), 80 row(s)" in capsys.readouterr().err
    assert _ray_batch(folder, out, "--batch-size", "4") == 0  # rerun: nothing new
    assert "explained 0 image(s)" in capsys.readouterr().err and len(_rows(out)) == 80


def test_worker_raising_on_one_image_fails_only_that_image(tmp_path, local_ray, monkeypatch, capsys):
    folder = tmp_path / "imgs"
    poison = _poisoned_folder(folder, 9)
    monkeypatch.setattr(ray_engine, "ExplainBatch", RaisesOnFlatImages)
    out, panels = tmp_path / "out", tmp_path / "panels"
    assert _ray_batch(folder, out, "--batch-size", "4", "--panels", str(panels)) == 1
    err = capsys.readouterr().err
    assert "explained 9 image(s), 9 row(s)" in err and "1 failed" in err and "Traceback" not in err
    assert [f["path"] for f in _rows(out, "failures")] == [str(poison)]
    assert _rows(out, "failures")[0]["error"] == "RuntimeError: injected fault"
    assert len(_rows(out)) == 9 and str(poison) not in {r["path"] for r in _rows(out)}
    assert sorted(p.name for p in panels.iterdir()) == sorted(f"{p.name}.cam.png" for p in folder.glob("img????.png"))


def _kill_leftovers(driver: int) -> None:
    """Stop what a SIGKILLed driver's local Ray runtime leaves behind: Ray does not reap its per-node agents.

    They are found by the files they hold open in the runtime's session folder, named after the driver's pid.
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any("/session_" in f and f"_{driver}/" in f for f in fds):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def test_killed_driver_resumes_without_duplicates(tmp_path):
    """SIGKILL the whole `onnxcam batch --engine ray` process (its own local Ray runtime) mid-job, then rerun."""
    folder = tmp_path / "imgs"
    _noise_images(folder, 400)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "onnxcam.cli.main", "batch", MODEL, str(folder), "-o", str(out), "--engine", "ray"]
    cmd += ["--workers", "2", "--threads", "1", "--shard-size", "8", "--batch-size", "4"]
    driver = kill_after_first_shard(cmd, out, wait=120)
    time.sleep(1)  # the runtime's own processes notice their driver is gone
    _kill_leftovers(driver)
    partial = len(_rows(out))
    assert 0 < partial < 400, "the driver should be killed between its first shard and its end"
    leftover = out / "results" / ".part-000999.parquet.0123456789abcdef.tmp"  # a shard cut off mid-write
    leftover.write_bytes(b"PAR1 half a shard")
    assert len(_rows(out)) == partial
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"{partial} done before" in again.stderr
    rows = _rows(out)
    assert len(rows) == 400 and len({r["path"] for r in rows}) == 400
    assert not leftover.exists()
    for shard in (out / "results").iterdir():
        pq.read_table(shard)  # every file there is a whole shard

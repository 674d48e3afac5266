"""``onnxcam batch``: rows as Explainer.explain gives them, resume, crash safety, bad images, workers, labels."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ds = pytest.importorskip("pyarrow.dataset")

from onnxcam import Explainer, demo  # noqa: E402
from onnxcam.cli.main import main  # noqa: E402
from onnxcam.preprocess import derive_spec, preprocess_image  # noqa: E402

MODEL = str(demo.DEMO_MODEL)


def _demo_folder(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in demo.DEMO_IMAGES]


def _noise_images(folder: Path, n: int, start: int = 0) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    paths = []
    for i in range(start, start + n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        path = folder / f"img{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _rows(out: Path, table: str = "results") -> list[dict]:
    if not (out / table).is_dir():
        return []
    return sorted(
        ds.dataset(out / table, format="parquet").to_table().to_pylist(),
        key=lambda r: (r["path"], r.get("class_id", 0)),
    )


def _batch(*args: str) -> int:
    return main(["batch", MODEL, *args])


def kill_after_first_shard(cmd: list[str], out: Path, wait: float = 60) -> int:
    """Run ``cmd`` and SIGKILL it the moment its first results shard is committed; its pid."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + wait
        while not list((out / "results").glob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def test_rows_match_explainer(tmp_path, capsys):
    images = _demo_folder(tmp_path / "imgs")
    out = tmp_path / "out"
    assert _batch(str(tmp_path / "imgs"), "-o", str(out), "--workers", "1", "--heatmaps") == 0
    assert "explained 6 image(s), 6 row(s)" in capsys.readouterr().err
    rows = _rows(out)
    assert [r["path"] for r in rows] == sorted(str(p) for p in images)

    ex = Explainer(MODEL)
    spec = derive_spec(ex.index, model_path=MODEL)
    arrays = [preprocess_image(str(p), spec)[0] for p in sorted(images)]
    res = ex.explain(np.stack(arrays))
    scores = ex.class_scores(res)
    for i, row in enumerate(rows):
        assert row["class_id"] == int(res.targets[i])
        assert row["label"] == demo.DEMO_LABELS[row["class_id"]]
        assert row["score"] == pytest.approx(float(scores[i][row["class_id"]]), rel=1e-5)
        assert row["topk_classes"][0] == row["class_id"] and len(row["topk_classes"]) == 5
        cam = np.frombuffer(row["cam_lowres"], "<f2").reshape(row["cam_shape"])
        np.testing.assert_array_equal(cam, res.cam_lowres[i].astype(np.float16))
        assert (row["width"], row["height"]) == (96, 96) and row["layer"] == ex.layer and row["method"] == "gradcam"
        assert 0 <= row["peak_x"] < 96 and 0 <= row["peak_y"] < 96
        assert row["box_x0"] <= row["peak_x"] < row["box_x1"] and row["box_y0"] <= row["peak_y"] < row["box_y1"]
        assert row["heatmap_png"].startswith(b"\x89PNG")
    meta = pq.read_schema(next((out / "results").glob("part-*.parquet"))).metadata
    assert meta[b"schema_version"] == b"1" and meta[b"method"] == b"gradcam"


def test_resume_adds_only_new_images(tmp_path, capsys):
    folder = tmp_path / "imgs"
    _noise_images(folder, 6)
    out = tmp_path / "out"
    args = [str(folder), "-o", str(out), "--workers", "1", "--shard-size", "2", "--batch-size", "2"]
    assert _batch(*args) == 0
    first = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "results").glob("part-*.parquet")}
    assert len(first) == 3
    assert _batch(*args) == 0  # nothing new: no shard written
    assert "0 new shard(s)" in capsys.readouterr().err
    _noise_images(folder, 3, start=6)
    assert _batch(*args) == 0
    assert "explained 3 image(s)" in capsys.readouterr().err
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in folder.glob("*.png"))
    assert len(rows) == 9
    for p, (data, mtime) in first.items():
        assert (p.read_bytes(), p.stat().st_mtime_ns) == (data, mtime)
    assert _batch(*args, "--overwrite") == 0
    assert len(_rows(out)) == 9 and len(list((out / "results").glob("part-*.parquet"))) == 5


def test_killed_run_resumes_without_duplicates(tmp_path):
    folder = tmp_path / "imgs"
    _noise_images(folder, 150)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "onnxcam.cli.main",
        "batch",
        MODEL,
        str(folder),
        "-o",
        str(out),
        "--workers",
        "1",
        "--shard-size",
        "5",
        "--batch-size",
        "5",
    ]
    kill_after_first_shard(cmd, out)
    partial = len(_rows(out))
    assert 0 < partial < 150, "the run should be killed between its first shard and its end"
    # a shard cut off while being written: a dot-file that readers ignore and the rerun removes
    leftover = out / "results" / ".part-000999.parquet.0123456789abcdef.tmp"
    leftover.write_bytes(b"PAR1 half a shard")
    assert len(_rows(out)) == partial
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    rows = _rows(out)
    assert len(rows) == 150 and len({r["path"] for r in rows}) == 150
    assert not leftover.exists()
    for shard in (out / "results").iterdir():
        pq.read_table(shard)  # every file there is a whole shard


def test_bad_and_missing_images_are_recorded(tmp_path, capsys):
    good = _noise_images(tmp_path / "imgs", 3)
    corrupt = tmp_path / "imgs" / "corrupt.png"
    corrupt.write_bytes(good[0].read_bytes()[:60])
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# images\nimgs/img0000.png\nimgs/corrupt.png\n\nimgs/missing.png\nimgs/img0001.png\n"
        "imgs/img0002.png\nimgs/img0000.png\n"
    )
    out = tmp_path / "out"
    assert _batch(str(listing), "-o", str(out), "--workers", "1") == 1
    err = capsys.readouterr().err
    assert "explained 3 image(s), 3 row(s)" in err and "2 failed" in err and "Traceback" not in err
    assert [r["path"] for r in _rows(out)] == ["imgs/img0000.png", "imgs/img0001.png", "imgs/img0002.png"]
    failures = {r["path"]: r["error"] for r in _rows(out, "failures")}
    assert set(failures) == {"imgs/corrupt.png", "imgs/missing.png"}
    assert "not found" in failures["imgs/missing.png"]
    assert _batch(str(listing), "-o", str(out), "--workers", "1") == 1  # still listed as failed; nothing redone
    assert len(_rows(out)) == 3 and len(_rows(out, "failures")) == 2


def test_two_workers_give_the_same_rows(tmp_path):
    folder = tmp_path / "imgs"
    _noise_images(folder, 10)
    one, two = tmp_path / "one", tmp_path / "two"
    assert _batch(str(folder), "-o", str(one), "--workers", "1", "--threads", "1", "--batch-size", "3") == 0
    assert _batch(str(folder), "-o", str(two), "--workers", "2", "--threads", "1", "--batch-size", "3") == 0
    assert _rows(one) == _rows(two) and len(_rows(one)) == 10


def test_label_column_explains_the_given_class(tmp_path):
    images = _demo_folder(tmp_path / "imgs")
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "truth"])
        writer.writerows([[f"imgs/{p.name}", (i + 1) % 6] for i, p in enumerate(images[:4])])
        writer.writerows([[f"imgs/{images[4].name}", ""], [f"imgs/{images[5].name}", "99"]])
    out = tmp_path / "out"
    assert (
        _batch(str(table), "-o", str(out), "--path-column", "file", "--label-column", "truth", "--workers", "1") == 1
    )  # label 99 is no class of the 6-class model
    rows = {r["path"]: r for r in _rows(out)}
    for i, p in enumerate(images[:4]):
        assert rows[f"imgs/{p.name}"]["class_id"] == (i + 1) % 6
    assert rows[f"imgs/{images[4].name}"]["class_id"] == rows[f"imgs/{images[4].name}"]["topk_classes"][0]
    assert [f["path"] for f in _rows(out, "failures")] == [f"imgs/{images[5].name}"]

    parquet = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"path": [f"imgs/{p.name}" for p in images[:2]], "y": [3, None]}), parquet)
    assert _batch(str(parquet), "-o", str(tmp_path / "out2"), "--label-column", "y", "--workers", "1") == 0
    rows = _rows(tmp_path / "out2")
    assert rows[0]["class_id"] == 3 and rows[1]["class_id"] == rows[1]["topk_classes"][0]


def test_usage_errors_are_one_line(tmp_path, capsys, monkeypatch):
    _demo_folder(tmp_path / "imgs")
    out = tmp_path / "out"
    assert _batch(str(tmp_path / "nowhere"), "-o", str(out)) == 1
    assert _batch(str(tmp_path / "imgs"), "-o", str(out), "--label-column", "y") == 1
    assert _batch(str(tmp_path / "imgs"), "-o", str(out), "--workers", "1") == 0
    assert _batch(str(tmp_path / "imgs"), "-o", str(out), "--workers", "1", "--method", "gradcam++") == 1
    assert _batch(str(tmp_path / "imgs"), "-o", str(out), "--workers", "1", "--method", "gradcam++", "--overwrite") == 0
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert _batch(str(tmp_path / "imgs"), "-o", str(out)) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("onnxcam: error")]
    assert len(lines) == 4
    assert "no such source" in lines[0] and "--label-column needs" in lines[1]
    assert "method 'gradcam'" in lines[2] and "--overwrite" in lines[2]
    assert "pip install 'onnxcam[batch]'" in lines[3]
    assert os.path.isdir(out / "results")


def test_docs_list_every_column():
    from onnxcam.batch import FAILURE_COLUMNS, OUTPUT_COLUMNS, RESULT_COLUMNS

    text = (Path(__file__).resolve().parents[1] / "docs" / "batch.md").read_text(encoding="utf-8")
    assert list(OUTPUT_COLUMNS) == [*RESULT_COLUMNS, "error"]
    for columns in (RESULT_COLUMNS, FAILURE_COLUMNS, OUTPUT_COLUMNS):
        for name, (kind, meaning) in columns.items():
            assert f"| `{name}` | `{kind}` | {meaning} |" in text


def test_an_image_that_makes_the_explainer_raise_fails_alone(tmp_path, capsys, monkeypatch):
    """A worker's ONNX Runtime call that raises (here: for a flat image) fails that image only, not its batch."""
    from PIL import Image

    folder = tmp_path / "imgs"
    _noise_images(folder, 7)
    flat = folder / "img0002_flat.png"  # sorts among the others: it shares a batch with them
    Image.new("RGB", (50, 40), (7, 7, 7)).save(flat)
    explain = Explainer.explain

    def failing(self, inputs, **kwargs):
        for x in inputs.values():
            flat_images = x.reshape(x.shape[0], x.shape[1], -1)
            if (flat_images.max(axis=2) == flat_images.min(axis=2)).all(axis=1).any():
                raise RuntimeError("injected fault\nsecond line")
        return explain(self, inputs, **kwargs)

    monkeypatch.setattr(Explainer, "explain", failing)
    out = tmp_path / "out"
    assert _batch(str(folder), "-o", str(out), "--workers", "1", "--batch-size", "4") == 1
    err = capsys.readouterr().err
    assert "explained 7 image(s), 7 row(s)" in err and "1 failed" in err and "Traceback" not in err
    assert _rows(out, "failures") == [{"path": str(flat), "error": "RuntimeError: injected fault"}]
    assert str(flat) not in {r["path"] for r in _rows(out)}


def test_ray_engine_without_ray_is_one_line(tmp_path, capsys, monkeypatch):
    _demo_folder(tmp_path / "imgs")
    monkeypatch.setitem(sys.modules, "ray", None)
    assert _batch(str(tmp_path / "imgs"), "-o", str(tmp_path / "out"), "--engine", "ray") == 1
    assert _batch(str(tmp_path / "imgs"), "-o", str(tmp_path / "out"), "--address", "auto") == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("onnxcam: error")]
    assert len(lines) == 2 and "Traceback" not in err
    assert "pip install 'onnxcam[ray]'" in lines[0] and "--address and --gpus-per-worker are for" in lines[1]
    from onnxcam.batch import explain_dataset
    from onnxcam.errors import OnnxcamError

    with pytest.raises(OnnxcamError, match=r"pip install 'onnxcam\[ray\]'"):
        explain_dataset(MODEL, None)
    # and importing the batch package never imports Ray (seconds of start-up, and an optional extra)
    code = "import sys, onnxcam.batch, onnxcam.cli.main; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


_PEAK_RSS = """
import resource, sys
from onnxcam.cli.main import main
rc = main(["batch", sys.argv[1], sys.argv[2], "-o", sys.argv[3], "--workers", "1", "--threads", "1", "--heatmaps"])
print(rc, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kilobytes on Linux
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in kilobytes on Linux")
def test_peak_memory_is_flat_in_the_number_of_images(tmp_path):
    """Peak RSS over 5,000 images exceeds that over 1,000 by less than 16 MB (4 KB an image at most).

    Measured here: +3 MB (the job list and the set of done paths); a run that kept every row until the end
    (one shard) grows by 36 MB. Each run is its own process, so each peak is its own.
    """
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(5000):
        names.append(f"imgs/i{i:05d}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / names[-1])
    peaks = {}
    for n in (1000, 5000):
        listing = tmp_path / f"list{n}.txt"
        listing.write_text("\n".join(names[:n]) + "\n")
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, MODEL, str(listing), str(tmp_path / f"out{n}")],
            capture_output=True,
            text=True,
        )
        rc, peak = done.stdout.split()
        assert rc == "0", done.stderr
        assert f"explained {n} image(s)" in done.stderr
        peaks[n] = int(peak) / 1024
    growth = peaks[5000] - peaks[1000]
    assert growth < 16, f"peak RSS {peaks[1000]:.0f} MB for 1,000 images, {peaks[5000]:.0f} MB for 5,000"


def test_panels_are_the_explain_commands_own(tmp_path, capsys):
    from PIL import Image

    images = _demo_folder(tmp_path / "imgs")
    panels, explained = tmp_path / "panels", tmp_path / "explained"
    args = ["--top", "2", "--colormap", "jet", "--box"]
    assert (
        _batch(str(tmp_path / "imgs"), "-o", str(tmp_path / "out"), "--workers", "1", "--panels", str(panels), *args)
        == 0
    )
    assert main(["explain", MODEL, str(tmp_path / "imgs"), "-o", str(explained), *args]) == 0
    for p in images:
        ours = np.asarray(Image.open(panels / f"{p.name}.cam.png").convert("RGB"), dtype=np.int16)
        theirs = np.asarray(Image.open(explained / f"{p.name}.cam.png").convert("RGB"), dtype=np.int16)
        assert ours.shape == theirs.shape and np.abs(ours - theirs).mean() < 1.0
    # names from a list stay inside the panels folder, whatever they say
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    shutil.copy(images[0], nested / "x.png")
    listing = nested / "list.txt"
    listing.write_text(f"../../imgs/{images[1].name}\nx.png\n")
    out2, panels2 = tmp_path / "out2", tmp_path / "panels2"
    assert _batch(str(listing), "-o", str(out2), "--workers", "1", "--panels", str(panels2)) == 0
    assert sorted(p.relative_to(panels2).as_posix() for p in panels2.rglob("*.png")) == [
        f"imgs/{images[1].name}.cam.png",
        "x.png.cam.png",
    ]
    assert _batch(str(listing), "-o", str(out2), "--panels", str(panels2), "--alpha", "2") == 1
    assert "--alpha must be between 0 and 1" in capsys.readouterr().err


def test_ray_address_where_nothing_listens_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    _demo_folder(tmp_path / "imgs")
    out = tmp_path / "out"
    assert _batch(str(tmp_path / "imgs"), "-o", str(out), "--engine", "ray", "--address", "127.0.0.1:1") == 1
    err = capsys.readouterr().err
    assert "onnxcam: error: cannot join the Ray cluster at 127.0.0.1:1" in err and "Traceback" not in err


def test_panels_never_overwrite_an_input_image(tmp_path):
    """--panels into the images' folder, where a listed input is named like a panel: refused before any work.

    (A folder source skips ``*.cam.png`` files, as ``onnxcam explain`` does: they are taken for earlier panels.)
    """
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (20, 20), (10, 200, 30)).save(images / "a.png")
    Image.new("RGB", (20, 20), (200, 10, 30)).save(images / "a.png.cam.png")  # an input that looks like a panel
    before = (images / "a.png.cam.png").read_bytes()
    listing = images / "list.txt"
    listing.write_text("a.png\na.png.cam.png\n")  # names relative to the list's folder
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxcam.cli.main",
            "batch",
            str(demo.DEMO_MODEL),
            str(listing),
            "-o",
            str(tmp_path / "out"),
            "--panels",
            str(images),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1 and "would be written over the input image" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and (images / "a.png.cam.png").read_bytes() == before

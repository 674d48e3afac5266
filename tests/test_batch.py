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
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list((out / "results").glob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
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
    from onnxcam.batch import FAILURE_COLUMNS, RESULT_COLUMNS

    text = (Path(__file__).resolve().parents[1] / "docs" / "batch.md").read_text(encoding="utf-8")
    for columns in (RESULT_COLUMNS, FAILURE_COLUMNS):
        for name, (kind, meaning) in columns.items():
            assert f"| `{name}` | `{kind}` | {meaning} |" in text

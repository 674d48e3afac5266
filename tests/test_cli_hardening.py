"""The CLI under hostile or unlucky conditions: signals, clashing names, an output folder shared with the model.

Each test runs ``python -m onnxcam`` (or ``main()``) as a user would, and checks what is left on disk.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxcam import demo
from onnxcam.cli.explain_files import PanelNames
from onnxcam.cli.main import STOP_SIGNALS, main
from tests.tiny_models import tiny_cnn


def onnxcam_process(*args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "onnxcam", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def run_cli(*args, exit_code: int | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = onnxcam_process(*args, env=env)
    stdout, stderr = proc.communicate(timeout=300)
    if exit_code is not None:
        assert proc.returncode == exit_code, stderr
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def the_error(proc: subprocess.CompletedProcess) -> str:
    """The one line of a failed run's stderr (and proof that there is only one, without a traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def photo(path: Path, spot: tuple[int, int] = (10, 10), size: int = 32) -> Path:
    rgb = np.full((size, size, 3), 40, np.uint8)
    x, y = spot
    rgb[max(0, y - 3) : y + 3, max(0, x - 3) : x + 3] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "model" / "tiny.onnx"
    path.parent.mkdir()
    onnx.save(tiny_cnn(), path)
    return path


def save_with_external_data(folder: Path, data_name: str) -> tuple[Path, Path]:
    """tiny_cnn saved in ``folder`` with all its weights in one external-data file named ``data_name``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "external.onnx"
    onnx.save_model(
        tiny_cnn(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=0,
    )
    return path, folder / data_name


# -- 1. SIGTERM and SIGHUP end a run like Ctrl-C ---------------------------------------------------


def weight_folders(tmpdir: Path) -> list[str]:
    return [p.name for p in tmpdir.iterdir() if p.name.startswith("onnxcam-")]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_mid_run_keeps_the_summary_and_removes_the_weight_folder(tmp_path, signame):
    """Stopped after its first panels, explain writes summary.json for them, exits 130, and leaves no temp folder."""
    if not hasattr(signal, signame):
        pytest.skip(f"no {signame} on this platform")
    if signal.getsignal(getattr(signal, signame)) == signal.SIG_IGN:
        pytest.skip(f"{signame} is ignored here (a background job?), and so in the child process")
    tmpdir, out = tmp_path / "tmp", tmp_path / "out"
    tmpdir.mkdir()
    images = list(demo.DEMO_IMAGES) * 100  # half a minute of work: the signal comes mid-run
    proc = onnxcam_process(
        "explain", demo.DEMO_MODEL, *images, "--batch-size", "1", "-o", out, env={"TMPDIR": str(tmpdir)}
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("*.cam.png")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    assert weight_folders(tmpdir), "the Explainer keeps its weights in TMPDIR while it runs"
    proc.send_signal(getattr(signal, signame))
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    cause = "" if signame == "SIGINT" else f" by {signame}"
    assert last.startswith(f"onnxcam: interrupted{cause}; {out / 'summary.json'} lists the "), last
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and not summary["failures"]
    done = summary["results"]
    assert 1 <= len(done) < len(images) and f"lists the {len(done)} of {len(images)} image(s) done" in last
    assert [r["image"] for r in done] == [str(p) for p in images[: len(done)]]
    assert all((out / r["panel"]).is_file() for r in done)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written file left
    assert weight_folders(tmpdir) == []


def test_sigterm_mid_compare_keeps_the_tables_of_the_images_done(tmp_path):
    tmpdir, out = tmp_path / "tmp", tmp_path / "out"
    tmpdir.mkdir()
    images = list(demo.DEMO_IMAGES) * 100
    proc = onnxcam_process(
        "compare",
        demo.DEMO_MODEL,
        demo.DEMO_MODEL,
        *images,
        "--batch-size",
        "1",
        "-o",
        out,
        env={"TMPDIR": str(tmpdir)},
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("*.compare.png")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(f"onnxcam: interrupted by SIGTERM; {out / 'compare.json'} holds the ")
    )
    doc = json.loads((out / "compare.json").read_text())
    assert doc["interrupted"] is True and 1 <= len(doc["images"]) < len(images)
    assert (out / "compare.csv").read_text().count("\n") >= len(doc["images"]) + 1
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert weight_folders(tmpdir) == []


def test_sigterm_mid_eval_keeps_the_methods_done(tmp_path):
    tmpdir, out = tmp_path / "tmp", tmp_path / "out"
    tmpdir.mkdir()
    rows = [
        f"{path},{','.join(map(str, sample['box']))},{sample['label']}"
        for path, sample in zip(demo.DEMO_IMAGES, demo.DEMO_SAMPLES)
    ] * 200
    data = tmp_path / "boxes.csv"
    data.write_text("file,x0,y0,x1,y1,label\n" + "\n".join(rows) + "\n")
    proc = onnxcam_process(
        "eval",
        demo.DEMO_MODEL,
        data,
        "--method",
        "center",
        "scorecam",
        "--metric",
        "pointing",
        "-o",
        out,
        env={"TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1"},
    )
    for line in proc.stdout:  # scorecam takes seconds: the signal comes while it runs
        if line.startswith("center ("):
            break
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"onnxcam: interrupted by SIGTERM; {out / 'metrics.json'} holds the 1 of 2 method(s) done before it"
    )
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["interrupted"] is True and [m["method"] for m in doc["methods"]] == ["center"]
    assert weight_folders(tmpdir) == []


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_stops_the_server_as_sigterm_does(tmp_path):
    """serve handles SIGTERM itself (graceful shutdown); SIGHUP (its terminal closed) takes the same way out."""
    pytest.importorskip("uvicorn")
    proc = onnxcam_process("serve", "--demo", "--port", "0", env={"TMPDIR": str(tmp_path)})
    try:
        url = re.search(r"http://\S+/", proc.stderr.readline()).group(0)
        wait_until_answering(url + "healthz")
        assert weight_folders(tmp_path)
        proc.send_signal(signal.SIGHUP)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert weight_folders(tmp_path) == []


def wait_until_answering(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_main_restores_the_signal_handlers_it_replaced(model):
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    assert main(["layers", str(model), "--json"]) == 0
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


def test_a_finished_run_says_it_was_not_interrupted(tmp_path, model):
    run_cli("explain", model, photo(tmp_path / "a.png"), "-o", tmp_path / "out", exit_code=0)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["interrupted"] is False


# -- 2. inputs that share a name get a panel each --------------------------------------------------


def test_images_with_the_same_name_get_one_panel_each(tmp_path, model):
    first, second = photo(tmp_path / "a" / "x.png", (5, 5)), photo(tmp_path / "b" / "x.png", (25, 25))
    walked = photo(tmp_path / "walk" / "sub" / "x.png", (15, 15))
    out = tmp_path / "out"
    run_cli("explain", model, first, second, first, tmp_path / "walk", "-o", out, exit_code=0)
    results = json.loads((out / "summary.json").read_text())["results"]
    assert [(r["image"], r["panel"]) for r in results] == [
        (str(first), "x.png.cam.png"),
        (str(second), "x.png-2.cam.png"),
        (str(first), "x.png-3.cam.png"),
        (str(walked), "sub/x.png.cam.png"),
    ]
    panels = [np.asarray(Image.open(out / r["panel"])) for r in results]
    assert not np.array_equal(panels[0], panels[1])  # the second photo did not replace the first one's panel
    assert np.array_equal(panels[0], panels[2])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.cam.png")) == sorted(r["panel"] for r in results)


def test_panel_names_are_unique_case_insensitively_and_never_reuse_a_taken_name():
    names = PanelNames(".cam.png")
    claimed = [names.claim(Path(p)).as_posix() for p in ("x.png", "X.PNG", "x.png-2", "x.png", "d/x.png")]
    assert claimed == ["x.png.cam.png", "X.PNG-2.cam.png", "x.png-2-2.cam.png", "x.png-3.cam.png", "d/x.png.cam.png"]
    assert len({c.casefold() for c in claimed}) == len(claimed)


# -- 3. never write over a file the model (or the run) reads --------------------------------------


def test_summary_never_overwrites_the_models_external_data(tmp_path):
    """-o the model's own folder, whose external-data file is named summary.json: refused before any work."""
    model, data = save_with_external_data(tmp_path / "shared", "summary.json")
    before = data.read_bytes()
    proc = run_cli("explain", model, photo(tmp_path / "a.png"), "-o", model.parent, exit_code=1)
    assert the_error(proc) == (
        f"onnxcam: error: refusing to write {model.parent / 'summary.json'}: the model "
        "reads that file; choose another -o"
    )
    assert data.read_bytes() == before
    assert sorted(p.name for p in model.parent.iterdir()) == ["external.onnx", "summary.json"]


def test_a_hard_link_to_the_models_data_is_recognised(tmp_path):
    model, data = save_with_external_data(tmp_path / "m", "weights.bin")
    out = tmp_path / "out"
    out.mkdir()
    os.link(data, out / "summary.json")
    proc = run_cli("explain", model, photo(tmp_path / "a.png"), "-o", out, exit_code=1)
    assert the_error(proc) == (
        f"onnxcam: error: refusing to write {out / 'summary.json'}: the model reads that file; choose another -o"
    )


def test_a_panel_never_overwrites_the_models_external_data(tmp_path):
    """An external-data file named like a panel: that image fails, the others and summary.json are written."""
    model, data = save_with_external_data(tmp_path / "shared", "a.png.cam.png")
    before = data.read_bytes()
    a, b = photo(tmp_path / "a.png"), photo(tmp_path / "b.png")
    proc = run_cli("explain", model, a, b, "-o", model.parent, exit_code=1)
    assert data.read_bytes() == before
    refusal = f"refusing to write {model.parent / 'a.png.cam.png'}: the model reads that file; choose another -o"
    assert f"onnxcam: skipped {a}: {refusal}" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((model.parent / "summary.json").read_text())
    assert summary["failures"] == [{"image": str(a), "error": refusal}]
    assert [r["panel"] for r in summary["results"]] == [None, "b.png.cam.png"]


def test_the_labels_file_settings_file_and_input_images_are_never_written(tmp_path, model):
    out = model.parent
    labels = out / "summary.json"
    labels.write_text(json.dumps([f"class {i}" for i in range(5)]))
    proc = run_cli("explain", model, photo(tmp_path / "a.png"), "--labels", labels, "-o", out, exit_code=1)
    assert the_error(proc) == (
        f"onnxcam: error: refusing to write {out / 'summary.json'}: it is the labels file; choose another -o"
    )
    labels.unlink()

    settings = model.with_name("tiny.onnxcam.json")
    settings.write_text('{"preset": "imagenet"}')
    (out / "summary.json").symlink_to(settings.name)  # the settings file under the summary's name
    proc = run_cli("explain", model, photo(tmp_path / "a.png"), "-o", out, exit_code=1)
    assert the_error(proc) == (
        f"onnxcam: error: refusing to write {out / 'summary.json'}: it is the model's settings file; choose another -o"
    )
    assert settings.read_text() == '{"preset": "imagenet"}'
    (out / "summary.json").unlink()

    photos = tmp_path / "photos"
    odd = photo(photos / "a.png.cam.png")  # a photo named like the panel of a.png, written into its own folder
    before = odd.read_bytes()
    proc = run_cli("explain", model, photo(photos / "a.png"), odd, "-o", photos, exit_code=1)
    assert f"refusing to write {odd}: it is one of the input images; choose another -o" in proc.stderr
    assert odd.read_bytes() == before


def test_a_labels_file_named_by_the_settings_file_or_metadata_is_never_written(tmp_path, model):
    """The model's own labels file (named in its settings file, not on the command line) is a file the run reads."""
    out = model.parent
    names = json.dumps([f"class {i}" for i in range(5)])
    labels = out / "summary.json"
    labels.write_text(names)
    model.with_name("tiny.onnxcam.json").write_text('{"labels": "summary.json"}')
    proc = run_cli("explain", model, photo(tmp_path / "a.png"), "-o", out, exit_code=1)
    assert the_error(proc) == (
        f"onnxcam: error: refusing to write {out / 'summary.json'}: it is the labels file; choose another -o"
    )
    assert labels.read_text() == names

    other = tmp_path / "b" / "other.onnx"  # model B of a comparison names compare.json in its metadata
    other.parent.mkdir()
    proto = tiny_cnn()
    onnx.helper.set_model_props(proto, {"onnxcam.preprocess": '{"labels": "compare.json"}'})
    onnx.save(proto, other)
    (other.parent / "compare.json").write_text(names)
    proc = run_cli("compare", model, other, photo(tmp_path / "a.png"), "-o", other.parent, exit_code=1)
    assert the_error(proc) == (
        f"onnxcam: error: refusing to write {other.parent / 'compare.json'}: it is the labels file; choose another -o"
    )
    assert (other.parent / "compare.json").read_text() == names


def test_a_symlink_in_the_output_folder_is_replaced_not_written_through(tmp_path, model):
    """A planted link (say, in a downloaded model's folder used as -o) must not lead the summary to another file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").symlink_to(victim)
    (out / "a.png.cam.png").symlink_to(victim)
    run_cli("explain", model, photo(tmp_path / "a.png"), "-o", out, exit_code=0)
    assert victim.read_text() == "precious"
    assert not (out / "summary.json").is_symlink() and json.loads((out / "summary.json").read_text())["results"]
    assert Image.open(out / "a.png.cam.png").format == "PNG"


def test_compare_and_eval_never_overwrite_their_inputs(tmp_path, model):
    data = tmp_path / "data"
    photo(data / "a.png")
    annotations = data / "samples.csv"  # the annotation file, named like one of eval's own outputs
    annotations.write_text("file,x0,y0,x1,y1,label\na.png,5,5,15,15,0\n")
    proc = run_cli("eval", model, annotations, "--method", "gradcam", "-o", data, exit_code=1)
    assert the_error(proc) == (
        f"onnxcam: error: refusing to write {annotations}: it is the annotation file; choose another -o"
    )
    assert annotations.read_text().startswith("file,x0")

    other, compare_data = save_with_external_data(tmp_path / "b", "compare.json")
    before = compare_data.read_bytes()
    proc = run_cli("compare", model, other, data / "a.png", "-o", other.parent, exit_code=1)
    assert the_error(proc) == (
        f"onnxcam: error: refusing to write {compare_data}: the model reads that file; choose another -o"
    )
    assert compare_data.read_bytes() == before


# -- 4. an unwritable summary is one clear error; a failed run leaves no empty folder ---------------


def test_summary_path_taken_by_a_folder_is_one_clear_error_and_keeps_the_panels(tmp_path, model):
    out = tmp_path / "out"
    (out / "summary.json").mkdir(parents=True)
    proc = run_cli("explain", model, photo(tmp_path / "a.png"), "-o", out, exit_code=1)
    assert the_error(proc).startswith(f"onnxcam: error: cannot write {out / 'summary.json'}: ")
    assert the_error(proc).endswith("; choose another -o")
    assert (out / "a.png.cam.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["a.png.cam.png", "summary.json"]  # no temporary file left


def test_an_output_folder_that_turns_read_only_is_one_clear_error(tmp_path, model, monkeypatch, capsys):
    """The folder stops taking files after the panels (a full disk, a read-only remount): one line, exit 1."""
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "summary.json":
            raise PermissionError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out"
    assert main(["explain", str(model), str(photo(tmp_path / "a.png")), "-o", str(out)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"onnxcam: error: cannot write {out / 'summary.json'}: Permission denied; choose another -o"
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.png.cam.png"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_clear_error(tmp_path, model):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        proc = run_cli("explain", model, photo(tmp_path / "a.png"), "-o", out, exit_code=1)
    finally:
        out.chmod(0o755)
    assert the_error(proc).startswith(f"onnxcam: error: cannot write to output folder {out}: ")


@pytest.mark.parametrize("case", ["bad model", "no images", "bad target", "refused summary"])
def test_a_run_that_fails_up_front_leaves_no_output_folder(tmp_path, model, case):
    out = tmp_path / "new" / "deeper" / "out"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    (tmp_path / "empty").mkdir()
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([f"class {i}" for i in range(5)]))
    a = photo(tmp_path / "a.png")
    args = {
        "bad model": [bad, a],
        "no images": [model, tmp_path / "empty"],
        "bad target": [model, a, "--target", 99],
        "refused summary": [model, a, "--labels", out / "summary.json"],
    }[case]
    if case == "refused summary":
        out.mkdir(parents=True)
        labels.rename(out / "summary.json")
    proc = run_cli("explain", *args, "-o", out, exit_code=1)
    assert the_error(proc).startswith("onnxcam: error: ")
    if case == "refused summary":
        assert sorted(p.name for p in out.iterdir()) == ["summary.json"]  # a folder that existed stays
    else:
        assert not (tmp_path / "new").exists()


def test_compare_with_a_bad_target_leaves_no_output_folder(tmp_path, model):
    out = tmp_path / "out"
    proc = run_cli("compare", model, model, photo(tmp_path / "a.png"), "--target", 99, "-o", out, exit_code=1)
    assert the_error(proc).startswith("onnxcam: error: ") and not out.exists()


# -- 5. other bad inputs that used to end in a traceback -------------------------------------------


def nan_model(path: Path) -> Path:
    """tiny_cnn whose weights are NaN: every score and every map is NaN."""
    proto = tiny_cnn()
    for init in proto.graph.initializer:
        if init.name in ("w2", "wf"):
            nan = np.full(onnx.numpy_helper.to_array(init).shape, np.nan, np.float32)
            init.CopyFrom(onnx.numpy_helper.from_array(nan, init.name))
    onnx.save(proto, path)
    return path


def test_a_model_computing_nan_fails_its_images_and_writes_strict_json(tmp_path):
    model = nan_model(tmp_path / "nan.onnx")
    a = photo(tmp_path / "a.png")
    out = tmp_path / "out"
    proc = run_cli("explain", model, a, "-o", out, exit_code=1)
    assert "Traceback" not in proc.stderr and f"onnxcam: skipped {a}: its heatmap holds NaN" in proc.stderr
    text = (out / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert summary["results"][0]["score"] is None and summary["results"][0]["peak"] is None


def test_a_panel_folder_blocked_by_a_file_fails_that_image_only(tmp_path, model):
    photos = tmp_path / "photos"
    photo(photos / "sub" / "x.png")
    photo(photos / "y.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the panel's folder would go")
    proc = run_cli("explain", model, photos, "-o", out, exit_code=1)
    assert "Traceback" not in proc.stderr
    assert f"onnxcam: skipped {photos / 'sub' / 'x.png'}: cannot write {out / 'sub' / 'x.png.cam.png'}" in proc.stderr
    assert (out / "y.png.cam.png").is_file()


def test_output_piped_into_a_reader_that_leaves_ends_quietly(model):
    """``onnxcam layers m.onnx | head -1``: the reader is gone before the table is written; no BrokenPipeError."""
    proc = subprocess.run(
        f"{sys.executable} -m onnxcam layers {model} | true", shell=True, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.stderr == ""

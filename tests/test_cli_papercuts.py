"""Papercuts a new user met (issue 13): short usage errors, clear messages, quiet logs, one image-input picker."""

from __future__ import annotations

import argparse
import ast
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxcam
from onnxcam.cli.main import main
from onnxcam.cli.options import EXIT_STATUS_HELP
from onnxcam.cli.progress import Progress
from onnxcam.data import load_samples, read_dataset
from onnxcam.errors import LayerError
from onnxcam.graph.index import GraphIndex
from onnxcam.graph.layers import image_input
from onnxcam.preprocess import PreprocessSpec, derive_spec
from tests.test_targets_batched import _two_images
from tests.tiny_models import tiny_cnn

CLI_FOLDER = Path(onnxcam.__file__).parent / "cli"


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), path)
    return path


def _photo(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


# -- 1. an unknown choice is a short usage error -------------------------------------------------------------------


def test_an_unknown_method_is_one_line_naming_the_choices_and_a_hint(model_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["explain", str(model_path), str(tmp_path), "--method", "nonsense"])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("onnxcam explain: error: argument --method: invalid choice: 'nonsense' (choose from ")
    assert "gradcam" in lines[0] and "scorecam" in lines[0]
    assert lines[1] == "see onnxcam explain --help"


def test_other_usage_errors_are_short_too(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["layers"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "onnxcam layers: error: the following arguments are required: model",
        "see onnxcam layers --help",
    ]


def test_every_command_that_writes_results_states_the_same_exit_statuses(capsys):
    """One text (cli/options.py) for ``onnxcam --help`` and each command's help, eval's included."""

    def help_of(*command: str) -> str:
        with pytest.raises(SystemExit) as stop:
            main([*command, "--help"])
        assert stop.value.code == 0
        return "".join(capsys.readouterr().out.split())  # however argparse or eval's epilog wrapped it

    statuses = "".join(EXIT_STATUS_HELP.split())
    for command in ((), ("explain",), ("demo",), ("compare",), ("eval",)):
        assert statuses in help_of(*command), command


# -- 2. the model's input named as a layer --------------------------------------------------------------------------


def test_the_models_input_as_layer_says_so_and_points_to_onnxcam_layers():
    with pytest.raises(LayerError) as error:
        onnxcam.Explainer(tiny_cnn(), layer="x")
    message = str(error.value)
    assert "'x' is the model's input" in message and "not a spatial feature map" not in message
    assert "inner layer" in message and "onnxcam layers MODEL" in message and "'features'" in message


# -- 3 and 4. a missing image path stops the run before anything is written -----------------------------------------


def test_a_missing_image_path_is_one_error_up_front_and_writes_nothing(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "no_such.png"
    code = main(["explain", str(model_path), str(_photo(tmp_path / "a.png")), str(missing), "-o", str(out)])
    assert code == 1
    assert capsys.readouterr().err == f"onnxcam: error: no such image or folder: {missing}\n"
    assert not out.exists()


def test_compare_refuses_a_missing_image_path_too(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", str(model_path), str(model_path), str(tmp_path / "gone"), "-o", str(out)]) == 1
    assert capsys.readouterr().err == f"onnxcam: error: no such image or folder: {tmp_path / 'gone'}\n"
    assert not out.exists()


# -- 5. eval: an unknown label drops its box, not its image ---------------------------------------------------------


def test_an_unknown_label_is_an_issue_of_its_box_and_the_images_other_boxes_stay(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    doc = {
        "images": [
            {
                "file": "a.png",
                "objects": [
                    {"box": [0, 0, 20, 15], "label": "cat"},
                    {"box": [20, 15, 40, 30], "label": "zebra"},
                    {"box": [0, 15, 10, 30], "label": "dog"},
                ],
            }
        ]
    }
    (tmp_path / "a.json").write_text(json.dumps(doc))
    spec = PreprocessSpec(size=(15, 20), preset="raw01", scale=1 / 255, mean=(0,), std=(1,))
    samples, issues = load_samples(read_dataset(tmp_path / "a.json"), spec, ["cat", "dog"], 2)
    assert [(s.label, s.boxes) for s in samples] == [(0, [(0.0, 0.0, 10.0, 7.5)]), (1, [(0.0, 7.5, 5.0, 15.0)])]
    assert len(issues) == 1
    assert issues[0].where.endswith("(a.png) box 2") and "unknown class name 'zebra'" in issues[0].error


# -- 6. progress in a log: a few lines, and no rate from the first tiny interval ------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_long_run_in_a_log_prints_a_few_lines_not_one_per_update():
    clock, log = FakeClock(), io.StringIO()
    with Progress(1000, "explaining", stream=log, clock=clock) as bar:
        for _ in range(1000):
            clock.now += 0.5  # 500 s in all
            bar.advance()
    lines = log.getvalue().splitlines()
    assert 3 <= len(lines) <= 12, lines
    assert lines[0].startswith("explaining [") and " 0/1000 " in lines[0]
    assert " 1000/1000 " in lines[-1] and "2.0 img/s" in lines[-2]
    assert lines[-1].endswith("1000/1000 in 500.0 s")  # the end says how long the whole run took


def test_a_short_run_in_a_log_prints_its_start_and_its_end_only():
    clock, log = FakeClock(), io.StringIO()
    with Progress(8, "explaining", stream=log, clock=clock) as bar:
        for _ in range(8):
            clock.now += 0.3
            bar.advance()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and " 0/8 " in lines[0] and " 8/8 " in lines[1]


def test_no_rate_is_shown_before_a_second_has_passed():
    clock, log = FakeClock(), io.StringIO()
    bar = Progress(100, "explaining", stream=log, clock=clock, enabled=True)
    clock.now += 0.0035  # a batch whose images all failed at once
    bar.advance(10)
    assert "- img/s" in bar.line() and "2857" not in bar.line()
    clock.now += 4.0
    bar.advance(10)
    assert "5.0 img/s" in bar.line()  # 20 images in 4.0035 s


def test_the_rate_follows_the_latest_seconds_not_the_whole_run():
    clock = FakeClock()
    bar = Progress(1000, "explaining", stream=io.StringIO(), clock=clock, enabled=True)
    for _ in range(30):  # 30 s at 1 img/s, then 30 s at 10 img/s
        clock.now += 1.0
        bar.advance(1)
    for _ in range(30):
        clock.now += 1.0
        bar.advance(10)
    assert " 10.0 img/s" in bar.line()


# -- 7. the CLI's imports point one way -----------------------------------------------------------------------------


def _cli_imports(path: Path) -> set[str]:
    """The ``onnxcam.cli`` modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("onnxcam.cli"):
            found.add(node.module)
            found.update(f"onnxcam.cli.{alias.name}" for alias in node.names if node.module == "onnxcam.cli")
    return found


def test_command_modules_never_import_commands_or_main():
    for path in CLI_FOLDER.glob("*.py"):
        imported = _cli_imports(path)
        if path.stem.endswith("_command") or path.stem == "options":
            assert not imported & {"onnxcam.cli.commands", "onnxcam.cli.main"}, path.name
        if path.stem == "options":
            assert not any(name.endswith("_command") for name in imported)


def test_the_cli_modules_import_each_other_without_a_cycle():
    """Every import between ``onnxcam.cli`` modules, late ones included, points down: no module reaches itself."""
    graph = {
        f"onnxcam.cli.{p.stem}": _cli_imports(p) - {"onnxcam.cli"}
        for p in CLI_FOLDER.glob("*.py")
        if p.stem != "__init__"
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m, set())] == []


# -- 8. one image-input picker ---------------------------------------------------------------------------------------


def _side_input_first() -> onnx.ModelProto:
    """Input 0 ``mask`` is 4-D but feeds no convolution (its mean is added to the logits); the image is ``image``."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("w", (4, 3, 3, 3)), ("wf", (3, 4)))
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wf"], ["raw"], transB=1),
        helper.make_node("GlobalAveragePool", ["mask"], ["mask_gap"]),
        helper.make_node("Flatten", ["mask_gap"], ["mask_flat"]),
        helper.make_node("Add", ["raw", "mask_flat"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "side_input_first",
        [
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 3, 4, 4]),
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_preprocessing_picks_the_image_the_feature_maps_come_from_not_a_4d_side_input():
    index = GraphIndex(onnx.shape_inference.infer_shapes(_side_input_first()))
    ex = onnxcam.Explainer(_side_input_first())
    assert image_input(index, [ex.layer]) == "image"
    spec = derive_spec(index, settings=False)
    assert spec.input_name == "image" and spec.size == (16, 16)


def test_the_cli_preprocesses_for_the_image_input_of_the_chosen_layer(tmp_path):
    """Layer ``rb`` is computed from input ``b`` (8x8): the CLI sizes and feeds the photo for ``b``, not input 0."""
    from onnxcam.cli.options import preprocess_spec

    model = tmp_path / "two.onnx"
    onnx.save(_two_images(8), model)
    ex = onnxcam.Explainer(model, layer="rb")
    unset = ("size", "preprocess", "mean", "std", "scale", "bgr", "layout", "resize", "labels")
    spec = preprocess_spec(ex, model, argparse.Namespace(**dict.fromkeys(unset)))
    assert spec.input_name == "b" and spec.size == (8, 8)
    assert derive_spec(model, settings=False).input_name == "a"  # with no layer chosen: the first image, as before

"""The method table (onnxcam/methods/table.py) is the one list of methods: everything else is generated from it,
and a new row is all a new method needs."""

from __future__ import annotations

import argparse
import numpy as np
import pytest

import onnxcam
from onnxcam import demo
from onnxcam.cli.main import build_parser
from onnxcam.methods import METHODS, MethodSpec
from onnxcam.methods import gradient_methods as formulas
from onnxcam.server.params import SERVED_METHODS
from tools import method_tables
from tools.generated_docs import REPO


def _method_choices(command: str) -> tuple[str, ...]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if "--method" in a.option_strings)
    return tuple(action.choices)


def test_the_docs_tables_are_generated_from_the_table():
    assert method_tables.main(["--check"]) == 0, "run: python -m tools.method_tables"


def test_the_cli_and_the_server_offer_what_the_table_says():
    assert _method_choices("explain") == _method_choices("compare") == tuple(METHODS)
    in_graph = ("gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam", "counterfactual")
    assert _method_choices("export") == (*in_graph, "gradient-rollout")
    assert SERVED_METHODS == (*in_graph, "eigencam", "eigengradcam", "gradient-rollout")


#: Where each method is checked against a reference implementation (the torch tests skip without torch).
PARITY_TESTS = {
    **dict.fromkeys(
        [
            "gradcam",
            "gradcam++",
            "xgradcam",
            "hirescam",
            "gradcam-elementwise",
            "layercam",
            "eigencam",
            "eigengradcam",
            "counterfactual",
        ],
        "tests/test_methods_parity.py",
    ),
    **dict.fromkeys(["guided-backprop", "guided-gradcam"], "tests/test_guided.py"),
    **dict.fromkeys(["scorecam", "ablationcam"], "tests/test_perturbation_methods.py"),
    "gradient-rollout": "tests/test_vit.py",
}


def test_every_row_names_its_parity_test():
    """A new row comes with its reference test, named here; that file must mention the method."""
    assert set(PARITY_TESTS) == set(METHODS)
    for method, path in PARITY_TESTS.items():
        assert f'"{method}"' in (REPO / path).read_text(encoding="utf-8"), f"{path} does not test {method!r}"


def test_the_docs_check_fails_when_a_marker_is_gone(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no generated block here\n", encoding="utf-8")
    monkeypatch.setattr(method_tables, "REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "methods.md").write_text((REPO / "docs" / "methods.md").read_text(encoding="utf-8"))
    assert method_tables.main(["--check"]) == 1
    assert "has no generated block for table(s) methods" in capsys.readouterr().out


def test_a_row_must_have_the_hook_its_kind_needs():
    with pytest.raises(ValueError, match="a gradient method has a formula"):
        MethodSpec("x", "X", "paper", "summary", "gradient", "details")
    with pytest.raises(ValueError, match="a host method has no formula and a host hook"):
        MethodSpec("x", "X", "paper", "summary", "host", "details", formula=formulas.gradcam)
    with pytest.raises(ValueError, match="a perturbation method has no formula and a host hook"):
        MethodSpec("x", "X", "paper", "summary", "perturbation", "details")
    with pytest.raises(ValueError, match="a guided method has no formula and no host hook"):
        MethodSpec("x", "X", "paper", "summary", "guided", "details", host=lambda run: run.activations)


def test_an_unknown_method_names_the_ones_there_are():
    with pytest.raises(onnxcam.OnnxcamError, match="unknown method 'nonsense'; available: gradcam, gradcam"):
        onnxcam.Explainer(demo.DEMO_MODEL, method="nonsense")


@pytest.fixture
def extra_rows(monkeypatch):
    """Counterfactual Grad-CAM written twice more, as a new in-graph row and as a new host-side row."""
    rows = {
        "again-in-graph": MethodSpec(
            "again-in-graph",
            "Again",
            "a test",
            "negative gradient",
            "gradient",
            "`mean_ij(-g_k) * A_k`",
            formula=formulas.counterfactual,
        ),
        "again-on-host": MethodSpec(
            "again-on-host",
            "Again on the host",
            "a test",
            "negative gradient",
            "host",
            "`mean_ij(-g_k) * A_k`",
            host=lambda run: -run.gradients.mean(axis=(2, 3), keepdims=True) * run.activations,
        ),
    }
    monkeypatch.setattr("onnxcam.methods.table.METHODS", {**METHODS, **rows})
    return rows


def test_a_new_row_is_all_a_new_method_needs(extra_rows):
    """In the graph and on the host, one layer or two: the built-in counterfactual's maps, not Grad-CAM's."""
    x = np.concatenate([demo.load_image(p) for p in demo.DEMO_IMAGES[:3]])
    reference = onnxcam.Explainer(demo.DEMO_MODEL)
    for layer in (reference.layer, [c.name for c in reference.candidates[-2:]]):
        want = onnxcam.Explainer(demo.DEMO_MODEL, layer=layer, method="counterfactual").explain(x)
        gradcam = onnxcam.Explainer(demo.DEMO_MODEL, layer=layer).explain(x)
        assert np.abs(want.cam - gradcam.cam).max() > 0.5, "the test needs a map unlike Grad-CAM's"
        for method in extra_rows:
            ex = onnxcam.Explainer(demo.DEMO_MODEL, layer=layer, method=method)
            got = ex.explain(x)
            np.testing.assert_allclose(got.cam, want.cam, atol=2e-5)
            for low, ref in zip(_per_layer(got.cam_lowres), _per_layer(want.cam_lowres)):
                np.testing.assert_allclose(low, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
            assert (got.activations is not None) == (method == "again-on-host") == (not ex.spec.exported)


def _per_layer(maps):
    return maps if isinstance(maps, list) else [maps]

"""Token layers without a framework: finding them, their grid and prefix, the overrides, and every method on them.

The model is :func:`tests.tiny_models.tiny_vit`: a class-token transformer in
a few ONNX nodes whose token reshape is sized at run time, as exporters write
it. The torch-exported families (torchvision, timm, Hugging Face) are in
``tests/test_vit.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxcam
from onnxcam.errors import LayerError
from onnxcam.graph.prepare import prepared_index
from onnxcam.graph.tokens import TokenLayout, tokens_from_map
from onnxcam.methods import method_spec
from tests.oracles import run_with_intermediates, tail_gradient_check
from tests.tiny_models import tiny_vit

GRID = (2, 3)
IMAGE = (8, 12)


def _images(n: int = 2) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((n, 3, *IMAGE)).astype(np.float32)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_vit") / "tiny_vit.onnx"
    onnx.save(tiny_vit(grid=GRID), path)
    return path


def test_run_time_token_shapes_are_filled_in_by_the_probe():
    index, _ = prepared_index(tiny_vit(grid=GRID))
    assert index.shape("embedded") == ("N", 7, 8)  # 1 class token + 2x3 patches; the batch stays the input's
    assert index.shape("flat") == ("N", 8, 6)


def test_candidates_and_the_automatic_layer(model_path):
    ex = onnxcam.Explainer(model_path)
    tokens = {c.name: c.tokens for c in ex.candidates if c.tokens is not None}
    assert list(tokens) == ["embedded", "normed", "mixed", "mlp", "tokens_out"]
    assert {(t.grid, t.prefix, t.batch_axis) for t in tokens.values()} == {(GRID, 1, 0)}
    # (N, C, h*w) 'flat', the transposed key and the (N, T, T) scores look like tokens but are not
    assert not {"flat", "normed_t", "logits_tt", "attention"} & {c.name for c in ex.candidates}
    # 'mixed' and later reach the score only through the class token: their patch tokens have no gradient
    assert ex.layer == "normed"
    assert "patch tokens reach the score" in ex.layer_reason and "the 3 later layer(s) on every path" in ex.layer_reason


@pytest.mark.parametrize("layer", ["embedded", "normed"])
def test_gradcam_on_patch_tokens_matches_finite_differences(model_path, layer):
    ex = onnxcam.Explainer(model_path, layer=layer)
    x = _images()
    res = ex.explain(x)
    full = ex.index.weights.materialize(ex.index.model)
    score = ex.score_spec.tensor
    for i in range(len(x)):
        values = run_with_intermediates(full, {"x": x[i : i + 1]}, [layer, score])
        seed = np.zeros_like(values[score])
        seed[0, res.targets[i]] = 1.0
        gradient = tail_gradient_check(full, layer, score, values[layer], seed)["gradient"]
        # pytorch-grad-cam's reshape_transform: drop the class token, patch tokens row-major onto the grid
        A = values[layer].astype(np.float64)[:, 1:].reshape(1, *GRID, -1).transpose(0, 3, 1, 2)
        G = gradient[:, 1:].reshape(1, *GRID, -1).transpose(0, 3, 1, 2)
        want = np.maximum((G.mean(axis=(2, 3), keepdims=True) * A).sum(axis=1), 0)
        assert (want > 0).sum() >= 2, "the reference map is (nearly) all zero: it would not test the gradient"
        got = res.cam_lowres[i : i + 1]
        assert got.shape == want.shape and np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


@pytest.mark.parametrize("method", onnxcam.ALL_METHODS)
def test_every_method_on_a_token_layer_fused_with_a_conv_map(model_path, method):
    if method_spec(method).kind == "attention":  # a rollout over the attention maps: one token layer, in the graph
        res = onnxcam.Explainer(model_path, method=method, aug_smooth=True).explain(_images())
        assert res.cam_lowres.shape == (2, *GRID) and np.isfinite(res.cam).all()
        with pytest.raises(onnxcam.OnnxcamError, match="one layer"):
            onnxcam.Explainer(model_path, layer=["embedded", "normed"], method=method)
        with pytest.raises(LayerError, match="not a token layer"):
            onnxcam.Explainer(model_path, layer="patches", method=method)
        return
    ex = onnxcam.Explainer(model_path, layer=["patches", "normed"], method=method)
    res = ex.explain(_images())
    assert [m.shape for m in res.cam_lowres] == [(2, *GRID), (2, *GRID)]
    assert res.cam.shape == (2, *IMAGE) and np.isfinite(res.cam).all()
    smooth = onnxcam.Explainer(model_path, layer="normed", method=method, aug_smooth=True, eigen_smooth=True)
    assert smooth.explain(_images()).cam_lowres.shape == (2, *GRID)


def test_ablation_replaces_patch_tokens_and_keeps_the_prefix():
    layout = TokenLayout(GRID, 1, 0, "test")
    tokens = np.arange(2 * 7 * 4, dtype=np.float32).reshape(2, 7, 4)
    patch_map = -np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, *GRID)
    got = tokens_from_map(patch_map, tokens, layout)
    np.testing.assert_array_equal(got[:, 0], tokens[:, 0])
    np.testing.assert_array_equal(got[:, 1:].reshape(2, *GRID, 4).transpose(0, 3, 1, 2), patch_map)
    tnc = tokens_from_map(patch_map, tokens, TokenLayout(GRID, 1, 1, "test"))
    np.testing.assert_array_equal(tnc, got.transpose(1, 0, 2))


def test_overrides_set_the_grid_and_prefix(model_path):
    ex = onnxcam.Explainer(model_path, layer="embedded", token_grid=(3, 2), prefix_tokens=1)
    assert ex.explain(_images()).cam_lowres.shape == (2, 3, 2)
    # a rank-3 tensor onnxcam does not list becomes a token layer with a grid
    ex = onnxcam.Explainer(model_path, layer="patch_tokens", token_grid=GRID)
    assert ex.explain(_images()).cam_lowres.shape == (2, *GRID)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer": "embedded", "token_grid": (3, 3)}, "fewer than the 9 patches of token_grid=3x3"),
        ({"layer": "embedded", "token_grid": (2, 2), "prefix_tokens": 1}, "does not fit"),
        ({"layer": "embedded", "prefix_tokens": 7}, "prefix_tokens=7 leaves no patch tokens"),
        ({"layer": "embedded", "prefix_tokens": 2}, "fit no grid"),
        ({"layer": "patches", "token_grid": GRID}, "is a 4-D feature map already"),
        ({"token_grid": (0, 4)}, "token_grid must be two positive ints"),
        ({"token_grid": "2x3"}, "token_grid must be two positive ints"),
        ({"prefix_tokens": -1}, "prefix_tokens must be a non-negative int"),
        ({"layer": "patch_tokens"}, "--token-grid"),
    ],
)
def test_bad_token_options_are_clear_errors(model_path, kwargs, message):
    with pytest.raises(LayerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        onnxcam.Explainer(model_path, **kwargs)


def test_exported_file_carries_the_patch_token_map(model_path, tmp_path):
    ex = onnxcam.Explainer(model_path, layer="embedded")
    x = _images(3)
    want = ex.explain(x)
    ex.export(tmp_path / "explainer.onnx")
    session = ort.InferenceSession(str(tmp_path / "explainer.onnx"), providers=["CPUExecutionProvider"])
    cam, cam_lowres = session.run(["cam", "cam_lowres"], {"x": x, "target_class": np.full(3, -1, np.int64)})
    np.testing.assert_allclose(cam_lowres, want.cam_lowres, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cam, want.cam, rtol=1e-5, atol=1e-6)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "onnxcam.cli.main", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_lists_token_layers_and_rejects_a_grid_that_does_not_fit(model_path, tmp_path):
    listing = _cli("layers", model_path, "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {r["name"]: r for r in json.loads(listing.stdout)["layers"]}
    assert rows["normed"]["layout"] == "NTC" and rows["normed"]["token_grid"] == list(GRID)
    assert rows["normed"]["prefix_tokens"] == 1 and rows["normed"]["channel_axis"] == 2 and rows["normed"]["auto"]
    table = _cli("layers", model_path).stdout
    assert "NTC 1+2x3" in table
    bad = _cli("export", model_path, "-o", tmp_path / "e.onnx", "--layer", "normed", "--token-grid", "5x5")
    assert bad.returncode == 1 and "onnxcam: error:" in bad.stderr and "Traceback" not in bad.stderr
    assert "--token-grid" in bad.stderr and not (tmp_path / "e.onnx").exists()


def test_a_dynamic_image_size_is_pinned_by_input_size(tmp_path):
    """Exported with a dynamic height and width, the token count is unknown until the size is pinned."""
    dynamic = tiny_vit(grid=GRID, dynamic_size=True)
    unsized = onnxcam.Explainer(dynamic)
    assert unsized.dynamic_input_size and not any(c.tokens for c in unsized.candidates)
    sized = onnxcam.Explainer(dynamic, input_size=IMAGE)
    assert not sized.dynamic_input_size and sized.layer == "normed"
    want = onnxcam.Explainer(tiny_vit(grid=GRID)).explain(_images())
    np.testing.assert_allclose(sized.explain(_images()).cam_lowres, want.cam_lowres, rtol=1e-5, atol=1e-7)
    wider = onnxcam.Explainer(dynamic, input_size=(8, 16))  # another size: another grid
    assert wider.explain(np.zeros((1, 3, 8, 16), np.float32)).cam_lowres.shape == (1, 2, 4)
    with pytest.raises(onnxcam.OnnxcamError, match="is fixed at 8x12"):
        onnxcam.Explainer(tiny_vit(grid=GRID), input_size=(16, 16))
    with pytest.raises(onnxcam.OnnxcamError, match="input_size must be two positive ints"):
        onnxcam.Explainer(dynamic, input_size=(8, 0))
    # the command line pins it to the size it resizes images to, and then finds a layer named by the user
    path = tmp_path / "dynamic.onnx"
    onnx.save(dynamic, path)
    from PIL import Image

    Image.new("RGB", (30, 20), (200, 40, 40)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    run = _cli("explain", path, tmp_path / "photo.png", "--size", "8", "12", "--layer", "normed", "-o", out)
    assert run.returncode == 0, run.stderr
    assert json.loads((out / "summary.json").read_text())["layer"] == "normed"


def test_the_automatic_layer_falls_back_when_the_gradient_run_fails(monkeypatch):
    """An ONNX Runtime failure while measuring which patch tokens reach the score is no traceback."""
    import onnxcam.explain.token_reach as token_reach

    class Failing:
        def run(self, *_args, **_kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : index out of range")

    monkeypatch.setattr(token_reach, "create_session", lambda *_args, **_kwargs: Failing())
    ex = onnxcam.Explainer(tiny_vit(grid=GRID))
    assert ex.layer == "tokens_out"  # the last layer on every path: the plain rule
    assert "could not be measured" in ex.layer_reason and "index out of range" in ex.layer_reason


def test_a_transformer_of_dynamic_size_is_explained_at_each_images_size():
    """No pin: each batch's size gets its own build, kept; a named token layer is looked for there."""
    dynamic = tiny_vit(grid=GRID, dynamic_size=True)
    ex = onnxcam.Explainer(dynamic)
    assert ex.sizes_explained_apart and ex.layer == "patches"  # the unsized graph knows no tokens
    want = onnxcam.Explainer(tiny_vit(grid=GRID)).explain(_images())
    got = ex.explain(_images())
    assert got.layer == "normed"
    np.testing.assert_allclose(got.cam_lowres, want.cam_lowres, rtol=1e-5, atol=1e-7)
    assert ex.explain(np.zeros((1, 3, 8, 16), np.float32)).cam_lowres.shape == (1, 2, 4)
    assert ex.for_size(IMAGE) is ex.for_size(IMAGE) and ex.for_size((8, 16)) is not ex.for_size(IMAGE)
    named = onnxcam.Explainer(dynamic, layer="embedded")  # a token layer only a sized build has
    assert named.explain(_images(1)).layer == "embedded"
    with pytest.raises(onnxcam.OnnxcamError, match=r"input_size=\(H, W\)"):
        ex.export("never-written.onnx")
    with pytest.raises(onnxcam.OnnxcamError, match=r"input_size=\(H, W\)"):
        ex.explainer_model  # noqa: B018 - the property builds the graph
    conv_layer = onnxcam.Explainer(dynamic, layer="patches")  # a layer the unsized graph has: one explainer
    assert not conv_layer.sizes_explained_apart and conv_layer.explainer_model is not None
    # a convolutional model of dynamic size keeps one Explainer for every size
    from onnxcam import demo

    cnn = onnx.load(demo.DEMO_MODEL)
    for dim, name in zip(cnn.graph.input[0].type.tensor_type.shape.dim[2:], ("height", "width")):
        dim.dim_param = name
    conv = onnxcam.Explainer(cnn)
    assert conv.dynamic_input_size and not conv.sizes_explained_apart
    assert conv.explain(np.zeros((1, 3, 64, 64), np.float32)).cam.shape == (1, 64, 64) and not conv._sized


def test_the_explainers_kept_per_size_are_the_most_recently_used(monkeypatch):
    import onnxcam.explainer

    monkeypatch.setattr(onnxcam.explainer, "SIZES_KEPT", 2)
    ex = onnxcam.Explainer(tiny_vit(grid=GRID, dynamic_size=True))
    for size in ((8, 12), (8, 16), (8, 12), (12, 12)):
        ex.for_size(size)
    assert list(ex._sized) == [(8, 12), (12, 12)]  # (8, 16), used least recently, was dropped


def test_eval_compare_batch_and_export_take_the_token_options_and_pin_a_dynamic_size(tmp_path):
    from PIL import Image

    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(tiny_vit(grid=GRID, dynamic_size=True), dynamic)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate(((200, 40, 40), (40, 200, 40))):
        Image.new("RGB", (30, 20), colour).save(photos / f"{i}.png")
    size = ["--size", "8", "12"]
    tokens = ["--token-grid", "2x3", "--prefix-tokens", "1"]

    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps({"images": [{"file": f"photos/{i}.png", "box": [2, 2, 20, 15]} for i in (0, 1)]}))
    run = _cli("eval", dynamic, annotations, *size, *tokens, "--layer", "embedded", "--method", "gradcam",
               "--metric", "pointing", "-o", tmp_path / "eval")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["layer"] == "embedded"

    run = _cli("compare", dynamic, dynamic, photos, "--size-a", "8", "12", "--size-b", "8", "12",
               "--layer-b", "embedded", "--token-grid-b", "2x3", "-o", tmp_path / "compare")  # fmt: skip
    assert run.returncode == 0, run.stderr
    header = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert (header["model_a"]["layer"], header["model_b"]["layer"]) == ("normed", "embedded")

    run = _cli("export", dynamic, "-o", tmp_path / "e.onnx", "--size", "8", "12", "--layer", "embedded", *tokens)
    assert run.returncode == 0, run.stderr
    exported = onnx.load(tmp_path / "e.onnx")
    assert [d.dim_value for d in exported.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 8, 12]
    listed = _cli("layers", dynamic, "--json", "--size", "8", "12")
    assert listed.returncode == 0 and json.loads(listed.stdout)["auto"] == "normed", listed.stderr
    listed = _cli("layers", dynamic)
    assert listed.returncode == 0 and "--size H W" in listed.stderr
    unsized = _cli("export", dynamic, "-o", tmp_path / "f.onnx")
    assert unsized.returncode == 1 and "--size H W" in unsized.stderr and "Traceback" not in unsized.stderr

    pytest.importorskip("pyarrow")
    run = _cli("batch", dynamic, photos, *size, "--layer", "embedded", *tokens, "--workers", "1", "-o", tmp_path / "b")
    assert run.returncode == 0, run.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "b" / "results").to_pylist()
    assert len(table) == 2 and {row["layer"] for row in table} == {"embedded"}

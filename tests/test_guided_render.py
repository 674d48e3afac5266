"""Guided maps as pictures (pytorch-grad-cam's ``deprocess_image``), their CLI panel, and the passes bar."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from onnxcam.cli.pass_progress import PassProgress
from onnxcam.errors import OnnxcamError
from onnxcam.render import TILE_BOXES_KEY, guided_to_rgb, render_guided_panel
from tests.test_cli import run_cli


def test_guided_picture_is_deprocess_image():
    deprocess_image = pytest.importorskip("pytorch_grad_cam.utils.image").deprocess_image
    g = np.random.default_rng(0).standard_normal((3, 10, 12)).astype(np.float32) * 1e-3
    want = deprocess_image(g.transpose(1, 2, 0))
    np.testing.assert_array_equal(guided_to_rgb(g, channel_axis=0), want)
    np.testing.assert_array_equal(guided_to_rgb(g.transpose(1, 2, 0), channel_axis=2), want)
    grey = guided_to_rgb(g[:1], channel_axis=0)
    assert grey.shape == (10, 12, 3) and (grey[..., 0] == grey[..., 2]).all()
    with pytest.raises(OnnxcamError, match="1 or 3 channels"):
        guided_to_rgb(np.zeros((4, 5, 5)), channel_axis=0)


def test_guided_panel_has_four_tiles():
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    pictures = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(2)]
    panel = render_guided_panel(photo, rng.random((40, 50)).astype(np.float32), *pictures, "caption")
    boxes = panel.info[TILE_BOXES_KEY]
    assert len(boxes) == 4
    x0, y0, x1, y1 = boxes[2]  # the guided backprop tile shows the picture, scaled to the tile
    tile = np.asarray(panel.crop((x0, y0, x1, y1)).resize((50, 40), Image.Resampling.BILINEAR)).astype(float)
    assert np.corrcoef(tile.ravel(), pictures[0].astype(float).ravel())[0, 1] > 0.5


def test_cli_renders_guided_maps(tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    from tests.test_perturbation_methods import tiny_model_and_photo

    model, image = tiny_model_and_photo(tmp_path)
    widths = {}
    for method in ("gradcam", "guided-backprop", "guided-gradcam"):
        run_cli("explain", model, image, "-o", tmp_path / method, "--method", method, check_exit=0)
        widths[method] = Image.open(tmp_path / method / "photo.png.cam.png").size[0]
    assert widths["guided-backprop"] == widths["guided-gradcam"] > widths["gradcam"] * 1.25  # 4 tiles, not 3


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_passes_bar_draws_on_a_terminal_and_clears_its_line():
    stream = _Terminal()
    bar = PassProgress("scorecam", stream=stream)
    for done in (32, 64, 96):
        bar(done, 96)
    text = stream.getvalue()
    assert "scorecam passes" in text and "96/96" in text and text.endswith("\r\033[K")
    log = io.StringIO()
    PassProgress("scorecam", stream=log)(96, 96)
    assert log.getvalue() == ""

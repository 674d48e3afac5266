"""Detectors for ``tests/test_detect*.py`` and the detector docs page.

* ``yolov8n``: Ultralytics YOLOv8n built from its yaml (random weights, no
  download), its weights perturbed with a seeded generator (Ultralytics' own
  initialisation gives every anchor the same box and a near-zero score, which
  would compare nothing; the class biases are zeroed for the same reason), exported with Ultralytics' own ONNX exporter;
* ``detr``: a small ``transformers`` DETR (ResNet backbone of 4 tiny stages, one
  encoder and one decoder layer, 10 queries, 5 classes), TorchScript export;
* ``tiny_yolo_anchors``: anchors for ``model_zoo.target_models.TinyYolo``, the
  BlazeFace-style (boxes, scores) pair of outputs; ``yolov5_style``: the same
  network with YOLOv5's export head (one ``(N, A, 5 + C)`` output, boxes decoded);
* ``ssdlite_head``: torchvision's SSDlite320 (random weights) without its
  post-processing, ``(bbox_regression, cls_logits)``, with its anchors (the whole
  model exports, but its NMS sits in If branches: nothing per anchor reaches its outputs);
* ``blazeface``: MediaPipe's real, pretrained short-range BlazeFace, read out of
  the ``mediapipe`` wheel (``pip download --no-deps mediapipe``; the package is
  never imported) and converted from TFLite with tf2onnx.

Each builder returns the ONNX path and, for the torch ones, the module in eval
mode with the exported weights, so a test can compare with torch autograd.
Runnable on its own to fill a cache folder::

    python -m model_zoo.detector_models [CACHE_DIR] [--wheel mediapipe-*.whl]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model_zoo.torchvision_models import TORCHSCRIPT_OPSET, _cap_ir_version

BLAZEFACE_IN_WHEEL = "mediapipe/modules/face_detection/face_detection_short_range.tflite"


def _perturb(module: nn.Module, seed: int, scale: float = 0.05) -> None:
    """Add seeded noise to every parameter and randomise BatchNorm statistics (eval mode is then not the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g) * (p.abs().mean() + 0.1))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def yolov8n(out_dir: str | os.PathLike, imgsz: int = 160, seed: int = 0) -> tuple[Path, nn.Module]:
    """YOLOv8n from ``yolov8n.yaml``, perturbed, exported by Ultralytics (opset 17, static batch 1).

    Returns the file and the Ultralytics ``DetectionModel`` (eval mode; its
    forward returns ``(N, 84, anchors)`` first, as the export does).
    """
    folder = Path(out_dir)
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no asset or version checks over the network
    os.environ.setdefault("YOLO_CONFIG_DIR", str(folder / "ultralytics-settings"))  # not the user's home
    from PIL import Image

    pillow_open = Image.open
    from ultralytics import YOLO

    # Importing Ultralytics replaces PIL.Image.open for the whole process with one that, on an image Pillow cannot
    # identify, pip-installs and loads a HEIF plugin (ultralytics/utils/patches.py): undo it, so the rest of a test
    # run decodes (and refuses) images as onnxcam does.
    Image.open = pillow_open
    torch.manual_seed(seed)
    yolo = YOLO("yolov8n.yaml")
    _perturb(yolo.model, seed)
    with torch.no_grad():  # Ultralytics' class bias prior (-10: p ~ 5e-5) would leave the sigmoids saturated
        for branch in yolo.model.model[-1].cv3:
            branch[-1].bias.zero_()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"yolov8n_{imgsz}_{seed}.onnx"
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp, _quiet(), contextlib.chdir(tmp):
            exported = Path(yolo.export(format="onnx", imgsz=imgsz, opset=TORCHSCRIPT_OPSET, simplify=False))
            _cap_ir_version(exported)
            os.replace(exported, path)
    model = yolo.model.eval()
    for m in model.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    return path, model


class DetrHead(nn.Module):
    """``DetrForObjectDetection`` returning ``(logits, pred_boxes)`` as a tuple, as the ONNX file does."""

    def __init__(self, detr: nn.Module):
        super().__init__()
        self.detr = detr

    def forward(self, pixel_values):
        out = self.detr(pixel_values=pixel_values)
        return out.logits, out.pred_boxes


def detr(out_dir: str | os.PathLike, size: int = 128, seed: int = 0) -> tuple[Path, nn.Module]:
    """A small DETR (5 classes + no-object, 10 queries), seeded random weights, TorchScript export."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    torch.manual_seed(seed)
    backbone = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], out_features=["stage4"]
    )
    config = DetrConfig(
        use_timm_backbone=False,
        backbone_config=backbone,
        use_pretrained_backbone=False,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=10,
        num_labels=5,
    )
    module = DetrHead(DetrForObjectDetection(config))
    _perturb(module, seed)
    module.eval()
    path = Path(out_dir) / f"detr_{size}_{seed}.onnx"
    _export_once(module, path, size, "pixel_values", ("logits", "pred_boxes"))
    return path, module


def tiny_yolo_anchors(size: int = 128, boxes_per_cell: int = 2) -> np.ndarray:
    """Anchors of ``TinyYolo``'s rows (stride 8 then 16; y, x, box fastest): cell centres, 2 and 4 strides wide."""
    rows = []
    for stride in (8, 16):
        cells = size // stride
        for y in range(cells):
            for x in range(cells):
                for b in range(boxes_per_cell):
                    side = stride * (2 + 2 * b)
                    rows.append(((x + 0.5) * stride, (y + 0.5) * stride, side, side))
    return np.array(rows, dtype=np.float64)


def blazeface(wheel: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """MediaPipe's short-range BlazeFace (128x128 NHWC in [-1, 1]) out of the mediapipe wheel, as ONNX.

    Outputs ``regressors`` (1, 896, 16: box offsets and 6 keypoints) and
    ``classificators`` (1, 896, 1: face logits); decode with
    ``onnxcam.detect.blazeface_anchors()`` and ``box_scale=(128,) * 4``.
    """
    path = Path(out_dir) / "blazeface_short_range.onnx"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tflite = Path(tmp) / "face.tflite"
        with zipfile.ZipFile(wheel) as archive:
            tflite.write_bytes(archive.read(BLAZEFACE_IN_WHEEL))
        converted = Path(tmp) / "face.onnx"
        subprocess.run(
            [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(converted)]
            + ["--opset", str(TORCHSCRIPT_OPSET)],
            check=True,
            capture_output=True,
        )
        _cap_ir_version(converted)
        os.replace(converted, path)
    return path


def _export_once(module: nn.Module, path: Path, size: int, inputs: str, outputs: Sequence[str]) -> None:
    """TorchScript-export ``module`` on a (1, 3, size, size) image to ``path`` unless it is there (the batch axis
    dynamic), through a temporary file so an interrupted export leaves nothing half written."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            module,
            (torch.randn(1, 3, size, size),),
            str(tmp),
            dynamo=False,
            opset_version=TORCHSCRIPT_OPSET,
            input_names=[inputs],
            output_names=list(outputs),
            dynamic_axes={n: {0: "batch"} for n in (inputs, *outputs)},
        )
    _cap_ir_version(tmp)
    os.replace(tmp, path)


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache_dir", nargs="?", default=".zoo_cache")
    parser.add_argument("--wheel", help="a downloaded mediapipe wheel: also convert its BlazeFace")
    args = parser.parse_args(argv)
    print(yolov8n(args.cache_dir)[0])
    print(detr(args.cache_dir)[0])
    if args.wheel:
        print(blazeface(args.wheel, args.cache_dir))


if __name__ == "__main__":
    main()


class SsdRawHead(nn.Module):
    """torchvision SSD's backbone and head without its post-processing: ``(bbox_regression, cls_logits)``.

    The whole detector exports, but its NMS runs inside If branches after
    per-class score thresholds and top-k, so no per-anchor tensor of a fixed
    shape reaches its outputs; this is the head to export for explaining.
    Input: an image already normalised and sized (320x320 for SSDlite).
    """

    def __init__(self, ssd: nn.Module):
        super().__init__()
        self.ssd = ssd

    def forward(self, images):
        out = self.ssd.head(list(self.ssd.backbone(images).values()))
        return out["bbox_regression"], out["cls_logits"]

    def anchors(self, size: int = 320) -> np.ndarray:
        """The anchors of the head's rows, ``(A, 4)`` cx, cy, w, h in input pixels."""
        from torchvision.models.detection.image_list import ImageList

        images = torch.zeros(1, 3, size, size)
        with torch.no_grad():
            feats = list(self.ssd.backbone(images).values())
            (xyxy,) = self.ssd.anchor_generator(ImageList(images, [(size, size)]), feats)
        xyxy = xyxy.double().numpy()
        return np.stack(
            [
                (xyxy[:, 0] + xyxy[:, 2]) / 2,
                (xyxy[:, 1] + xyxy[:, 3]) / 2,
                xyxy[:, 2] - xyxy[:, 0],
                xyxy[:, 3] - xyxy[:, 1],
            ],
            axis=1,
        )


def ssdlite_head(out_dir: str | os.PathLike, classes: int = 5, seed: int = 0) -> tuple[Path, SsdRawHead]:
    """torchvision ``ssdlite320_mobilenet_v3_large`` (random weights, ``classes`` with background 0), raw head."""
    import torchvision

    from model_zoo.torchvision_models import _randomise_batchnorm

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ssd = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=classes
        )
    _randomise_batchnorm(ssd, torch.Generator().manual_seed(seed + 1))
    for m in ssd.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    module = SsdRawHead(ssd).eval()
    path = Path(out_dir) / f"ssdlite_head_{classes}_{seed}.onnx"
    _export_once(module, path, 320, "images", ("bbox_regression", "cls_logits"))
    return path, module


class Yolov5Style(nn.Module):
    """``TinyYolo`` with YOLOv5's export head: one ``(N, anchors, 5 + classes)`` output, boxes decoded in the graph.

    Columns: cx, cy, w, h in input pixels (offsets scaled by the anchor size
    and added to its centre; sizes through exp), sigmoid objectness, sigmoid
    class probabilities, as YOLOv5's ``Detect`` exports them.
    """

    def __init__(self, tiny: nn.Module, anchors: np.ndarray):
        super().__init__()
        self.tiny = tiny
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))

    def forward(self, image):
        raw, probs = self.tiny(image)
        a = self.anchors.to(raw.dtype)
        centre = torch.tanh(raw[..., :2]) * a[:, 2:] + a[:, :2]
        size = torch.exp(torch.clamp(raw[..., 2:4], max=4.0) / 4) * a[:, 2:]
        return torch.cat([centre, size, probs], dim=-1)


def yolov5_style(out_dir: str | os.PathLike, seed: int = 0) -> tuple[Path, nn.Module]:
    """:class:`Yolov5Style` around ``model_zoo.target_models``' TinyYolo (3 classes, 128x128), TorchScript export."""
    from model_zoo.target_models import build_model

    module = Yolov5Style(build_model("detection", seed), tiny_yolo_anchors()).eval()
    path = Path(out_dir) / f"yolov5_style_{seed}.onnx"
    _export_once(module, path, 128, "image", ("output",))
    return path, module

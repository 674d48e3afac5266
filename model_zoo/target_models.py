"""Models whose outputs are not (batch, classes): segmentation, a detection head, an embedding, two inputs.

Used by ``tests/test_targets_zoo.py`` to check region, similarity, element and
multi-label targets against torch autograd. Random seeded weights (nothing is
downloaded), BatchNorm statistics randomised as in ``torchvision_models`` so
that eval-mode normalisation is not the identity, and the TorchScript exporter
(opset 17, dynamic batch axis). Runnable on its own to fill a cache folder::

    python -m model_zoo.target_models [CACHE_DIR]

Each :class:`TargetCase` says how to build the torch module, what its inputs
look like, and its input and output names (in the order the module takes and
returns them).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from model_zoo.torchvision_models import MAX_IR_VERSION, TORCHSCRIPT_OPSET, _cap_ir_version, _randomise_batchnorm


class Segmenter(nn.Module):
    """torchvision LR-ASPP (MobileNetV3-Large) returning per-pixel class probabilities (a Softmax over axis 1).

    The Softmax makes the exported output a probability map, the case where
    onnxcam's default score="logit" seeds the logits before it.
    """

    def __init__(self, classes: int = 5):
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
                weights=None, weights_backbone=None, num_classes=classes
            )

    def forward(self, image):
        return torch.softmax(self.net(image)["out"], dim=1)


class TinyYolo(nn.Module):
    """A YOLO-style detector without NMS: two strides (8, 16), an FPN merge, raw head tensors.

    Outputs ``boxes`` (N, anchors, 4), the raw box regression, and ``scores``
    (N, anchors, 1 + classes), sigmoid objectness and class scores, as YOLOv5
    exports do before post-processing. Anchor rows run stride 8 first, then
    stride 16; within a stride, anchor box fastest, then x, then y.
    """

    def __init__(self, classes: int = 3, boxes_per_cell: int = 2):
        super().__init__()

        def block(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.SiLU())

        self.stem = nn.Sequential(block(3, 16, 2), block(16, 24, 2), block(24, 32, 2))  # stride 8
        self.down = block(32, 48, 2)  # stride 16
        self.merge = block(32 + 48, 32, 1)
        self.per_anchor = 5 + classes
        self.boxes_per_cell = boxes_per_cell
        self.head8 = nn.Conv2d(32, boxes_per_cell * self.per_anchor, 1)
        self.head16 = nn.Conv2d(48, boxes_per_cell * self.per_anchor, 1)

    def _rows(self, head: torch.Tensor) -> torch.Tensor:
        n, _, h, w = head.shape
        return (
            head.view(n, self.boxes_per_cell, self.per_anchor, h, w)
            .permute(0, 3, 4, 1, 2)
            .reshape(n, h * w * self.boxes_per_cell, self.per_anchor)
        )

    def forward(self, image):
        p8 = self.stem(image)
        p16 = self.down(p8)
        f8 = self.merge(torch.cat([p8, F.interpolate(p16, scale_factor=2.0, mode="nearest")], dim=1))
        raw = torch.cat([self._rows(self.head8(f8)), self._rows(self.head16(p16))], dim=1)
        return raw[..., :4], torch.sigmoid(raw[..., 4:])


class Embedder(nn.Module):
    """torchvision resnet18 without its classifier, L2-normalised: dot products are cosine similarities."""

    def __init__(self):
        super().__init__()
        self.net = torchvision.models.resnet18(weights=None)
        self.net.fc = nn.Identity()

    def forward(self, image):
        return F.normalize(self.net(image), dim=1)


class ImageAndMetadata(nn.Module):
    """Two inputs, the vector first: ``meta`` (N, 4) modulates the image features (FiLM); two outputs.

    ``labels`` (N, 5): multi-label sigmoid probabilities from the second
    feature map (``conv2``). ``value`` (N, 1): a regression from the first
    feature map (``film``, the FiLM product) and the metadata, so the two
    outputs have different automatic layers.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gamma = nn.Linear(4, 8)
        self.film = FiLM()
        self.conv2 = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.classify = nn.Linear(12, 5)
        self.regress = nn.Sequential(nn.Linear(8 + 4, 6), nn.Tanh(), nn.Linear(6, 1))

    def forward(self, meta, image):
        modulated = self.film(F.relu(self.conv1(image)), self.gamma(meta))
        labels = torch.sigmoid(self.classify(self.conv2(modulated).mean((2, 3))))
        value = self.regress(torch.cat([modulated.mean((2, 3)), meta], dim=1))
        return labels, value


class FiLM(nn.Module):
    """features * (1 + gamma): a module of its own so a forward hook can see its output."""

    def forward(self, features, gamma):
        return features * (1 + gamma[:, :, None, None])


@dataclasses.dataclass(frozen=True)
class TargetCase:
    name: str
    build: Callable[[], nn.Module]
    inputs: dict[str, tuple[int, ...]]  # name -> shape without the batch axis, in forward() order
    outputs: tuple[str, ...]

    def example(self, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(batch, *shape, generator=g) for shape in self.inputs.values())


CASES: dict[str, TargetCase] = {
    c.name: c
    for c in [
        TargetCase("segmentation", Segmenter, {"image": (3, 128, 128)}, ("masks",)),
        TargetCase("detection", TinyYolo, {"image": (3, 128, 128)}, ("boxes", "scores")),
        TargetCase("embedding", Embedder, {"image": (3, 128, 128)}, ("embedding",)),
        TargetCase("two_inputs", ImageAndMetadata, {"meta": (4,), "image": (3, 32, 32)}, ("labels", "value")),
    ]
}


def build_model(name: str, seed: int = 0) -> nn.Module:
    """The case's module in eval mode with seeded random weights and BatchNorm statistics, no in-place ops."""
    torch.manual_seed(seed)
    model = CASES[name].build()
    _randomise_batchnorm(model, torch.Generator().manual_seed(seed + 1))
    for m in model.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    return model.eval()


def build_and_export(name: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Export the case to ``out_dir/targets_{name}.onnx`` (TorchScript exporter, opset 17) unless already there."""
    case = CASES[name]
    path = Path(out_dir) / f"targets_{name}.onnx"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    axes = {n: {0: "batch"} for n in (*case.inputs, *case.outputs)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            build_model(name, seed),
            case.example(),
            str(tmp),
            dynamo=False,
            opset_version=TORCHSCRIPT_OPSET,
            input_names=list(case.inputs),
            output_names=list(case.outputs),
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    _cap_ir_version(tmp)
    os.replace(tmp, path)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache_dir", nargs="?", default=".zoo_cache")
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    args = parser.parse_args(argv)
    for name in args.case or list(CASES):
        t0 = time.perf_counter()
        path = build_and_export(name, args.cache_dir)
        print(f"{name:14s} {time.perf_counter() - t0:6.1f}s  {path}  (ir <= {MAX_IR_VERSION})")


if __name__ == "__main__":
    main()

"""Vision transformers with random weights and small configs, for the token-layer tests and the benchmark.

Each :class:`TransformerSpec` builds one architecture family the way its
library does (torchvision, timm, Hugging Face ``transformers``), small enough
to export and differentiate in seconds, and names the torch modules whose
outputs a test explains:

* ``auto``: the module whose output ``layer="auto"`` must pick: for a
  class-token head, the block before the last (its output is the last block's
  input, the last layer on every path whose patch tokens reach the score);
  for models that pool all tokens, the last stage;
* ``early``: an earlier token layer, explained by name.

``prefix`` and ``grid`` are the token layout those layers have. Exported with
:func:`model_zoo.torchvision_models.export_onnx` (TorchScript or dynamo, batch
axis dynamic). Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

#: Input size (height, width): not square, so a transposed grid would show.
IMAGE = (32, 48)


class LogitsOnly(torch.nn.Module):
    """A Hugging Face model called with ``pixel_values`` and reduced to one output tensor."""

    def __init__(self, model: torch.nn.Module, output: str = "logits"):
        super().__init__()
        self.model, self.output = model, output

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(pixel_values=pixel_values), self.output)


@dataclasses.dataclass(frozen=True)
class TransformerSpec:
    name: str
    build: Callable[[], torch.nn.Module]
    auto: str  # dotted module path of the output layer="auto" must pick (see the module docstring)
    early: str  # an earlier token layer's module
    prefix: int  # prefix tokens (class, distillation, registers) of those layers
    grid: tuple[int, int]  # their patch grid
    size: tuple[int, int] = IMAGE
    layout: str = "NTC"  # of the early layer: "NTC" tokens, or "NHWC" maps (Swin, whose auto layer is NCHW)


def _seeded(build: Callable[[], torch.nn.Module]) -> Callable[[], torch.nn.Module]:
    def seeded() -> torch.nn.Module:
        torch.manual_seed(0)
        return build().eval()

    return seeded


def _torchvision_vit() -> torch.nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64)
    model.heads.head = torch.nn.Linear(32, 10)  # torchvision zero-initialises the head: no gradient at all
    return model


def _timm_vit_registers() -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=IMAGE, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10, reg_tokens=4
    )


def _timm_deit_distilled() -> torch.nn.Module:
    from timm.models.deit import VisionTransformerDistilled

    return VisionTransformerDistilled(img_size=IMAGE, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10)


#: The Hugging Face configs' common size: 8x8 patches, 3 blocks of width 32 with 2 heads.
_HF_SMALL = {"patch_size": 8, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2}


def _hf_vit() -> torch.nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=list(IMAGE), intermediate_size=64, num_labels=10, **_HF_SMALL)
    return LogitsOnly(ViTForImageClassification(config))


def _hf_dinov2() -> torch.nn.Module:
    from transformers import Dinov2Config, Dinov2ForImageClassification

    # The class token and the mean of the patch tokens feed the head; the position embeddings are interpolated
    # to the input size at run time (a Resize whose sizes the graph computes).
    config = Dinov2Config(image_size=32, mlp_ratio=2, num_labels=10, **_HF_SMALL)
    return LogitsOnly(Dinov2ForImageClassification(config))


def _hf_clip_vision() -> torch.nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(image_size=32, intermediate_size=64, projection_dim=16, **_HF_SMALL)
    return LogitsOnly(CLIPVisionModelWithProjection(config), "image_embeds")  # explained: one embedding dimension


def _torchvision_swin() -> torch.nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4], num_classes=10
    )


SPECS = {
    spec.name: spec
    for spec in (
        TransformerSpec(
            "torchvision_vit",
            _seeded(_torchvision_vit),
            "encoder.layers.encoder_layer_1",
            "encoder.layers.encoder_layer_0",
            1,
            (4, 4),
            (32, 32),
        ),
        TransformerSpec("timm_vit_registers", _seeded(_timm_vit_registers), "blocks.1", "blocks.0", 5, (4, 6)),
        TransformerSpec("timm_deit_distilled", _seeded(_timm_deit_distilled), "blocks.1", "blocks.0.norm1", 2, (4, 6)),
        TransformerSpec("hf_vit", _seeded(_hf_vit), "model.vit.layers.1", "model.vit.layers.0", 1, (4, 6)),
        TransformerSpec(
            "hf_dinov2", _seeded(_hf_dinov2), "model.dinov2.layernorm", "model.dinov2.encoder.layer.0", 1, (4, 6)
        ),
        TransformerSpec(
            "hf_clip_vision",
            _seeded(_hf_clip_vision),
            "model.vision_model.encoder.layers.1",
            "model.vision_model.encoder.layers.0",
            1,
            (4, 4),
            (32, 32),
        ),
        TransformerSpec(
            "torchvision_swin", _seeded(_torchvision_swin), "permute", "features.1", 0, (8, 8), (32, 32), layout="NHWC"
        ),
    )
}

"""Torchvision classifiers with random weights, exported to ONNX by both torch exporters.

Used by ``tests/test_torchvision_parity.py`` and runnable on its own to fill a cache folder::

    python -m model_zoo.torchvision_models [CACHE_DIR] [--arch NAME ...] [--exporter torchscript|dynamo]

Nothing is downloaded: every model is built with ``weights=None`` and then given
seeded random BatchNorm statistics and affine parameters, so that eval-mode
BatchNorm is not the identity (fresh running stats are mean 0 / var 1) and the
exported graphs carry non-trivial normalisation.

Two exporters:

* ``"torchscript"``: ``torch.onnx.export(..., dynamo=False)``, opset 17;
* ``"dynamo"``: ``torch.onnx.export(..., dynamo=True)``, opset 18, weights
  embedded in the file (``external_data=False``).

Both files have a dynamic batch axis (input ``"input"``, output ``"logits"``)
and ``ir_version`` capped at 10 so that any onnxruntime >= 1.16 loads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx
import torch
import torchvision

EXPORTERS = ("torchscript", "dynamo")
TORCHSCRIPT_OPSET = 17
DYNAMO_OPSET = 18
MAX_IR_VERSION = 10
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and which modules to explain.

    ``early`` and ``last`` are dotted module paths (``model.get_submodule``);
    ``last`` is the usual Grad-CAM layer (the last spatial feature map before
    global pooling), ``early`` a feature map one or more stages before it.
    ``last_post`` names a functional op the model's ``forward`` applies to the
    ``last`` module's output before pooling (densenet's ``F.relu``), so that
    the reference can place its hook on the tensor an ONNX graph actually has.
    ``auto_ok`` lists the module paths (``path+relu`` for a ``last_post``
    variant) an automatic Grad-CAM layer choice may reasonably land on; it
    defaults to ``last`` alone. ``size`` is the input height and width used
    for export and tests.
    """

    name: str
    early: str
    last: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    last_post: str | None = None
    size: int = 128
    auto_ok: tuple[str, ...] = ()

    @property
    def auto_sites(self) -> tuple[str, ...]:
        return self.auto_ok or (self.last,)


ARCHS: dict[str, ArchSpec] = {
    s.name: s
    for s in [
        ArchSpec("resnet18", early="layer3", last="layer4"),
        ArchSpec("resnet50", early="layer3", last="layer4"),
        # features: ... 32 ReLU, 33 MaxPool (end of block 4), ..., 42 ReLU, 43 MaxPool
        # size 224: the TorchScript exporter only handles AdaptiveAvgPool2d((7, 7))
        # when 7 divides the feature map (224 / 32 = 7; 128 would give 4 -> 7).
        ArchSpec("vgg16_bn", early="features.32", last="features.42", size=224, auto_ok=("features.42", "features.43")),
        ArchSpec("mobilenet_v2", early="features.14", last="features.18"),
        ArchSpec("mobilenet_v3_small", early="features.8", last="features.12"),
        ArchSpec("efficientnet_b0", early="features.6", last="features.8"),
        ArchSpec(
            "densenet121",
            early="features.denseblock3",
            last="features",
            last_post="relu",
            auto_ok=("features+relu", "features"),
        ),
        # The classifier is Conv(1000) -> ReLU -> global pool: its ReLU output (a
        # class-activation map) is also the last spatial map before pooling.
        ArchSpec("squeezenet1_1", early="features.9", last="features.12", auto_ok=("features.12", "classifier.2")),
        ArchSpec(
            "googlenet", early="inception4e", last="inception5b", kwargs={"aux_logits": False, "init_weights": True}
        ),
        ArchSpec("shufflenet_v2_x1_0", early="stage3", last="conv5"),
        ArchSpec("regnet_y_400mf", early="trunk_output.block3", last="trunk_output.block4"),
        ArchSpec("convnext_tiny", early="features.5", last="features.7"),
        ArchSpec("mnasnet0_5", early="layers.12", last="layers.16"),
    ]
}


def _randomise_batchnorm(model: torch.nn.Module, generator: torch.Generator) -> None:
    """running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5), weight ~ U(0.5, 1.5), bias ~ N(0, 0.1).

    Also ConvNeXt's ``layer_scale`` (initialised to 1e-6, which makes every
    block almost the identity) ~ U(0.1, 0.5), so that stage outputs differ
    from their inputs and the residual branches carry real gradient.
    """
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.rsplit(".", 1)[-1] == "layer_scale":
                p.copy_(torch.rand(p.shape, generator=generator) * 0.4 + 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=generator) * 0.1)


def build_model(name: str, seed: int = 0) -> torch.nn.Module:
    """The torchvision model ``name`` in eval mode, float32, random seeded weights and BN stats.

    In-place activations are switched off (``inplace=False``) so that forward
    hooks see the tensors the graph really has; the maths are unchanged.
    """
    spec = ARCHS[name]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(torchvision.models, name)(weights=None, **spec.kwargs)
    _randomise_batchnorm(model, torch.Generator().manual_seed(seed + 1))
    for m in model.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    return model.eval()


def _cap_ir_version(path: Path) -> None:
    model = onnx.load(str(path))
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        onnx.save(model, str(path))


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, exporter: str, example: torch.Tensor) -> Path:
    """Export ``model`` (float32, eval) to ``path`` with ``exporter``; returns the path.

    ``example`` is a float32 (N, C, H, W) input; the batch axis is dynamic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # eval + no_grad sends nn.MultiheadAttention to a fused kernel neither exporter knows
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            _export(model, path, exporter, example)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
    _cap_ir_version(path)
    return path


def _export(model: torch.nn.Module, path: Path, exporter: str, example: torch.Tensor) -> None:
    """One export with ``exporter`` (see :func:`export_onnx`)."""
    if exporter == "torchscript":
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=TORCHSCRIPT_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    elif exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=DYNAMO_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            optimize=True,
            verbose=False,
        )
        program.save(str(path), external_data=False)
    else:
        raise ValueError(f"unknown exporter {exporter!r}; expected one of {EXPORTERS}")


def example_input(batch: int = 2, size: int = 128, seed: int = 0) -> torch.Tensor:
    """A seeded float32 (batch, 3, size, size) input, roughly ImageNet-normalised scale."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def build_and_export(
    name: str, exporter: str, out_dir: str | os.PathLike, *, seed: int = 0, size: int | None = None
) -> Path:
    """Build ``name`` and export it to ``out_dir/{name}.{exporter}.onnx`` unless already there.

    ``size`` defaults to the architecture's ``ArchSpec.size``.
    """
    size = size or ARCHS[name].size
    path = Path(out_dir) / f"{name}.{exporter}.onnx"
    if not path.exists():
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(build_model(name, seed), tmp, exporter, example_input(2, size))
        os.replace(tmp, path)
    return path


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache_dir", nargs="?", default=".zoo_cache")
    parser.add_argument("--arch", action="append", choices=sorted(ARCHS))
    parser.add_argument("--exporter", action="append", choices=EXPORTERS)
    parser.add_argument("--size", type=int, default=None, help="default: per architecture")
    args = parser.parse_args(argv)
    for name in args.arch or list(ARCHS):
        for exporter in args.exporter or EXPORTERS:
            t0 = time.perf_counter()
            path = build_and_export(name, exporter, args.cache_dir, size=args.size)
            log(f"{name:20s} {exporter:12s} {time.perf_counter() - t0:7.1f}s  {path}")


if __name__ == "__main__":
    main()

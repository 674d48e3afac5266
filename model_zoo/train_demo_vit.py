"""Train and export a small vision transformer on onnxcam's demo data (for the docs' ViT picture).

Not bundled with onnxcam; the model goes wherever ``--out`` says::

    python model_zoo/train_demo_vit.py --out /tmp/vit_demo            # train, export model.onnx
    python model_zoo/train_demo_vit.py --out /tmp/vit_demo --evaluate # accuracy and pointing game

Data: ``model_zoo/demo_data.py`` (one shape per 96x96 image on clutter), the
same seeds as ``model_zoo/train_demo.py``: training pool ``--seed`` (default 1),
validation 2, held-out evaluation 20240 (``tests/test_demo_model.py``'s set).

Model: torchvision ``VisionTransformer`` with a class token: 96x96 input, a
12x12 grid of 144 patch tokens plus the class token, width 64, 4 encoder
blocks, 2 heads, MLP 128, learned position embeddings, no dropout. ``--stem
conv`` (the default) replaces the linear 8x8 patch embedding by a
convolutional stem (Xiao et al., "Early convolutions help transformers see
better", 2021): five Conv3x3-BatchNorm-ReLU (16/s2, 32/s2, 32, 64/s2, 64
channels/stride; receptive field 39 px) and the 1x1 projection, which still
gives the 12x12 grid; about 218k parameters. ``--stem patch`` keeps the plain
8x8 patch embedding (156k parameters). ``--stem demo-cnn`` makes a hybrid ViT
(as the ViT paper's ResNet hybrids): the bundled demo CNN's convolutions
(``onnxcam/demo/model.onnx``, trained by ``train_demo.py``; read from the
file, frozen) give a 12x12x128 map, a 1x1 convolution turns it into the tokens;
342k parameters, 124k of them trained.
Training: AdamW (weight decay 0.05), one-cycle cosine schedule (peak lr 2e-3
at 10%), batch 64, random flips, 90-degree rotations and translations of up to
8 px (edge-replicated), cross-entropy with label smoothing 0.1. Deterministic as
``train_demo.py``: ``torch.manual_seed``, ``torch.use_deterministic_algorithms``,
``torch.set_num_threads(1)``, no DataLoader workers.

Export: ``model_zoo.torchvision_models.export_onnx(..., "torchscript", ...)``
(opset 17, dynamic batch, torch's fused attention fast path off), input renamed
``"image"``; ``metadata_props`` ``onnxcam.preprocess`` (raw01) and
``onnxcam.labels`` as the CNN demo, so ``onnxcam explain`` preprocesses right.

``--evaluate`` (on an exported model): held-out accuracy and the Grad-CAM
pointing game (true class, peak pixel inside the tight box) at
``layer="auto"`` (for a class-token ViT: the input of the last block) and at the
last block's first LayerNorm output (the layer of pytorch-grad-cam's ViT
tutorial), against the image-centre baseline.

Reference runs (2 CPU cores shared with other jobs, load average 5-9, one
thread, torch 2.14.1 CPU; 0.5-1 s per step of 64 images). From scratch, not
good enough for a meaningful picture; the hybrid is:

* ``--stem patch``, 5 epochs planned: loss stuck at ln 6 = 1.79, validation
  accuracy 0.167 (chance) after 2 epochs (250 steps); stopped.
* ``--stem conv`` with a 3-conv stem (16/32/64, all stride 2): validation
  accuracy 0.161, 0.189, 0.222, 0.252 after epochs 1-4; stopped.
* the default (5-conv stem), 5 epochs: 657 s in all (66 s data generation,
  105-126 s per epoch), loss 1.79 -> 1.67, validation accuracy 0.205, 0.212,
  0.264, 0.282 (epoch 5); model.onnx 995 KiB. ``--evaluate`` (held-out seed
  20240, 200 images): accuracy 0.265; pointing game 0.150 at ``layer="auto"``
  (``/encoder/layers/encoder_layer_2/Add_1_output_0``, the last block's input)
  and 0.255 at the last block's ``ln_1`` output, against 0.310 for the centre
  point: the heatmaps do not point at the objects.

* ``--stem demo-cnn``, 4 epochs (the docs' picture, ``docs/vit_demo_star.png``): 332 s in
  all (68-105 s per epoch, load 1-4), validation accuracy 0.979, 0.991, 0.994, 0.996;
  model.onnx 1480 KiB. ``--evaluate``: accuracy 1.000; pointing game 0.640 at
  ``layer="auto"`` (``encoder_layer_2/Add_1``, the last block's input) and 0.665 at
  the last block's ``ln_1`` output, against 0.310 for the centre point.

The loss was still falling when each from-scratch run ended: the ViT is under-trained, not
diverged (the CNN demo gets 1500 steps and a max-pooling inductive bias; these
runs got 625 steps). The next things to try, with more CPU time than 12 minutes
per run: ``--epochs 20`` or more, and a peak learning rate of 1e-3 with a longer
warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from model_zoo.demo_data import CLASSES, SIZE, generate  # noqa: E402
from model_zoo.train_demo import Schedule, fit, tag_and_save, to_tensor, training_data  # noqa: E402

TRAIN_SEED, VAL_SEED, SAMPLE_SEED, HELD_OUT_SEED = 1, 2, 3, 20240
PATCH, WIDTH, DEPTH, HEADS, MLP = 8, 64, 4, 2, 128
STEM = ((16, 2), (32, 2), (32, 1), (64, 2), (64, 1))  # (channels, stride) of each Conv3x3-BN-ReLU
MAX_SHIFT = 8


def build_model(stem: str = "conv", num_classes: int = len(CLASSES)):
    import torch.nn as nn
    from torchvision.models.vision_transformer import ConvStemConfig, VisionTransformer

    convs = None
    if stem == "conv":  # three stride-2 convs among five: 96 -> 12, the same grid as 8x8 patches
        convs = [ConvStemConfig(c, 3, s, nn.BatchNorm2d, nn.ReLU) for c, s in STEM]
    elif stem not in ("patch", "demo-cnn"):
        raise ValueError(stem)
    vit = VisionTransformer(SIZE, PATCH, DEPTH, HEADS, WIDTH, MLP, num_classes=num_classes, conv_stem_configs=convs)
    if stem == "demo-cnn":  # a hybrid ViT: the trained demo CNN's frozen features (12x12x128), then 1x1 to tokens
        vit.conv_proj = nn.Sequential(demo_cnn_features(), nn.Conv2d(DEMO_CNN_CHANNELS, WIDTH, 1))
    return vit


DEMO_CNN_CHANNELS = 128


def demo_cnn_features():
    """The bundled demo CNN's convolutions (``onnxcam/demo/model.onnx``, BatchNorm folded in), frozen, as torch.

    Its last map is 12x12x128 for a 96x96 image: the ViT's 12x12 token grid.
    The weights are read from the ONNX file in node order; its graph is Conv
    (+Relu), Conv, MaxPool, Conv, MaxPool, Conv, Conv, each Conv followed by a
    Relu, as ``model_zoo/train_demo.py`` builds it.
    """
    import onnx
    import torch
    import torch.nn as nn
    from onnx import numpy_helper

    from onnxcam.demo import DEMO_MODEL

    m = onnx.load(str(DEMO_MODEL))
    weights = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    layers: list = []
    for node in m.graph.node:
        if node.op_type == "Conv":
            w, b = (torch.from_numpy(weights[name].copy()) for name in node.input[1:3])
            stride = next(a.ints[0] for a in node.attribute if a.name == "strides")
            conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride, w.shape[2] // 2)
            conv.weight.data, conv.bias.data = w, b
            layers += [conv, nn.ReLU()]
        elif node.op_type == "MaxPool":
            layers.append(nn.MaxPool2d(2))
        elif node.op_type == "GlobalAveragePool":
            break
    features = nn.Sequential(*layers)
    features.requires_grad_(False)
    return features


def augment(x, g):
    """Random 90-degree rotation, horizontal flip and a shift of up to MAX_SHIFT px (one draw per batch)."""
    import torch
    import torch.nn.functional as F

    x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=g)), (2, 3))
    if bool(torch.randint(0, 2, (1,), generator=g)):
        x = torch.flip(x, (3,))
    dx, dy = (int(v) for v in torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2,), generator=g))
    x = F.pad(x, (MAX_SHIFT,) * 4, mode="replicate")
    return x[:, :, MAX_SHIFT + dy : MAX_SHIFT + dy + SIZE, MAX_SHIFT + dx : MAX_SHIFT + dx + SIZE]


def train(seed: int, n_train: int, epochs: int, batch: int, stem: str, log=print):
    """Train :func:`build_model` on the demo data; returns (model, validation accuracy, seconds)."""
    data = training_data(seed, n_train, log)
    model = build_model(stem)
    log(f"ViT ({stem} stem): {sum(p.numel() for p in model.parameters())} parameters")
    schedule = Schedule(2e-3, 0.05, 0.1, 20.0, 0.1, clip_norm=1.0)
    return fit(model, data, seed, epochs, batch, schedule, augment, log)


def export(model, path: Path) -> None:
    import onnx
    import torch

    from model_zoo.torchvision_models import INPUT_NAME, export_onnx

    export_onnx(model, path, "torchscript", torch.zeros(2, 3, SIZE, SIZE))
    m = onnx.load(str(path))
    for v in list(m.graph.input) + [n for n in m.graph.node]:  # input "input" -> "image", as the CNN demo
        if isinstance(v, onnx.NodeProto):
            v.input[:] = ["image" if i == INPUT_NAME else i for i in v.input]
        elif v.name == INPUT_NAME:
            v.name = "image"
    tag_and_save(m, path, "onnxcam model_zoo/train_demo_vit.py", "onnxcam ViT demo")


def ln1_of_last_block(path: Path) -> str:
    """Output name of the last encoder block's first LayerNorm (``encoder_layer_{DEPTH-1}/ln_1``)."""
    import onnx

    m = onnx.load(str(path))
    hits = [n.output[0] for n in m.graph.node if f"encoder_layer_{DEPTH - 1}/ln_1" in n.name]
    if not hits:
        raise SystemExit(f"no encoder_layer_{DEPTH - 1}/ln_1 node in {path}")
    return hits[-1]  # a decomposed LayerNorm ends in its last node


def evaluate_onnx(path: Path, n: int = 200, log=print) -> dict:
    """Held-out (seed 20240) accuracy and pointing game at layer auto and at the last block's ln_1."""
    import onnxcam

    images, labels, boxes = generate(n, HELD_OUT_SEED)
    x = to_tensor(images).numpy()
    c = (SIZE - 1) / 2

    def hits(py, px):
        return (px >= boxes[:, 0]) & (px < boxes[:, 2]) & (py >= boxes[:, 1]) & (py < boxes[:, 3])

    out = {"n": n, "center": float(hits(np.full(n, c), np.full(n, c)).mean())}
    for key, layer in (("auto", "auto"), ("ln_1", ln1_of_last_block(path))):
        ex = onnxcam.Explainer(str(path), layer=layer)
        res = ex.explain(x, target=labels)
        py, px = np.divmod(res.cam.reshape(n, -1).argmax(1), SIZE)
        out[key] = {
            "layer": str(ex.layer),
            "pointing": float(hits(py, px).mean()),
            "lowres": list(res.cam_lowres.shape),
        }
        if key == "auto":
            out["accuracy"] = float((next(iter(res.outputs.values())).argmax(1) == labels).mean())
        log(f"{key}: layer {ex.layer}, pointing {out[key]['pointing']:.3f}, cam_lowres {res.cam_lowres.shape}")
    log(f"accuracy {out['accuracy']:.3f}, center baseline {out['center']:.3f}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train and export a small demo ViT (see the module docstring).")
    ap.add_argument("--out", type=Path, default=Path("/tmp/vit_demo"), help="output folder (default /tmp/vit_demo)")
    ap.add_argument("--seed", type=int, default=TRAIN_SEED, help="training seed: data pool and weights (default 1)")
    ap.add_argument("--n-train", type=int, default=8000, help="training pool size (default 8000)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs over the pool (default 5)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    ap.add_argument(
        "--stem",
        choices=("conv", "patch", "demo-cnn"),
        default="conv",
        help="patch embedding (default conv; demo-cnn: the bundled demo CNN's frozen features, a hybrid ViT)",
    )
    ap.add_argument("--evaluate", action="store_true", help="only evaluate OUT/model.onnx on the held-out set")
    args = ap.parse_args(argv)
    if args.seed in (VAL_SEED, SAMPLE_SEED, HELD_OUT_SEED):
        ap.error(f"seed {args.seed} is reserved for validation / samples / evaluation")
    path = args.out / "model.onnx"
    if args.evaluate:
        print(json.dumps(evaluate_onnx(path), indent=1))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    model, acc, secs = train(args.seed, args.n_train, args.epochs, args.batch, args.stem)
    export(model, path)
    size = path.stat().st_size
    print(f"done: {secs:.0f} s, val acc {acc:.4f}, model.onnx {size / 1024:.0f} KiB -> {args.out}")


if __name__ == "__main__":
    main()

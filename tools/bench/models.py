"""The benchmarked models: torchvision classifiers with seeded random weights, exported once to ONNX and cached.

``MODELS`` holds every model ``--models`` can name, ``DEFAULT_MODELS`` the ones a plain run measures: the
vision transformer vit_b_16 takes minutes per batch size under pytorch-grad-cam, so it is run on its own
(``--models vit_b_16 --section vit``).

Also the three things a measurement runs on a model: a plain onnxruntime session, an onnxcam Explainer with
the same thread count, and the torch model that pytorch-grad-cam explains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import time
from pathlib import Path

H = W = 224
SEED = 0
OPSET = 17
PROVIDERS = ["CPUExecutionProvider"]


@dataclasses.dataclass(frozen=True)
class BenchModel:
    """A torchvision classifier: the layer pytorch-grad-cam explains, and what a transformer needs besides."""

    layer: str  # torch module path (negative indices count from the end of a Sequential)
    tokens: tuple[int, int, int] | None = None  # (prefix tokens, grid h, grid w) of a token layer's output
    random_head: str | None = None  # a module torchvision zero-initialises: re-initialised, or no gradient at all


MODELS = {
    "resnet50": BenchModel("layer4.-1"),
    "mobilenet_v3_large": BenchModel("features.-1"),
    # The input of the last encoder block (the output of the one before it), which onnxcam's layer "auto" picks
    # for a class-token ViT: the last block's own output reaches the score only through the class token.
    "vit_b_16": BenchModel("encoder.layers.-2", tokens=(1, 14, 14), random_head="heads.head"),
}
DEFAULT_MODELS = ["resnet50", "mobilenet_v3_large"]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_input(batch: int):
    import numpy as np

    return np.random.default_rng(SEED).standard_normal((batch, 3, H, W), dtype=np.float32)


def onnx_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / f"{name}_opset{OPSET}.onnx"


def ort_session(path, threads: int, profile_prefix: str | None = None):
    """Plain inference: CPU, ``intra_op_num_threads=threads``, everything else onnxruntime's defaults."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=PROVIDERS)


def explainer(path: Path, threads: int, layer: str = "auto", **kwargs):
    import onnxcam

    return onnxcam.Explainer(str(path), layer=layer, providers=PROVIDERS, threads=threads, **kwargs)


def no_mark(phase: str, reset: bool = False) -> None:
    pass


def one_side(mode: str, name: str, path: Path, x, threads: int, layer: str = "auto", mark=no_mark):
    """(call, what it calls) for one side, set up: "infer" (a session), "explain" (an Explainer), "gradcam".

    ``layer`` is onnxcam's (pytorch-grad-cam explains ``MODELS[name]``); ``mark(phase, reset)`` is called after
    each setup step (the memory child's phases).
    """
    if mode == "infer":
        sess = ort_session(path, threads)
        mark("session_created", reset=True)
        feed = {sess.get_inputs()[0].name: x}
        return (lambda: sess.run(None, feed)[0]), sess
    if mode == "explain":
        ex = explainer(path, threads, layer)
        mark("explainer_constructed")
        ex.providers_in_use  # noqa: B018  (creates the session)
        mark("session_created", reset=True)
        return (lambda: ex.explain(x)), ex
    if mode == "gradcam":
        import torch
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        torch.set_num_threads(threads)
        model, xt = torch_model(name), torch.from_numpy(x.copy())
        with torch.no_grad():  # the targets are chosen outside the timed call
            targets = [ClassifierOutputTarget(c) for c in model(xt).argmax(-1).tolist()]
        cam = GradCAM(
            model=model, target_layers=[torch_layer(model, name)[1]], reshape_transform=reshape_transform(name)
        )
        return (lambda: cam(input_tensor=xt, targets=targets)), cam
    raise SystemExit(f"unknown mode {mode!r}")


def torch_model(name: str):
    import torch
    import torchvision

    torch.manual_seed(SEED)
    model = getattr(torchvision.models, name)(weights=None)
    if MODELS[name].random_head:
        model.get_submodule(MODELS[name].random_head).reset_parameters()  # seeded like the rest
    return model.eval()


def tokens_to_map(tensor, prefix: int, height: int, width: int):
    """pytorch-grad-cam's ViT tutorial ``reshape_transform``: drop the prefix tokens, patch tokens to (N, C, h, w)."""
    result = tensor[:, prefix:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def reshape_transform(name: str):
    """pytorch-grad-cam's ``reshape_transform`` for the model's layer: None for a feature map."""
    if MODELS[name].tokens is None:
        return None
    prefix, height, width = MODELS[name].tokens
    return functools.partial(tokens_to_map, prefix=prefix, height=height, width=width)


def torch_layer(model, name: str):
    """(qualified name, module) of the layer pytorch-grad-cam explains."""
    module = model
    for part in MODELS[name].layer.split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    return next(qn for qn, m in model.named_modules() if m is module), module


def export_rel_diff(model, path: Path, threads: int) -> float:
    """Largest |torch - onnxruntime| logit difference, relative to the largest |logit|."""
    import numpy as np
    import torch

    x = make_input(2)
    sess = ort_session(path, threads)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return float(np.max(np.abs(got - ref)) / max(1e-12, float(np.max(np.abs(ref)))))


@contextlib.contextmanager
def no_mha_fastpath():
    """Without torch's fused attention: eval + no_grad would send vit_b_16's nn.MultiheadAttention to a kernel
    the exporter does not know."""
    import torch

    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def ensure_model(name: str, cache_dir: Path, threads: int):
    """The torch model, the path of its cached ONNX export (re-exported if it disagrees) and their difference."""
    import torch

    model, path = torch_model(name), onnx_path(cache_dir, name)
    if path.exists() and (rel := export_rel_diff(model, path, threads)) < 1e-3:
        return model, path, rel
    log(f"{name}: exporting to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    with torch.no_grad(), no_mha_fastpath():
        torch.onnx.export(
            model,
            (torch.randn(1, 3, H, W),),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    os.replace(tmp, path)
    return model, path, export_rel_diff(model, path, threads)


def expected_onnx_tensor(path: Path, module_qn: str) -> str | None:
    """The tensor the TorchScript exporter made the output of ``module_qn``.

    Nodes are named by module scope, a Sequential's numbered children by their qualified name
    (``/layer4/layer4.2/relu_2/Relu``), named ones by their own (``/encoder/layers/encoder_layer_10/Add_1``); the
    module's output is the first output of the last node in that scope.
    """
    import onnx

    parts = module_qn.split(".")
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    scope = [".".join(parts[: i + 1]) if p.isdigit() else p for i, p in enumerate(parts)]
    prefix = "/" + "/".join(scope) + "/"
    names = [n for n in nodes if n.name.startswith(prefix)]
    return names[-1].output[0] if names else None

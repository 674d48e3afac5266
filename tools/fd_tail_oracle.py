"""Check onnxcam's gradient on any ONNX model against finite differences on the model's tail.

For a model with no torch source (Keras, TFLite, Paddle, Caffe exports) the
only independent oracle is the model itself: cut it at the explained layer,
perturb the layer's activation, and re-run the tail up to the score. This
tool compares those central differences with the gradient onnxcam's
explainer graph computes in onnxruntime::

    python tools/fd_tail_oracle.py model.onnx                       # auto layer, random photo, its top-1
    python tools/fd_tail_oracle.py model.onnx --layer NAME --image cat.jpg --target 281 --json

Two kinds of check, both batched (many perturbations per tail run):

* ``--directions D`` random unit directions ``v``: ``(f(a+hv) - f(a-hv)) / 2h``
  against ``<g, v>`` (error relative to the derivative);
* ``--elements E`` single activation elements: the finite-difference
  derivative against ``g_i``, as a fraction of ``max |g|``.

ReLU zeros and tied max-pool maxima make the tail non-differentiable at
many real activations. Where the forward and backward differences disagree
(a kink), onnxcam's value only has to lie between them, as any valid
subgradient does; the report counts those directions.

The tail runs in float64 in onnx's reference evaluator (differences good to
~1e-8, independent of onnxruntime and of onnxcam's rules); onnxcam's gradient
is float32, so agreement to ~1e-6 is what a correct gradient shows. The exit
code is 1 when an error exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from onnxcam.errors import OnnxcamError  # noqa: E402
from tests.gradcheck import (  # noqa: E402
    coordinate_directions,
    judge,
    one_sided_derivatives,
    onnxcam_gradient,
    random_directions,
    sample_input,
    subgradient_errors,
    tail_model,
)

DEFAULT_TOLERANCE = 1e-4  # float32 gradient against float64 differences: rounding is ~1e-6


def check(
    model: str,
    layer: str = "auto",
    image: str | None = None,
    target: int | None = None,
    directions: int = 16,
    elements: int = 32,
    seed: int = 0,
) -> dict:
    """Every figure the tool reports, as a dict (see the module docstring)."""
    x = sample_input(model, image, seed)
    sample = onnxcam_gradient(model, x, layer=layer, target=target)
    tail = tail_model(sample.model, sample.layer, sample.score)
    g = sample.gradient.astype(np.float64)
    rng = np.random.default_rng(seed)
    report = {
        "model": str(model),
        "layer": sample.layer,
        "score": sample.score,
        "target": int(sample.targets[0]),
        "activation_shape": list(sample.activation.shape),
        "gradient_norm": float(np.linalg.norm(g)),
        "gradient_max": float(np.abs(g).max()),
    }
    checks = []
    if directions > 0:
        checks.append(("directions", random_directions(g.shape, directions, rng), None))
    if elements > 0:
        checks.append(("elements", *coordinate_directions(g.shape, elements, rng)))
    for kind, v, flat in checks:
        forward, backward = one_sided_derivatives(
            tail, sample.layer, sample.activation, sample.seed, v, model_inputs=sample.model_inputs
        )
        analytic = (v * g[None]).reshape(len(v), -1).sum(axis=1)
        if kind == "directions":  # relative to the derivative itself, floored at 1e-3 |g|
            scale = np.maximum(np.abs(forward + backward) / 2, 1e-3 * report["gradient_norm"])
        else:  # relative to the largest gradient element
            scale = np.full(len(v), report["gradient_max"])
        errors, kinks = subgradient_errors(analytic, forward, backward, scale)
        report[kind] = {
            "count": len(v),
            "max_error": float(errors.max()),
            "median_error": float(np.median(errors)),
            "at_kinks": int(kinks.sum()),
        }
        if flat is not None:
            report[kind]["nonzero_gradient"] = int(np.count_nonzero(g.reshape(-1)[flat]))
    report["max_error"] = max([report[kind]["max_error"] for kind, *_ in checks] or [0.0])
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--layer", default="auto", help="tensor or node name (default: auto)")
    p.add_argument("--image", help="an image file, preprocessed as `onnxcam explain` would (default: random pixels)")
    p.add_argument("--target", type=int, help="class to differentiate (default: the top-1)")
    p.add_argument("--directions", type=int, default=16, help="random directions (default 16)")
    p.add_argument("--elements", type=int, default=32, help="single activation elements (default 32)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest error that passes (default {DEFAULT_TOLERANCE:g})",
    )
    p.add_argument("--seed", type=int, default=0, help="random image and directions")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    try:
        report = check(args.model, args.layer, args.image, args.target, args.directions, args.elements, args.seed)
    except OnnxcamError as e:
        print(f"fd_tail_oracle: error: {e}", file=sys.stderr)
        return 1
    details = []
    for kind, what in (("directions", "random directions"), ("elements", "single elements")):
        if kind in report:
            r = report[kind]
            extra = f", {r['nonzero_gradient']} with a nonzero gradient" if "nonzero_gradient" in r else ""
            details.append(
                f"  {r['count']} {what} ({r['at_kinks']} across a kink{extra}): "
                f"max error {r['max_error']:.2e}, median {r['median_error']:.2e}"
            )
    text, code = judge(report, report["max_error"], args.tolerance, details, args.json)
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""A small Flax (nnx) CNN with random weights, converted to ONNX by jax2onnx (NHWC input).

Run by ``model_zoo.build`` in a subprocess so JAX is imported only there::

    python -m model_zoo.jax_convert OUT.onnx [--opset 21]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def flax_cnn():
    """Conv 16 (stride 2) - GELU - Conv 32 - LayerNorm - ReLU - avg pool - Conv 64 - ReLU - mean - Dense 10."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.c1 = nnx.Conv(3, 16, (3, 3), strides=(2, 2), rngs=rngs)
            self.c2 = nnx.Conv(16, 32, (3, 3), rngs=rngs)
            self.norm = nnx.LayerNorm(32, rngs=rngs)
            self.c3 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
            self.head = nnx.Linear(64, 10, rngs=rngs)

        def __call__(self, x):
            x = jax.nn.gelu(self.c1(x), approximate=False)
            x = jax.nn.relu(self.norm(self.c2(x)))
            x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
            x = jax.nn.relu(self.c3(x))
            return self.head(jnp.mean(x, axis=(1, 2)))

    return Net(nnx.Rngs(0))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--opset", type=int, default=21)
    args = ap.parse_args(argv)
    from jax2onnx import to_onnx  # noqa: PLC0415

    import onnx  # noqa: PLC0415

    model = to_onnx(
        flax_cnn(),
        [("B", 64, 64, 3)],
        opset=args.opset,
        input_names=["input"],
        output_names=["logits"],
        model_name="flax_cnn",
    )
    onnx.save(model, str(args.out))


if __name__ == "__main__":
    main()

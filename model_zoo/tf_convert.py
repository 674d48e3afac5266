"""Keras and TFLite models of the zoo, converted to ONNX with tf2onnx (NHWC inputs).

Run by ``model_zoo.build`` in a subprocess, one job per call, so TensorFlow
is imported only there: it is slow to import, holds its own thread pools,
and a crash in a converter must not take the other builds down::

    python -m model_zoo.tf_convert JOB OUT.onnx [--src FILE] [--opset N]

Jobs:

* ``keras_mobilenetv2``: ``keras.applications.MobileNetV2`` (alpha 0.35, 96x96,
  10 classes, random seeded weights, BatchNorm statistics set from a batch of
  demo images and random affine parameters), opset 13;
* ``keras_shapes``: a small Keras CNN trained for a few epochs on the demo
  shapes (``model_zoo.demo_data``), raw 0..255 input rescaled inside the graph,
  Softmax head; also saved as ``OUT.keras`` for the TFLite job, with its
  validation accuracy in ``OUT.train.json``. The run is kept short for CI
  (4 epochs on 1200 images, ~30 s) and stays near chance: what the zoo needs
  is a graph as Keras training leaves it (learned BatchNorm statistics,
  Dropout, Softmax), not accuracy; runs 4x longer did not learn either,
  while the torch demo model needed ~1500 steps to reach 99 %;
* ``tflite_shapes``: ``--src`` (a ``.keras`` file) through ``TFLiteConverter``
  then ``python -m tf2onnx.convert --tflite``;
* ``keras_h5``: a Keras HDF5 model file (``--src``), e.g. fer's emotion CNN.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHAPES_TRAIN = 1200  # images of model_zoo.demo_data, seed 11 (the torch demo model trains on seed 1)
SHAPES_EPOCHS = 4
SHAPES_SEED = 11
CALIBRATION_SEED = 12  # demo images that set MobileNetV2's BatchNorm statistics


def _keras():
    import keras  # noqa: PLC0415 - TensorFlow is imported in this subprocess only
    import tensorflow as tf  # noqa: PLC0415

    try:  # settable only before TensorFlow's first op
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    return keras, tf


def _to_onnx(model, out: Path, opset: int) -> None:
    """tf2onnx's Keras path with a dynamic batch axis and the input named ``input``."""
    import tf2onnx  # noqa: PLC0415

    _, tf = _keras()
    shape = (None, *model.input_shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    import onnx  # noqa: PLC0415

    onnx.save(proto, str(out))


def _calibrate_batchnorm(model, images, seed: int) -> None:
    """Moving statistics from one batch of ``images``, then gamma ~ U(0.5, 1.5) and beta ~ N(0, 0.1).

    A freshly initialised network's BatchNorm (moving mean 0, variance 1)
    does not normalise: MobileNetV2's activations shrink by ~10x per stage
    and its output no longer depends on the input. One forward pass in
    training mode with momentum 0 sets the moving statistics to the batch's,
    as a trained model's would be; random affine parameters keep inference
    BatchNorm from being a mere standardisation.
    """
    import numpy as np  # noqa: PLC0415

    keras, _ = _keras()
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)
    rng = np.random.default_rng(seed)
    for layer in norms:
        c = layer.moving_mean.shape[0]
        layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
        layer.beta.assign(rng.normal(0, 0.1, c).astype("float32"))


def keras_mobilenetv2(out: Path, opset: int) -> None:
    keras, _ = _keras()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from model_zoo.demo_data import generate  # noqa: PLC0415

    _calibrate_batchnorm(model, generate(32, CALIBRATION_SEED)[0].astype("float32") / 127.5 - 1, 1)
    _to_onnx(model, out, opset)


def shapes_cnn(num_classes: int):
    """Conv-BN-ReLU x4 (16, 32, 64, 96 channels, stride 2 then two max-pools), GAP, Dropout, Dense, Softmax."""
    keras, _ = _keras()
    L = keras.layers
    inp = keras.Input((96, 96, 3), name="input")
    x = L.Rescaling(1 / 255)(inp)
    for i, ch in enumerate((16, 32, 64, 96)):
        x = L.Conv2D(ch, 3, strides=2 if i == 0 else 1, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        if i in (1, 2):
            x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    return keras.Model(inp, L.Dense(num_classes, activation="softmax")(x), name="shapes_cnn")


def keras_shapes(out: Path, opset: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from model_zoo.demo_data import CLASSES, generate  # noqa: PLC0415

    keras, _ = _keras()
    keras.utils.set_random_seed(SHAPES_SEED)
    images, labels, _ = generate(SHAPES_TRAIN, SHAPES_SEED)
    model = shapes_cnn(len(CLASSES))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(
        images.astype("float32"), labels, batch_size=32, epochs=SHAPES_EPOCHS, verbose=2, validation_split=0.1
    )
    model.save(str(out.with_suffix(".keras")))
    accuracy = history.history["val_accuracy"][-1]
    out.with_suffix(".train.json").write_text(json.dumps({"val_accuracy": round(float(accuracy), 3)}))
    _to_onnx(model, out, opset)


def tflite_shapes(out: Path, opset: int, src: Path) -> None:
    keras, tf = _keras()
    model = keras.models.load_model(str(src))
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(tflite)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tf2onnx.convert",
                "--tflite",
                str(path),
                "--output",
                str(out),
                "--opset",
                str(opset),
            ],
            check=True,
            capture_output=True,
            text=True,
        )


def keras_h5(out: Path, opset: int, src: Path) -> None:
    keras, _ = _keras()
    _to_onnx(keras.models.load_model(str(src), compile=False), out, opset)


JOBS = {
    "keras_mobilenetv2": keras_mobilenetv2,
    "keras_shapes": keras_shapes,
    "tflite_shapes": tflite_shapes,
    "keras_h5": keras_h5,
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", choices=sorted(JOBS))
    ap.add_argument("out", type=Path)
    ap.add_argument("--src", type=Path)
    ap.add_argument("--opset", type=int, default=13)
    args = ap.parse_args(argv)
    extra = (args.src,) if args.job in ("tflite_shapes", "keras_h5") else ()
    JOBS[args.job](args.out, args.opset, *extra)


if __name__ == "__main__":
    main()

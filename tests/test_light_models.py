"""The Caffe2-era ``light_*`` graphs shipped in the onnx wheel: opset 9, IR 3, LRN, Concat, 4-D outputs.

Each must be explainable with ``layer="auto"`` (which must pick the last feature map), and its gradient must match
finite differences on the float64 tail from the chosen layer to the score.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxcam
from onnxcam.graph.layers import input_spatial_axes
from tests.oracles import run_with_intermediates, tail_gradient_check

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = sorted(glob.glob(os.path.join(LIGHT_DIR, "light_*.onnx")))


def test_light_models_are_shipped():
    assert len(LIGHT_MODELS) >= 9, f"expected the onnx wheel's light models in {LIGHT_DIR}"


def jitter_generated_weights(model: onnx.ModelProto, seed: int = 0, fan_in_scaled: bool = False) -> onnx.ModelProto:
    """Replace the ConstantOfShape-generated weights (one value per tensor) with jittered initializers.

    The shipped graphs fill every weight with a single constant, which makes
    max-pool windows tie and finite differences meaningless. Multiplying each
    element by U(0.5, 1.5) keeps signs (BatchNorm variances stay positive)
    and breaks the ties.

    With ``fan_in_scaled``, each generated weight tensor of rank >= 2 (a Conv or Gemm weight, not a bias) first has
    its constant replaced by ``sign(constant) / fan_in`` (fan_in = the product of its dimensions after the first),
    so that a layer of same-sign weights averages its inputs instead of summing them: the activations stay O(1)
    through any depth, and the signs (hence which units the ReLUs keep) are unchanged.
    """
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: t for t in m.graph.initializer}
    keep = []
    for node in m.graph.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            shape = numpy_helper.to_array(inits[node.input[0]]).astype(int)
            value = numpy_helper.to_array(node.attribute[0].t).reshape(-1)[0]
            if fan_in_scaled and len(shape) >= 2:
                value = np.sign(value) / np.prod(shape[1:])
            arr = (value * rng.uniform(0.5, 1.5, size=shape)).astype(np.float32)
            m.graph.initializer.append(numpy_helper.from_array(arr, node.output[0]))
        else:
            keep.append(node)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.ir_version = 4  # IR 3 would require every initializer to be listed as a graph input too
    return m


#: The layer ``layer="auto"`` must pick in each model: its last spatial feature map (channels, height, width).
AUTO_LAYERS = {
    "bvlc_alexnet": ("r14", 256, 6),
    "densenet121": ("r907", 1024, 7),
    "inception_v1": ("r137", 1024, 6),
    "inception_v2": ("r504", 1024, 7),
    "resnet50": ("r171", 2048, 7),
    "shufflenet": ("r198", 544, 7),
    "squeezenet": ("r64", 1000, 13),
    "vgg19": ("r36", 512, 7),
    "zfnet512": ("r14", 512, 6),
}


#: Models whose generated weights are jittered with ``fan_in_scaled=True``. squeezenet explains its Softmax output
#: (the probability), and its shipped weights (all 0.02, with no BatchNorm to renormalise) grow the activations by
#: about fan_in * 0.02 per layer, to ~1e10 at the logits: the Softmax is then exactly one-hot and the gradient and the
#: map are exactly zero, which tests nothing. Scaled by fan-in, its activations stay O(1) (max ~8), the probabilities
#: are ~1e-3 and unsaturated, and the gradient (max ~6e-6) and the map are real. The other models keep the plain
#: jitter: their rows already test real gradients, and rescaling them would change what they test.
FAN_IN_SCALED = {"squeezenet"}


def _short_name(path: str) -> str:
    return os.path.basename(path)[6:-5]


@pytest.mark.parametrize("path", LIGHT_MODELS, ids=_short_name)
def test_auto_picks_the_last_spatial_feature_map(path):
    """A wrong layer choice (too shallow, a 1x1 map, the classifier) fails here, by name and by shape."""
    ex = onnxcam.Explainer(path)
    name, channels, size = AUTO_LAYERS[_short_name(path)]
    layer = next(c for c in ex.candidates if c.name == ex.layer)
    assert (ex.layer, layer.channels, layer.spatial_size) == (name, channels, (size, size))
    assert layer is ex.candidates[-1] and ex.layer_reason.startswith(f"auto: {name!r}")


@pytest.mark.parametrize("path", LIGHT_MODELS, ids=_short_name)
def test_light_model_explains_and_matches_finite_differences(path):
    shipped = onnxcam.Explainer(path)
    assert shipped.layer == AUTO_LAYERS[_short_name(path)][0]
    jittered = jitter_generated_weights(onnx.load(path), fan_in_scaled=_short_name(path) in FAN_IN_SCALED)
    ex = onnxcam.Explainer(jittered, layer=shipped.layer)
    index = ex.index
    image = index.inputs[0]
    shape = index.shape(image)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    res = ex.explain(x)

    H, W = (shape[a] for a in input_spatial_axes(index, image))
    assert res.cam.shape == (1, H, W) and res.cam.dtype == np.float32
    assert np.isfinite(res.cam).all() and res.cam.min() >= 0
    assert res.cam.max() == pytest.approx(1.0, abs=1e-3)
    layer = next(c for c in ex.candidates if c.name == ex.layer)
    h, w = layer.spatial_size
    assert res.cam_lowres.shape == (1, h, w) and min(h, w) > 1
    output = res.outputs[index.outputs[0]]
    assert res.targets[0] == int(np.argmax(output.reshape(1, -1)[0]))

    score = ex.score_spec.tensor
    full = ex.index.weights.materialize(index.model)
    vals = run_with_intermediates(full, {image: x}, [ex.layer, score])
    seed = np.zeros_like(vals[score])
    seed.reshape(1, -1)[0, res.targets[0]] = 1.0
    check = tail_gradient_check(full, ex.layer, score, vals[ex.layer], seed)  # asserts the gradient matches FD
    assert check["rel_error"] < 1e-5
    assert np.abs(check["gradient"]).max() > 0

    # The CAM the explainer returns is the Grad-CAM formula applied to that float64 gradient.
    A, G = vals[ex.layer].astype(np.float64), check["gradient"]
    sp = layer.spatial_axes
    alpha = G.mean(axis=sp, keepdims=True)
    cam = np.maximum((alpha * A).sum(axis=layer.channel_axis), 0)
    # A map that is zero everywhere would match any gradient whose weighted sum is negative: demand a real one.
    assert (cam > 0).sum() >= 2, "the reference map is (nearly) all zero: this model would not test the gradient"
    err = np.linalg.norm(res.cam_lowres - cam) / np.linalg.norm(cam)
    assert err < 1e-4, f"cam_lowres differs from the float64 reference by {err:.2e}"
    hottest = np.argmax(res.cam_lowres)  # the hottest cell is the reference's (or ties with it in float32)
    assert cam.reshape(-1)[hottest] >= cam.max() * (1 - 1e-4)

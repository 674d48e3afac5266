"""Smoothing options that apply to any method: test-time augmentation and eigen-smoothing.

* ``aug_smooth``: explain a few flipped and shifted copies of the input,
  transform each map back onto the original image, and average. Noise tied
  to the pixel grid (stride aliasing, one hot channel) moves with the copy and
  averages out; evidence on the object stays put. pytorch-grad-cam's version
  flips and scales the intensities (ttach ``HorizontalFlip`` x ``Multiply``);
  this one flips and shifts, which also moves the map against the stride grid.
* ``eigen_smooth``: replace the sum over channels of the per-channel
  contributions ``M_k`` by their first principal component per image
  (pytorch-grad-cam's ``eigen_smooth``), which keeps the dominant spatial
  pattern and drops the rest. An SVD leaves the component's sign arbitrary:
  pytorch-grad-cam keeps whatever LAPACK returns, which inverts the map on
  about half of the images (on the demo set: 3 of 6, correlation -0.7 to -0.9
  with Grad-CAM). Here the component is oriented to agree with the sum it
  smooths.

Both finish on the host, so an exported explainer file carries the unsmoothed method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxcam.graph.builder import GraphBuilder
from onnxcam.graph.layers import CandidateLayer
from onnxcam.graph.prepare import emitted_ir_version
from onnxcam.methods.eigen import first_component
from onnxcam.methods.in_graph import contributions as method_contributions

#: Shift of the augmented copies, as a fraction of the input's shorter side (7 px at 224).
SHIFT_FRACTION = 1 / 32


@dataclass(frozen=True)
class Augmentation:
    """Flip horizontally (or not), then shift the content by ``(dy, dx)`` pixels, replicating the edges."""

    flip: bool
    shift: tuple[int, int]

    def apply(self, x: np.ndarray, spatial_axes: tuple[int, int]) -> np.ndarray:
        """The augmented copy of a batch whose height and width are ``spatial_axes``."""
        if self.flip:
            x = np.flip(x, axis=spatial_axes[1])
        return _shift(x, self.shift, spatial_axes)

    def invert(self, maps: np.ndarray) -> np.ndarray:
        """(N, H, W) maps of the augmented copy -> maps on the original image's pixels."""
        maps = _shift(maps, (-self.shift[0], -self.shift[1]), (1, 2))
        return np.flip(maps, axis=2) if self.flip else maps


def augmentations(size: tuple[int, int]) -> list[Augmentation]:
    """Both flip states times the shifts (0, 0), (d, d) and (-d, -d), identity first (6 passes, as many
    as pytorch-grad-cam's default).

    Every shift comes with and without the flip, so the set is closed under
    flipping the input: the smoothed map of a mirrored image is the mirrored
    smoothed map.
    """
    d = max(1, round(min(size) * SHIFT_FRACTION))
    return [Augmentation(flip, shift) for flip in (False, True) for shift in ((0, 0), (d, d), (-d, -d))]


def _shift(x: np.ndarray, shift: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    """Move the content by ``shift`` along ``axes``; the uncovered border repeats the edge."""
    for offset, axis in zip(shift, axes):
        if offset:
            x = np.take(x, np.clip(np.arange(x.shape[axis]) - offset, 0, x.shape[axis] - 1), axis=axis)
    return np.ascontiguousarray(x)


def eigen_smooth(contributions: np.ndarray) -> np.ndarray:
    """(N, C, h, w) contributions -> (N, h, w): their first principal component, signed like their sum.

    The projection is centred over positions, so its inner product with the
    channel sum is its covariance with the unsmoothed map; a negative one
    flips it. (A zero one, an all-constant map, keeps LAPACK's sign.)
    """
    component = first_component(contributions)
    agreement = np.einsum("nhw,nhw->n", component.astype(np.float64), contributions.sum(axis=1, dtype=np.float64))
    return np.where((agreement < 0)[:, None, None], -component, component)


def contributions_model(method: str, layer: CandidateLayer, opset: int) -> onnx.ModelProto:
    """A small model ``(A, G) -> M``: the per-channel contributions of an in-graph ``method``.

    Eigen-smoothing needs ``M_k`` itself, not its sum; running the method's own
    ONNX nodes on the exposed activations and gradients gives exactly the
    contributions the explainer graph sums, with no second copy of the formulas.
    """
    b = GraphBuilder(opset, taken_names={"A", "G", "M"})
    shape = ["N", *(d if isinstance(d, int) and d > 0 else None for d in layer.map_shape[1:])]
    b.op("Identity", method_contributions(b, method, "A", "G", layer.spatial_axes), outputs=["M"])
    graph = helper.make_graph(
        b.nodes,
        f"onnxcam_{method}_contributions",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("A", "G")],
        [helper.make_tensor_value_info("M", TensorProto.FLOAT, shape)],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = emitted_ir_version(opset, 8)
    onnx.checker.check_model(model)
    return model

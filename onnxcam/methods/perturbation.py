"""Score-CAM and Ablation-CAM: channel weights measured by forward passes instead of gradients.

Both weight the layer's activation maps ``A_k`` by how the target score
reacts when the input or the layer is perturbed one channel at a time, so an
image costs one forward pass per channel. The passes go through the model's
own ONNX Runtime session in batches; the maths here are numpy on the host,
and the :class:`~onnxcam.methods.spec.MethodRun` hands in the functions that
score a batch of perturbed copies.
The definitions, epsilons and ablation values are pytorch-grad-cam's
(``score_cam.py``, ``ablation_cam.py``, ``ablation_layer.py``), against which
``tests/test_perturbation_methods.py`` checks them. An exported explainer
file cannot carry them (they loop over channels), so it carries Grad-CAM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from onnxcam.methods.spec import MethodRun, ProgressFn

#: Copies per session run when the caller does not say (pytorch-grad-cam's Ablation-CAM default).
DEFAULT_BATCH = 32

#: pytorch-grad-cam's ablation offset below the layer's minimum, for layers that can be negative.
ABLATION_OFFSET = 1e7

#: (image row, the scored tensor of a batch of that row's perturbed copies) -> the target score of each copy, (B,).
BatchScorer = Callable[[int, np.ndarray], np.ndarray]


def upsample_align_corners(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., h, w) -> (..., H, W) bilinear with corners aligned: torch's ``UpsamplingBilinear2d``.

    Score-CAM's masks use this sampling in pytorch-grad-cam (not the
    half-pixel one of the CAM head), so the masked inputs are the same.
    """
    out = np.asarray(maps, dtype=np.float64)
    for axis, n_out in ((-2, size[0]), (-1, size[1])):
        n_in = out.shape[axis]
        src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        w = (src - lo).reshape((-1, 1) if axis == -2 else (-1,))
        out = np.take(out, lo, axis=axis) * (1 - w) + np.take(out, hi, axis=axis) * w
    return out


def score_cam_masks(activations: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) -> (C, H, W): each channel upsampled to the input and min-max scaled to [0, 1].

    ``(up - min) / (max - min + 1e-8)`` per channel (Wang et al., Score-CAM,
    CVPRW 2020, eq. 4's normalisation ``s(.)``; the epsilon is pytorch-grad-cam's).
    """
    up = upsample_align_corners(activations, size)
    flat = up.reshape(up.shape[0], -1)
    lo = flat.min(axis=1)[:, None, None]
    hi = flat.max(axis=1)[:, None, None]
    masks: np.ndarray = (up - lo) / (hi - lo + 1e-8)
    return masks


def score_cam_weights(
    activations: np.ndarray,
    input_size: tuple[int, int],
    scorer: BatchScorer,
    batch_size: int = DEFAULT_BATCH,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """(N, C, h, w) activations -> (N, C) Score-CAM weights.

    For image ``i`` and channel ``k``, ``scorer(i, masks)`` scores the input
    multiplied by the mask ``s(Up(A_k))``; the weights are the softmax of those
    scores over the channels (eq. 5-6; the paper's "channel-wise increase of
    confidence" with the baseline score dropped, which the softmax ignores).
    """
    scores = np.empty(activations.shape[:2], np.float32)
    for i, channels in _channel_batches(activations.shape[:2], batch_size, progress):
        scores[i, channels] = scorer(i, score_cam_masks(activations[i, channels], input_size))
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights: np.ndarray = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    return weights


def ablation_value(activation: np.ndarray) -> float:
    """What an ablated channel is set to: 0 where the layer's minimum is 0 (after a ReLU), else
    that minimum minus 1e7 (pytorch-grad-cam's ``AblationLayer``, which deviates from the paper's zeros
    so that ablating a channel of a layer with negative values really removes it)."""
    low = float(activation.min())
    return 0.0 if low == 0 else low - ABLATION_OFFSET


def ablation_cam_weights(
    activations: np.ndarray,
    original_scores: np.ndarray,
    scorer: BatchScorer,
    batch_size: int = DEFAULT_BATCH,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """(N, C, h, w) activations and (N,) unablated scores -> (N, C) Ablation-CAM weights.

    ``w_k = (y - y_k) / y`` with ``y_k`` the score when channel ``k`` of the
    layer is set to :func:`ablation_value` (Desai & Ramaswamy, WACV 2020,
    eq. 3); ``scorer(i, batch)`` runs the tail of the model on ablated copies
    of image ``i``'s activations. The ablation value is computed per image, which is
    pytorch-grad-cam's result with ``batch_size=1``: with larger batches its in-place minimum moves the value of
    the ``j``-th copy in a batch to ``min - j * 1e7``, so its result depends on the batch size.
    """
    ablated = np.empty(activations.shape[:2], np.float32)
    values = [ablation_value(a) for a in activations]
    for i, channels in _channel_batches(activations.shape[:2], batch_size, progress):
        batch = np.repeat(activations[i : i + 1], len(channels), axis=0)
        batch[np.arange(len(channels)), channels] = values[i]
        ablated[i, channels] = scorer(i, batch)
    original = np.asarray(original_scores, np.float32)[:, None]
    weights: np.ndarray = (original - ablated) / original
    return weights


def _channel_batches(
    shape: tuple[int, int], batch_size: int, progress: ProgressFn | None
) -> Iterator[tuple[int, np.ndarray]]:
    """(image, channel indices) for each session run over ``shape = (N, C)``, reporting the passes done."""
    n, c = shape
    if progress is not None:
        progress(0, n * c)
    for i in range(n):
        for start in range(0, c, batch_size):
            channels = np.arange(start, min(start + batch_size, c))
            yield i, channels
            if progress is not None:
                progress(i * c + channels[-1] + 1, n * c)


def weighted_activations(weights: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """(N, C) weights, (N, C, h, w) activations -> the per-channel contributions ``w_k A_k``."""
    contributions: np.ndarray = weights[:, :, None, None] * activations
    return contributions


def score_cam(run: MethodRun) -> np.ndarray:
    """Score-CAM's contributions: the input masked by each upsampled channel, scored by the whole model."""
    A = run.activations
    weights = score_cam_weights(A, run.input_size, run.score_masked_inputs, run.batch_size, run.progress)
    return weighted_activations(weights, A)


def ablation_cam(run: MethodRun) -> np.ndarray:
    """Ablation-CAM's contributions: the layer with one channel ablated, scored by the layer-to-score tail."""
    A = run.activations
    original = run.score_layer(np.arange(len(A)), A)
    weights = ablation_cam_weights(
        A, original, lambda row, acts: run.score_layer(np.full(len(acts), row), acts), run.batch_size, run.progress
    )
    return weighted_activations(weights, A)

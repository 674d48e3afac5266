"""What to explain: a class id, one element of any output, a region, a similarity, or several classes.

Every target becomes a seed array over the scored tensor (see
``onnxcam.explain.build``): a :class:`SeedTarget` makes that seed itself
(``score = sum(scored tensor * seed)``); :class:`TopK` and
:class:`MultiLabelTarget` pick class ids, one row of the batch per class, and
the class-mode graph turns each into a one-hot seed. The classes here only
know how to make their seed or rows; the Explainer runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcam.errors import TargetError


class SeedTarget:
    """A target that is a seed tensor over one output: ``output`` (name or position) and ``seed(shape, dtype)``.

    ``shape`` is the scored tensor's shape with the batch size first; a dimension
    the graph leaves dynamic is None, to be taken from the target's own array.
    """

    output: str | int

    def seed(self, shape: tuple, dtype) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class OutputTarget(SeedTarget):
    """One element of an output, per image: ``output`` (name or position), ``index`` excluding the batch axis.

    Use it for a detector's box or anchor score, a regression value, or one
    pixel's class score in a segmentation map.
    """

    output: str | int
    index: tuple[int, ...]

    def seed(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """One-hot seed of ``shape`` (batch first) at ``index`` for every image."""
        index = tuple(int(i) for i in np.atleast_1d(self.index))
        dims = shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise TargetError(
                f"output {self.output!r} has a dynamic shape {tuple(shape)}; OutputTarget needs a "
                "static output shape (export the model with fixed non-batch sizes)"
            )
        if len(index) != len(dims):
            raise TargetError(
                f"OutputTarget index {index} has {len(index)} entries, but output {self.output!r} "
                f"has {len(dims)} non-batch axes (shape {tuple(shape)})"
            )
        for i, (k, d) in enumerate(zip(index, dims)):
            if not -d <= k < d:
                raise TargetError(
                    f"OutputTarget index {index} is out of range on axis {i + 1} of output {self.output!r} (size {d})"
                )
        seed = np.zeros(shape, dtype=dtype)
        at: tuple[slice | int, ...] = (slice(None), *index)  # apart: mypy reads seed[(a, *b)] as 3.11's seed[a, *b]
        seed[at] = 1
        return seed


@dataclass(frozen=True, eq=False)
class RegionTarget(SeedTarget):
    """The sum of a segmentation output's scores over a mask: why the model segmented this region.

    ``mask`` is shaped like the output without its batch axis (``(C, H, W)``:
    a weight per class and pixel), or, with ``category``, like its spatial
    axes (``(H, W)`` over axes 2.. of an ``(N, C, H, W)`` output) and applied to
    class ``category`` on axis 1. A leading batch axis gives one mask per image.
    Booleans select pixels; floats weight them.

    With ``score="logit"`` (the default) and an output that ends in a Softmax
    over the classes, the sum runs over the logits before it: the explanation
    is of the class's evidence in the region, not of its probability, which
    also falls when another class gains. ``score="probability"`` explains the
    summed probabilities instead.
    """

    output: str | int
    mask: np.ndarray
    category: int | None = None

    def seed(self, shape: tuple, dtype) -> np.ndarray:
        n, dims = shape[0], tuple(shape[1:])
        what = f"RegionTarget mask for output {self.output!r}"
        mask = _finite_array(self.mask, what)
        if self.category is None:
            spatial = dims
        else:
            if len(dims) < 2:
                raise TargetError(f"{what}: category needs an output of shape (N, classes, ...), not {tuple(shape)}")
            classes = dims[0]
            if not isinstance(classes, int) or classes < 1:
                raise TargetError(
                    f"{what}: the output's class count is dynamic; pass a mask over all classes "
                    "(shaped like the output without its batch axis) instead of category"
                )
            if not -classes <= int(self.category) < classes:
                raise TargetError(
                    f"RegionTarget category {self.category} is out of range: output {self.output!r} "
                    f"has {classes} classes on axis 1 (0..{classes - 1})"
                )
            spatial = dims[1:]
        full = _per_image(
            mask, spatial, n, what, "without its batch axis" if self.category is None else "its spatial axes (H, W)"
        )
        if not full.reshape(n, -1).any(axis=1).all():
            raise TargetError(f"{what} selects nothing for at least one image; an empty region has no score to explain")
        if self.category is None:
            return np.ascontiguousarray(full, dtype=dtype)
        seed = np.zeros((n, classes, *full.shape[1:]), dtype=dtype)
        seed[:, int(self.category)] = full
        return seed


@dataclass(frozen=True, eq=False)
class SimilarityTarget(SeedTarget):
    """The dot product of an embedding output with a reference vector: why an image resembles the reference.

    ``reference`` is shaped like the output without its batch axis (``(D,)``),
    shared by every image, or has a leading batch axis (one per image). Take it
    from the same model, e.g. ``ex.predict(x_ref).outputs[name][0]``; for an
    L2-normalised embedding the score is the cosine similarity.
    """

    output: str | int
    reference: np.ndarray

    def seed(self, shape: tuple, dtype) -> np.ndarray:
        n, dims = shape[0], tuple(shape[1:])
        what = f"SimilarityTarget reference for output {self.output!r}"
        full = _per_image(_finite_array(self.reference, what), dims, n, what, "without its batch axis")
        if not full.reshape(n, -1).any(axis=1).all():
            raise TargetError(f"{what} is all zeros for at least one image; pass a non-zero embedding")
        return np.ascontiguousarray(full, dtype=dtype)


@dataclass(frozen=True)
class TopK:
    """Each image's ``k`` highest-scoring classes, explained in one batched run.

    The result has ``N * k`` rows, image-major (row ``i * k + r`` is image
    ``i``'s rank-``r`` class; ``res.cam.reshape(N, k, H, W)``), with
    ``res.image_index`` and ``res.targets`` per row. ``output`` defaults to the
    Explainer's.
    """

    k: int
    output: str | int | None = None

    def class_rows(self, n: int, classes: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(image of each row, class feed of each row): -1 - r asks the graph for the rank-r class."""
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise TargetError(f"TopK k must be a positive int, not {self.k!r}")
        if classes is not None and self.k > classes:
            raise TargetError(f"TopK k={self.k} exceeds the {classes} classes of the output; pass k <= {classes}")
        k = int(self.k)
        return np.repeat(np.arange(n), k), np.tile(-1 - np.arange(k, dtype=np.int64), n)


@dataclass(frozen=True)
class MultiLabelTarget:
    """Every class whose sigmoid probability is at least ``threshold``, per image, in one batched run.

    For multi-label outputs: a final Sigmoid's output is the probability; an
    output with no final squashing op is taken as multi-label logits and
    passed through a sigmoid; a Softmax output is refused (its classes exclude
    each other; use :class:`TopK`). Images may get different numbers of rows,
    none included: ``res.image_index`` says which image each row explains.
    """

    threshold: float = 0.5
    output: str | int | None = None

    def class_rows(self, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image of each row, class id of each row), image-major, classes ascending."""
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating)) or not 0 <= t <= 1:
            raise TargetError(f"MultiLabelTarget threshold must be a probability in [0, 1], not {t!r}")
        images, classes = np.nonzero(probabilities.reshape(probabilities.shape[0], -1) >= t)
        return images, classes.astype(np.int64)


def _finite_array(value, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf" or not np.isfinite(arr.astype(np.float64)).all():
        raise TargetError(f"{what} must be a finite numeric or boolean array (got dtype {arr.dtype})")
    return arr


def _per_image(arr: np.ndarray, dims: tuple, n: int, what: str, like: str) -> np.ndarray:
    """``arr`` broadcast to ``(n, *dims)``: shared by the batch, or one per image with a leading batch axis."""
    per_image = arr.ndim == len(dims) + 1
    if arr.ndim not in (len(dims), len(dims) + 1):
        raise TargetError(
            f"{what} has shape {arr.shape}; expected {_fmt(dims)} (the output {like}), "
            f"or ({n}, {_fmt(dims)[1:]} with one per image"
        )
    body = arr.shape[1:] if per_image else arr.shape
    if per_image and arr.shape[0] != n:
        raise TargetError(
            f"{what} has {arr.shape[0]} entries on its batch axis for a batch of {n}; "
            "pass one per image or drop the batch axis to share it"
        )
    for have, want in zip(body, dims):
        if isinstance(want, int) and want > 0 and have != want:
            raise TargetError(
                f"{what} has shape {arr.shape}; expected {_fmt(dims)} (the output {like}), "
                "with an optional leading batch axis"
            )
    return np.broadcast_to(arr if per_image else arr[None], (n, *body))


def _fmt(dims: tuple) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else "?" for d in dims) + ")"

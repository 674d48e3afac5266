"""Explain one micro-batch in which every image may want different classes.

Two calls at most: the first explains each image's first wish (its top-1 when
it asked for its best classes, which also yields every image's scores); the
second explains every remaining (image, class) pair at once, each image
repeated once per class it still needs. A batch of requests for one class each
therefore costs one call, whatever the mix of classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcam.explainer import Explainer


@dataclass(frozen=True)
class Wish:
    """One image's request: explicit ``classes``, or (None) its ``top_k`` highest-scoring classes."""

    classes: tuple[int, ...] | None
    top_k: int = 1


@dataclass
class ImageExplanation:
    """For one image: every class's score (the explained output) and a CAM per wished class, in wish order."""

    scores: np.ndarray  # (K,)
    cams: list[tuple[int, np.ndarray]]  # (class id, (H, W) map in [0, 1] at the model input's size)


def explain_batch(
    explainer: Explainer, batch: np.ndarray, wishes: list[Wish], input_name: str | None = None
) -> list[ImageExplanation]:
    """``batch``: preprocessed images (N, ...), one :class:`Wish` each."""

    def feeds(rows):
        x = batch if rows is None else batch[rows]
        return x if input_name is None else {input_name: x}

    n = len(wishes)
    explicit = [w.classes for w in wishes if w.classes is not None]
    any_top = len(explicit) < n
    first = explainer.explain(feeds(None), target=None if any_top else [classes[0] for classes in explicit])
    scores = explainer.class_scores(first)
    wanted = [
        list(w.classes) if w.classes is not None else [int(c) for c in np.argsort(-scores[i], kind="stable")[: w.top_k]]
        for i, w in enumerate(wishes)
    ]
    cams: list[dict[int, np.ndarray]] = [{int(first.targets[i]): first.cam[i]} for i in range(n)]
    todo = list(dict.fromkeys((i, c) for i in range(n) for c in wanted[i] if c not in cams[i]))
    if todo:
        res = explainer.explain(feeds(np.array([i for i, _ in todo])), target=[c for _, c in todo])
        for j, (i, c) in enumerate(todo):
            cams[i][c] = res.cam[j]
    return [ImageExplanation(scores[i], [(c, cams[i][c]) for c in wanted[i]]) for i in range(n)]

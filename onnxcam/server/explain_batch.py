"""Explain one micro-batch in which every image may want different classes.

``Explainer.explain`` takes one class per image per call, so a batch is run in
rounds: round 0 explains each image's first wish (its top-1 when it asked for
its best classes, which also yields every image's scores), round ``r``
explains the ``r``-th wish of the images that have one, on just those images.
A batch of requests for one class each therefore costs one call, whatever the
mix of classes.
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


def explain_batch(explainer: Explainer, batch: np.ndarray, wishes: list[Wish],
                  input_name: str | None = None) -> list[ImageExplanation]:
    """``batch``: preprocessed images (N, ...), one :class:`Wish` each."""
    def feeds(rows):
        x = batch if rows is None else batch[rows]
        return x if input_name is None else {input_name: x}

    n = len(wishes)
    any_top = any(w.classes is None for w in wishes)
    first = explainer.explain(feeds(None), target=None if any_top else [w.classes[0] for w in wishes])
    scores = explainer.class_scores(first)
    wanted = [list(w.classes) if w.classes is not None else
              [int(c) for c in np.argsort(-scores[i], kind="stable")[:w.top_k]] for i, w in enumerate(wishes)]
    cams: list[dict[int, np.ndarray]] = [{int(first.targets[i]): first.cam[i]} for i in range(n)]
    for rank in range(max(len(w) for w in wanted)):
        todo = [(i, wanted[i][rank]) for i in range(n) if rank < len(wanted[i]) and wanted[i][rank] not in cams[i]]
        if not todo:
            continue
        rows = np.array([i for i, _ in todo])
        res = explainer.explain(feeds(rows), target=[c for _, c in todo])
        for j, (i, c) in enumerate(todo):
            cams[i][c] = res.cam[j]
    return [ImageExplanation(scores[i], [(c, cams[i][c]) for c in wanted[i]]) for i in range(n)]

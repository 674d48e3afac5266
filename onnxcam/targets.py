"""What to explain: a class id, or one element of any output.

Every target becomes a seed array over the scored tensor (see
``onnxcam.explain.build``); the classes here only know how to make that seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcam.errors import TargetError


@dataclass(frozen=True)
class OutputTarget:
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
        if len(index) != len(dims):
            raise TargetError(f"OutputTarget index {index} has {len(index)} entries, but output {self.output!r} "
                              f"has {len(dims)} non-batch axes (shape {tuple(shape)})")
        for i, (k, d) in enumerate(zip(index, dims)):
            if not -d <= k < d:
                raise TargetError(f"OutputTarget index {index} is out of range on axis {i + 1} of "
                                  f"output {self.output!r} (size {d})")
        seed = np.zeros(shape, dtype=dtype)
        seed[(slice(None), *index)] = 1
        return seed

"""Checking what a caller feeds: the input arrays and the class targets, with errors that say what to pass."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxcam.errors import InputError, TargetError
from onnxcam.graph.index import GraphIndex


class InputChecker:
    """Turns what ``explain``/``predict`` is given into ONNX Runtime feeds, or says what is wrong with it.

    The checks pass unchanged when a caller sends batches of the dtype and
    shape the last call had, so that case takes a shortcut (the hot path of a
    server or a dataset loop).
    """

    def __init__(self, index: GraphIndex):
        self.index = index
        self._accepted: tuple[Any, ...] = ()  # (dtype, shape after the batch axis) of the last array input that passed

    def feeds(self, x: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{input name: C-contiguous array of the model's dtype}``, all with the same batch size."""
        names = self.index.inputs
        if (
            type(x) is np.ndarray
            and x.ndim
            and x.shape[0]
            and (x.dtype, x.shape[1:]) == self._accepted
            and x.flags.c_contiguous
        ):
            return {names[0]: x}
        if isinstance(x, Mapping):
            missing = [n for n in names if n not in x]
            extra = [k for k in x if k not in names]
            if missing or extra:
                raise InputError(f"input dict keys {sorted(x)} do not match the model inputs {names}")
            raw = dict(x)
        else:
            if len(names) != 1:
                raise InputError(f"the model has {len(names)} inputs {names}; pass a dict name -> array")
            raw = {names[0]: x}
        feeds, batch = {}, None
        for name, value in raw.items():
            arr = self._one(name, value)
            if batch is not None and arr.shape[0] != batch:
                raise InputError(f"inputs disagree on the batch size ({batch} vs {arr.shape[0]} for {name!r})")
            batch = arr.shape[0]
            feeds[name] = arr
        if len(feeds) == 1 and not isinstance(x, Mapping):
            self._accepted = (arr.dtype, arr.shape[1:])
        return feeds

    def _one(self, name: str, value: Any) -> np.ndarray:
        arr = np.asarray(value)
        t = self.index.type_of(name)
        if arr.dtype.kind not in "fiub":
            raise InputError(f"input {name!r} has dtype {arr.dtype}; pass a numeric array")
        if t is not None and t.is_float and arr.dtype.kind != "f":
            raise InputError(
                f"input {name!r} must be a floating-point array ({t.np_dtype}), not {arr.dtype}; "
                "preprocess the image to floats first"
            )
        if t is not None:
            arr = np.ascontiguousarray(arr, dtype=t.np_dtype)
        if t is not None and t.shape is not None:
            if arr.ndim != len(t.shape):
                raise InputError(
                    f"input {name!r} has rank {arr.ndim} (shape {arr.shape}); the model expects rank "
                    f"{len(t.shape)} ({_fmt_shape(t.shape)}). Add the batch axis with x[None] "
                    "for a single image"
                )
            for axis, (have, want) in enumerate(zip(arr.shape[1:], t.shape[1:]), start=1):
                if isinstance(want, int) and want > 0 and have != want:
                    raise InputError(
                        f"input {name!r} has shape {arr.shape}; the model expects "
                        f"{_fmt_shape(t.shape)} (axis {axis} must be {want})"
                    )
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise InputError(f"input {name!r} is an empty batch (shape {arr.shape}); pass at least one image")
        return arr


def class_ids(target: Any, n: int, classes: int | None, described: str) -> np.ndarray:
    """The ``target_class`` feed for ``target`` (None, an int, one int per image) over a batch of ``n``.

    ``classes`` is the explained output's class count where known; ``described``
    names that output in errors.
    """
    if target is None:
        return _top1_ids(n)
    ids = np.atleast_1d(np.asarray(target))
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise TargetError(f"target must be None, an int, a list of ints, or an OutputTarget; got {target!r}")
    if ids.size == 1:
        ids = np.repeat(ids, n)
    if ids.size != n:
        raise TargetError(f"got {ids.size} targets for a batch of {n} images; pass one per image or a single int")
    if classes is not None and ((ids < 0) | (ids >= classes)).any():
        bad = ids[(ids < 0) | (ids >= classes)][0]
        raise TargetError(f"target class {bad} is out of range: {described} has {classes} classes (0..{classes - 1})")
    if classes is None and (ids < 0).any():
        raise TargetError(f"target class {ids[ids < 0][0]} is negative; class ids start at 0")
    return ids.astype(np.int64)


@functools.lru_cache(maxsize=64)
def _top1_ids(n: int) -> np.ndarray:
    """The class feed meaning "each image's top-1" for a batch of ``n`` (shared, read-only: the hot path)."""
    ids = np.full(n, -1, dtype=np.int64)
    ids.flags.writeable = False
    return ids


def _fmt_shape(shape: Any) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + ")"

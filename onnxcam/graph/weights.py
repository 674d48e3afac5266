"""Keep a model's weights out of the graph protos while onnxcam rewrites them.

Every rewrite step (opset upgrade, shape inference, building the explainer
graph, serialising it for ONNX Runtime) copies the whole proto. With the
weights inside, a 100 MB model costs several hundred MB of transient memory
and the explainer process ends up far heavier than plain inference. So, right
after loading, large initializers move into one ``weights.bin`` in a private
temporary folder, the protos refer to it as ONNX external data, and ONNX
Runtime sessions are created from files in that folder, which it loads as
efficiently as it loads the user's own model.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_model

from onnxcam.errors import ModelLoadError, RuntimeFailure, first_line

WEIGHTS_FILE = "weights.bin"
#: Smaller initializers (shapes, axes, scales) stay inline: shape inference and rules read them.
MIN_DETACHED_BYTES = 1024
_ALIGN = 64


#: Folders this process made and has not removed yet.
_LIVE_FOLDERS: set[str] = set()


def _remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    _LIVE_FOLDERS.discard(path)


@atexit.register
def _remove_leftovers() -> None:
    """Remove every folder still there at exit.

    A finalizer runs once: when Ctrl-C or SIGTERM (which the CLI turns into
    KeyboardInterrupt) lands during its ``rmtree``, the folder stays, with a
    full copy of the model's weights in it. This sweep catches those.
    """
    for path in list(_LIVE_FOLDERS):
        _remove(path)


class WeightFolder:
    """A private temporary folder holding ``weights.bin`` and the models that refer to it."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="onnxcam-"))
        _LIVE_FOLDERS.add(str(self.path))
        self._cleanup = weakref.finalize(self, _remove, str(self.path))

    def detach(self, model: onnx.ModelProto) -> None:
        """Move ``model``'s large initializers (in place) into ``weights.bin``."""
        offset = 0
        with open(self.path / WEIGHTS_FILE, "wb") as f:
            for tensor in model.graph.initializer:
                if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.ByteSize() < MIN_DETACHED_BYTES:
                    continue
                if not tensor.HasField("raw_data"):  # float_data & co: normalise to raw bytes first
                    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
                size = len(tensor.raw_data)
                pad = (-offset) % _ALIGN
                f.write(b"\0" * pad)
                offset += pad
                f.write(tensor.raw_data)
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
                del tensor.external_data[:]
                for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(size))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
                offset += size

    def save(self, model: onnx.ModelProto, name: str) -> Path:
        """Write a (weight-free) model beside ``weights.bin`` and return its path."""
        path = self.path / name
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        return path

    def check(self, model: onnx.ModelProto, name: str, emitted: bool = False) -> Path:
        """Save ``model`` and run the ONNX checker on the file, external weights included.

        ``emitted`` marks a graph onnxcam built: its failure is onnxcam's bug,
        not a broken user file, and the message says so.
        """
        path = self.save(model, name)
        try:
            onnx.checker.check_model(str(path))
        except (onnx.checker.ValidationError, UnicodeDecodeError) as e:  # UnicodeDecodeError: a name is not UTF-8
            first = first_line(e)
            if emitted:
                raise RuntimeFailure(
                    f"onnxcam built an invalid explainer graph ({first}); this is a bug in "
                    "onnxcam: please report it with the model"
                ) from None
            raise ModelLoadError(
                f"the model is not valid ONNX ({first}); it may be truncated: re-export or re-download it"
            ) from None
        return path

    def materialize(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of ``model`` with every weight loaded back inline (for export and tests)."""
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        load_external_data_for_model(copy, str(self.path))
        return copy

    def array(self, tensor: onnx.TensorProto) -> np.ndarray:
        return numpy_helper.to_array(tensor, base_dir=str(self.path))

    def close(self) -> None:
        self._cleanup()


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write a model the user asked for; models over 2 GB keep their weights in a file beside it."""
    path = Path(path)
    if model.ByteSize() < 2**31 - 2**20:
        path.write_bytes(model.SerializeToString())
    else:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")

"""The ``onnxcam`` command line."""

from onnxcam.cli.main import main

__all__ = ["main"]

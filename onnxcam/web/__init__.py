"""Explain in the browser: a static page that runs the explainer with ONNX Runtime Web, the photo never uploaded.

:func:`write_web_page` writes the page (``onnxcam export --web DIR``; ``onnxcam serve --client-side`` serves one);
:mod:`.ort_web` finds or installs the pinned onnxruntime-web; ``static/`` holds the page and its JavaScript, whose
preprocessing is a port of :mod:`onnxcam.preprocess` (Pillow's resize included) so that the page's heatmap equals
the Python one. See docs/browser.md.
"""

from onnxcam.web.bundle import CONFIG_NAME, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, write_web_page
from onnxcam.web.ort_web import find_ort_web, install_ort_web, pinned_version

__all__ = [
    "write_web_page",
    "find_ort_web",
    "install_ort_web",
    "pinned_version",
    "CONFIG_NAME",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_BYTES",
]

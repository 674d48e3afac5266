"""Explanations as a service: an HTTP API with micro-batching, a web page, and a Triton model repository.

``onnxcam serve`` (``onnxcam[serve]``: Starlette + uvicorn) keeps one
Explainer per (method, layer) and answers ``POST /explain`` with the
predictions, the explained classes, their peaks and base64 PNG heatmaps and
overlays. :mod:`onnxcam.server.triton` needs nothing beyond onnxcam itself, so
this package never imports Starlette at import time; :mod:`.app` does.
"""

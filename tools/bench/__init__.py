"""Benchmark of onnxcam against plain ONNX Runtime inference and pytorch-grad-cam (docs/performance.md).

A benchmark, not a test: it measures and reports medians and ratios, it never asserts. Run it from the
repository root::

    python -m tools.bench --json docs/data/bench.json   # the run behind docs/performance.md
    python -m tools.bench.report [--check]              # regenerate (or check) the tables in docs/performance.md

Modules: ``models`` (torchvision classifiers with random weights, exported once to a cache), ``children``
(fresh processes for peak memory and one-side-per-process latency), ``timing`` (interleaved round-robin,
per-method costs, onnxruntime profiles), ``report`` (markdown tables, from a result dict or the JSON file).
"""

"""``onnxcam export``'s deployment flags: ``--portable``, ``--check EP`` and ``--ep EP`` (both at once).

``--portable`` writes the explainer with ops every execution provider has
(see ``Explainer.export(portable=True)``); ``--check EP`` reports, node by
node, what that EP does not take of the written file (or of a temporary one
when nothing else is written), by loading it in onnxruntime where the EP is
installed, else from the EP's documented op table
(:mod:`onnxcam.runtime.ep_check`). The check's exit status is 1 when the EP
does not take every node, so a deployment script can stop there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from onnxcam.runtime.ep_check import check_ep, resolve_provider


def add_ep_options(parser: argparse.ArgumentParser) -> None:
    p = parser.add_argument_group("execution providers (docs/deployment.md)")
    p.add_argument(
        "--portable",
        action="store_true",
        help="write the explainer with ops every execution provider has (MaxPool's gradient as a mask, no "
        "scatter, no OneHot, no default-valued attributes, static shapes as constants); the same numbers",
    )
    p.add_argument(
        "--check",
        metavar="EP",
        help="report, node by node, what execution provider EP does not take of the file (openvino, cpu, cuda: "
        "loaded in onnxruntime where installed; tensorrt, coreml, xnnpack, webgpu, webnn: their documented op "
        "tables); exit status 1 when it does not take every node",
    )
    p.add_argument("--ep", metavar="EP", help="export for EP: --portable and --check EP together")


def portable_requested(args: argparse.Namespace) -> bool:
    return bool(args.portable or args.ep)


def check_requested(args: argparse.Namespace) -> str | None:
    """The EP to check against, validated before any work (an unknown name is a one-line error)."""
    ep = args.check or args.ep
    if ep:
        resolve_provider(ep)
    return ep


def run_check(explainer: Any, written: Path | None, ep: str | None, portable: bool) -> int:
    """Check ``written`` (or a temporary export when None) against ``ep``; print the report; 1 if not all taken."""
    if not ep:
        return 0
    if written is not None:
        report = check_ep(written, ep)
    else:
        with tempfile.TemporaryDirectory(prefix="onnxcam-check-") as tmp:
            path = Path(tmp) / "explainer.onnx"
            explainer.export(path, portable=portable)
            report = check_ep(path, ep)
            report.path = "the explainer (not written: pass -o to keep it)"
    print("\n".join(report.lines()), file=sys.stdout)
    return 0 if report.ok else 1

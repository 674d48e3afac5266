"""A progress line for the perturbation passes inside one ``explain`` call (Score-CAM, Ablation-CAM).

These methods run one forward pass per channel and image, so a batch of
eight images on a 2048-channel layer is 16 384 passes between two ticks of the
per-image bar. On a terminal this draws the passes on the same line and
clears it when the call is done, so the image bar takes the line back; in a
log (CI, a pipe) it stays silent and the per-image bar alone reports.
"""

from __future__ import annotations

import sys
from typing import TextIO

from onnxcam.cli.progress import Progress


class PassProgress:
    """``Explainer(..., progress=PassProgress("scorecam"))``: called with (passes done, passes in total)."""

    def __init__(self, method: str, stream: TextIO | None = None):
        self.label = f"{method} passes"
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if not self.tty:
            return
        if self._bar is None or total != self._bar.total or done < self._bar.done:
            self._bar = Progress(total, self.label, stream=self.stream, enabled=True, unit="pass")
        self._bar.advance(done - self._bar.done)
        if done >= total:
            self.stream.write("\r\033[K")  # clear the line for the per-image bar
            self.stream.flush()
            self._bar = None

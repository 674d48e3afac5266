"""A dependency-free progress bar for runs over many images."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

#: Runs with at most this many images print no bar.
QUIET_BELOW = 4
#: In a log, a progress line is printed at most this often (seconds), besides the first and the last.
LOG_EVERY_S = 10.0
#: The rate is measured over about this many of the latest seconds, so it follows a run that speeds up or slows.
RATE_WINDOW_S = 10.0
#: No rate is shown before this much time and this many items have passed: the first tiny interval says nothing.
RATE_AFTER_S = 1.0
RATE_AFTER_ITEMS = 2


class RateMeter:
    """Items per second over the last :data:`RATE_WINDOW_S` seconds, or None while too little has passed to tell.

    The rate from the start to the first update is noise: a batch whose images
    all failed at once "ran" at thousands of images per second.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.started = clock()
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])

    def update(self, done: int) -> None:
        now = self._clock()
        self._samples.append((now, done))
        while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW_S:
            self._samples.popleft()  # keep the newest sample at or before the window's start

    def rate(self) -> float | None:
        now, done = self._clock(), self._samples[-1][1]
        if now - self.started < RATE_AFTER_S or done < RATE_AFTER_ITEMS:
            return None
        then, done_then = self._samples[0]
        return (done - done_then) / (now - then) if now > then else None


class Progress:
    """``with Progress(total, "explaining") as bar: bar.advance(k)``, drawn on stderr.

    On a terminal it redraws one line. In a log (CI, a pipe) every line stays,
    so it prints only a few: the start, a line when a tenth more is done and
    at least :data:`LOG_EVERY_S` seconds passed since the last one, and the end.
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "img",
    ):
        self.total, self.label, self.unit, self.done = total, label, unit, 0
        self.stream = stream or sys.stderr
        self.enabled = total >= QUIET_BELOW if enabled is None else enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._clock = clock
        self._meter = RateMeter(clock)
        self._logged: tuple[float, int] | None = None  # (time, tenth) of the last line printed to a log

    def __enter__(self) -> Progress:
        self._draw()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self._meter.update(self.done)
        self._draw()

    def line(self) -> str:
        """The bar as one line: how far, how fast (once that can be told) and how long is left."""
        frac = self.done / self.total if self.total else 1.0
        if self.done >= self.total and self.total:  # finished: the whole run's time says more than any rate
            elapsed = self._clock() - self._meter.started
            return f"{self.label} [{'#' * 30}] {self.done}/{self.total} in {elapsed:.1f} s"
        rate = self._meter.rate()
        if rate is None or rate <= 0:
            speed = f"    - {self.unit}/s"
        else:
            eta = (self.total - self.done) / rate
            speed = f"{rate:5.1f} {self.unit}/s eta {eta:4.0f}s"
        return f"{self.label} [{'#' * int(frac * 30):<30}] {self.done}/{self.total} {speed}"

    def _draw(self) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif self._due_in_log():
            self._log_line()

    def _tenth(self) -> int:
        return 10 if not self.total or self.done >= self.total else self.done * 10 // self.total

    def _due_in_log(self) -> bool:
        """The first line, the last, and in between a new tenth done at least LOG_EVERY_S after the last line."""
        if self._logged is None or self.done >= self.total:
            return self._logged is None or self._logged[1] < 10
        when, tenth = self._logged
        return self._tenth() > tenth and self._clock() - when >= LOG_EVERY_S

    def _log_line(self) -> None:
        self._logged = (self._clock(), self._tenth())
        self.stream.write(self.line() + "\n")
        self.stream.flush()

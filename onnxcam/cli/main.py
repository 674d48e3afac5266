"""``onnxcam`` entry point: subcommands, one-line errors, and exit codes.

Exit codes: 0 success, 1 failure (a bad model, image or output folder), 2 usage
error (argparse's own convention), 130 interrupted (Ctrl-C, SIGTERM or SIGHUP;
128 + SIGINT, what shells report for Ctrl-C). Every
:class:`~onnxcam.errors.OnnxcamError` prints as one line; ``--debug`` shows the
traceback instead.

SIGTERM (``kill``, ``timeout``, ``docker stop``, systemd) and SIGHUP (the
terminal closed) end a command exactly as Ctrl-C does, instead of killing the
process on the spot: ``explain``, ``demo``, ``compare`` and ``eval`` still write
their results for the work done (marked ``"interrupted": true``), and the
Explainer's private copy of the model's weights in $TMPDIR is removed at exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from onnxcam.cli import commands
from onnxcam.cli.options import EXIT_STATUS_HELP, flush_notices
from onnxcam.errors import OnnxcamError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Signals that end a command the way Ctrl-C does (SIGHUP does not exist on Windows).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and a hint, not the whole usage block.

    argparse prints every option of the command before the error, so a typo in
    ``--method`` hid its one useful line (which names the valid choices) under
    fifteen others. The exit status stays 2, argparse's own for bad usage.
    """

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\nsee {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="onnxcam",
        description="Grad-CAM for any ONNX model, computed inside the model's own ONNX Runtime session.",
        epilog=EXIT_STATUS_HELP,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors"
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands.COMMANDS:
        command.register(sub, common)
    return parser


class StopSignals:
    """``with StopSignals() as stop:`` SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread.

    Their default action ends the process at once: no summary of the work done,
    and no Python exit, so the finalizers that delete the Explainer's temporary
    weight folders never run. Raising KeyboardInterrupt instead sends them down
    the path Ctrl-C already takes. ``stop.received`` names the signal that came.

    A command that installs its own SIGTERM handler (``serve``) gets SIGHUP as a
    SIGTERM, so it shuts down its own way for both. The previous handlers are
    restored on leaving, so ``main()`` called from a program keeps that
    program's own handlers; from another thread (where Python cannot set
    handlers) nothing changes.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | signal.Handlers | None] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._interrupt)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _interrupt(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum).name
        if signum != signal.SIGTERM and signal.getsignal(signal.SIGTERM) != self._interrupt:
            # The command handles SIGTERM itself (``serve``: uvicorn's graceful shutdown); SIGHUP gets the same.
            signal.raise_signal(signal.SIGTERM)
            return
        raise KeyboardInterrupt


def interruption_message(received: str | None, stop: KeyboardInterrupt) -> str:
    """One line: what stopped the run, and what the command says it saved (the interrupt's text, if any)."""
    cause = f" by {received}" if received else ""
    saved = f"; {stop}" if str(stop) else ""
    return f"onnxcam: interrupted{cause}{saved}"


def _silence_stdout() -> None:
    """After the reader of our stdout went away (``onnxcam layers m.onnx | head -1``), send what is left nowhere.

    Without this, Python's final flush of stdout fails again at exit and prints a traceback.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (a test's capture): nothing to flush
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stop = StopSignals()
    try:
        with stop:
            code = int(args.run(args) or EXIT_OK)
            flush_notices()
            sys.stdout.flush()  # a reader that left early shows here, where it is handled, not in Python's exit
            return code
    except OnnxcamError as e:
        if args.debug:
            traceback.print_exc()
        else:
            print(f"onnxcam: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as e:
        flush_notices()
        print(interruption_message(stop.received, e), file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE
    finally:
        flush_notices(show=False)  # whatever a failed run held back: its one error line stands alone


if __name__ == "__main__":
    sys.exit(main())

"""``onnxcam`` entry point: subcommands, one-line errors, and exit codes.

Exit codes: 0 success, 1 failure (a bad model, image or output folder), 2 usage
error (argparse's own convention). Every :class:`~onnxcam.errors.OnnxcamError`
prints as one line; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from onnxcam.cli import commands
from onnxcam.errors import OnnxcamError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxcam",
        description="Grad-CAM for any ONNX model, computed inside the model's own ONNX Runtime session.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands.COMMANDS:
        command.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or EXIT_OK)
    except OnnxcamError as e:
        if args.debug:
            traceback.print_exc()
        else:
            print(f"onnxcam: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("onnxcam: interrupted", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

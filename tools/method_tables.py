"""The method tables of README.md and docs/methods.md, generated from onnxcam.methods.table.

python -m tools.method_tables           # rewrite the generated blocks
python -m tools.method_tables --check   # exit 1 (and print the diff) if they are out of date
"""

from __future__ import annotations

import argparse

from onnxcam.methods import METHODS
from onnxcam.methods.spec import MethodSpec
from tools.generated_docs import REPO, markdown_table, regenerate

COMMAND = "python -m tools.method_tables"


def _name(spec: MethodSpec) -> str:
    return f"`{spec.name}` (default)" if spec.name == "gradcam" else f"`{spec.name}`"


def readme_table() -> str:
    """Each method in a few words: what weights the channels, where it runs, the paper."""
    return markdown_table(
        ["method", "what weights the layer's channels", "runs", "paper"],
        ([_name(s), s.summary, s.runs, s.paper] for s in METHODS.values()),
    )


def docs_table() -> str:
    """Each method's contribution ``M_k``, what an exported file and the server do with it, and the paper."""

    def exported(s: MethodSpec) -> str:
        return "yes" if s.exported else "Grad-CAM"

    return markdown_table(
        ["method", "contribution `M_k`", "exported file", "served", "paper"],
        ([_name(s), s.details, exported(s), "yes" if s.served else "no", s.paper] for s in METHODS.values()),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    args = parser.parse_args(argv)
    return regenerate(
        COMMAND,
        {
            REPO / "README.md": lambda: {"methods": readme_table()},
            REPO / "docs" / "methods.md": lambda: {"methods": docs_table()},
        },
        args.check,
    )


if __name__ == "__main__":
    raise SystemExit(main())

"""Which nodes of an ONNX file an execution provider takes, so a user knows before deploying.

Two ways to know:

* **run it** where the installed onnxruntime has the EP (OpenVINO from
  ``onnxruntime-openvino``, CUDA, the CPU EP itself): the file is loaded with
  the EP first and the CPU EP as fallback, graph optimisations off so the
  nodes keep their names, and onnxruntime's own placement log (what
  ``VerifyEachNodeIsAssignedToAnEp`` prints at verbose level) says which
  nodes fell back; a second load with ``session.disable_cpu_ep_fallback``
  confirms that the rest really runs without the CPU;
* **read the tables** for EPs that cannot be installed on this machine
  (TensorRT, CoreML, XNNPACK, WebGPU, WebNN): ``ep_ops.json`` holds their
  documented op lists and the documented restrictions onnxcam's graphs can
  hit, each table with its source file, commit and date.

An EP that fuses what it takes into subgraphs (OpenVINO, TensorRT) reports
those as one node each; the report lists only what it does *not* take,
node by node, as ``op_type`` and node name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import onnx

from onnxcam.errors import OnnxcamError, RuntimeFailure, first_line
from onnxcam.graph.load import load_model
from onnxcam.runtime.session import CPU, require_onnxruntime

#: Short names for the EPs onnxruntime can load in some build (the tables add their own aliases).
RUNTIME_ALIASES = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "qnn": "QNNExecutionProvider",
}

_PLACED = re.compile(r"Node\(s\) placed on \[(\w+)\]\. Number of nodes: (\d+)")
_NODE_LINE = re.compile(r"VerifyEachNodeIsAssignedToAnEp\]\s{3}(\S+) \((.*)\)\s*$")


@dataclass(frozen=True)
class NodeIssue:
    """One node the EP does not take, and why (empty where the runtime does not say)."""

    op_type: str
    name: str
    reason: str = ""


@dataclass
class EPReport:
    """What ``provider`` takes of one file: every node, or all but ``issues``."""

    provider: str
    path: str
    how: str  # "runtime" (loaded in onnxruntime) or "table" (checked against ep_ops.json)
    source: str  # the onnxruntime version, or the table's source, commit and date
    nodes: int  # nodes in the file's main graph
    issues: list[NodeIssue] = field(default_factory=list)
    loads_without_fallback: bool | None = None  # runtime checks: the load with CPU fallback disabled succeeded
    note: str = ""  # e.g. an EP that by design leaves most ops to the CPU EP

    @property
    def ok(self) -> bool:
        """Whether the EP takes every node (and, when it was run, loads with the CPU fallback disabled)."""
        return not self.issues and self.loads_without_fallback is not False

    def lines(self) -> list[str]:
        """The report as a person reads it: one headline, then one line per node not taken."""
        how = "loaded in" if self.how == "runtime" else "its documented op table:"
        out = [f"{self.path} on {self.provider} ({how} {self.source})"]
        if not self.issues:
            out.append(f"  all {self.nodes} nodes are taken by {self.provider}")
        else:
            where = "fall back to the CPU EP" if self.how == "runtime" else f"are not taken by {self.provider}"
            out.append(f"  {len(self.issues)} of {self.nodes} nodes {where}:")
            width = max(len(i.op_type) for i in self.issues)
            out += [
                f"    {i.op_type:<{width}}  {i.name or '(unnamed)'}" + (f"  {i.reason}" if i.reason else "")
                for i in self.issues
            ]
        if self.loads_without_fallback is not None:
            verdict = "loads" if self.loads_without_fallback else "does NOT load"
            out.append(f"  with session.disable_cpu_ep_fallback set, the file {verdict}")
        if self.note:
            out.append(f"  note: {self.note}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "path": self.path,
            "how": self.how,
            "source": self.source,
            "nodes": self.nodes,
            "ok": self.ok,
            "loads_without_fallback": self.loads_without_fallback,
            "issues": [{"op_type": i.op_type, "name": i.name, "reason": i.reason} for i in self.issues],
            "note": self.note,
        }


def ep_tables() -> dict[str, dict[str, Any]]:
    """The documented op tables of ``ep_ops.json``, by provider name."""
    text = resources.files("onnxcam.runtime").joinpath("ep_ops.json").read_text(encoding="utf-8")
    tables: dict[str, dict[str, Any]] = json.loads(text)["tables"]
    return tables


def resolve_provider(name: str) -> str:
    """``openvino`` -> ``OpenVINOExecutionProvider`` (any case; full names pass); raise for an unknown name."""
    known = dict(RUNTIME_ALIASES)
    for provider, table in ep_tables().items():
        known.update({alias.lower(): provider for alias in table.get("aliases", ())})
        known[provider.lower()] = provider
    known.update({p.lower(): p for p in RUNTIME_ALIASES.values()})
    key = name.strip().lower()
    key = key if key in known else f"{key}executionprovider"
    if key not in known:
        names = sorted({a for a in known if not a.endswith("executionprovider")})
        raise OnnxcamError(f"unknown execution provider {name!r}; pass one of {', '.join(names)} or a full EP name")
    return known[key]


def check_ep(path: str | os.PathLike[str], provider: str) -> EPReport:
    """Check the ONNX file at ``path`` against ``provider`` (a full EP name or an alias such as ``openvino``).

    Runs the EP where this onnxruntime build has it, else reads its documented
    op table; raises :class:`OnnxcamError` when neither is possible.
    """
    provider = resolve_provider(provider)
    ort = require_onnxruntime()
    if provider in ort.get_available_providers():
        return _runtime_check(str(path), provider)
    table = ep_tables().get(provider)
    if table is None:
        hint = " (in its own environment: pip install 'onnxcam[openvino]')" if "OpenVINO" in provider else ""
        raise OnnxcamError(
            f"{provider} is not in this onnxruntime build ({', '.join(ort.get_available_providers())}) and onnxcam "
            f"has no op table for it; install the onnxruntime package that has it{hint} and check again"
        )
    return table_check(load_model(path), provider, table, str(path))


# -- running the EP --------------------------------------------------------------------------------


def _runtime_check(path: str, provider: str) -> EPReport:
    ort = require_onnxruntime()
    nodes = len(load_model(path).graph.node)
    options = ort.SessionOptions()
    options.log_severity_level = 0  # the placement log is verbose-level
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # nodes keep their names
    with _captured_stderr() as log:
        try:
            ort.InferenceSession(path, options, providers=[provider, CPU] if provider != CPU else [CPU])
        except Exception as e:  # onnxruntime's own exception types
            raise RuntimeFailure(f"{provider} could not load {path}: {first_line(e)}") from None
    placed = parse_placements(log.text)
    issues = [NodeIssue(op, name) for op, name in placed.get(CPU, [])] if provider != CPU else []
    loads = None
    if provider != CPU:
        strict = ort.SessionOptions()
        strict.log_severity_level = 3
        strict.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        with _captured_stderr():
            try:
                ort.InferenceSession(path, strict, providers=[provider])
                loads = True
            except Exception:  # the refusal is the answer
                loads = False
    version = getattr(ort, "__version__", "?")
    return EPReport(provider, path, "runtime", f"onnxruntime {version}", nodes, issues, loads)


def parse_placements(log: str) -> dict[str, list[tuple[str, str]]]:
    """onnxruntime's verbose placement log -> provider -> [(op_type, node name)] (fused subgraphs included)."""
    placed: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in log.splitlines():
        head = _PLACED.search(line)
        if head:
            current = placed.setdefault(head.group(1), [])
            continue
        node = _NODE_LINE.search(line)
        if node and current is not None:
            current.append((node.group(1), node.group(2)))
        elif "VerifyEachNodeIsAssignedToAnEp" not in line:
            current = None
    return placed


@dataclass
class _Captured:
    text: str = ""


@contextlib.contextmanager
def _captured_stderr() -> Iterator[_Captured]:
    """File descriptor 2 redirected into a temporary file (onnxruntime logs from C++, past ``sys.stderr``)."""
    sys.stderr.flush()
    captured = _Captured()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace")


# -- reading the tables ----------------------------------------------------------------------------


def table_check(model: onnx.ModelProto, provider: str, table: dict[str, Any], path: str = "") -> EPReport:
    """Each node of ``model``'s main graph against ``provider``'s documented table (see ``ep_ops.json``)."""
    constants = _folded_constants(model)
    supported = set(table.get("supported", ()))
    unsupported = table.get("unsupported", {})
    name = provider.removesuffix("ExecutionProvider")
    partial = bool(table.get("partial_by_design"))  # the CPU EP takes the other ops on the same CPU: only constraints
    issues = []
    for node in model.graph.node:
        if all(o in constants for o in node.output if o):
            continue  # onnxruntime folds it before any EP sees the graph
        if node.domain not in ("", "ai.onnx"):
            issues.append(NodeIssue(node.op_type, node.name, f"domain {node.domain} is not in the {name} table"))
        elif not partial and ((supported and node.op_type not in supported) or node.op_type in unsupported):
            issues.append(NodeIssue(node.op_type, node.name, f"no {name} support for {node.op_type}"))
        else:
            reason = _broken_constraint(node, table.get("constraints", ()), constants)
            if reason:
                issues.append(NodeIssue(node.op_type, node.name, reason))
    source = f"{table['source']} at {table['source_commit'][:10]}, read {table['retrieved']}"
    note = ""
    if partial:
        note = (
            f"{name} takes only {', '.join(sorted(supported))} and leaves every other op to the CPU EP on the same "
            "CPU by design; listed are the nodes of those ops it refuses"
        )
    return EPReport(provider, path, "table", source, len(model.graph.node), issues, None, note)


def _folded_constants(model: onnx.ModelProto) -> set[str]:
    """Initializers, Constant outputs, and what onnxruntime's constant folding computes from them before an EP
    sees the graph (a portable build's ``Neg(Neg(W))`` weight, say)."""
    constants = {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # in topological order, as ONNX requires
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (
            inputs and not node.op_type.startswith("Random") and set(inputs) <= constants
        ):
            constants.update(o for o in node.output if o)
    return constants


def _broken_constraint(node: onnx.NodeProto, constraints: Sequence[dict[str, Any]], constants: set[str]) -> str:
    """The note of the first documented restriction ``node`` breaks, else ''."""
    attrs = {a.name for a in node.attribute}
    for c in constraints:
        if c["op"] != node.op_type:
            continue
        outputs = [o for o in node.output if o]
        if "outputs_at_most" in c and len(outputs) > c["outputs_at_most"]:
            return c["note"]
        if any(a in attrs for a in c.get("default_attributes", ())):
            return c["note"]
        wanted = c.get("constant_input")
        positions = [wanted] if isinstance(wanted, int) else list(wanted or ())
        if any(i < len(node.input) and node.input[i] and node.input[i] not in constants for i in positions):
            return c["note"]
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m onnxcam.runtime.ep_check FILE EP [--json]``: the report of :func:`check_ep`."""
    import argparse  # noqa: PLC0415 - only the command line needs it

    parser = argparse.ArgumentParser(prog="python -m onnxcam.runtime.ep_check", description=main.__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("provider")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = check_ep(args.file, args.provider)
    except OnnxcamError as e:
        print(f"onnxcam: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict()) if args.json else "\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The benchmark tables in docs/performance.md are generated from docs/data/bench.json, never pasted.

Standard library only: no torch, no onnxruntime, well under a second.
"""

from tools.bench import report


def test_docs_tables_match_committed_json():
    assert report.main(["--check"]) == 0, "run: python -m tools.bench.report"


def rows(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()[2:]]


def timings(infer: float, explain: float, gradcam: float) -> dict:
    return {k: {"median_ms": v} for k, v in (("infer", infer), ("explain", explain), ("gradcam", gradcam))}


RESULTS = {
    "solo": [
        {"model": "m", "batch": 1, "idle_ms": 0.0, "infer_ms": 10.0, "explain_ms": 10.27},
        {"model": "m", "batch": 1, "idle_ms": 30.0, "infer_ms": 20.0, "explain_ms": 22.4},
        {"model": "m", "batch": 8, "idle_ms": 0.0, "infer_ms": 80.0, "explain_ms": 79.2},
        {"model": "m", "batch": 8, "idle_ms": 30.0, "error": "child exited 1: boom"},
    ],
    "latency": [{"model": "m", "batch": 1, "timings": timings(4.1, 4.5, 120.0)}],
    "memory": [
        {
            "model": "m",
            "batch": 1,
            "infer": {"peak_rss_kib": 204800},
            "explain": {"peak_rss_kib": 225280},
            "gradcam": {"error": "child exited 1"},
        }
    ],
    "methods": [
        {
            "model": "m",
            "batch": 2,
            "rows": [
                {"method": "gradcam", "kind": "graph", "infer_ms": 4.0, "explain_ms": 4.12},
                {"method": "scorecam", "kind": "perturbation", "infer_ms": 4.0, "explain_ms": 2000.0, "channels": 100},
            ],
        }
    ],
}


def test_ratios_are_explain_over_inference_to_two_decimals():
    solo = rows(report.solo(RESULTS))
    assert solo[0] == ["m", "1", "10.00 ms", "10.27 ms", "**1.03**", "20.00 ms", "22.40 ms", "1.12"]
    assert solo[1][:5] == ["m", "8", "80.00 ms", "79.20 ms", "**0.99**"] and solo[1][5] == "error"
    assert report.solo(RESULTS).splitlines()[0].count("after 30 ms idle") == 1
    assert rows(report.interleaved(RESULTS)) == [["m", "1", "4.1 ms", "4.5 ms", "120.0 ms", "1.10", "26.7x"]]
    assert rows(report.memory(RESULTS)) == [["m", "1", "200 MiB", "220 MiB", "1.10", "error"]]


def test_methods_as_ratio_and_as_throughput():
    graph, perturbation = report.methods(RESULTS).split("\n\n")
    assert rows(graph) == [["gradcam", "1.03"]]
    assert rows(perturbation) == [["scorecam", "m", "100", "2.00 s", "1", "100"]]


def test_machine_states_the_load():
    meta = {
        "time": "2026-01-02T03:04:05",
        "cpu": "CPU X",
        "nproc": 2,
        "threads": 2,
        "duration_s": 600,
        "command": "python -m tools.bench",
        "loadavg_start": [0.5, 0, 0],
        "loadavg_end": [2.25, 0, 0],
        "git": {"head": "abc1234", "onnxcam_dirty": True},
        "versions": {"onnxruntime": "1.0", "torch": "2.0", "pytorch_grad_cam": "1.5"},
    }
    solo = [{**RESULTS["solo"][0], "loadavg_before": [3.5, 0, 0], "loadavg_after": [1.0, 0, 0]}]
    text = " ".join(report.machine({**RESULTS, "meta": meta, "solo": solo}).split())
    assert "load average 0.50 at the start, 2.25 at the end, 0.50-3.50 over the run" in text
    assert "`abc1234` with local changes; 10 minutes" in text

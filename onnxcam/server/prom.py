"""Prometheus text exposition (format 0.0.4), written by hand: counters, histograms and gauges.

Everything is updated on the event loop's thread (the request middleware and
the batchers' workers), so no lock is needed. Paths are the server's own
routes; any other path is counted as ``other`` so that scanners cannot grow
the label set without bound.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

#: Counters with one label: (help text, label name, the label values shown from the start, at 0).
COUNTERS = {
    "onnxcam_jobs_cancelled_total": (
        "Work skipped or stopped because its request gave up (timeout or disconnect), by step.",
        "step",
        ("parse", "decode", "explain", "render"),
    ),
    "onnxcam_requests_abandoned_total": (
        "Requests that gave up before their answer was ready, by reason.",
        "reason",
        ("timeout", "disconnect"),
    ),
    "onnxcam_connections_closed_total": (
        "Connections the server closed: no request head within the header timeout, a client that stopped reading "
        "its answer, evicted (idle, to make room for a new one), refused (all connections busy).",
        "reason",
        ("header_timeout", "stalled_reader", "evicted", "refused"),
    ),
}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts):
            running += n
            le = "+Inf" if bound == float("inf") else _num(bound)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        suffix = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{suffix} {_num(self.sum)}", f"{name}_count{suffix} {self.count}"]
        return out


class Metrics:
    """Request counts by path and status, request latency by path, batch sizes, and the :data:`COUNTERS`."""

    def __init__(self, paths: tuple[str, ...]):
        self.paths = paths
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.counters: dict[str, dict[str, int]] = {
            name: dict.fromkeys(values, 0) for name, (_, _, values) in COUNTERS.items()
        }

    def count(self, name: str, label: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (one of :data:`COUNTERS`) for the label value ``label``."""
        values = self.counters[name]
        values[label] = values.get(label, 0) + n

    def path_label(self, path: str) -> str:
        return path if path in self.paths else "other"

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        label = self.path_label(path)
        self.requests[(label, status)] += 1
        self.latency.setdefault(label, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """The exposition text; ``gauges`` maps a metric name to (help text, value)."""
        out = [
            "# HELP onnxcam_requests_total HTTP requests answered, by path and status code.",
            "# TYPE onnxcam_requests_total counter",
        ]
        for (path, status), n in sorted(self.requests.items()):
            out.append(f'onnxcam_requests_total{{path="{path}",status="{status}"}} {n}')
        out += [
            "# HELP onnxcam_request_duration_seconds Time from a request's arrival to the end of its answer.",
            "# TYPE onnxcam_request_duration_seconds histogram",
        ]
        for path, hist in sorted(self.latency.items()):
            out += hist.lines("onnxcam_request_duration_seconds", f'path="{path}"')
        out += [
            "# HELP onnxcam_batch_size Images per ONNX Runtime call of the micro-batcher.",
            "# TYPE onnxcam_batch_size histogram",
        ]
        out += self.batch_size.lines("onnxcam_batch_size")
        for name, (help_text, label, _) in COUNTERS.items():
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            out += [f'{name}{{{label}="{value}"}} {n}' for value, n in self.counters[name].items()]
        for name, (help_text, value) in gauges.items():
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_num(value)}"]
        return "\n".join(out) + "\n"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))

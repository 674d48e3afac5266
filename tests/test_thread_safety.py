"""One Explainer shared by threads: every lazily built graph and session is built once, and every answer is exact.

Before graphs and sessions were built under a lock, 8 threads asking a fresh Explainer for a mode it had not
built yet wrote the same temporary files at once and failed intermittently ("No graph was found in the
protobuf", "onnxcam built an invalid explainer graph").
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import onnxcam
from tests.tiny_models import tiny_cnn

pytest.importorskip("onnxruntime")

THREADS = 8
ROUNDS = 4  # fresh Explainers, each hit by every thread at once


def _calls(x):
    """Each call lazily builds something a fresh Explainer does not have yet (except the first)."""
    return {
        "top1": lambda ex: ex.explain(x).cam,
        "top2": lambda ex: ex.explain(x, target=onnxcam.TopK(2)).cam,  # the "rank" graph
        "seed": lambda ex: ex.explain(x, target=onnxcam.OutputTarget("probs", (3,))).cam,  # the "seed" graph
        "predict": lambda ex: ex.predict(x).scores,  # the forward session
    }


@pytest.mark.parametrize(
    "method,options",
    [("gradcam", {}), ("scorecam", {}), ("ablationcam", {}), ("gradcam", {"eigen_smooth": True})],
    ids=["gradcam", "scorecam", "ablationcam", "eigen_smooth"],
)
def test_threads_share_one_fresh_explainer(method, options):
    """Score-CAM builds a session from the inputs to the score, Ablation-CAM a tail session, eigen_smooth a
    contributions session."""
    model = tiny_cnn()
    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    calls = _calls(x)
    reference = onnxcam.Explainer(model, method=method, **options)
    expected = {name: call(reference) for name, call in calls.items()}
    failures: list[str] = []
    checked = 0

    for _ in range(ROUNDS):
        shared = onnxcam.Explainer(model, method=method, **options)
        barrier = threading.Barrier(THREADS)
        results: list[tuple[str, np.ndarray]] = []

        def work(i: int, shared=shared, barrier=barrier, results=results) -> None:
            names = list(calls)
            order = names[i % len(names) :] + names[: i % len(names)]  # every thread starts on another mode
            barrier.wait()
            for name in order:
                try:
                    results.append((name, calls[name](shared)))
                except Exception as e:  # collected, so one failure does not hide the others
                    failures.append(f"{name}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for name, value in results:
            np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
            checked += 1

    assert not failures, f"{len(failures)} of {THREADS * ROUNDS * len(calls)} calls failed: {failures[:3]}"
    assert checked == THREADS * ROUNDS * len(calls)

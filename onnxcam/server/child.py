"""Run ``onnxcam serve`` in a child process on a free loopback port, and stop it again.

For the tests, the load tool and notebooks: the child binds port 0, prints the
address it got, and this module waits until ``/healthz`` answers. The child's
stderr is collected on a thread (a full pipe would block it) and kept for
error messages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

_ADDRESS = re.compile(r"on (http://[^ ]+/) ")


class ServerProcess:
    """``with ServerProcess(["--demo"]) as server: server.url`` -> ``"http://127.0.0.1:PORT/"``."""

    def __init__(
        self,
        args: Sequence[str],
        start_timeout_s: float = 90.0,
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
    ):
        self.args = [sys.executable, "-m", "onnxcam", "serve", "--port", "0", *args]
        self.start_timeout_s = start_timeout_s
        self.cwd, self.env = cwd, env
        self.url = ""
        self.log: list[str] = []
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        env = {**os.environ, **(self.env or {})}
        self._proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
            env=env,
        )
        found = threading.Event()
        threading.Thread(target=self._collect, args=(found,), daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_s
        while not found.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("onnxcam serve did not start:\n" + "".join(self.log))
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("onnxcam serve never answered /healthz:\n" + "".join(self.log))

    def _collect(self, found: threading.Event) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None  # started by __enter__ after Popen(stderr=PIPE)
        for line in proc.stderr:
            self.log.append(line)
            m = _ADDRESS.search(line)
            if m and not found.is_set():
                self.url = m.group(1)
                found.set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()

"""Where the page's ONNX Runtime Web comes from: the user's copy, or a pinned npm install in a cache folder.

The page never loads anything from a CDN. Its three runtime files (the WebAssembly-only ``ort.wasm.min.js``, the
Emscripten glue ``ort-wasm-simd-threaded.mjs`` and the ``.wasm`` itself) are copied into every exported page, taken
from, in this order:

1. ``ort_web=`` / ``--ort-web DIR``: a folder of onnxruntime-web's files (``node_modules/onnxruntime-web/dist``;
   the package folder or a ``node_modules`` above it are accepted too);
2. ``$ONNXCAM_ORT_WEB``: the same, from the environment;
3. the cache ``$ONNXCAM_ORT_WEB_CACHE`` (default ``~/.cache/onnxcam/ort-web-<version>``), filled on first use by
   ``npm ci --ignore-scripts`` from ``npm/package.json`` and its lock file, which pin the version and the
   registry's integrity hashes (no install script of any package runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from onnxcam.errors import OnnxcamError

#: The files of onnxruntime-web's ``dist`` folder that the page loads.
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ENV_DIR = "ONNXCAM_ORT_WEB"
ENV_CACHE = "ONNXCAM_ORT_WEB_CACHE"
_NPM_TIMEOUT_S = 600


def pinned_version() -> str:
    """The onnxruntime-web version in ``onnxcam/web/npm/package.json``."""
    meta = json.loads(resources.files("onnxcam.web").joinpath("npm/package.json").read_text(encoding="utf-8"))
    return str(meta["dependencies"]["onnxruntime-web"])


def default_cache() -> Path:
    """``$ONNXCAM_ORT_WEB_CACHE``, else ``~/.cache/onnxcam/ort-web-<pinned version>``."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "onnxcam" / f"ort-web-{pinned_version()}"


def _dist_of(folder: Path) -> Path | None:
    """The ``dist`` folder inside what a user pointed at, or None."""
    for candidate in (
        folder,
        folder / "dist",
        folder / "onnxruntime-web" / "dist",
        folder / "node_modules" / "onnxruntime-web" / "dist",
    ):
        if all((candidate / name).is_file() for name in ORT_FILES):
            return candidate
    return None


def find_ort_web(path: str | os.PathLike[str] | None = None, *, install: bool = True) -> Path:
    """The folder holding :data:`ORT_FILES` (see the module docstring for the order); installs into the cache if
    needed and ``install`` is true. Raises :class:`OnnxcamError` saying what to do when there is none."""
    given = path if path is not None else os.environ.get(ENV_DIR) or None
    if given is not None:
        dist = _dist_of(Path(given))
        if dist is None:
            raise OnnxcamError(
                f"{given} holds no onnxruntime-web build ({', '.join(ORT_FILES)}); point --ort-web at "
                f"node_modules/onnxruntime-web/dist after 'npm install onnxruntime-web@{pinned_version()}'"
            )
        return dist
    cache = default_cache()
    dist = _dist_of(cache)
    if dist is not None:
        return dist
    if not install:
        raise OnnxcamError(f"onnxruntime-web is not installed in {cache}; run 'python -m onnxcam.web.ort_web'")
    return install_ort_web(cache)


def install_ort_web(cache: Path | None = None) -> Path:
    """``npm ci --ignore-scripts`` of the pinned onnxruntime-web into ``cache``; returns its ``dist`` folder."""
    cache = default_cache() if cache is None else Path(cache)
    npm = shutil.which("npm")
    if npm is None:
        raise OnnxcamError(
            "the browser page needs onnxruntime-web from npm, and npm is not installed: install Node.js "
            f"(with npm), or pass --ort-web DIR pointing at a copy of onnxruntime-web@{pinned_version()}'s dist folder"
        )
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        (cache / name).write_bytes(resources.files("onnxcam.web").joinpath(f"npm/{name}").read_bytes())
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(cache)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise OnnxcamError(
            f"npm ci of onnxruntime-web did not finish in {_NPM_TIMEOUT_S} s; check the network"
        ) from None
    dist = _dist_of(cache)
    if done.returncode != 0 or dist is None:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise OnnxcamError(f"could not install onnxruntime-web with npm into {cache}: {last}")
    return dist


def ort_web_version(dist: Path) -> str | None:
    """The version in the package.json above ``dist``, if there is one."""
    try:
        return str(json.loads((dist.parent / "package.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


if __name__ == "__main__":  # python -m onnxcam.web.ort_web: fill the cache (what .ci/run does before the tests)
    try:
        print(find_ort_web())
    except OnnxcamError as error:
        raise SystemExit(f"onnxcam: error: {error}") from None

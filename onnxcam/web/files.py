"""Which files of a written page may be served, with their type and headers (``onnxcam serve --client-side``).

Only the page's own file names are ever served (an allowlist, not a folder listing), so no request path can reach
another file. The headers make the page cross-origin isolated (COOP/COEP: ONNX Runtime Web may then use WebAssembly
threads) and repeat the page's Content-Security-Policy: its own files only, no network elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from onnxcam.web.bundle import CONFIG_NAME, MODEL_NAME, PAGE_FILES
from onnxcam.web.ort_web import ORT_FILES

SERVED = frozenset([*PAGE_FILES, CONFIG_NAME, MODEL_NAME, *(f"ort/{name}" for name in ORT_FILES)])
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
}
PAGE_CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self'; "
    "img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": PAGE_CSP,
    "Cache-Control": "no-cache",
}


def page_file(folder: Path, path: str) -> tuple[Path, str] | None:
    """``(file, media type)`` for a request of ``path`` ("" is the page itself) inside the page ``folder``, or
    None when ``path`` is not one of the page's files."""
    name = path or "index.html"
    if name not in SERVED:
        return None
    return folder / name, MEDIA_TYPES[Path(name).suffix]

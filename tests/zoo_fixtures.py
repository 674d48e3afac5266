"""The session fixture that builds zoo models on demand, shared by the ``tests/test_zoo_*.py`` files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_zoo.build import build
from model_zoo.zoo import CACHE_ENV


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """``zoo(name) -> (ZooEntry, path)``: builds the model (and what it reads) if the cache lacks it.

    Skips with the builder's reason when the model's framework is missing, and
    fails with the builder's error when it could not be built.
    """
    cache = Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else tmp_path_factory.mktemp("zoo")

    def get(name: str):
        entry = build(cache, only=[name], log=lambda line: print(f"[zoo] {line}"))[name]
        if entry.status == "skipped":
            pytest.skip(f"{name}: {entry.reason}")
        if entry.status != "ok":
            pytest.fail(f"{name} could not be built: {entry.reason}")
        return entry, cache / entry.file

    return get

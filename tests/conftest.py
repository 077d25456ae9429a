"""Shared fixtures. MNIST tests need the raw files (`make data` provisions them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gstutorial import data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_raw() -> Path:
    raw = data.mnist_raw_dir()
    if not raw.is_absolute():
        raw = REPO / raw
    if any(data._problem(raw / name) for name in data.MNIST_FILES):
        pytest.fail(f"MNIST raw files are not in {raw}; run `make data` first")
    return raw


@pytest.fixture
def mnist_copy(tmp_path: Path, mnist_raw: Path) -> Path:
    """A private data root holding a copy of the four raw files (safe to damage)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.MNIST_FILES:
        shutil.copyfile(mnist_raw / name, raw / name)
    return tmp_path

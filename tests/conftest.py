"""Shared fixtures. MNIST tests need the raw files (`make data` provisions them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="session")
def mnist_root(mnist_raw: Path) -> Path:
    """The data root that holds ``MNIST/raw`` (what ``--data-root`` and ``load_mnist(root=...)`` take)."""
    return mnist_raw.parent.parent


@pytest.fixture
def mnist_copy(tmp_path: Path, mnist_raw: Path) -> Path:
    """A private data root holding a copy of the four raw files (safe to damage)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.MNIST_FILES:
        shutil.copyfile(mnist_raw / name, raw / name)
    return tmp_path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for the model tests: matrices this small gain little from two, and on a
    shared 2-core machine two OpenMP threads competing with other processes run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def float64_default():
    """float64 as torch's default dtype for one test module, restored afterwards."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.fixture(autouse=True, scope="module")
def _default_dtype_is_restored():
    """Fail loudly if a test module leaves torch's global default dtype changed (it leaks into the
    modules after it: models built in float64 next to float32 data)."""
    before = torch.get_default_dtype()
    yield
    after = torch.get_default_dtype()
    assert after == before, f"torch's default dtype leaked: {before} -> {after}"


@pytest.fixture(autouse=True)
def _arithmetic_settings_are_restored():
    """Fail a test that leaves subnormals flushed (the command lines must put the caller's setting
    back) or the package's value checks off (they must be restored by their with-block)."""
    from gstutorial.checks import value_checks_enabled
    from gstutorial.runtime import subnormals_flushed

    yield
    flushed, checks = subnormals_flushed(), value_checks_enabled()
    torch.set_flush_denormal(False)
    assert not flushed, "the test left subnormals flushed to zero"
    assert checks, "the test left the package's value checks off"

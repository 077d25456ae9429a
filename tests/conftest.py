"""Shared fixtures. MNIST tests need the raw files (`make data` provisions them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
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


# --------------------------------------------------------------------------------------------------
# The package as a reader installs it (tests/test_distribution.py, tests/test_reader_path.py)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> dict[str, Path]:
    """This checkout's sdist and wheel, built once per session by ``python -m build --no-isolation``
    (the build backend from this environment: no network). Keys ``"sdist"`` and ``"wheel"``."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"python -m build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    (sdist,), (wheel,) = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture
def reader_venv(tmp_path) -> Callable[[str], Path]:
    """Make a fresh virtual environment (``reader_venv(name)`` returns its python) that sees this
    environment's installed packages (torch, ipykernel, pip: nothing is downloaded) but not gstutorial.

    ``venv --system-site-packages`` would show the base interpreter's packages, not this venv's, so
    each top-level entry of this environment's site-packages is linked into the new one instead,
    except gstutorial's (its editable install's finder and metadata) and ``__pycache__``.
    """
    own = Path(sysconfig.get_paths()["purelib"])

    def make(name: str) -> Path:
        root = tmp_path / name
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
        site = root / own.relative_to(sys.prefix)
        for entry in own.iterdir():
            if "gstutorial" not in entry.name.lower() and entry.name != "__pycache__":
                (site / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        return root / "bin" / "python"

    return make


@pytest.fixture
def reader_environ() -> dict[str, str]:
    """The environment variables of a command run as a reader: no PYTHONPATH (nothing of this
    checkout on the path), pip offline (PIP_NO_INDEX) and quiet about its version and the root user."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore")
    return env

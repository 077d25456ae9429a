"""The sdist and the wheel: they build without network (``python -m build --no-isolation``), pass
``twine check``, carry the trained weights and the recorded results, and install into a fresh
environment where ``pretrained`` loads a model with the repository nowhere on the path."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from gstutorial.resources import PRETRAINED, RECORDED_RESULTS

pytestmark = pytest.mark.slow  # builds the package and installs it into fresh environments

DATA_FILES = {*(f"gstutorial/weights/{name}.pt" for name in PRETRAINED),
              *(f"gstutorial/results/{name}.json" for name in RECORDED_RESULTS)}
#: The wheel is the weights (7.8 MiB of float16) and the results, compressed, plus the code: a wheel
#: much larger than this has picked up something it should not carry (run folders, the book, data).
WHEEL_LIMIT_MB = 10

#: Run in the fresh environment from a folder outside the repository.
LOAD = """
import pathlib, sys
import torch
import gstutorial
from gstutorial.checkpoints import pretrained
from gstutorial.resources import recorded_results

print(pathlib.Path(gstutorial.__file__).resolve())
model, meta = pretrained("jointvae-conv", device="cpu")
with torch.no_grad():
    logits = model(torch.rand(2, 784, generator=torch.Generator().manual_seed(0)), 0.67)[0]
assert logits.shape == (2, 784) and torch.isfinite(logits).all()
print(type(model).__name__, meta["history"][-1]["epoch"], recorded_results("jointvae")["cluster_accuracy_mean"])
"""


def test_twine_check_passes(dist):
    proc = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dist["sdist"]), str(dist["wheel"])],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_wheel_carries_the_weights_and_results_and_nothing_else(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
    size_mb = dist["wheel"].stat().st_size / 1e6
    print(f"\n{dist['wheel'].name}: {size_mb:.2f} MB, {len(names)} files")
    assert DATA_FILES <= names
    assert all(name.startswith(("gstutorial/", "gstutorial-")) for name in names), sorted(names)
    assert size_mb < WHEEL_LIMIT_MB


def test_the_sdist_carries_the_weights_and_results(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert DATA_FILES <= names
    assert {"pyproject.toml", "README.md", "gstutorial/__init__.py", "gstutorial/resources.py"} <= names


def _load_outside_the_repository(python: Path, cwd: Path, env: dict[str, str]) -> list[str]:
    proc = subprocess.run([str(python), "-c", LOAD], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_the_package_installs_and_loads_a_pretrained_model_outside_the_repository(
        kind, dist, reader_venv, reader_environ, tmp_path):
    python = reader_venv(f"venv-{kind}")
    # the sdist is built into a wheel by pip, with this environment's setuptools (no network)
    options = ["--no-build-isolation"] if kind == "sdist" else []
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", *options,
                    str(dist[kind])], env=reader_environ, check=True)
    elsewhere = tmp_path / "reader"
    elsewhere.mkdir()
    where, loaded = _load_outside_the_repository(python, elsewhere, reader_environ)
    assert Path(where).is_relative_to(python.parent.parent), f"gstutorial was imported from {where}"
    assert loaded.split()[:2] == ["JointVAE", "150"]

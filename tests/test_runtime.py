"""gstutorial.runtime: seeds, the device, the chapters' environment switches, subnormal flushing and
progress bars."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gstutorial.runtime import (
    REPOSITORY_MARKERS,
    chapter_settings,
    flush_subnormals,
    get_device,
    progress_disabled,
    restoring_subnormal_mode,
    set_seed,
    subnormals_flushed,
)

# --------------------------------------------------------------------------------------------------
# Seeds and the device
# --------------------------------------------------------------------------------------------------


def _draws(generator: torch.Generator) -> tuple:
    return (random.random(), np.random.rand(), torch.rand(3).tolist(),  # noqa: NPY002 - the global state set_seed seeds
            torch.rand(3, generator=generator).tolist())


def test_set_seed_seeds_python_numpy_torch_and_returns_a_generator_seeded_alike():
    first = _draws(set_seed(123))
    again = _draws(set_seed(123))
    other = _draws(set_seed(124))
    assert first == again
    assert all(a != b for a, b in zip(first, other, strict=True))
    # the returned generator is a CPU generator seeded like torch.manual_seed(123)
    gen = set_seed(123)
    assert gen.device == torch.device("cpu") and gen.initial_seed() == 123
    assert torch.rand(3, generator=gen).tolist() == first[2] == first[3]


def test_get_device_from_the_argument_the_environment_or_the_machine(monkeypatch):
    monkeypatch.delenv("GSTUTORIAL_DEVICE", raising=False)
    assert get_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert get_device("cpu") == get_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv("GSTUTORIAL_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    monkeypatch.setenv("GSTUTORIAL_DEVICE", "")          # empty: as if unset
    assert get_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_get_device_names_a_bad_request_and_where_it_came_from(monkeypatch):
    monkeypatch.delenv("GSTUTORIAL_DEVICE", raising=False)
    with pytest.raises(ValueError, match=r"unknown device 'tpu' \(from --device / device=\)"):
        get_device("tpu")
    monkeypatch.setenv("GSTUTORIAL_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"unknown device 'tpu' \(from GSTUTORIAL_DEVICE\)"):
        get_device()
    assert get_device("cpu") == torch.device("cpu")      # the argument wins over the environment


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_get_device_refuses_cuda_where_there_is_none(monkeypatch):
    monkeypatch.delenv("GSTUTORIAL_DEVICE", raising=False)
    for request in ("cuda", "cuda:1", torch.device("cuda")):
        with pytest.raises(ValueError, match=r"\(from --device / device=\) asked for CUDA.*use cpu"):
            get_device(request)
    monkeypatch.setenv("GSTUTORIAL_DEVICE", "cuda")
    with pytest.raises(ValueError, match=r"\(from GSTUTORIAL_DEVICE\) asked for CUDA"):
        get_device()


# --------------------------------------------------------------------------------------------------
# The chapters' environment switches
# --------------------------------------------------------------------------------------------------


def make_repository(root: Path) -> Path:
    """A folder that chapter_settings takes for the book's repository; return its book/ folder."""
    for marker in REPOSITORY_MARKERS:
        (root / marker).parent.mkdir(parents=True, exist_ok=True)
        (root / marker).touch()
    (root / "book").mkdir()
    return root / "book"


def test_chapter_settings_read_the_environment_from_the_repository_root(tmp_path, monkeypatch):
    book = make_repository(tmp_path / "repo")
    for name in ("GSTUTORIAL_DATA", "GSTUTORIAL_RETRAIN", "GSTUTORIAL_SMOKE_TEST"):
        monkeypatch.delenv(name, raising=False)
    assert chapter_settings(book) == (tmp_path / "repo" / "data", False, False)
    # a relative data root means the repository's folder, as when set next to `make`, not book/'s
    monkeypatch.setenv("GSTUTORIAL_DATA", "mnist")
    monkeypatch.setenv("GSTUTORIAL_RETRAIN", "1")
    settings = chapter_settings(book)
    assert settings == (tmp_path / "repo" / "mnist", True, False)
    assert (settings.data_root, settings.retrain, settings.smoke_test) == tuple(settings)
    monkeypatch.setenv("GSTUTORIAL_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GSTUTORIAL_SMOKE_TEST", " 1 ")
    assert chapter_settings(book) == (tmp_path / "elsewhere", True, True)
    monkeypatch.setenv("GSTUTORIAL_RETRAIN", "0")
    monkeypatch.setenv("GSTUTORIAL_SMOKE_TEST", "")
    assert chapter_settings(book)[1:] == (False, False)


def test_chapter_settings_default_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(make_repository(tmp_path))
    monkeypatch.delenv("GSTUTORIAL_DATA", raising=False)
    assert chapter_settings().data_root == tmp_path / "data"


def test_chapter_settings_outside_the_repository_use_the_notebook_folder(tmp_path, monkeypatch):
    """A chapter opened in Colab or downloaded on its own: its folder's parent is no repository, so
    MNIST goes to ./data (as for gstutorial.data's own default), not to a folder above the notebook."""
    alone = tmp_path / "downloads"
    alone.mkdir()
    (tmp_path / "_toc.yml").touch()  # another Jupyter Book above: not this repository (no gstutorial/)
    monkeypatch.chdir(alone)
    monkeypatch.delenv("GSTUTORIAL_DATA", raising=False)
    assert chapter_settings().data_root == alone / "data"
    monkeypatch.setenv("GSTUTORIAL_DATA", "mnist")
    assert chapter_settings().data_root == alone / "mnist"
    monkeypatch.setenv("GSTUTORIAL_DATA", str(tmp_path / "shared"))
    assert chapter_settings(alone).data_root == tmp_path / "shared"


@pytest.mark.parametrize("name", ["GSTUTORIAL_RETRAIN", "GSTUTORIAL_SMOKE_TEST"])
@pytest.mark.parametrize("value", ["yes", "true", "2", "on"])
def test_chapter_settings_refuse_a_flag_that_is_neither_0_nor_1(tmp_path, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=rf"^{name}='{value}': set it to 1"):
        chapter_settings(tmp_path)


# --------------------------------------------------------------------------------------------------
# Subnormal floats
# --------------------------------------------------------------------------------------------------


def test_flush_subnormals_turns_on_and_off_in_this_thread():
    if not flush_subnormals(True):
        pytest.skip("this CPU cannot flush subnormals")
    tiny = torch.tensor([1e-30], dtype=torch.float32)
    assert subnormals_flushed()
    assert (tiny * 1e-10).item() == 0.0          # 1e-40 is subnormal in float32: flushed
    assert (tiny * 1e-5).item() == pytest.approx(1e-35, rel=1e-6)  # a normal result is untouched
    flush_subnormals(False)
    assert not subnormals_flushed()
    assert (tiny * 1e-10).item() == pytest.approx(1e-40, rel=1e-3)


_WORKERS = """
import sys, torch
from gstutorial.runtime import flush_subnormals
torch.set_num_threads(2)
if sys.argv[1] == "late":
    (torch.ones(1_000_000) * 2).sum()       # starts PyTorch's worker threads first
supported = flush_subnormals(True)
x = torch.full((1_000_000,), 800_000, dtype=torch.int32).view(torch.float32)  # all subnormal
zeros = int(((x * 1.0) == 0).sum())          # > 32768 elements: split across both threads
print(supported, zeros)
"""


@pytest.mark.parametrize("when", ["first", "late"])
def test_flush_subnormals_reaches_worker_threads_only_when_called_first(when):
    """The documented caveat, measured: worker threads copy the setting when they start."""
    out = subprocess.run([sys.executable, "-c", _WORKERS, when], capture_output=True, text=True, check=True)
    supported, zeros = out.stdout.split()
    if supported != "True":
        pytest.skip("this CPU cannot flush subnormals")
    if when == "first":
        assert int(zeros) == 1_000_000       # every thread flushed its share
    else:
        assert 0 < int(zeros) < 1_000_000    # only the calling thread's share was flushed


def test_restoring_subnormal_mode_as_block_and_decorator():
    if not flush_subnormals(False):
        pytest.skip("this CPU cannot flush subnormals")

    @restoring_subnormal_mode()
    def flushing_then_failing():
        flush_subnormals(True)
        raise RuntimeError("inside")

    for _ in range(2):  # the decorator works on every call, and on errors
        with pytest.raises(RuntimeError):
            flushing_then_failing()
        assert not subnormals_flushed()
    flush_subnormals(True)
    with restoring_subnormal_mode():
        flush_subnormals(False)
    assert subnormals_flushed()                  # the flushed mode it found is put back too
    flush_subnormals(False)


# --------------------------------------------------------------------------------------------------
# Progress bars
# --------------------------------------------------------------------------------------------------


def test_progress_disabled_by_the_environment_or_under_pytest(monkeypatch):
    monkeypatch.delenv("GSTUTORIAL_NO_PROGRESS", raising=False)
    assert progress_disabled()                   # PYTEST_CURRENT_TEST is set while a test runs
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert not progress_disabled()
    for value, disabled in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv("GSTUTORIAL_NO_PROGRESS", value)
        assert progress_disabled() is disabled

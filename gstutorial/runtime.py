"""Where and how the code runs: seeds, the compute device, CPU subnormal flushing, progress bars, and
the environment switches of the training chapters (every chapter's first cell imports from here)."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["REPOSITORY_MARKERS", "ChapterSettings", "chapter_settings", "flush_subnormals", "get_device",
           "progress_disabled", "restoring_subnormal_mode", "set_seed", "subnormals_flushed"]


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - readers call np.random.* directly; seed its global state too
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """The compute device: ``prefer`` if given, else ``$GSTUTORIAL_DEVICE``, else CUDA when present.

    A device name torch does not know, or CUDA asked for where PyTorch sees none, raises ``ValueError``
    naming where the request came from.
    """
    source = "--device / device=" if prefer else "GSTUTORIAL_DEVICE"
    name = str(prefer) if prefer else (os.environ.get("GSTUTORIAL_DEVICE")
                                       or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (from {source}); use 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} (from {source}) asked for CUDA, but PyTorch sees no CUDA device here; "
                         "use cpu (--device cpu, or unset GSTUTORIAL_DEVICE)")
    return device


class ChapterSettings(NamedTuple):
    """What a training chapter reads from the environment (see :func:`chapter_settings`)."""

    data_root: Path
    retrain: bool
    smoke_test: bool


#: Files that mark the folder above a notebook's as the book's repository (see :func:`chapter_settings`).
REPOSITORY_MARKERS = ("_toc.yml", "gstutorial/__init__.py")


def chapter_settings(book_dir: str | os.PathLike = ".") -> ChapterSettings:
    """The environment switches of chapters 7 and 8, read once for both.

    * ``GSTUTORIAL_DATA``: the MNIST root. In the repository (``book_dir``'s parent holds
      :data:`REPOSITORY_MARKERS`), a relative path is taken from the repository root (the folder above
      ``book/``, where ``make`` runs), not from ``book/``, where the notebook's kernel runs; default:
      the repository's ``data/``. Anywhere else (a chapter opened in Colab, or downloaded on its own),
      a relative path is taken from ``book_dir``; default: ``book_dir/data``, which is ``./data``, as
      for :func:`gstutorial.data.resolve_data_root`.
    * ``GSTUTORIAL_RETRAIN=1``: train in the notebook instead of loading the committed weights.
    * ``GSTUTORIAL_SMOKE_TEST=1``: with ``GSTUTORIAL_RETRAIN=1``, train one epoch on 2,000 images.

    ``book_dir`` is the chapters' folder, the notebook's working directory by default. The flags accept
    ``1`` or ``0`` (or unset); anything else raises ``ValueError`` rather than being read as off.
    """
    book = Path(book_dir).resolve()
    in_repository = all((book.parent / marker).is_file() for marker in REPOSITORY_MARKERS)
    base = book.parent if in_repository else book  # what a relative GSTUTORIAL_DATA is relative to
    flags = {}
    for name in ("GSTUTORIAL_RETRAIN", "GSTUTORIAL_SMOKE_TEST"):
        value = os.environ.get(name, "0").strip()
        if value not in ("0", "1", ""):
            raise ValueError(f"{name}={value!r}: set it to 1 to switch it on, or 0 (or unset) for off")
        flags[name] = value == "1"
    data = Path(os.environ.get("GSTUTORIAL_DATA") or "data").expanduser()
    return ChapterSettings(data if data.is_absolute() else base / data,
                           flags["GSTUTORIAL_RETRAIN"], flags["GSTUTORIAL_SMOKE_TEST"])


def flush_subnormals(enabled: bool = True) -> bool:
    """Make CPU arithmetic treat subnormal floats (float32 below 1.2e-38 in size) as zero; return
    whether this CPU supports it.

    Long CPU trainings create subnormals: Adam's moment estimates of weights whose gradient is zero
    (the corner pixels of MNIST) decay geometrically into that range, and so do ``exp(logit)`` terms of
    pixels the decoder has learned are always off. Arithmetic on subnormals is many times slower on
    x86; flushing them changes results only below 1.2e-38 (float32) and 2.2e-308 (float64).

    Call it at the start of a process, before the first parallel PyTorch operation: PyTorch's CPU
    worker threads copy the setting when they are created, and a later call changes only the calling
    thread. The command lines of :mod:`gstutorial.cli` call it first thing (``--keep-subnormals``
    opts out) and, when run in-process, put the caller's setting back when they return.
    """
    return bool(torch.set_flush_denormal(enabled))


def subnormals_flushed() -> bool:
    """True when the calling thread treats subnormal floats as zero (see :func:`flush_subnormals`)."""
    subnormal = torch.tensor([800_000], dtype=torch.int32).view(torch.float32)  # bit pattern of 1.1e-39
    return subnormal.mul(1.0).item() == 0.0


@contextlib.contextmanager
def restoring_subnormal_mode() -> Iterator[None]:
    """Put the calling thread's subnormal mode back as it was when the block (or the decorated
    function) ends, so that code run in-process (a notebook, a test) leaves the caller's arithmetic
    as it found it."""
    before = subnormals_flushed()
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def progress_disabled() -> bool:
    """True when progress bars should stay silent (``GSTUTORIAL_NO_PROGRESS=1`` or under pytest/nbval)."""
    return os.environ.get("GSTUTORIAL_NO_PROGRESS", "") not in ("", "0") or "PYTEST_CURRENT_TEST" in os.environ

"""Small helpers every chapter uses: seeds, the compute device, atomic file writes."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["atomic_write", "check_float_tensor", "get_device", "progress_disabled", "set_seed"]


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - readers call np.random.* directly; seed its global state too
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The compute device: ``prefer`` if given, else ``$GSTUTORIAL_DEVICE``, else CUDA when present."""
    name = prefer or os.environ.get("GSTUTORIAL_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def progress_disabled() -> bool:
    """True when progress bars should stay silent (``GSTUTORIAL_NO_PROGRESS=1`` or under pytest/nbval)."""
    return os.environ.get("GSTUTORIAL_NO_PROGRESS", "") not in ("", "0") or "PYTEST_CURRENT_TEST" in os.environ


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash or interruption leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_float_tensor(t: object, name: str) -> torch.Tensor:
    """Return ``t`` if it is a finite floating-point tensor, else raise an error that names ``name``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}; wrap it with torch.tensor(...)")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}; convert it with .double()")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has NaN or infinite entries; every entry must be finite")
    return t

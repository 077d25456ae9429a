"""Small helpers every chapter uses: seeds, the compute device, subnormal flushing, the switch for
value checks, atomic file writes, a softmax over the category axis."""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import os
import random
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["ChapterSettings", "HelpFormatter", "atomic_write", "chapter_settings", "check_float_tensor", "flush_subnormals",
           "get_device", "progress_disabled", "restoring_subnormal_mode", "set_seed", "subnormals_flushed",
           "value_checks", "value_checks_enabled"]

# per thread (and per asyncio task): training in a background thread leaves other threads' checks on
_value_checks: contextvars.ContextVar[bool] = contextvars.ContextVar("gstutorial_value_checks", default=True)


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


def chapter_settings(book_dir: str | os.PathLike = ".") -> ChapterSettings:
    """The environment switches of chapters 7 and 8, read once for both.

    * ``GSTUTORIAL_DATA``: the MNIST root. A relative path is taken from the repository root (the folder
      above ``book/``, where ``make`` runs), not from ``book/``, where the notebook's kernel runs.
      Default: the repository's ``data/``.
    * ``GSTUTORIAL_RETRAIN=1``: train in the notebook instead of loading the committed weights.
    * ``GSTUTORIAL_SMOKE_TEST=1``: with ``GSTUTORIAL_RETRAIN=1``, train one epoch on 2,000 images.

    ``book_dir`` is the chapters' folder, the notebook's working directory by default. The flags accept
    ``1`` or ``0`` (or unset); anything else raises ``ValueError`` rather than being read as off.
    """
    repo = Path(book_dir).resolve().parent
    flags = {}
    for name in ("GSTUTORIAL_RETRAIN", "GSTUTORIAL_SMOKE_TEST"):
        value = os.environ.get(name, "0").strip()
        if value not in ("0", "1", ""):
            raise ValueError(f"{name}={value!r}: set it to 1 to switch it on, or 0 (or unset) for off")
        flags[name] = value == "1"
    data = Path(os.environ.get("GSTUTORIAL_DATA") or "data").expanduser()
    return ChapterSettings(data if data.is_absolute() else repo / data,
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
    thread. The command lines of :mod:`gstutorial.train` call it first thing (``--keep-subnormals``
    opts out) and, when run in-process, put the caller's setting back when they return.
    """
    return bool(torch.set_flush_denormal(enabled))


def subnormals_flushed() -> bool:
    """True when the calling thread treats subnormal floats as zero (see :func:`flush_subnormals`)."""
    subnormal = torch.tensor([800_000], dtype=torch.int32).view(torch.float32)  # bit pattern of 1.1e-39
    return subnormal.mul(1.0).item() == 0.0


def value_checks_enabled() -> bool:
    """Whether the package scans tensor values on each call (the default; see :func:`value_checks`)."""
    return _value_checks.get()


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Turn the package's scans of tensor *values* on or off inside a ``with`` block.

    By default the functions on the training path scan their inputs or result for NaN, ±inf or
    non-binary pixels and raise an error that explains the problem: the Gumbel samplers, the
    estimators' logit check, the VAE losses' pixel checks, the finiteness of the analytic KL terms'
    inputs (``kl_normal``, ``kl_normal_std``, ``kl_categorical_uniform``), data binarization and
    :func:`check_float_tensor`. Each scan reads a
    number back to Python, which on a GPU waits for the device to finish. The training engine turns
    the scans off for its steps (its batches are valid by construction) and checks the epoch's loss
    instead, like ``torch.distributions.Distribution.set_default_validate_args(False)``. Checks of
    types, shapes and arguments stay on, and so do the value checks of functions a chapter calls once
    (probability vectors, standard deviations, Concrete densities, the uniform numbers given to
    ``categorical_inverse_cdf``). The setting belongs to the calling thread.
    """
    token = _value_checks.set(bool(enabled))
    try:
        yield
    finally:
        _value_checks.reset(token)


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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that shows each option's default once: appended as ``(default: ...)`` unless the
    help already says it, and left out for flags and for options whose default is ``None``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def progress_disabled() -> bool:
    """True when progress bars should stay silent (``GSTUTORIAL_NO_PROGRESS=1`` or under pytest/nbval)."""
    return os.environ.get("GSTUTORIAL_NO_PROGRESS", "") not in ("", "0") or "PYTEST_CURRENT_TEST" in os.environ


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash or interruption leaves the old file (or none), never a half-written one. The file gets
    the permissions a plain ``open(path, "w")`` would give it: those of the file it replaces, else
    ``0o666`` less the umask (a temporary file alone would be private, ``0o600``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_float_tensor(t: object, name: str) -> torch.Tensor:
    """Return ``t`` if it is a finite floating-point tensor, else raise an error that names ``name``
    (finiteness is not scanned while :func:`value_checks` is off)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}; wrap it with torch.tensor(...)")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}; convert it with .double()")
    if _value_checks.get() and not torch.isfinite(t).all():
        raise ValueError(f"{name} has NaN or infinite entries; every entry must be finite")
    return t


def softmax_last(x: torch.Tensor, log: bool = False) -> torch.Tensor:
    """``x.softmax(-1)`` (or ``x.log_softmax(-1)`` with ``log=True``): the same values and gradient.

    PyTorch's CPU kernel vectorizes a softmax along its axis only when that axis has 16 or more
    entries; over the short category axis of these models (K = 10) it is 3-4x slower than the same
    softmax taken over the leading axis, where it vectorizes across the other entries. So on the CPU,
    with K < 16, the category axis is moved to the front first; the result is a view with the shape
    of ``x`` and agrees with ``x.softmax(-1)`` to rounding (a few ulp).
    """
    if x.device.type == "cpu" and x.ndim > 1 and x.shape[-1] < 16:
        y = x.movedim(-1, 0)
        return (y.log_softmax(0) if log else y.softmax(0)).movedim(0, -1)
    return x.log_softmax(-1) if log else x.softmax(-1)

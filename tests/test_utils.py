import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gstutorial.utils import flush_subnormals, softmax_last, subnormals_flushed


@pytest.mark.parametrize("shape", [(7, 3), (100, 20, 10), (4, 5, 15), (6, 16), (3, 2, 40), (10,)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_last_matches_torch_values_and_gradients(shape, log):
    torch.manual_seed(0)
    x = (3 * torch.randn(shape, dtype=torch.float64)).requires_grad_(True)
    weights = torch.randn(shape, dtype=torch.float64)
    ours = softmax_last(x, log=log)
    reference = x.log_softmax(-1) if log else x.softmax(-1)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, reference, rtol=1e-14, atol=1e-15)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), x)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-12, atol=1e-14)


def test_softmax_last_keeps_masked_categories_at_zero():
    x = torch.tensor([[0.0, -float("inf"), 1.0], [2.0, 2.0, -float("inf")]])
    probs = softmax_last(x)
    assert probs[0, 1].item() == 0.0 and probs[1, 2].item() == 0.0
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    assert torch.isneginf(softmax_last(x, log=True)[0, 1])


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
from gstutorial.utils import flush_subnormals
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


def test_value_checks_switch_turns_scans_off_and_restores():
    from gstutorial.catvae import check_images
    from gstutorial.gumbel import gumbel_softmax
    from gstutorial.utils import check_float_tensor, value_checks, value_checks_enabled

    grey = torch.full((2, 784), 0.5)
    nan_logits = torch.tensor([[0.0, float("nan")]])
    assert value_checks_enabled()
    with pytest.raises(ValueError, match="binarized"):
        check_images(grey, 784, binary=True)
    with pytest.raises(ValueError, match="NaN"):
        gumbel_softmax(nan_logits, 1.0)
    with value_checks(False):
        assert not value_checks_enabled()
        check_images(grey, 784, binary=True)                         # no scan of the values
        assert torch.isnan(gumbel_softmax(nan_logits, 1.0)).all()   # NaN passes through unexplained
        check_float_tensor(torch.tensor([float("inf")]), "t")
        with pytest.raises(ValueError, match=r"shape \(batch, 784\)"):
            check_images(grey[:, :10], 784)                          # shapes are still checked
        with pytest.raises(ValueError, match="temperature"):
            gumbel_softmax(torch.zeros(2, 3), 0.0)                   # and arguments
    assert value_checks_enabled()
    with pytest.raises(RuntimeError), value_checks(False):
        raise RuntimeError("an error inside the block")
    assert value_checks_enabled()                                    # restored on errors too


def test_value_checks_switch_belongs_to_the_calling_thread():
    import threading

    from gstutorial.utils import value_checks, value_checks_enabled

    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other_thread():
        inside.wait()
        seen["other"] = value_checks_enabled()
        done.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with value_checks(False):
        inside.set()
        done.wait(10)
        seen["this"] = value_checks_enabled()
    worker.join()
    assert seen == {"this": False, "other": True}


def test_restoring_subnormal_mode_as_block_and_decorator():
    from gstutorial.utils import restoring_subnormal_mode

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


def test_chapter_settings_read_the_environment_from_the_repository_root(tmp_path, monkeypatch):
    from gstutorial.utils import chapter_settings

    book = tmp_path / "repo" / "book"
    book.mkdir(parents=True)
    for name in ("GSTUTORIAL_DATA", "GSTUTORIAL_RETRAIN", "GSTUTORIAL_SMOKE_TEST"):
        monkeypatch.delenv(name, raising=False)
    assert chapter_settings(book) == (tmp_path / "repo" / "data", False, False)
    # a relative data root means the repository's folder, as when set next to `make`, not book/'s
    monkeypatch.setenv("GSTUTORIAL_DATA", "mnist")
    monkeypatch.setenv("GSTUTORIAL_RETRAIN", "1")
    assert chapter_settings(book) == (tmp_path / "repo" / "mnist", True, False)
    monkeypatch.setenv("GSTUTORIAL_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GSTUTORIAL_SMOKE_TEST", "1")
    assert chapter_settings(book) == (tmp_path / "elsewhere", True, True)
    monkeypatch.setenv("GSTUTORIAL_RETRAIN", "yes")
    with pytest.raises(ValueError, match="GSTUTORIAL_RETRAIN='yes': set it to 1"):
        chapter_settings(book)


def test_get_device_names_a_bad_request(monkeypatch):
    from gstutorial.utils import get_device

    monkeypatch.delenv("GSTUTORIAL_DEVICE", raising=False)
    assert get_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"unknown device 'tpu' \(from --device / device=\)"):
        get_device("tpu")
    monkeypatch.setenv("GSTUTORIAL_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"unknown device 'tpu' \(from GSTUTORIAL_DEVICE\)"):
        get_device()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="PyTorch sees no CUDA device here; use cpu"):
            get_device("cuda")


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    from gstutorial.utils import atomic_write

    old_umask = os.umask(0o022)
    try:
        new = atomic_write(tmp_path / "new.txt", lambda tmp: tmp.write_text("a"))
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # not mkstemp's private 0o600
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write(tmp_path / "private.txt", lambda tmp: tmp.write_text("b"))
                            .stat().st_mode) == 0o600
        new.chmod(0o640)  # a file that is replaced keeps its own permissions
        atomic_write(new, lambda tmp: tmp.write_text("c"))
        assert new.read_text() == "c" and stat.S_IMODE(new.stat().st_mode) == 0o640
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt", "private.txt"]


_CLIS = ["gstutorial.train", "gstutorial.jointvae", "gstutorial.data"] + sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("cli", _CLIS)
def test_every_command_line_option_has_help_that_states_its_default_once(cli, monkeypatch):
    """``--help`` of every command line and benchmark: no option without help, no default shown twice."""
    import argparse
    import importlib

    class Parsed(Exception):
        pass

    def grab(parser, *args, **kwargs):
        raise Parsed(parser)

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    main = getattr(importlib.import_module(cli), "main", None) or importlib.import_module(cli)._main
    with pytest.raises(Parsed) as info:
        main([]) if main.__code__.co_argcount else main()
    parsers = [info.value.args[0]]
    checked = 0
    while parsers:
        parser = parsers.pop()
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += action.choices.values()
            elif not isinstance(action, argparse._HelpAction):
                shown = formatter._expand_help(action) if action.help else ""
                assert shown.strip(), f"{cli}: {action.option_strings or action.dest} has no help"
                assert shown.count("(default") <= 1, f"{cli}: {shown!r}"
                checked += 1
    assert checked >= 1

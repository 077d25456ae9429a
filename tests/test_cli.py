"""gstutorial.cli (``python -m gstutorial catvae|jointvae``): the parsers and their defaults, ``--help``
of every command line and benchmark, error exits, runs in-process, and the entry points as a reader
starts them (``python -m ...``, the ``gstutorial`` console script)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import gstutorial.cli as cli
from gstutorial import data
from gstutorial.analysis import cluster_accuracy, predict_clusters
from gstutorial.checkpoints import load_model
from gstutorial.data import binarize_fixed, load_mnist, resize_images
from gstutorial.engine import CHECKPOINT_NAME, TrainConfig, load_checkpoint
from gstutorial.jointvae import PAPER_SETTINGS
from gstutorial.runtime import subnormals_flushed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = (CHECKPOINT_NAME, "history.json", "history.csv", "final_metrics.json")


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


@pytest.fixture
def small_test_set(monkeypatch):
    """The command line scores the first 1,000 test images instead of all 10,000 (a quicker run that
    computes the same things)."""
    real = cli.load_mnist

    def first_thousand(split, *args, **kwargs):
        x, y = real(split, *args, **kwargs)
        return (x[:1000], y[:1000]) if split == "test" else (x, y)

    monkeypatch.setattr(cli, "load_mnist", first_thousand)


# --------------------------------------------------------------------------------------------------
# Parsers and their defaults
# --------------------------------------------------------------------------------------------------

def test_catvae_defaults_are_the_engines():
    args = parse("catvae")
    defaults = TrainConfig()
    assert (args.model, args.latent, args.estimator) == ("catvae", "20x10", "gs")
    assert (args.epochs, args.batch_size, args.lr, args.tau0, args.tau_min, args.anneal_rate, args.anneal_every,
            args.seed, args.eval_every) == (defaults.epochs, defaults.batch_size, defaults.lr, defaults.tau0,
                                            defaults.tau_min, defaults.anneal_rate, defaults.anneal_every,
                                            defaults.seed, defaults.eval_every)
    assert (args.iw_samples, args.iw_examples, args.train_size, args.out, args.export) == (0, None, None, None, None)


def test_jointvae_defaults_are_the_paper_settings():
    args = parse("jointvae")
    for key, value in PAPER_SETTINGS.items():
        assert getattr(args, key) == value, key
    assert (args.architecture, args.intensities, args.cont_delay) == ("mlp", False, 0)


def test_options_are_parsed_into_their_types():
    args = parse("jointvae", "--architecture", "conv32", "--intensities", "--epochs", "3", "--lr", "1e-3",
                 "--export", "w.pt", "--export-dtype", "float32", "--fresh", "--keep-subnormals", "--quiet")
    assert (args.architecture, args.intensities, args.epochs, args.lr) == ("conv32", True, 3, 1e-3)
    assert (args.export, args.export_dtype, args.fresh, args.keep_subnormals, args.quiet) == (
        "w.pt", "float32", True, True, True)


@pytest.mark.parametrize("argv", [[], ["resnet"], ["catvae", "--estimator", "reinforce"],
                                  ["catvae", "--epochs", "2.5"], ["jointvae", "--architecture", "resnet"],
                                  ["catvae", "--export-dtype", "int8"], ["catvae", "--no-such-option"]])
def test_argument_errors_exit_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: python -m gstutorial")


# --------------------------------------------------------------------------------------------------
# --help
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "shown"), [
    ([], ["catvae categorical VAE", "jointvae Joint VAE", "resumes from OUT/checkpoint.pt"]),
    (["catvae"], ["--latent", "--estimator {gs,st}", "(default: 20x10)", "(default: 100)", "--iw-samples"]),
    (["jointvae"], ["--disc-capacity", "(default: 5.0)", "--architecture {mlp,conv,conv32}", "--intensities",
                    "(default: 0.67)"]),
])
def test_help_of_each_command_exits_0(argv, shown, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())   # argparse wraps lines at the terminal's width
    for piece in shown:
        assert piece in text, piece
    if argv:   # the options every subcommand shares
        assert "--data-root" in text and "--train-size" in text and "--keep-subnormals" in text


def test_help_formatter_states_a_default_once_and_only_when_there_is_one():
    parser = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    parser.add_argument("--size", type=int, default=3, help="a size")
    parser.add_argument("--said", default=4, help="already said (default: four)")
    parser.add_argument("--none", default=None, help="no default")
    parser.add_argument("--flag", action="store_true", help="a flag")
    text = " ".join(parser.format_help().split())
    assert "a size (default: 3)" in text and text.count("(default") == 2
    assert "already said (default: four)" in text and "no default --flag a flag" in text


_CLIS = ["gstutorial.cli", "gstutorial.data"] + sorted(p.stem for p in (REPO / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("module", _CLIS)
def test_every_command_line_option_has_help_that_states_its_default_once(module, monkeypatch):
    """``--help`` of every command line and benchmark: each option has help, no default is shown twice,
    and the help text renders."""

    class Parsed(Exception):
        pass

    def grab(parser, *args, **kwargs):
        raise Parsed(parser)

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    imported = importlib.import_module(module)
    main = getattr(imported, "main", None) or imported._main
    with pytest.raises(Parsed) as info:
        main([]) if main.__code__.co_argcount else main()
    parsers = [info.value.args[0]]
    checked = 0
    while parsers:
        parser = parsers.pop()
        assert parser.format_help()
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += action.choices.values()
            elif not isinstance(action, argparse._HelpAction):
                shown = formatter._expand_help(action) if action.help else ""
                assert shown.strip(), f"{module}: {action.option_strings or action.dest} has no help"
                assert shown.count("(default") <= 1, f"{module}: {shown!r}"
                checked += 1
    assert checked >= 1


# --------------------------------------------------------------------------------------------------
# Error exits: one line on stderr, exit status 2
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "said"), [
    (["catvae", "--latent", "20by10"], "bad latent specification '20by10'"),
    (["catvae", "--latent", "20x1"], "num_categories"),
    (["catvae", "--epochs", "-1"], "epochs"),
    (["catvae", "--batch-size", "0"], "batch_size"),
    (["catvae", "--tau-min", "2"], "tau_min"),
    (["catvae", "--iw-samples", "-1"], "--iw-samples"),
    (["catvae", "--iw-examples", "0"], "--iw-examples"),
    (["catvae", "--threads", "0"], "--threads"),
    (["jointvae", "--temperature", "0"], "--temperature"),
    (["jointvae", "--num-categories", "1"], "num_categories"),
    (["jointvae", "--cont-gamma", "0"], "cont_gamma"),
    (["catvae", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_settings_are_one_error_line_before_anything_is_written(argv, said, tmp_path, capsys):
    no_training = [] if "--epochs" in argv else ["--epochs", "0"]
    assert cli.main([*argv, *no_training, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and said in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_train_size_out_of_range_is_an_error(tmp_path, mnist_root, capsys):
    for size in ("0", "60001"):
        assert cli.main(["catvae", "--train-size", size, "--epochs", "0", "--out", str(tmp_path / "run"),
                         "--data-root", str(mnist_root), "--device", "cpu"]) == 2
        assert "--train-size must be in [1, 60000]" in capsys.readouterr().err


def test_missing_data_is_one_error_line(tmp_path, capsys, monkeypatch):
    def no_files(*args, **kwargs):  # what load_mnist raises when the files cannot be found or fetched
        raise data.MNISTDataError("MNIST files missing. " + data._FIX_HINT.format(raw=tmp_path))

    monkeypatch.setattr(cli, "load_mnist", no_files)
    status = cli.main(["catvae", "--epochs", "1", "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: MNIST files missing") and "--data-root" in err


def test_run_data_resized_to_32_pixels_binarizes_the_resized_test_set(mnist_root, small_test_set):
    args = argparse.Namespace(data_root=mnist_root, train_size=300)
    cpu = torch.device("cpu")
    train_28, test_28, labels_28 = cli._load_run_data(args, cpu, "fixed", 28)
    fixed, _ = load_mnist("test", mnist_root, binarize="fixed", seed=0)
    assert train_28.shape == (300, 784) and torch.equal(test_28, fixed[:1000])

    train_32, test_32, labels_32 = cli._load_run_data(args, cpu, "fixed", 32)
    grey = load_mnist("test", mnist_root)[0][:1000]
    assert torch.equal(train_32, resize_images(train_28, 32)) and train_32.shape == (300, 1024)
    assert torch.equal(test_32, binarize_fixed(resize_images(grey, 32), seed=0))
    assert torch.equal(labels_32, labels_28)
    _, grey_32, _ = cli._load_run_data(args, cpu, "none", 32)
    assert torch.equal(grey_32, resize_images(grey, 32))


# --------------------------------------------------------------------------------------------------
# Runs in-process
# --------------------------------------------------------------------------------------------------

def test_catvae_run_writes_its_files_exports_and_resumes(tmp_path, mnist_root, capsys, monkeypatch, small_test_set):
    out = tmp_path / "run"
    argv = ["catvae", "--latent", "4x3", "--estimator", "st", "--epochs", "1", "--train-size", "200",
            "--seed", "2", "--out", str(out), "--data-root", str(mnist_root), "--device", "cpu", "--quiet",
            "--iw-samples", "5", "--iw-examples", "20", "--export", str(tmp_path / "w.pt")]
    flushes = []
    monkeypatch.setattr(cli, "flush_subnormals", lambda: flushes.append(subnormals_flushed()))
    assert cli.main(argv) == 0
    assert flushes == [False]                 # the command line flushes subnormals before training
    printed = capsys.readouterr().out
    for name in OUTPUTS:
        assert (out / name).is_file() and str(out / name) in printed
    assert str(tmp_path / "w.pt") in printed
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["epochs"] == 1 and final["steps"] == 2 and final["temperature"] == 1.0
    assert final["iw_examples"] == 20 and final["iw_nelbo_5"] > 0
    # the final scores are those of the saved model on the fixed binarization of the test set
    model, meta = load_model(tmp_path / "w.pt", device="cpu")
    assert model.config()["estimator"] == "st" and meta["final_metrics"] == final
    assert meta["dtype"] == "float16" and meta["train_config"]["seed"] == 2
    trained, _ = load_model(out / CHECKPOINT_NAME, device="cpu")
    test_x = binarize_fixed(load_mnist("test", mnist_root)[0][:1000], seed=0)
    scores = trained.evaluate(test_x, 1.0, torch.Generator().manual_seed(TrainConfig().eval_seed))
    assert final["hard_nelbo"] == scores["hard_nelbo"] and final["relaxed_nelbo"] == scores["relaxed_nelbo"]
    # same command again: resumes (nothing left to do); a different estimator is refused
    assert cli.main([*argv, "--keep-subnormals"]) == 0
    assert flushes == [False]                 # not with --keep-subnormals
    assert json.loads((out / "final_metrics.json").read_text())["steps"] == 2
    assert cli.main([*argv[:4], "gs", *argv[5:]]) == 2
    assert "estimator: checkpoint has 'st', requested 'gs'" in capsys.readouterr().err
    # --fresh starts again from scratch, with the new estimator
    assert cli.main([*argv[:4], "gs", *argv[5:], "--fresh"]) == 0
    assert load_checkpoint(out / CHECKPOINT_NAME)["model_config"]["estimator"] == "gs"


def test_a_run_puts_the_callers_subnormal_mode_back(tmp_path, mnist_root, monkeypatch, small_test_set):
    """Run in-process (a notebook's retrain cell), the command line flushes subnormals while it
    trains and restores the caller's IEEE arithmetic afterwards."""
    seen = []
    real_train = cli.train

    def spy(*args, **kwargs):
        seen.append(subnormals_flushed())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(cli, "train", spy)
    argv = ["catvae", "--latent", "4x3", "--epochs", "1", "--train-size", "100", "--out", str(tmp_path / "r"),
            "--data-root", str(mnist_root), "--quiet"]
    assert cli.main(argv) == 0
    assert seen == [torch.set_flush_denormal(False)]  # flushed during training (where supported)
    assert not subnormals_flushed()


@pytest.mark.slow
def test_jointvae_runs_score_the_saved_model(mnist_root, tmp_path, capsys, small_test_set):
    common = ["--epochs", "1", "--train-size", "128", "--data-root", str(mnist_root), "--device", "cpu", "--quiet"]
    grey_test, labels = load_mnist("test", mnist_root)
    grey_test, labels = grey_test[:1000], labels[:1000]

    # binarized MNIST, fully connected: the reported scores are those of the saved model's argmax codes
    # on the fixed binarization of the test set
    assert cli.run(parse("jointvae", *common, "--out", str(tmp_path / "run"), "--export", str(tmp_path / "w.pt"))) == 0
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert final["test_set"].startswith("MNIST test, fixed binarization") and final["steps"] == 2
    assert np.array(final["confusion"]).sum() == 1000
    model, meta = load_model(tmp_path / "w.pt", device="cpu")
    assert meta["final_metrics"] == final
    model, _ = load_model(tmp_path / "run" / CHECKPOINT_NAME, device="cpu")
    expected = cluster_accuracy(predict_clusters(model, binarize_fixed(grey_test, seed=0)), labels, 10, 10)
    assert final["cluster_accuracy"] == final["test_cluster_acc"] == expected.accuracy >= 0.1
    assert final["mapping"] == expected.mapping.tolist() and final["confusion"] == expected.confusion.tolist()
    assert "cluster_accuracy_binarized_test" not in final

    # --intensities --architecture conv32: Dupont's network on grey levels resized to 32x32; trained and
    # scored on grey levels (the checkpoint records it), plus the score on the fixed binarization of the
    # resized test set
    assert cli.run(parse("jointvae", *common, "--out", str(tmp_path / "c32"), "--intensities",
                         "--architecture", "conv32")) == 0
    final = json.loads((tmp_path / "c32" / "final_metrics.json").read_text())
    assert final["test_set"] == ("MNIST test, intensities (load_mnist binarize='none'), resized to 32x32 "
                                 "(resize_images)")
    assert load_checkpoint(tmp_path / "c32" / CHECKPOINT_NAME)["train_config"]["binarize"] is False
    model, _ = load_model(tmp_path / "c32" / CHECKPOINT_NAME, device="cpu")
    assert model.architecture == "conv32" and model.input_dim == 1024
    grey_32 = resize_images(grey_test, 32)
    assert final["cluster_accuracy"] == cluster_accuracy(predict_clusters(model, grey_32), labels, 10, 10).accuracy
    assert final["cluster_accuracy_binarized_test"] == cluster_accuracy(
        predict_clusters(model, binarize_fixed(grey_32, seed=0)), labels, 10, 10).accuracy
    printed = capsys.readouterr().out
    assert printed.count("final test metrics (eval mode: mean + argmax): cluster accuracy=") == 2


# --------------------------------------------------------------------------------------------------
# The entry points as a reader starts them
# --------------------------------------------------------------------------------------------------

def _start(*argv: str, cwd: Path = REPO) -> subprocess.Popen:
    env = {**os.environ, "GSTUTORIAL_NO_PROGRESS": "1"}
    return subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


_SCRIPT = Path(sys.executable).parent / "gstutorial"
_STARTS = {
    "python -m gstutorial --help": [sys.executable, "-m", "gstutorial", "--help"],
    "python -m gstutorial catvae --help": [sys.executable, "-m", "gstutorial", "catvae", "--help"],
    "python -m gstutorial jointvae --help": [sys.executable, "-m", "gstutorial", "jointvae", "--help"],
    "python -m gstutorial.data --help": [sys.executable, "-m", "gstutorial.data", "--help"],
    "gstutorial --help": [str(_SCRIPT), "--help"],
}


@pytest.fixture(scope="module")
def started():
    """Every entry point above, run as many at a time as there are CPUs (each process spends seconds
    importing torch)."""
    names = [name for name in _STARTS if name != "gstutorial --help" or _SCRIPT.is_file()]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return dict(zip(names, pool.map(lambda name: _finish(_start(*_STARTS[name])), names), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "shown"), [
    ("python -m gstutorial --help", "catvae categorical VAE"),
    ("python -m gstutorial catvae --help", "--latent"),
    ("python -m gstutorial jointvae --help", "--disc-capacity"),
    ("python -m gstutorial.data --help", "--root"),
])
def test_python_m_help(started, name, shown):
    proc = started[name]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {name.removesuffix(' --help')} ")
    assert shown in " ".join(proc.stdout.split())
    assert proc.stderr == ""


@pytest.mark.slow
def test_console_script_help(started):
    if "gstutorial --help" not in started:
        pytest.skip(f"no console script at {_SCRIPT}: reinstall the package (pip install -e .) to create it")
    proc = started["gstutorial --help"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ") and "jointvae Joint VAE" in " ".join(proc.stdout.split())


@pytest.mark.slow
def test_python_m_gstutorial_trains_a_tiny_model(tmp_path, mnist_root):
    out = tmp_path / "run"
    proc = _finish(_start(sys.executable, "-m", "gstutorial", "catvae", "--epochs", "1", "--train-size", "200",
                          "--out", str(out), "--quiet", "--data-root", str(mnist_root), cwd=tmp_path))
    assert proc.returncode == 0, proc.stderr
    for name in OUTPUTS:
        assert (out / name).is_file() and str(out / name) in proc.stdout
    assert proc.stdout.startswith("final test metrics (nats, fixed binarization): ")
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["epochs"] == 1 and final["steps"] == 2 and 0 < final["hard_nelbo"] < 1000


def test_an_in_process_run_leaves_the_callers_thread_count(mnist_root, tmp_path):
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    status = cli.main(["catvae", "--epochs", "0", "--train-size", "100", "--threads", str(wanted), "--quiet",
                   "--out", str(tmp_path / "run"), "--data-root", str(mnist_root)])
    assert status == 0
    assert torch.get_num_threads() == before


def test_divergence_is_a_one_line_error(mnist_root, tmp_path, capsys):
    status = cli.main(["catvae", "--epochs", "1", "--train-size", "200", "--lr", "1e30", "--quiet",
                   "--out", str(tmp_path / "run"), "--data-root", str(mnist_root)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: training diverged") and "Traceback" not in err

"""benchmarks/bench_subnormals.py on a run it cannot continue: one sentence naming the run and the fix,
not a CalledProcessError traceback."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gstutorial.catvae import CategoricalVAE
from gstutorial.data import load_mnist
from gstutorial.engine import TrainConfig, train
from gstutorial.jointvae import JointVAE

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_subnormals.py"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("bench_subnormals", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # the benchmark starts the command line in a process of its own
def test_a_run_the_command_line_cannot_resume_is_named(bench, mnist_root, tmp_path, one_torch_thread):
    train_x, _ = load_mnist("train", mnist_root)
    run = tmp_path / "catvae-small"  # the command line's model, trained on 200 images: resuming it on
    train(CategoricalVAE(20, 10), train_x[:200], TrainConfig(epochs=1), out_dir=run, progress=False)
    results = tmp_path / "subnormals.json"  # all 60,000 is refused (another training set)
    with pytest.raises(SystemExit) as info:
        bench.main(["--run", str(run), "--rounds", "1", "--results", str(results),
                    "--data-root", str(mnist_root)])
    message = str(info.value.code)
    assert message.startswith(f"the command line could not continue {run} (exit 2): error: cannot resume")
    assert "training data" in message and "--run" in message and "--data-root" in message
    assert not results.exists()


def test_a_run_of_another_model_is_refused_before_anything_runs(bench, mnist_root, tmp_path, one_torch_thread):
    train_x, _ = load_mnist("train", mnist_root)
    run = tmp_path / "jointvae-small"
    train(JointVAE(3, 4, hidden=(16, 8)), train_x[:64], TrainConfig(epochs=1, batch_size=64), out_dir=run,
          device="cpu", progress=False)
    with pytest.raises(SystemExit, match="model 'jointvae', estimator None.*pass one with --run"):
        bench.main(["--run", str(run), "--results", str(tmp_path / "subnormals.json")])

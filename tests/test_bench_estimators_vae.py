"""benchmarks/bench_estimators_vae.py refuses bad budgets and will not overwrite chapter 9's results
with a different measurement; both are decided before anything trains."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]
_RESULTS = _REPO / "gstutorial" / "results" / "estimators_vae.json"  # the default --out, shipped


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_estimators_vae", _REPO / "benchmarks" / "bench_estimators_vae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def no_training(*args, **kwargs):
        raise AssertionError("the benchmark started training")

    monkeypatch.setattr(module, "ProcessPoolExecutor", no_training)
    return module


@pytest.mark.parametrize("option", ["--iw-samples", "--iw-examples", "--epochs", "--jobs", "--score-samples"])
def test_a_budget_below_one_is_an_argument_error(bench, option, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main([option, "0", "--out", "unused.json"])
    assert info.value.code == 2
    assert f"{option} must be at least 1, got 0" in capsys.readouterr().err


def test_the_committed_results_are_read_back_as_the_settings_that_made_them(bench):
    # the command in the module docstring: --epochs 3 --seeds 0 1 2, the other options at their defaults
    assert bench.settings_in(_RESULTS) == bench.settings(list(bench.ESTIMATORS), [0, 1, 2], 3, 4, 10, 100, 1000)


def test_a_quick_try_does_not_overwrite_results_with_other_settings(bench, tmp_path):
    out = tmp_path / "estimators_vae.json"
    shutil.copy(_RESULTS, out)
    with pytest.raises(SystemExit) as info:
        bench.main(["--epochs", "1", "--seeds", "0", "1", "--out", str(out)])
    message = str(info.value.code)
    assert "holds other settings" in message and "--replace" in message and "--out PATH" in message
    assert "('reinforce', 0, 3, 4, 1)" in message and "('reinforce', 0, 1, 4, 1)" in message
    assert "IW bound" not in message  # only what differs is named
    assert out.read_bytes() == _RESULTS.read_bytes()
    # the same settings (resuming the committed runs) or --replace go on to train
    for argv in (["--epochs", "3", "--seeds", "0", "1", "2"], ["--epochs", "1", "--replace"]):
        with pytest.raises(AssertionError, match="started training"):
            bench.main([*argv, "--out", str(out)])

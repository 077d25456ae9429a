"""The restart-selection logic of benchmarks/bench_jointvae.py, with training replaced by a stub."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_jointvae.py"


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_jointvae", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # per training seed: the objective of each epoch (falling), accuracy rising by 0.01 an epoch
    objectives = {0: [130.0, 120.0, 118.0, 117.0], 1000: [131.0, 119.0, 116.0, 115.0],
                  2000: [129.0, 121.0, 119.5, 119.0]}
    accuracy = {0: 0.6, 1000: 0.7, 2000: 0.8}
    calls = []

    def train_one(seed, epochs, out, extra):
        calls.append((seed, epochs, out.name))
        history = [{"epoch": e + 1, "loss": objectives[seed][e], "test_cluster_acc": accuracy[seed] - 0.01 * (4 - e),
                    "elapsed_s": 10.0 * (e + 1)} for e in range(epochs)]
        return {"seed": seed, "epochs": epochs, "cluster_accuracy": history[-1]["test_cluster_acc"],
                "final_train_loss": history[-1]["loss"], "train_wall_s": history[-1]["elapsed_s"],
                "test_recon": 100.0, "command": f"seed {seed}", "history": history}

    monkeypatch.setattr(module, "train_one", train_one)
    return module, calls


def test_restarts_keep_lowest_final_objective(bench):
    module, calls = bench
    row = module.run_seed(0, 4, "runs", "x", [], restarts=3)
    assert row["selected_restart"] == 1 and row["cluster_accuracy"] == pytest.approx(0.69)
    assert [c[1] for c in calls] == [4, 4, 4]
    assert calls[1][2] == "jointvae-x-seed0-restart1"
    assert row["train_wall_s"] == 120.0


def test_select_at_compares_that_epoch_and_trains_only_the_kept_run_on(bench):
    module, calls = bench
    # at epoch 2 the objectives are 120, 119, 121: training seed 1000 is kept
    row = module.run_seed(0, 4, "runs", "x", [], restarts=3, select_at=2)
    assert row["selected_restart"] == 1 and row["epochs"] == 4
    assert [(c[0], c[1]) for c in calls] == [(0, 2), (1000, 2), (2000, 2), (1000, 4)]
    assert [c["select_train_loss"] for c in row["restarts"]] == [120.0, 119.0, 121.0]
    assert row["restarts"][1]["epochs"] == 4 and row["restarts"][0]["epochs"] == 2
    # the kept run's whole training plus epoch 2 of the two others
    assert row["train_wall_s"] == 40.0 + 20.0 + 20.0
    # at epoch 1 training seed 2000 has the lowest objective
    calls.clear()
    assert module.run_seed(0, 4, "runs", "x", [], restarts=3, select_at=1)["selected_restart"] == 2

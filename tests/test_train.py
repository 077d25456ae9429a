"""Chapter 7's training engine: temperature schedule, checkpoints, resume, errors, a short real run."""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest
import torch

from gstutorial.catvae import ALL_ESTIMATORS, CategoricalVAE
from gstutorial.data import binarize_fixed, load_mnist, resize_images
from gstutorial.jointvae import JointVAE
from gstutorial.train import (
    CheckpointMismatchError,
    TrainConfig,
    export_weights,
    load_checkpoint,
    load_model,
    load_run_data,
    main,
    temperature_at,
    train,
)
from gstutorial.utils import get_device, subnormals_flushed

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TRAINING_METRICS = ("epoch", "step", "temperature", "loss", "recon", "kl")


@pytest.fixture(scope="module")
def mnist(mnist_raw):
    train_x, _ = load_mnist("train", mnist_raw.parent.parent)
    test_x, _ = load_mnist("test", mnist_raw.parent.parent, binarize="fixed", seed=0)
    return train_x[:3000], test_x[:500]


def small_model(estimator: str = "gs", seed: int = 0) -> CategoricalVAE:
    torch.manual_seed(seed)
    return CategoricalVAE(8, 4, estimator=estimator, hidden=(64, 32))


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------
# Temperature schedule
# --------------------------------------------------------------------------------------------------

def test_temperature_schedule_values():
    # tau_t = max(0.5, exp(-1e-4 · t)), refreshed every 1000 steps (t = last multiple of 1000)
    assert temperature_at(0) == 1.0
    assert temperature_at(999) == 1.0
    assert temperature_at(1000) == pytest.approx(math.exp(-0.1)) == pytest.approx(0.904837418)
    assert temperature_at(1999) == temperature_at(1000)
    assert temperature_at(6999) == pytest.approx(math.exp(-0.6)) == pytest.approx(0.548811636)
    assert temperature_at(7000) == 0.5          # exp(-0.7) = 0.4966 is below the floor
    assert temperature_at(10**7) == 0.5
    assert temperature_at(1500, tau0=2.0, tau_min=0.1, rate=1e-5, every=500) == pytest.approx(2 * math.exp(-0.015))
    assert temperature_at(123, tau0=0.67, tau_min=0.67, rate=0.0) == 0.67  # fixed temperature


def test_temperature_follows_the_global_step_not_the_epoch():
    # 100 epochs of 600 steps: the schedule reaches the floor (the per-epoch reset of the widely
    # copied code stays near 0.96 forever)
    config = TrainConfig()
    taus = [config.temperature(600 * epoch) for epoch in range(100)]
    assert taus == sorted(taus, reverse=True) and taus[0] == 1.0 and taus[-1] == 0.5
    assert config.temperature(600 * 12) == 0.5


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="step"):
        temperature_at(-1)
    with pytest.raises(ValueError, match="every"):
        temperature_at(10, every=0)
    with pytest.raises(ValueError, match="tau0"):
        temperature_at(10, tau0=0.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"),
    ({"epochs": -1}, "epochs"),
    ({"lr": -1e-3}, "lr"),
    ({"tau0": 0.0}, "tau0"),
    ({"tau_min": 2.0}, "tau_min .* must not exceed tau0"),
    ({"anneal_rate": -1.0}, "anneal_rate"),
    ({"anneal_every": 0}, "anneal_every"),
    ({"binarize": "yes"}, "binarize must be True or False"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": -1}, r"seed must be a non-negative int, got -1"),
    ({"seed": 1.5}, r"seed must be a non-negative int, got 1\.5"),
    ({"seed": True}, r"seed must be a non-negative int, got True"),
    ({"seed": "0"}, r"seed must be a non-negative int, got '0'"),
    ({"eval_seed": -3}, r"eval_seed must be a non-negative int, got -3"),
    ({"eval_seed": False}, r"eval_seed must be a non-negative int, got False"),
    ({"lr": True}, r"lr must be a finite number > 0, got True"),
    ({"tau0": True, "tau_min": 0.5}, r"tau0 must be a finite number > 0, got True"),
    ({"tau_min": True}, r"tau_min must be a finite number > 0, got True"),
    ({"anneal_rate": False}, r"anneal_rate must be a finite number >= 0, got False"),
])
def test_bad_seeds_and_bools_for_numbers_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_valid_seeds_and_numbers_are_kept():
    config = TrainConfig(seed=0, eval_seed=2**40, lr=1, tau0=2, tau_min=0.5, anneal_rate=0)
    assert (config.seed, config.eval_seed, config.lr, config.tau0, config.anneal_rate) == (0, 2**40, 1, 2, 0)


# --------------------------------------------------------------------------------------------------
# Engine: outputs, checkpoints, resume
# --------------------------------------------------------------------------------------------------

def test_outputs_history_and_checkpoint(tmp_path, mnist):
    train_x, test_x = mnist
    config = TrainConfig(epochs=2, batch_size=100, seed=3)
    result = train(small_model(), train_x[:400], config, test_x=test_x[:200], out_dir=tmp_path, progress=False)
    assert result.epoch == 2 and result.step == 8 and len(result.history) == 2
    row = result.history[-1]
    assert {*TRAINING_METRICS, "test_relaxed_nelbo", "test_hard_nelbo", "epoch_s", "elapsed_s"} <= set(row)
    assert row["step"] == 8 and row["temperature"] == 1.0
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["history"] == result.history
    assert saved["model_config"]["latent_dim"] == 8 and saved["train_config"]["seed"] == 3
    with open(tmp_path / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and float(rows[1]["loss"]) == pytest.approx(row["loss"])
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 8 and state["epoch"] == 2 and state["model_config"] == result.model.config()
    assert not list(tmp_path.glob(".*.part"))  # atomic writes leave no temporary files behind


def test_checkpoint_round_trip(tmp_path, mnist):
    train_x, _ = mnist
    result = train(small_model(), train_x[:300], TrainConfig(epochs=1), out_dir=tmp_path, progress=False)
    device = next(result.model.parameters()).device  # CUDA when present: compare where training ran
    model, meta = load_model(tmp_path / "checkpoint.pt", device=device)
    assert same_state(model.state_dict(), result.model.state_dict())
    assert meta["step"] == 3 and meta["train_config"]["epochs"] == 1
    export_weights(result.model, tmp_path / "w16.pt", history=result.history)
    half, meta16 = load_model(tmp_path / "w16.pt", device=device)
    assert meta16["dtype"] == "float16" and meta16["history"] == result.history
    for k, v in result.model.state_dict().items():
        torch.testing.assert_close(half.state_dict()[k], v, atol=1e-3, rtol=1e-3)
    # weights only, in half precision: under a quarter of the checkpoint (weights + two Adam moments)
    assert (tmp_path / "w16.pt").stat().st_size < 0.25 * (tmp_path / "checkpoint.pt").stat().st_size


def test_resume_is_bit_identical(tmp_path, mnist):
    train_x, test_x = mnist
    data, config = train_x[:500], TrainConfig(epochs=3, batch_size=100, seed=7, anneal_every=4, anneal_rate=0.05)
    straight = train(small_model(), data, config, test_x=test_x[:100], out_dir=tmp_path / "a", progress=False)

    class Interrupted(CategoricalVAE):
        """Raises KeyboardInterrupt in the middle of epoch 2 (global step 7)."""

        def loss(self, x, temperature, generator=None, step=0):
            if step == 7:
                raise KeyboardInterrupt
            return super().loss(x, temperature, generator, step)

    torch.manual_seed(0)
    victim = Interrupted(8, 4, hidden=(64, 32))
    with pytest.raises(KeyboardInterrupt):
        train(victim, data, config, test_x=test_x[:100], out_dir=tmp_path / "b", progress=False)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    fresh = small_model(seed=123)  # different initial weights: everything must come from the checkpoint
    resumed = train(fresh, data, config, test_x=test_x[:100], out_dir=tmp_path / "b", progress=False)
    assert resumed.resumed_from_epoch == 1
    assert same_state(resumed.model.state_dict(), straight.model.state_dict())
    keep = [*TRAINING_METRICS, "test_relaxed_nelbo", "test_hard_nelbo"]
    assert [{k: r[k] for k in keep} for r in resumed.history] == [{k: r[k] for k in keep} for r in straight.history]
    # the temperature really changed across the interruption (schedule on the global step)
    assert resumed.history[0]["temperature"] > resumed.history[2]["temperature"]
    # extending a finished run trains further from where it stopped
    longer = train(small_model(), data, TrainConfig(**{**config.__dict__, "epochs": 4}),
                   out_dir=tmp_path / "b", progress=False)
    assert longer.resumed_from_epoch == 3 and longer.step == 20


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_named_before_anything_is_written(tmp_path, mnist):
    train_x, _ = mnist
    with pytest.raises(ValueError, match=r"device 'cuda' \(from --device / device=\) asked for CUDA.*use cpu"):
        train(small_model(), train_x[:200], TrainConfig(epochs=1), out_dir=tmp_path / "run", device="cuda",
              progress=False)
    assert not (tmp_path / "run").exists()
    path = export_weights(small_model(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="PyTorch sees no CUDA device here"):
        load_model(path, device=torch.device("cuda"))


def test_mismatched_checkpoint_is_refused(tmp_path, mnist):
    train_x, _ = mnist
    data = train_x[:200]
    train(small_model("gs"), data, TrainConfig(epochs=1), out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointMismatchError, match="estimator: checkpoint has 'gs', requested 'st'"):
        train(small_model("st"), data, TrainConfig(epochs=2), out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointMismatchError, match="latent_dim"):
        train(CategoricalVAE(20, 10), data, TrainConfig(epochs=2), out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointMismatchError, match="lr: checkpoint has 0.001, requested 0.01"):
        train(small_model(), data, TrainConfig(epochs=2, lr=1e-2), out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointMismatchError, match="training data"):
        train(small_model(), train_x[200:400], TrainConfig(epochs=2), out_dir=tmp_path, progress=False)
    # another kind of model: said in one sentence, not as a list of every option the two do not share
    with pytest.raises(CheckpointMismatchError) as info:
        train(JointVAE(3, 4, hidden=(16, 8)), data, TrainConfig(epochs=2), out_dir=tmp_path, progress=False)
    assert "it holds a 'catvae' model, not a 'jointvae' one" in str(info.value) and "checkpoint has" not in str(info.value)
    # a run trained on another kind of device: its saved random-number states cannot drive this one
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    other = "cpu" if get_device().type != "cpu" else "cuda:0"
    torch.save({**state, "device": other}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointMismatchError, match=rf"device: checkpoint was trained on '{other}'.*--device"):
        train(small_model(), data, TrainConfig(epochs=2), out_dir=tmp_path, progress=False)
    # resume=False starts afresh and overwrites
    fresh = train(small_model("st"), data, TrainConfig(epochs=1), out_dir=tmp_path, resume=False, progress=False)
    assert fresh.resumed_from_epoch == 0 and load_checkpoint(tmp_path / "checkpoint.pt")["model_config"]["estimator"] == "st"


def test_bad_engine_arguments(tmp_path, mnist):
    train_x, _ = mnist
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train(small_model(), train_x[:100] * 255, TrainConfig(epochs=1), progress=False)
    with_nan = train_x[:100].clone()
    with_nan[3, 5] = float("nan")
    with pytest.raises(ValueError, match="without NaN"):
        train(small_model(), with_nan, TrainConfig(epochs=1), progress=False)
    with pytest.raises(TypeError, match="TrainConfig"):
        train(small_model(), train_x[:100], {"epochs": 1}, progress=False)
    with pytest.raises(TypeError, match="loss"):
        train(torch.nn.Linear(784, 10), train_x[:100], TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="not a gstutorial training checkpoint"):
        torch.save({"weights": 1}, tmp_path / "other.pt")
        load_checkpoint(tmp_path / "other.pt")


class _NanGradient(torch.autograd.Function):
    """Zero forward, NaN gradient: a finite loss whose optimizer step makes the weight NaN."""

    @staticmethod
    def forward(ctx, w):
        return w * 0

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


class _DivergesInEpoch2(torch.nn.Module):
    """A stand-in model that breaks in epoch 2 (two steps per epoch): either its loss turns NaN from
    step 3 on, or, with ``via_gradient``, the loss stays finite and step 4 makes the weight NaN."""

    def __init__(self, via_gradient: bool = False) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.via_gradient = via_gradient

    def config(self) -> dict:
        return {"model": "diverges"}

    def loss(self, x, temperature, generator=None, step=0):
        if self.via_gradient:
            return {"loss": self.w * x.mean() + (_NanGradient.apply(self.w) if step == 3 else 0.0)}
        return {"loss": self.w * x.mean() + (float("nan") if step >= 2 else 0.0)}


@pytest.mark.parametrize("via_gradient", [False, True])
def test_divergence_is_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, mnist, via_gradient):
    train_x, _ = mnist
    what = "after epoch 2 some weights are NaN" if via_gradient else "the mean loss of epoch 2 is nan"
    with pytest.raises(FloatingPointError, match=rf"diverged: {what}.* \(steps 3-4\)") as exc:
        train(_DivergesInEpoch2(via_gradient), train_x[:200], TrainConfig(epochs=3), out_dir=tmp_path,
              progress=False)
    assert "still holds epoch 1" in str(exc.value) and "smaller learning rate (lr=0.001 now)" in str(exc.value)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and math.isfinite(state["history"][-1]["loss"])
    assert torch.isfinite(state["model_state"]["w"])


def _engine_model(name: str) -> torch.nn.Module:
    if name == "jointvae":
        torch.manual_seed(0)
        return JointVAE(continuous_dim=3, num_categories=4)
    torch.manual_seed(0)
    return CategoricalVAE(8, 4, estimator=name, hidden=(64, 32), num_samples=2 if name == "reinforce_loo" else 1)


@pytest.mark.parametrize("name", [*ALL_ESTIMATORS, "jointvae"])
def test_engine_steps_never_read_values_back(mnist, name):
    """No per-step host synchronisation, for every estimator and for the Joint VAE: no value is read
    back (``.item()``, ``bool(tensor)``) and no Python number is copied into a tensor inside a step;
    only a constant number of reads happen per call (data checks, fingerprint, epoch totals)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counted = {"_local_scalar_dense": 0, "lift_fresh": 0}

    class CountHostTraffic(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in counted:
                counted[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    train_x, _ = mnist
    totals = []
    for steps in (2, 6):
        counted.update(dict.fromkeys(counted, 0))
        model = _engine_model(name)
        config = TrainConfig(epochs=1, batch_size=50) if name != "jointvae" else None
        if config is None:
            from gstutorial.jointvae import default_train_config

            config = default_train_config(epochs=1, batch_size=50)
        with CountHostTraffic():
            train(model, train_x[:50 * steps], config, progress=False)
        totals.append(dict(counted))
    assert totals[0] == totals[1], f"host traffic grows with the number of steps: {totals}"
    assert totals[0]["_local_scalar_dense"] <= 4


class Recorder(CategoricalVAE):
    """Keeps every batch its loss sees."""

    def loss(self, x, temperature, generator=None, step=0):
        self.seen.append(x.clone())
        return super().loss(x, temperature, generator, step)


def test_binarize_false_trains_on_the_intensities_themselves(tmp_path, mnist):
    train_x, _ = mnist
    data = train_x[:200]

    def batches(binarize: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = Recorder(8, 4, hidden=(64, 32))
        model.seen = []
        # (the engine turns value checks off, so CategoricalVAE's loss lets grey levels through here)
        train(model, data, TrainConfig(epochs=1, seed=5, binarize=binarize), progress=False)
        return torch.cat(model.seen)

    grey, binary = batches(False), batches(True)
    # the same permutation of the same rows: grey levels as stored, and their binarization
    assert grey.shape == binary.shape == data.shape
    assert sorted(map(tuple, grey.tolist())) == sorted(map(tuple, data.tolist()))
    assert ((grey > 0) & (grey < 1)).any() and set(binary.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(binary[grey == 0], torch.zeros_like(binary[grey == 0]))
    assert torch.equal(binary[grey == 1], torch.ones_like(binary[grey == 1]))


def test_run_data_resized_to_32_pixels_binarizes_the_resized_test_set(mnist_raw):
    args = argparse.Namespace(data_root=mnist_raw.parent.parent, train_size=300)
    train_28, test_28, labels_28 = load_run_data(args, torch.device("cpu"))
    fixed, _ = load_mnist("test", mnist_raw.parent.parent, binarize="fixed", seed=0)
    assert train_28.shape == (300, 784) and torch.equal(test_28, fixed)

    train_32, test_32, labels_32 = load_run_data(args, torch.device("cpu"), image_size=32)
    grey, _ = load_mnist("test", mnist_raw.parent.parent)
    assert torch.equal(train_32, resize_images(train_28, 32)) and train_32.shape == (300, 1024)
    assert torch.equal(test_32, binarize_fixed(resize_images(grey, 32), seed=0))
    assert torch.equal(labels_32, labels_28)
    _, grey_32, _ = load_run_data(args, torch.device("cpu"), test_binarize="none", image_size=32)
    assert torch.equal(grey_32, resize_images(grey, 32))
    for size in (28, 32):
        with pytest.raises(ValueError, match="test_binarize must be 'none' or 'fixed'"):
            load_run_data(args, torch.device("cpu"), test_binarize="dynamic", image_size=size)


def test_binarize_is_part_of_the_checkpoint_and_older_checkpoints_default_to_true(tmp_path, mnist):
    train_x, _ = mnist
    data = train_x[:200]
    train(small_model(), data, TrainConfig(epochs=1), out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointMismatchError, match="binarize: checkpoint has True, requested False"):
        train(small_model(), data, TrainConfig(epochs=2, binarize=False), out_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del state["train_config"]["binarize"]               # the configuration as older code wrote it
    torch.save(state, tmp_path / "checkpoint.pt")
    assert train(small_model(), data, TrainConfig(epochs=2), out_dir=tmp_path, progress=False).step == 4
    with pytest.raises(CheckpointMismatchError, match="binarize: checkpoint has True, requested False"):
        train(small_model(), data, TrainConfig(epochs=3, binarize=False), out_dir=tmp_path, progress=False)


def test_binarization_is_a_bernoulli_draw_of_the_intensities():
    from gstutorial.train import _binarize

    x = torch.tensor([0.0, 1.0, 0.25, 0.9]).repeat(20_000, 1)
    b = _binarize(x, torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) == {0.0, 1.0}
    freq = b.mean(0)
    assert freq[0] == 0.0 and freq[1] == 1.0
    torch.testing.assert_close(freq[2:], torch.tensor([0.25, 0.9]), atol=0.01, rtol=0)  # ~5 sigma


# --------------------------------------------------------------------------------------------------
# A short real training run and the command line
# --------------------------------------------------------------------------------------------------

def test_short_training_run_lowers_the_loss(mnist):
    train_x, test_x = mnist
    torch.manual_seed(0)
    model = CategoricalVAE(20, 10)
    untrained = model.evaluate(test_x, 1.0, torch.Generator().manual_seed(0))
    config = TrainConfig(epochs=8, batch_size=100, seed=0, eval_every=8)   # 240 steps
    result = train(model, train_x, config, test_x=test_x, progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[0] > losses[-1] + 40 and losses[-1] < 200  # about 315 -> 192 nats
    assert result.history[-1]["test_hard_nelbo"] < untrained["hard_nelbo"] - 200
    assert result.history[-1]["test_hard_nelbo"] < 215


def test_command_line(tmp_path, mnist_raw, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["catvae", "--latent", "4x3", "--estimator", "st", "--epochs", "1", "--train-size", "200",
            "--seed", "2", "--out", str(out), "--data-root", str(mnist_raw.parent.parent), "--quiet",
            "--iw-samples", "5", "--iw-examples", "20", "--export", str(tmp_path / "w.pt")]
    flushes = []
    monkeypatch.setattr("gstutorial.train.flush_subnormals", lambda: flushes.append(subnormals_flushed()))
    assert main(argv) == 0
    assert flushes == [False]                 # the command line flushes subnormals before training
    printed = capsys.readouterr().out
    assert str(out / "checkpoint.pt") in printed and str(tmp_path / "w.pt") in printed
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["steps"] == 2 and final["iw_examples"] == 20 and final["iw_nelbo_5"] > 0
    model, meta = load_model(tmp_path / "w.pt", device="cpu")
    assert model.config()["estimator"] == "st" and meta["final_metrics"] == final
    # same command again: resumes (nothing left to do); a different estimator is refused
    assert main([*argv, "--keep-subnormals"]) == 0
    assert flushes == [False]                 # not with --keep-subnormals
    assert main([*argv[:4], "gs", *argv[5:]]) == 2
    assert "estimator: checkpoint has 'st', requested 'gs'" in capsys.readouterr().err


def test_command_line_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["catvae", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--estimator" in text and "--latent" in text and "default: 20x10" in text
    assert main(["catvae", "--latent", "20by10", "--epochs", "0"]) == 2
    assert "bad latent specification" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["catvae", "--estimator", "reinforce"])


def test_command_line_puts_the_callers_subnormal_mode_back(tmp_path, mnist_raw):
    """Run in-process (a notebook's retrain cell), the command line flushes subnormals while it
    trains and restores the caller's IEEE arithmetic afterwards."""
    seen = []
    real_train = train

    def spy(*args, **kwargs):
        seen.append(subnormals_flushed())
        return real_train(*args, **kwargs)

    argv = ["catvae", "--latent", "4x3", "--epochs", "1", "--train-size", "100", "--out", str(tmp_path / "r"),
            "--data-root", str(mnist_raw.parent.parent), "--quiet"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("gstutorial.train.train", spy)
        assert main(argv) == 0
    assert seen == [torch.set_flush_denormal(False)]  # flushed during training (where supported)
    assert not subnormals_flushed()


def test_history_records_where_each_epoch_trained(tmp_path, mnist):
    # benchmarks that score a run later (another process, maybe another thread count) read these fields
    train_x, _ = mnist
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(small_model(), train_x[:200], TrainConfig(epochs=2), out_dir=tmp_path, device="cpu",
                       progress=False)
    finally:
        torch.set_num_threads(previous)
    assert [(row["device"], row["threads"]) for row in result.history] == [("cpu", 1), ("cpu", 1)]
    saved = json.loads((tmp_path / "history.json").read_text())["history"]
    assert saved[-1]["device"] == "cpu" and saved[-1]["threads"] == 1


def test_command_line_reports_missing_data_and_bad_devices_as_one_line(tmp_path, capsys, monkeypatch):
    import gstutorial.train as engine
    from gstutorial import data

    status = engine.main(["catvae", "--epochs", "1", "--out", str(tmp_path / "run"), "--device", "tpu"])
    assert status == 2 and "error: unknown device 'tpu'" in capsys.readouterr().err

    def no_files(*args, **kwargs):  # what load_mnist raises when the files cannot be found or fetched
        raise data.MNISTDataError("MNIST files missing. " + data._FIX_HINT.format(raw=tmp_path))

    monkeypatch.setattr(engine, "load_mnist", no_files)
    status = engine.main(["catvae", "--epochs", "1", "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: MNIST files missing") and "--data-root" in err

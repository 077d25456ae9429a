"""gstutorial.engine: the training configuration, the temperature schedule, the training loop, its
checkpoints (written after every epoch, read with weights_only=True), resuming bit for bit, refusing
a checkpoint of another configuration, and divergence."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import pickle

import numpy as np
import pytest
import torch

from gstutorial.catvae import ALL_ESTIMATORS, CategoricalVAE
from gstutorial.data import load_mnist
from gstutorial.engine import (
    CHECKPOINT_NAME,
    CheckpointMismatchError,
    TrainableModel,
    TrainConfig,
    load_checkpoint,
    make_optimizer,
    temperature_at,
    train,
)
from gstutorial.jointvae import JointVAE, default_train_config
from gstutorial.runtime import get_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAINING_METRICS = ("epoch", "step", "temperature", "loss", "recon", "kl")


@pytest.fixture(scope="module")
def mnist(mnist_root):
    train_x, _ = load_mnist("train", mnist_root)
    test_x, _ = load_mnist("test", mnist_root, binarize="fixed", seed=0)
    return train_x[:3000], test_x[:500]


def small_model(estimator: str = "gs", seed: int = 0) -> CategoricalVAE:
    torch.manual_seed(seed)
    return CategoricalVAE(8, 4, estimator=estimator, hidden=(64, 32))


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------
# TrainConfig
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "name"), [
    ({"epochs": 2.5}, "epochs"), ({"epochs": True}, "epochs"), ({"epochs": "3"}, "epochs"),
    ({"batch_size": 100.0}, "batch_size"), ({"anneal_every": "1000"}, "anneal_every"),
    ({"eval_every": None}, "eval_every"), ({"seed": 1.5}, "seed"), ({"seed": True}, "seed"),
    ({"seed": "0"}, "seed"), ({"eval_seed": False}, "eval_seed"), ({"lr": True}, "lr"),
    ({"lr": "0.001"}, "lr"), ({"tau0": True}, "tau0"), ({"tau_min": None}, "tau_min"),
    ({"anneal_rate": False}, "anneal_rate"), ({"binarize": "yes"}, "binarize"), ({"binarize": 1}, "binarize"),
])
def test_config_refuses_wrong_types(kwargs, name):
    with pytest.raises(TypeError, match=rf"^{name} must be"):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"anneal_every": 0}, "anneal_every"),
    ({"eval_every": 0}, "eval_every"), ({"seed": -1}, "seed"), ({"eval_seed": -3}, "eval_seed"),
    ({"lr": -1e-3}, "lr"), ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"lr": float("inf")}, "lr"),
    ({"tau0": 0.0}, "tau0"), ({"tau_min": -0.5}, "tau_min"), ({"anneal_rate": -1.0}, "anneal_rate"),
    ({"tau_min": 2.0}, "tau_min"),           # above tau0 = 1
])
def test_config_refuses_wrong_values(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}"):
        TrainConfig(**kwargs)


def test_config_keeps_valid_numbers_as_plain_python_numbers():
    config = TrainConfig(epochs=np.int64(3), batch_size=np.int32(50), seed=np.uint8(2), eval_seed=2**40,
                         lr=np.float32(0.5), tau0=2, tau_min=np.float64(0.5), anneal_rate=0, anneal_every=np.int16(7))
    assert dataclasses.asdict(config) == {
        "epochs": 3, "batch_size": 50, "lr": 0.5, "tau0": 2.0, "tau_min": 0.5, "anneal_rate": 0.0,
        "anneal_every": 7, "seed": 2, "eval_every": 1, "eval_seed": 2**40, "binarize": True}
    types = {k: type(v) for k, v in dataclasses.asdict(config).items()}
    assert set(types.values()) == {int, float, bool}   # what history.json and checkpoints store
    json.dumps(dataclasses.asdict(config))
    assert TrainConfig(epochs=0).epochs == 0            # evaluate (or export) without training
    assert TrainConfig(tau0=0.5, tau_min=0.5).temperature(10**6) == 0.5


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
    assert temperature_at(np.int64(1000)) == temperature_at(1000)


def test_temperature_follows_the_global_step_not_the_epoch():
    # 100 epochs of 600 steps: the schedule reaches the floor (the per-epoch reset of the widely
    # copied code stays near 0.96 forever)
    config = TrainConfig()
    taus = [config.temperature(600 * epoch) for epoch in range(100)]
    assert taus == sorted(taus, reverse=True) and taus[0] == 1.0 and taus[-1] == 0.5
    assert config.temperature(600 * 12) == 0.5
    custom = TrainConfig(tau0=2.0, tau_min=0.1, anneal_rate=1e-5, anneal_every=500)
    assert custom.temperature(1500) == temperature_at(1500, 2.0, 0.1, 1e-5, 500)


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"step": -1}, ValueError, "step"), ({"step": 1.5}, TypeError, "step"), ({"step": True}, TypeError, "step"),
    ({"every": 0}, ValueError, "every"), ({"every": 10.0}, TypeError, "every"),
    ({"tau0": 0.0}, ValueError, "tau0"), ({"tau_min": float("nan")}, ValueError, "tau_min"),
    ({"rate": -1e-4}, ValueError, "rate"), ({"rate": "1e-4"}, TypeError, "rate"),
])
def test_schedule_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=rf"^{name}"):
        temperature_at(**{"step": 10, **kwargs})


# --------------------------------------------------------------------------------------------------
# The loop: outputs, evaluation, history
# --------------------------------------------------------------------------------------------------

def test_outputs_history_and_checkpoint(tmp_path, mnist):
    train_x, test_x = mnist
    config = TrainConfig(epochs=3, batch_size=100, seed=3, eval_every=2)
    lines = []
    result = train(small_model(), train_x[:400], config, test_x=test_x[:200], out_dir=tmp_path, device="cpu",
                   progress=False, log=lines.append)
    assert result.epoch == 3 and result.step == 12 and len(result.history) == 3
    assert result.out_dir == tmp_path and result.resumed_from_epoch == 0 and not result.model.training
    row = result.history[-1]
    assert {*TRAINING_METRICS, "test_relaxed_nelbo", "test_hard_nelbo", "epoch_s", "elapsed_s"} <= set(row)
    assert row["step"] == 12 and row["temperature"] == 1.0
    # evaluated every eval_every epochs and after the last one
    assert ["test_hard_nelbo" in r for r in result.history] == [False, True, True]
    assert len(lines) == 3 and lines[0].startswith("epoch=1  step=4  temperature=1.0000  loss=")
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["history"] == result.history
    assert saved["model_config"] == result.model.config() and saved["train_config"] == dataclasses.asdict(config)
    with open(tmp_path / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and float(rows[2]["loss"]) == pytest.approx(row["loss"])
    assert rows[0]["test_hard_nelbo"] == "" and float(rows[1]["test_hard_nelbo"]) == result.history[1]["test_hard_nelbo"]
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["step"] == 12 and state["epoch"] == 3 and state["model_config"] == result.model.config()
    assert same_state(state["model_state"], result.model.state_dict())
    assert type(state["torch_version"]) is str           # plain data: readable with weights_only=True
    assert not list(tmp_path.glob(".*.part"))  # atomic writes leave no temporary files behind


def test_evaluation_uses_its_own_generator_and_leaves_training_alone(mnist):
    train_x, test_x = mnist
    config = TrainConfig(epochs=2, seed=1)
    with_eval = train(small_model(), train_x[:300], config, test_x=test_x[:100], device="cpu", progress=False)
    without = train(small_model(), train_x[:300], config, device="cpu", progress=False)
    assert same_state(with_eval.model.state_dict(), without.model.state_dict())
    assert [r["loss"] for r in with_eval.history] == [r["loss"] for r in without.history]
    # the test metrics are the model's own evaluate at the last temperature, with a generator seeded eval_seed
    scores = with_eval.model.evaluate(test_x[:100], with_eval.history[-1]["temperature"],
                                      torch.Generator().manual_seed(config.eval_seed))
    assert with_eval.history[-1]["test_relaxed_nelbo"] == scores["relaxed_nelbo"]
    assert with_eval.history[-1]["test_hard_nelbo"] == scores["hard_nelbo"]


def test_zero_epochs_trains_nothing_and_writes_nothing(tmp_path, mnist):
    train_x, _ = mnist
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, train_x[:100], TrainConfig(epochs=0), out_dir=tmp_path / "run", device="cpu",
                   progress=False)
    assert (result.epoch, result.step, result.history) == (0, 0, [])
    assert same_state(model.state_dict(), before) and not (tmp_path / "run").exists()


def test_history_records_where_each_epoch_trained(tmp_path, mnist):
    # benchmarks that score a run later (another process, maybe another thread count) read these fields
    train_x, _ = mnist
    result = train(small_model(), train_x[:200], TrainConfig(epochs=2), out_dir=tmp_path, device="cpu",
                   progress=False)
    assert [(row["device"], row["threads"]) for row in result.history] == [("cpu", 1), ("cpu", 1)]
    assert result.history[1]["elapsed_s"] == pytest.approx(result.history[0]["epoch_s"] + result.history[1]["epoch_s"],
                                                           abs=2e-3)
    saved = json.loads((tmp_path / "history.json").read_text())["history"]
    assert saved[-1]["device"] == "cpu" and saved[-1]["threads"] == 1


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


# --------------------------------------------------------------------------------------------------
# Binarization
# --------------------------------------------------------------------------------------------------

class Recorder(CategoricalVAE):
    """Keeps every batch its loss sees."""

    def loss(self, x, temperature, generator=None, step=0):
        self.seen.append(x.clone())
        return super().loss(x, temperature, generator, step)


def test_binarize_false_trains_on_the_intensities_themselves(mnist):
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


def test_binarization_is_a_bernoulli_draw_of_the_intensities():
    from gstutorial.engine import _binarize

    x = torch.tensor([0.0, 1.0, 0.25, 0.9]).repeat(20_000, 1)
    b = _binarize(x, torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) == {0.0, 1.0}
    freq = b.mean(0)
    assert freq[0] == 0.0 and freq[1] == 1.0
    torch.testing.assert_close(freq[2:], torch.tensor([0.25, 0.9]), atol=0.01, rtol=0)  # ~5 sigma


# --------------------------------------------------------------------------------------------------
# Checkpoints: resume, refusal, format
# --------------------------------------------------------------------------------------------------

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
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["epoch"] == 1
    fresh = small_model(seed=123)  # different initial weights: everything must come from the checkpoint
    resumed = train(fresh, data, config, test_x=test_x[:100], out_dir=tmp_path / "b", progress=False)
    assert resumed.resumed_from_epoch == 1
    assert same_state(resumed.model.state_dict(), straight.model.state_dict())
    keep = [*TRAINING_METRICS, "test_relaxed_nelbo", "test_hard_nelbo"]
    assert [{k: r[k] for k in keep} for r in resumed.history] == [{k: r[k] for k in keep} for r in straight.history]
    # the temperature really changed across the interruption (schedule on the global step)
    assert resumed.history[0]["temperature"] > resumed.history[2]["temperature"]
    # extending a finished run trains further from where it stopped; eval_every may change
    longer = train(small_model(), data, dataclasses.replace(config, epochs=4, eval_every=3),
                   out_dir=tmp_path / "b", progress=False)
    assert longer.resumed_from_epoch == 3 and longer.step == 20


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
    assert isinstance(info.value, ValueError)         # callers that catch ValueError see it too
    # a run trained on another kind of device: its saved random-number states cannot drive this one
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    other = "cpu" if get_device().type != "cpu" else "cuda:0"
    torch.save({**state, "device": other}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointMismatchError, match=rf"device: checkpoint was trained on '{other}'.*--device"):
        train(small_model(), data, TrainConfig(epochs=2), out_dir=tmp_path, progress=False)
    # resume=False starts afresh and overwrites
    fresh = train(small_model("st"), data, TrainConfig(epochs=1), out_dir=tmp_path, resume=False, progress=False)
    assert fresh.resumed_from_epoch == 0 and load_checkpoint(tmp_path / CHECKPOINT_NAME)["model_config"]["estimator"] == "st"


def test_binarize_is_part_of_the_checkpoint_and_older_checkpoints_default_to_true(tmp_path, mnist):
    train_x, _ = mnist
    data = train_x[:200]
    train(small_model(), data, TrainConfig(epochs=1), out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointMismatchError, match="binarize: checkpoint has True, requested False"):
        train(small_model(), data, TrainConfig(epochs=2, binarize=False), out_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    del state["train_config"]["binarize"]               # the configuration as older code wrote it
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    assert train(small_model(), data, TrainConfig(epochs=2), out_dir=tmp_path, progress=False).step == 4
    with pytest.raises(CheckpointMismatchError, match="binarize: checkpoint has True, requested False"):
        train(small_model(), data, TrainConfig(epochs=3, binarize=False), out_dir=tmp_path, progress=False)


def test_checkpoints_are_read_with_weights_only(tmp_path, mnist):
    train_x, _ = mnist
    train(small_model(), train_x[:100], TrainConfig(epochs=1), out_dir=tmp_path, progress=False)
    path = tmp_path / CHECKPOINT_NAME
    state = torch.load(path, weights_only=True)
    # older checkpoints stored torch's version as its own str subclass: still read
    torch.save({**state, "torch_version": torch.__version__}, path)
    assert load_checkpoint(path)["torch_version"] == torch.__version__
    # any other object is refused rather than unpickled (it could run code)
    torch.save({**state, "args": argparse.Namespace(epochs=1)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        train(small_model(), train_x[:100], TrainConfig(epochs=2), out_dir=tmp_path, progress=False)


def test_load_checkpoint_refuses_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a gstutorial training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a gstutorial training checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_named_before_anything_is_written(tmp_path, mnist):
    train_x, _ = mnist
    with pytest.raises(ValueError, match=r"device 'cuda' \(from --device / device=\) asked for CUDA.*use cpu"):
        train(small_model(), train_x[:200], TrainConfig(epochs=1), out_dir=tmp_path / "run", device="cuda",
              progress=False)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# Bad arguments and divergence
# --------------------------------------------------------------------------------------------------

def test_bad_engine_arguments(mnist):
    train_x, test_x = mnist
    with pytest.raises(ValueError, match=r"^train_x must hold intensities in \[0, 1\]"):
        train(small_model(), train_x[:100] * 255, TrainConfig(epochs=1), progress=False)
    with_nan = train_x[:100].clone()
    with_nan[3, 5] = float("nan")
    with pytest.raises(ValueError, match=r"^train_x .*without NaN"):
        train(small_model(), with_nan, TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"^train_x must be a non-empty tensor of shape \(n, pixels\)"):
        train(small_model(), train_x[:0], TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="^train_x"):
        train(small_model(), train_x[:10].view(10, 28, 28), TrainConfig(epochs=1), progress=False)
    with pytest.raises(TypeError, match="^train_x"):
        train(small_model(), train_x[:10].numpy(), TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="^test_x"):
        train(small_model(), train_x[:100], TrainConfig(epochs=1), test_x=test_x[:10, :100], progress=False)
    with pytest.raises(ValueError, match=r"^test_x must hold intensities in \[0, 1\]"):
        train(small_model(), train_x[:100], TrainConfig(epochs=1), test_x=test_x[:10] - 1, progress=False)
    with pytest.raises(TypeError, match="^config must be a TrainConfig"):
        train(small_model(), train_x[:100], {"epochs": 1}, progress=False)
    with pytest.raises(TypeError, match="loss"):
        train(torch.nn.Linear(784, 10), train_x[:100], TrainConfig(epochs=1), progress=False)


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
    step 3 on, or, with ``via_gradient``, the loss stays finite and step 4 makes the weight NaN. It
    has no ``evaluate``: the engine then trains without evaluation."""

    def __init__(self, via_gradient: bool = False) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.via_gradient = via_gradient

    def config(self) -> dict:
        return {"model": "diverges"}

    @classmethod
    def from_config(cls, config: dict) -> _DivergesInEpoch2:
        return cls()

    def loss(self, x, temperature, generator=None, step=0):
        if self.via_gradient:
            return {"loss": self.w * x.mean() + (_NanGradient.apply(self.w) if step == 3 else 0.0)}
        return {"loss": self.w * x.mean() + (float("nan") if step >= 2 else 0.0)}


@pytest.mark.parametrize("via_gradient", [False, True])
def test_divergence_is_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, mnist, via_gradient):
    train_x, test_x = mnist
    what = "after epoch 2 some weights are NaN" if via_gradient else "the mean loss of epoch 2 is nan"
    with pytest.raises(FloatingPointError, match=rf"diverged: {what}.* \(steps 3-4\)") as exc:
        train(_DivergesInEpoch2(via_gradient), train_x[:200], TrainConfig(epochs=3), test_x=test_x[:10],
              out_dir=tmp_path, progress=False)
    assert "still holds epoch 1" in str(exc.value) and "smaller learning rate (lr=0.001 now)" in str(exc.value)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["epoch"] == 1 and math.isfinite(state["history"][-1]["loss"])
    assert torch.isfinite(state["model_state"]["w"])
    assert not any(k.startswith("test_") for k in state["history"][-1])   # no evaluate: not evaluated


def test_divergence_in_the_first_epoch_without_a_folder_says_lower_the_learning_rate(mnist):
    train_x, _ = mnist

    class DivergesAtOnce(_DivergesInEpoch2):
        def loss(self, x, temperature, generator=None, step=0):
            return {"loss": self.w * float("inf")}

    with pytest.raises(FloatingPointError, match=r"epoch 1 is (nan|inf|-inf) \(steps 1-2\)\. Lower the learning rate"):
        train(DivergesAtOnce(), train_x[:200], TrainConfig(epochs=1), progress=False)


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
        config = (default_train_config(epochs=1, batch_size=50) if name == "jointvae"
                  else TrainConfig(epochs=1, batch_size=50))
        with CountHostTraffic():
            train(model, train_x[:50 * steps], config, progress=False)
        totals.append(dict(counted))
    assert totals[0] == totals[1], f"host traffic grows with the number of steps: {totals}"
    assert totals[0]["_local_scalar_dense"] <= 4


# --------------------------------------------------------------------------------------------------
# The optimizer and the model protocol
# --------------------------------------------------------------------------------------------------

def test_make_optimizer_is_adam_with_the_same_update_as_the_plain_kernel():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours, plain = make_optimizer(a.parameters(), 0.01), torch.optim.Adam(b.parameters(), lr=0.01)
    assert isinstance(ours, torch.optim.Adam) and ours.param_groups[0]["lr"] == 0.01
    assert len(ours.param_groups[0]["params"]) == 2
    x = torch.randn(8, 5)
    for _ in range(3):
        for model, opt in ((a, ours), (b, plain)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_trainable_model_protocol():
    assert isinstance(small_model(), TrainableModel) and isinstance(JointVAE(2, 3, hidden=(4,)), TrainableModel)
    assert isinstance(_DivergesInEpoch2(), TrainableModel)   # no evaluate needed
    assert not isinstance(torch.nn.Linear(2, 2), TrainableModel)

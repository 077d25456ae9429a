"""Chapter 7 — the training engine, shared by the notebooks, the command line and the benchmarks.

:func:`train` trains any model that implements :class:`TrainableModel` (chapter 7's categorical VAE
and chapter 8's Joint VAE do); it imports no model. What it does:

* data stays resident as one tensor on the training device; each epoch draws a permutation and
  slices batches by index (no ``DataLoader``, no per-sample transforms); every batch is binarized
  afresh (dynamic binarization: pixel = [u < intensity], u uniform) unless ``binarize=False``;
* Adam (the fused kernel where the device has one — same update, fewer kernel launches);
* the temperature follows the **global step**: τ_t = max(τ_min, τ_0·exp(−r·t)) refreshed every M
  steps (:func:`temperature_at`), never reset at an epoch boundary;
* all randomness comes from two ``torch.Generator`` objects on the device (data order +
  binarization, and Gumbel noise), so a run is reproducible from its seed; evaluation uses its own
  freshly seeded generator and does not disturb them;
* after each epoch: metrics history appended and written as JSON and CSV, and a checkpoint written
  atomically (model, optimizer, both generators, step, epoch, configuration, history). Restarting
  the same command resumes from it and continues **bit for bit** as if never interrupted; a
  checkpoint whose configuration differs from the requested one is refused with an error naming
  the differences. Checkpoints hold tensors and plain data only (read with ``weights_only=True``).

The command line around it is :mod:`gstutorial.cli` (``python -m gstutorial --help``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .checks import check_bool, check_int, check_real, check_tensor, value_checks
from .files import atomic_write
from .runtime import get_device, progress_disabled

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CheckpointMismatchError",
    "TrainConfig",
    "TrainResult",
    "TrainableModel",
    "load_checkpoint",
    "make_optimizer",
    "temperature_at",
    "train",
]

CHECKPOINT_FORMAT = "gstutorial-checkpoint-v1"
CHECKPOINT_NAME = "checkpoint.pt"

@runtime_checkable
class TrainableModel(Protocol):
    """What :func:`train` needs of a model (an ``nn.Module`` besides).

    * ``loss(x, temperature, generator, step)``: a dict of scalar tensors with a ``"loss"`` entry
      (the objective to minimise; the other entries are logged);
    * ``config()``: a dict with a ``"model"`` name and everything needed to rebuild the model;
    * ``from_config(config)`` (a classmethod): the model ``config()`` describes;
    * ``evaluate(x, temperature, generator)``: test metrics, a dict of floats (optional: a model
      without it is trained without per-epoch evaluation).
    """

    def loss(self, x: torch.Tensor, temperature: float, generator: torch.Generator | None,
             step: int) -> dict[str, torch.Tensor]: ...

    def config(self) -> dict[str, Any]: ...

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrainableModel: ...


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a different configuration than the one asked to resume it."""


@dataclasses.dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: chapter 7's MNIST setting, with Jang et al. 2017's
    temperature schedule).

    ``epochs`` is the total to reach (resuming a run with a larger value trains further), and
    ``eval_every`` may change between sessions; every other field must match a checkpoint to resume
    from it.
    """

    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    tau0: float = 1.0            # initial temperature τ_0
    tau_min: float = 0.5         # floor τ_min
    anneal_rate: float = 1e-4    # r in τ_0·exp(−r·t), t the global step
    anneal_every: int = 1000     # M: τ is refreshed every M steps
    seed: int = 0
    eval_every: int = 1          # evaluate on the test set every this many epochs (and at the end)
    eval_seed: int = 12345       # seed of the evaluation's own generator
    binarize: bool = True        # binarize each batch afresh; False trains on the intensities themselves

    def __post_init__(self) -> None:
        self.epochs = check_int(self.epochs, "epochs", 0)  # 0: evaluate (or export) without training
        for name in ("batch_size", "anneal_every", "eval_every"):
            setattr(self, name, check_int(getattr(self, name), name, 1))
        for name in ("seed", "eval_seed"):
            setattr(self, name, check_int(getattr(self, name), name, 0))
        for name in ("lr", "tau0", "tau_min"):
            setattr(self, name, check_real(getattr(self, name), name, positive=True))
        self.anneal_rate = check_real(self.anneal_rate, "anneal_rate", nonnegative=True)
        check_bool(self.binarize, "binarize")
        if self.tau_min > self.tau0:
            raise ValueError(f"tau_min ({self.tau_min}) must not exceed tau0 ({self.tau0}); for a fixed "
                             "temperature set tau_min = tau0 or anneal_rate = 0")

    def temperature(self, step: int) -> float:
        """τ at global step ``step`` under this configuration's schedule."""
        return temperature_at(step, self.tau0, self.tau_min, self.anneal_rate, self.anneal_every)


def temperature_at(step: int, tau0: float = 1.0, tau_min: float = 0.5, rate: float = 1e-4,
                   every: int = 1000) -> float:
    """The annealed temperature at global step ``step``: ``max(tau_min, tau0 · exp(−rate · t))``.

    ``t = every · ⌊step / every⌋`` is the last refresh step, so τ is constant for ``every`` steps
    and then drops; it depends only on the global step, never on the epoch or batch index.
    """
    step, every = check_int(step, "step", 0), check_int(every, "every", 1)
    tau0, tau_min = check_real(tau0, "tau0", positive=True), check_real(tau_min, "tau_min", positive=True)
    rate = check_real(rate, "rate", nonnegative=True)
    t = (step // every) * every
    return max(tau_min, tau0 * math.exp(-rate * t))


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the model (trained in place), per-epoch history, where files went."""

    model: nn.Module
    history: list[dict[str, float]]
    step: int
    epoch: int
    out_dir: Path | None
    resumed_from_epoch: int


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

def _fingerprint(x: torch.Tensor) -> list[float]:
    """A cheap identity of the training data: its shape and a float64 sum of pixels."""
    return [float(x.shape[0]), float(x.shape[1]), round(float(x.sum(dtype=torch.float64).item()), 3)]


def _differences(saved: dict, wanted: dict, skip: tuple[str, ...] = ()) -> list[str]:
    keys = sorted(set(saved) | set(wanted))
    return [f"{key}: checkpoint has {saved.get(key, '<absent>')!r}, requested {wanted.get(key, '<absent>')!r}"
            for key in keys if key not in skip and saved.get(key) != wanted.get(key)]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint written by :func:`train`, checking its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    # tensors and plain data only; checkpoints written before 2026-12 stored torch's version string as
    # its own str subclass, allowed here by name
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a gstutorial training checkpoint (format "
                         f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
                         f"expected {CHECKPOINT_FORMAT!r})")
    return state


def _check_compatible(state: dict, model: nn.Module, config: TrainConfig, fingerprint: list[float],
                      path: Path, device: torch.device) -> None:
    saved = state["model_config"]
    if saved.get("model") != model.config().get("model"):  # another kind of model: that alone decides
        raise CheckpointMismatchError(
            f"cannot resume from {path}: it holds a {saved.get('model')!r} model, not a "
            f"{model.config().get('model')!r} one. Fix: pick another output folder (--out), or start afresh "
            "there (resume=False / --fresh).")
    try:  # state the saved configuration as the current code would (options added later take their defaults)
        saved = type(model).from_config(saved).config()
    except (KeyError, TypeError, ValueError):
        pass  # an unknown model or option: compare the raw dicts, which names the difference
    problems = _differences(saved, model.config())
    # fields added to TrainConfig later take their defaults in older checkpoints
    saved_train = {**dataclasses.asdict(TrainConfig()), **state["train_config"]}
    problems += _differences(saved_train, dataclasses.asdict(config), skip=("epochs", "eval_every"))
    if state["data_fingerprint"] != fingerprint:
        problems.append(f"training data: checkpoint has (n, d, pixel sum) = {state['data_fingerprint']}, "
                        f"requested {fingerprint}")
    saved_device = state.get("device")
    if saved_device is not None and torch.device(saved_device).type != device.type:
        # the saved random-number states belong to that kind of device and cannot drive another one
        problems.append(f"device: checkpoint was trained on {saved_device!r}, requested {str(device)!r} "
                        f"(resume on the same kind of device: --device {torch.device(saved_device).type})")
    if problems:
        raise CheckpointMismatchError(
            f"cannot resume from {path}: it was written by a different configuration — "
            + "; ".join(problems)
            + ". Fix: use the original settings, pick another output folder, or start afresh (resume=False / --fresh).")


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------

def _binarize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dynamic binarization: pixel = 1 with probability x, i.e. ``[u < x]`` with u ~ U(0, 1).

    The same Bernoulli draw as :func:`gstutorial.data.binarize_dynamic` (``torch.bernoulli``) written as
    one uniform draw and an in-place comparison, which is about twice as fast on a CPU.
    """
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).lt_(x)


def make_optimizer(params, lr: float) -> torch.optim.Optimizer:
    """Adam with learning rate ``lr``: the fused kernel where the device has one (same update, fewer
    kernel launches), else the plain one."""
    params = list(params)
    try:  # one fused kernel over all parameters (CPU and CUDA in recent PyTorch)
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _write_history(out_dir: Path, history: list[dict], meta: dict) -> None:
    atomic_write(out_dir / "history.json",
                 lambda tmp: tmp.write_text(json.dumps({**meta, "history": history}, indent=1) + "\n"))
    columns: list[str] = []
    for row in history:
        columns += [c for c in row if c not in columns]

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)

    atomic_write(out_dir / "history.csv", write_csv)


def _check_train_data(x: torch.Tensor, name: str) -> None:
    if check_tensor(x, name).ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty tensor of shape (n, pixels), got shape {tuple(x.shape)}")
    low, high = torch.aminmax(x)
    if not (low.item() >= 0 and high.item() <= 1):  # also false for NaN
        raise ValueError(f"{name} must hold intensities in [0, 1] (they are Bernoulli means for dynamic "
                         "binarization), without NaN; load them with load_mnist(binarize='none')")


def train(model: nn.Module, train_x: torch.Tensor, config: TrainConfig | None = None, *,
          test_x: torch.Tensor | None = None, out_dir: str | os.PathLike | None = None,
          resume: bool = True, device: str | torch.device | None = None,
          progress: bool | None = None, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``model`` on ``train_x`` until ``config.epochs`` epochs are done; return the result.

    Parameters
    ----------
    model : an ``nn.Module`` implementing :class:`TrainableModel`. Trained in place.
    train_x : ``(n, pixels)`` intensities in [0, 1]; each batch is binarized afresh (unless
        ``config.binarize`` is False: then the model sees the intensities themselves).
    config : :class:`TrainConfig` (default: the paper's settings).
    test_x : ``(m, pixels)`` test images in the form the model trains on (a fixed binarization, or
        the intensities when ``config.binarize`` is False); evaluated every ``config.eval_every``
        epochs and after the last one with ``model.evaluate`` at the current τ.
    out_dir : where ``checkpoint.pt``, ``history.json`` and ``history.csv`` go. ``None`` keeps
        everything in memory (no checkpoints).
    resume : continue from ``out_dir/checkpoint.pt`` when it exists (it must have been written
        with the same model and training configuration, else :class:`CheckpointMismatchError`);
        ``False`` starts afresh and overwrites it.
    device : training device (default :func:`gstutorial.runtime.get_device`); model and data move there.
    progress : show a tqdm bar (default: unless :func:`gstutorial.runtime.progress_disabled`).
    log : called with one line per epoch (default: nothing).
    """
    # the text bar: tqdm.auto would warn on stderr in Jupyter when ipywidgets is absent
    from tqdm import tqdm

    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    for attr in ("loss", "config", "from_config"):
        if not callable(getattr(model, attr, None)):
            raise TypeError(f"model must define {attr}() (see gstutorial.engine.TrainableModel); "
                            f"{type(model).__name__} does not")
    _check_train_data(train_x, "train_x")
    if test_x is not None:
        _check_train_data(test_x, "test_x")
        if test_x.shape[1] != train_x.shape[1]:
            raise ValueError(f"test_x must have shape (m, {train_x.shape[1]}) like train_x, got {tuple(test_x.shape)}")
    device = get_device(device)  # a clear error for CUDA on a machine without it
    progress = (not progress_disabled()) if progress is None else progress
    out_dir = None if out_dir is None else Path(out_dir)

    model.to(device)
    train_x = train_x.to(device)
    test_x = None if test_x is None else test_x.to(device)
    optimizer = make_optimizer(model.parameters(), config.lr)
    data_gen = torch.Generator(device=device).manual_seed(config.seed)
    noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1_000_003)
    fingerprint = _fingerprint(train_x)
    n = train_x.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    step, epoch, history = 0, 0, []
    elapsed = 0.0

    ckpt_path = None if out_dir is None else out_dir / CHECKPOINT_NAME
    if ckpt_path is not None and resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, map_location=device)
        _check_compatible(state, model, config, fingerprint, ckpt_path, device)
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        data_gen.set_state(state["rng"]["data"].cpu())
        noise_gen.set_state(state["rng"]["noise"].cpu())
        step, epoch, history = state["step"], state["epoch"], state["history"]
        elapsed = history[-1]["elapsed_s"] if history else 0.0
    resumed_from = epoch
    meta = {"model_config": model.config(), "train_config": dataclasses.asdict(config)}

    def checkpoint() -> None:
        state = {"format": CHECKPOINT_FORMAT, **meta, "data_fingerprint": fingerprint,
                 "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
                 "rng": {"data": data_gen.get_state(), "noise": noise_gen.get_state()},
                 "step": step, "epoch": epoch, "history": history, "device": str(device),
                 "torch_version": str(torch.__version__)}
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))

    keys: list[str] | None = None
    while epoch < config.epochs:
        model.train()
        start = time.perf_counter()
        perm = torch.randperm(n, generator=data_gen, device=device)
        sums: torch.Tensor | None = None
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress,
                   leave=False, dynamic_ncols=True)
        tau = config.temperature(step)
        # the batches are binary and the encoder's logits finite by construction: no per-step scans
        # of values (each reads back to Python, a device sync on a GPU); the epoch's loss is checked
        with value_checks(False):
            for b in range(steps_per_epoch):
                tau = config.temperature(step)  # global-step schedule, piecewise constant
                x = train_x.index_select(0, perm[b * config.batch_size:(b + 1) * config.batch_size])
                if config.binarize:
                    x = _binarize(x, data_gen)
                terms = model.loss(x, tau, noise_gen, step)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                step += 1
                if keys is None:
                    keys = list(terms)
                batch = torch.stack([terms[k].detach() for k in keys]) * x.shape[0]
                sums = batch if sums is None else sums + batch
                bar.update(1)
                if progress and (b % 50 == 0 or b == steps_per_epoch - 1):
                    bar.set_postfix(loss=f"{sums[0].item() / min(n, (b + 1) * config.batch_size):.2f}",
                                    tau=f"{tau:.3f}")
        bar.close()
        epoch += 1
        seconds = time.perf_counter() - start
        elapsed += seconds
        row: dict[str, float] = {"epoch": epoch, "step": step, "temperature": tau}
        row.update({k: v / n for k, v in zip(keys, sums.double().tolist(), strict=True)})
        weights_finite = bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())
        if not (math.isfinite(row["loss"]) and weights_finite):
            what = (f"the mean loss of epoch {epoch} is {row['loss']}" if not math.isfinite(row["loss"])
                    else f"after epoch {epoch} some weights are NaN or infinite")
            raise FloatingPointError(
                f"training diverged: {what} (steps {step - steps_per_epoch + 1}-{step}). "
                + (f"{ckpt_path} still holds epoch {epoch - 1}; resume from it with a smaller learning rate "
                   f"(lr={config.lr} now)" if ckpt_path is not None and epoch > 1 else
                   f"Lower the learning rate (lr={config.lr} now)") + " or check the data")
        # where this epoch ran: benchmarks that score a run later read these, not their own process's
        row.update({"epoch_s": round(seconds, 3), "elapsed_s": round(elapsed, 3), "device": str(device),
                    "threads": torch.get_num_threads()})
        if test_x is not None and callable(getattr(model, "evaluate", None)) and (
                epoch % config.eval_every == 0 or epoch == config.epochs):
            eval_gen = torch.Generator(device=device).manual_seed(config.eval_seed)
            with value_checks(False):  # test_x was checked once above
                metrics = model.evaluate(test_x, tau, eval_gen)
            row.update({f"test_{k}": v for k, v in metrics.items()})
            model.train()
        history.append(row)
        if out_dir is not None:
            _write_history(out_dir, history, meta)
            checkpoint()
        if log is not None:
            log("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    model.eval()
    return TrainResult(model=model, history=history, step=step, epoch=epoch, out_dir=out_dir,
                       resumed_from_epoch=resumed_from)

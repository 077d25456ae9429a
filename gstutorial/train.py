"""Chapter 7 — the training engine: one function for the notebook, the command line and benchmarks.

:func:`train` trains any model that exposes

* ``loss(x, temperature, generator, step) -> dict`` of scalar tensors with a ``"loss"`` entry (the
  objective to minimise; the other entries are logged),
* ``config() -> dict`` with a ``"model"`` name, enough to rebuild the model (stored in checkpoints),
* optionally ``evaluate(x, temperature, generator) -> dict[str, float]`` (test metrics per epoch),

so chapter 8's Joint VAE reuses it unchanged. What the engine does:

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
  the differences.

Command line (``python -m gstutorial.train --help``; chapter 8 adds the ``jointvae`` subcommand)::

    python -m gstutorial.train catvae --latent 20x10 --estimator gs --epochs 100 --seed 0 --out runs/gs
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .catvae import ESTIMATORS, CategoricalVAE, evaluate, importance_weighted_bound, parse_latent
from .data import MNISTDataError, binarize_fixed, load_mnist, resize_images
from .utils import (
    HelpFormatter,
    atomic_write,
    flush_subnormals,
    get_device,
    progress_disabled,
    restoring_subnormal_mode,
    set_seed,
    value_checks,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODEL_REGISTRY",
    "WEIGHTS_FORMAT",
    "CheckpointMismatchError",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "export_weights",
    "load_checkpoint",
    "load_model",
    "main",
    "temperature_at",
    "train",
]

CHECKPOINT_FORMAT = "gstutorial-checkpoint-v1"
WEIGHTS_FORMAT = "gstutorial-weights-v1"
CHECKPOINT_NAME = "checkpoint.pt"

#: Models the engine can rebuild from a checkpoint's ``config()["model"]``. Chapter 8 adds its own.
MODEL_REGISTRY: dict[str, Callable[[dict], nn.Module]] = {"catvae": CategoricalVAE.from_config}


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
        for name in ("epochs", "batch_size", "anneal_every", "eval_every"):
            value = getattr(self, name)
            minimum = 0 if name == "epochs" else 1  # epochs = 0: evaluate (or export) without training
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        for name in ("seed", "eval_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        # bool is an int subclass: lr=True would pass as 1.0
        for name in ("lr", "tau0", "tau_min"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)
                                               and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if isinstance(self.anneal_rate, bool) or not (isinstance(self.anneal_rate, (int, float))
                                                      and math.isfinite(self.anneal_rate)
                                                      and self.anneal_rate >= 0):
            raise ValueError(f"anneal_rate must be a finite number >= 0, got {self.anneal_rate!r}")
        if not isinstance(self.binarize, bool):
            raise ValueError(f"binarize must be True or False, got {self.binarize!r}")
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
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive int, got {every!r}")
    if not (tau0 > 0 and tau_min > 0 and rate >= 0):
        raise ValueError(f"need tau0 > 0, tau_min > 0, rate >= 0; got tau0={tau0}, tau_min={tau_min}, rate={rate}")
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
    state = torch.load(path, map_location=map_location, weights_only=False)
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
        saved = build_model(saved).config()
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


def _register_book_models() -> None:
    """Import the book's other model modules; each adds itself to :data:`MODEL_REGISTRY`."""
    from . import jointvae  # noqa: F401  (chapter 8: registers "jointvae" on import)


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from its ``config()`` dict via :data:`MODEL_REGISTRY`."""
    name = config.get("model")
    if name not in MODEL_REGISTRY:
        _register_book_models()
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name](config)


def export_weights(model: nn.Module, path: str | os.PathLike, dtype: torch.dtype = torch.float16,
                   **metadata: Any) -> Path:
    """Write a compact, weights-only file (no optimizer state) for distribution, atomically.

    Floating-point tensors are stored in ``dtype`` (float16 halves the size; the book's committed
    models use it). ``metadata`` (e.g. ``history``, ``train_config``, ``final_metrics``) is stored
    alongside. Load with :func:`load_model`.
    """
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    weights = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu())
               for k, v in model.state_dict().items()}
    payload = {"format": WEIGHTS_FORMAT, "model_config": model.config(), "state_dict": weights,
               "dtype": str(dtype).removeprefix("torch."), **metadata}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_model(path: str | os.PathLike, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model from a training checkpoint or a weights file; return ``(model, metadata)``.

    The model is rebuilt from the stored configuration, cast to ``dtype``, put on ``device``
    (default :func:`gstutorial.utils.get_device`) and set to eval mode. ``metadata`` holds the
    remaining entries (history, configurations, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt == CHECKPOINT_FORMAT:
        weights = state["model_state"]
    elif fmt == WEIGHTS_FORMAT:
        weights = state["state_dict"]
    else:
        raise ValueError(f"{path} is neither a gstutorial checkpoint nor a weights file (format {fmt!r})")
    model = build_model(state["model_config"])
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()})
    model.to(device=get_device(device), dtype=dtype).eval()
    metadata = {k: v for k, v in state.items()
                if k not in ("model_state", "state_dict", "optimizer_state", "rng")}
    return model, metadata


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------

def _binarize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dynamic binarization: pixel = 1 with probability x, i.e. ``[u < x]`` with u ~ U(0, 1).

    The same Bernoulli draw as :func:`gstutorial.data.binarize_dynamic` (``torch.bernoulli``) written as
    one uniform draw and an in-place comparison, which is about twice as fast on a CPU.
    """
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).lt_(x)


def _make_optimizer(params, lr: float) -> torch.optim.Optimizer:
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
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty float tensor of shape (n, pixels), got "
                         f"{type(x).__name__ if not isinstance(x, torch.Tensor) else (tuple(x.shape), x.dtype)}")
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
    model : a module with ``loss(x, temperature, generator, step)`` and ``config()``, optionally
        ``evaluate(x, temperature, generator)`` (see the module docstring). Trained in place.
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
    device : training device (default :func:`gstutorial.utils.get_device`); model and data move there.
    progress : show a tqdm bar (default: unless :func:`gstutorial.utils.progress_disabled`).
    log : called with one line per epoch (default: nothing).
    """
    # the text bar: tqdm.auto would warn on stderr in Jupyter when ipywidgets is absent
    from tqdm import tqdm

    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    for attr in ("loss", "config"):
        if not callable(getattr(model, attr, None)):
            raise TypeError(f"model must define {attr}() (see gstutorial.train's module docstring); "
                            f"{type(model).__name__} does not")
    _check_train_data(train_x, "train_x")
    if test_x is not None and (not isinstance(test_x, torch.Tensor) or test_x.ndim != 2
                               or test_x.shape[1] != train_x.shape[1]):
        raise ValueError(f"test_x must be a tensor of shape (m, {train_x.shape[1]})")
    device = get_device(device)  # a clear error for CUDA on a machine without it
    progress = (not progress_disabled()) if progress is None else progress
    out_dir = None if out_dir is None else Path(out_dir)

    model.to(device)
    train_x = train_x.to(device)
    test_x = None if test_x is None else test_x.to(device)
    optimizer = _make_optimizer(model.parameters(), config.lr)
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
                 "torch_version": torch.__version__}
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


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def add_run_arguments(p: argparse.ArgumentParser, default_out: str) -> None:
    """The options every model's subcommand shares: data subset, output folder, device, resume,
    weight export, threads and verbosity."""
    p.add_argument("--train-size", type=int, default=None, help="train on the first this many images")
    p.add_argument("--out", default=None, help=f"output folder (default: {default_out})")
    p.add_argument("--data-root", default=None, help="MNIST data root (default: $GSTUTORIAL_DATA or ./data)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when present)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start afresh")
    p.add_argument("--export", default=None, metavar="PATH",
                   help="also write a compact weights-only file (for the book) to PATH")
    p.add_argument("--export-dtype", choices=("float16", "float32"), default="float16",
                   help="precision of the --export weights (float16 halves the file)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch (default: PyTorch's choice; 1 is fastest on a busy machine)")
    p.add_argument("--keep-subnormals", action="store_true",
                   help="do not flush subnormal floats to zero (flushing keeps late epochs on a CPU from "
                        "slowing down; see gstutorial.utils.flush_subnormals)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")


def configure_cpu(args: argparse.Namespace) -> None:
    """Apply ``--threads`` and, unless ``--keep-subnormals``, flush subnormals; call it before any
    tensor work, so that PyTorch's worker threads inherit the setting."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if not args.keep_subnormals:
        flush_subnormals()


def load_run_data(args: argparse.Namespace, device: torch.device, test_binarize: str = "fixed",
                  image_size: int = 28) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST for a command-line run: training intensities (the first ``--train-size`` images when
    given), and the test set with its labels: its fixed binarization (``test_binarize="fixed"``) or
    its intensities (``"none"``, for a model trained on intensities).

    ``image_size`` other than 28 resizes every image (:func:`~gstutorial.data.resize_images`) before
    the test set is binarized; the engine binarizes the training batches later.
    """
    train_x, _ = load_mnist("train", args.data_root, device=device)
    if args.train_size is not None:
        if not 1 <= args.train_size <= train_x.shape[0]:
            raise ValueError(f"--train-size must be in [1, {train_x.shape[0]}], got {args.train_size}")
        train_x = train_x[:args.train_size]
    if test_binarize not in ("none", "fixed"):
        raise ValueError(f"test_binarize must be 'none' or 'fixed', got {test_binarize!r}")
    test_x, test_y = load_mnist("test", args.data_root, device=device)
    test_x = resize_images(test_x, image_size)  # 28: unchanged
    if test_binarize == "fixed":  # the same draw as load_mnist(binarize="fixed", seed=0)
        test_x = binarize_fixed(test_x, seed=0)
    return resize_images(train_x, image_size), test_x, test_y


def train_from_cli(model: nn.Module, config: TrainConfig, train_x: torch.Tensor, test_x: torch.Tensor,
                   out: Path, args: argparse.Namespace, device: torch.device, name: str) -> TrainResult:
    """Run :func:`train` for a subcommand: announce it, honour ``--fresh``/``--quiet``, say if it resumed."""
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    say(f"training {name} on {train_x.shape[0]} images, device {device}, {config.epochs} epochs; outputs in {out}")
    result = train(model, train_x, config, test_x=test_x, out_dir=out, resume=not args.fresh,
                   device=device, progress=False if args.quiet else None, log=say)
    if result.resumed_from_epoch:
        say(f"(resumed from epoch {result.resumed_from_epoch} of {out / CHECKPOINT_NAME})")
    return result


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m gstutorial.train",
        description="Train a model of the book with the package's training engine. Re-running the same "
                    "command resumes from OUT/checkpoint.pt.")
    sub = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    p = sub.add_parser("catvae", help="categorical VAE on binarized MNIST (chapter 7)",
                       description="Categorical VAE on dynamically binarized MNIST (chapter 7); defaults: "
                                   "batch 100, Adam 1e-3, and Jang et al. 2017's temperature schedule "
                                   "tau = max(0.5, exp(-r t)) refreshed every 1000 steps.",
                       formatter_class=HelpFormatter)
    p.add_argument("--latent", default="20x10", help="N x K: N categorical variables with K classes each")
    p.add_argument("--estimator", choices=ESTIMATORS, default="gs",
                   help="gs = Gumbel-Softmax, st = straight-through Gumbel-Softmax")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="total epochs (600 steps each)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate")
    p.add_argument("--tau0", type=float, default=defaults.tau0, help="initial temperature")
    p.add_argument("--tau-min", type=float, default=defaults.tau_min, help="temperature floor")
    p.add_argument("--anneal-rate", type=float, default=defaults.anneal_rate,
                   help="r in tau_t = max(tau_min, tau0 exp(-r t)), t = global step")
    p.add_argument("--anneal-every", type=int, default=defaults.anneal_every,
                   help="M: refresh the temperature every M steps")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seeds weights, data order, binarization, noise")
    p.add_argument("--eval-every", type=int, default=defaults.eval_every,
                   help="evaluate relaxed and hard -ELBO on the test set every this many epochs")
    p.add_argument("--iw-samples", type=int, default=0,
                   help="after training, also compute the k-sample importance-weighted bound (0 = skip)")
    p.add_argument("--iw-examples", type=int, default=None,
                   help="use only the first this many test images for the importance-weighted bound")
    add_run_arguments(p, default_out="runs/catvae-NxK-EST-seedS")
    from . import jointvae  # chapter 8 brings its own subcommand

    jointvae.add_cli(sub)
    return parser


@restoring_subnormal_mode()  # configure_cpu flushes; an in-process caller gets its mode back
def _run_catvae(args: argparse.Namespace) -> int:
    configure_cpu(args)
    n_lat, k_cat = parse_latent(args.latent)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, tau0=args.tau0,
                         tau_min=args.tau_min, anneal_rate=args.anneal_rate, anneal_every=args.anneal_every,
                         seed=args.seed, eval_every=args.eval_every)
    if args.iw_samples < 0:
        raise ValueError(f"--iw-samples must be >= 0, got {args.iw_samples}")
    if args.iw_examples is not None and args.iw_examples < 1:
        raise ValueError(f"--iw-examples must be >= 1, got {args.iw_examples}")
    out = Path(args.out or f"runs/catvae-{n_lat}x{k_cat}-{args.estimator}-seed{args.seed}")
    device = get_device(args.device)
    set_seed(args.seed)
    model = CategoricalVAE(n_lat, k_cat, estimator=args.estimator)
    train_x, test_x, _ = load_run_data(args, device)
    result = train_from_cli(model, config, train_x, test_x, out, args, device, model.extra_repr())
    tau = config.temperature(max(result.step - 1, 0))
    final = {"epochs": result.epoch, "steps": result.step, "temperature": tau,
             "train_wall_s": result.history[-1]["elapsed_s"] if result.history else 0.0,
             "test_set": "MNIST test, fixed binarization (load_mnist binarize='fixed', seed 0)"}
    final.update(evaluate(model, test_x, tau, generator=torch.Generator(device=device).manual_seed(config.eval_seed)))
    if args.iw_samples:
        iw_x = test_x if args.iw_examples is None else test_x[:args.iw_examples]
        start = time.perf_counter()
        gen = torch.Generator(device=device).manual_seed(config.eval_seed)
        bound = torch.cat([importance_weighted_bound(model, iw_x[i:i + 500], args.iw_samples, gen)
                           for i in range(0, iw_x.shape[0], 500)])
        final[f"iw_nelbo_{args.iw_samples}"] = bound.double().mean().item()
        final["iw_examples"] = int(iw_x.shape[0])
        final["iw_seconds"] = round(time.perf_counter() - start, 2)
    atomic_write(out / "final_metrics.json", lambda tmp: tmp.write_text(json.dumps(final, indent=1) + "\n"))
    outputs = [out / CHECKPOINT_NAME, out / "history.json", out / "history.csv", out / "final_metrics.json"]
    if args.export:
        dtype = getattr(torch, args.export_dtype)
        outputs.append(export_weights(model, args.export, dtype=dtype, history=result.history,
                                      train_config=dataclasses.asdict(config), final_metrics=final))
    print("final test metrics (nats, fixed binarization): "
          + ", ".join(f"{k}={v:.3f}" for k, v in final.items() if isinstance(v, float)))
    print("wrote:\n" + "\n".join(f"  {p}" for p in outputs))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m gstutorial.train``."""
    args = _parser().parse_args(argv)
    try:
        if args.model == "catvae":
            return _run_catvae(args)
        if args.model == "jointvae":
            from . import jointvae

            return jointvae.run_cli(args)
    except (ValueError, TypeError, CheckpointMismatchError, MNISTDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled model {args.model!r}")  # pragma: no cover


if __name__ == "__main__":
    raise SystemExit(main())

"""The command line: ``python -m gstutorial MODEL [options]`` (or the ``gstutorial`` console script).

One subcommand per model of the book — ``catvae`` (chapter 7) and ``jointvae`` (chapter 8) — and one
run sequence for both (:func:`run`): set up the CPU, build the model, load MNIST, train with
:func:`gstutorial.engine.train` (re-running the same command resumes from ``OUT/checkpoint.pt``),
score the test set, write ``final_metrics.json`` and, with ``--export``, a weights file::

    python -m gstutorial catvae --latent 20x10 --estimator gs --epochs 100 --seed 0 --out runs/gs
    python -m gstutorial jointvae --architecture conv --epochs 100 --seed 0 --out runs/jointvae-conv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .analysis import cluster_accuracy, predict_clusters
from .catvae import ESTIMATORS, CategoricalVAE, evaluate, importance_weighted_bound, parse_latent
from .checkpoints import export_weights
from .checks import check_temperature
from .data import MNISTDataError, binarize_fixed, load_mnist, resize_images
from .engine import CHECKPOINT_NAME, CheckpointMismatchError, TrainConfig, TrainResult, train
from .files import atomic_write
from .jointvae import PAPER_SETTINGS, JointVAE, default_train_config
from .nets import ARCHITECTURES, IMAGE_SIZE
from .runtime import flush_subnormals, get_device, restoring_subnormal_mode, set_seed

__all__ = ["HelpFormatter", "build_parser", "main", "run"]

PROG = "python -m gstutorial"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that shows each option's default once: appended as ``(default: ...)`` unless the
    help already says it, and left out for flags and for options whose default is ``None``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------

def _add_run_arguments(p: argparse.ArgumentParser, default_out: str) -> None:
    """The options every subcommand shares: data subset, output folder, device, resume, weight
    export, threads and verbosity."""
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
                        "slowing down; see gstutorial.runtime.flush_subnormals)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")


def _add_catvae(sub) -> None:
    defaults = TrainConfig()
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
    _add_run_arguments(p, default_out="runs/catvae-NxK-EST-seedS")


JOINTVAE_DESCRIPTION = (
    "Joint VAE (Dupont 2018) on dynamically binarized MNIST (or its grey levels, --intensities; chapter 8): "
    "10 Gaussian latents and one 10-way Gumbel-Softmax latent at a fixed temperature 0.67, "
    "capacity-controlled objective recon + gamma |C(t) - KL| for each. Defaults are the paper's MNIST "
    "settings. Re-running the same command resumes from OUT/checkpoint.pt.")


def _add_jointvae(sub) -> None:
    s = PAPER_SETTINGS
    p = sub.add_parser("jointvae", help="Joint VAE: continuous + discrete latents (chapter 8)",
                       description=JOINTVAE_DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("--continuous-dim", type=int, default=s["continuous_dim"], help="D, Gaussian latents")
    p.add_argument("--num-categories", type=int, default=s["num_categories"], help="K, classes of the discrete latent")
    p.add_argument("--cont-capacity", type=float, default=s["cont_capacity"], help="C_max of the continuous KL (nats)")
    p.add_argument("--disc-capacity", type=float, default=s["disc_capacity"],
                   help="C_max of the discrete KL (nats; the target is capped at log K)")
    p.add_argument("--cont-iters", type=int, default=s["cont_iters"], help="steps for C_cont to rise from 0 to its max")
    p.add_argument("--cont-delay", type=int, default=0,
                   help="steps C_cont is held at 0 before it starts to rise (0: no hold, as in the paper)")
    p.add_argument("--disc-iters", type=int, default=s["disc_iters"], help="steps for C_disc to rise from 0 to its max")
    p.add_argument("--cont-gamma", type=float, default=s["cont_gamma"], help="gamma of the continuous capacity penalty")
    p.add_argument("--disc-gamma", type=float, default=s["disc_gamma"], help="gamma of the discrete capacity penalty")
    p.add_argument("--temperature", type=float, default=s["temperature"], help="fixed Gumbel-Softmax temperature")
    p.add_argument("--architecture", choices=ARCHITECTURES, default="mlp",
                   help="encoder/decoder: fully connected 784-512-256, convolutional (Dupont's layout on "
                        "28x28 images), or conv32: his network as published, on MNIST resized to 32x32")
    p.add_argument("--intensities", action="store_true",
                   help="train and evaluate on MNIST's grey levels in [0, 1] instead of binarized pixels, as "
                        "Dupont's code does (the reconstruction term is then a cross-entropy against grey levels)")
    p.add_argument("--epochs", type=int, default=30, help="total epochs (938 steps each at batch 64)")
    p.add_argument("--batch-size", type=int, default=s["batch_size"], help="images per step")
    p.add_argument("--lr", type=float, default=s["lr"], help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, data order, binarization, noise")
    p.add_argument("--eval-every", type=int, default=1, help="evaluate on the test set every this many epochs")
    _add_run_arguments(p, default_out="runs/jointvae-seedS")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m gstutorial`` with its ``catvae`` and ``jointvae`` subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a model of the book with the package's training engine. Re-running the same "
                    "command resumes from OUT/checkpoint.pt.")
    sub = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    _add_catvae(sub)
    _add_jointvae(sub)
    return parser


# --------------------------------------------------------------------------------------------------
# The run sequence
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Job:
    """What a subcommand contributes to :func:`run`: its model, schedule, data and final scoring."""

    model: nn.Module
    config: TrainConfig
    out: Path
    name: str
    test_binarize: str = "fixed"        # "fixed" (binarized test set) or "none" (intensities)
    image_size: int = 28
    # (model, test images, test labels, device, result) -> the final metrics and the line to print
    score: Callable[..., tuple[dict, str]] = dataclasses.field(default=lambda *a: ({}, ""))


def _catvae_job(args: argparse.Namespace) -> _Job:
    n_lat, k_cat = parse_latent(args.latent)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, tau0=args.tau0,
                         tau_min=args.tau_min, anneal_rate=args.anneal_rate, anneal_every=args.anneal_every,
                         seed=args.seed, eval_every=args.eval_every)
    if args.iw_samples < 0:
        raise ValueError(f"--iw-samples must be >= 0, got {args.iw_samples}")
    if args.iw_examples is not None and args.iw_examples < 1:
        raise ValueError(f"--iw-examples must be >= 1, got {args.iw_examples}")
    set_seed(args.seed)
    model = CategoricalVAE(n_lat, k_cat, estimator=args.estimator)

    def score(model: CategoricalVAE, test_x: torch.Tensor, test_y: torch.Tensor, device: torch.device,
              result: TrainResult) -> tuple[dict, str]:
        tau = config.temperature(max(result.step - 1, 0))
        final = {"temperature": tau,
                 "test_set": "MNIST test, fixed binarization (load_mnist binarize='fixed', seed 0)"}
        final.update(evaluate(model, test_x, tau,
                              generator=torch.Generator(device=device).manual_seed(config.eval_seed)))
        if args.iw_samples:
            iw_x = test_x if args.iw_examples is None else test_x[:args.iw_examples]
            start = time.perf_counter()
            gen = torch.Generator(device=device).manual_seed(config.eval_seed)
            bound = torch.cat([importance_weighted_bound(model, iw_x[i:i + 500], args.iw_samples, gen)
                               for i in range(0, iw_x.shape[0], 500)])
            final[f"iw_nelbo_{args.iw_samples}"] = bound.double().mean().item()
            final["iw_examples"] = int(iw_x.shape[0])
            final["iw_seconds"] = round(time.perf_counter() - start, 2)
        line = "final test metrics (nats, fixed binarization): " + ", ".join(
            f"{k}={v:.3f}" for k, v in final.items() if isinstance(v, float))
        return final, line

    return _Job(model, config, Path(args.out or f"runs/catvae-{n_lat}x{k_cat}-{args.estimator}-seed{args.seed}"),
                model.extra_repr(), score=score)


def _jointvae_job(args: argparse.Namespace) -> _Job:
    tau = check_temperature(args.temperature, "--temperature")
    config = default_train_config(args.epochs, args.seed, batch_size=args.batch_size, lr=args.lr, tau0=tau,
                                  tau_min=tau, eval_every=args.eval_every, binarize=not args.intensities)
    set_seed(args.seed)
    model = JointVAE(args.continuous_dim, args.num_categories, cont_capacity=args.cont_capacity,
                     disc_capacity=args.disc_capacity, cont_iters=args.cont_iters, disc_iters=args.disc_iters,
                     cont_delay=args.cont_delay, cont_gamma=args.cont_gamma, disc_gamma=args.disc_gamma,
                     architecture=args.architecture)
    image_size = IMAGE_SIZE.get(args.architecture, 28)

    def score(model: JointVAE, test_x: torch.Tensor, test_y: torch.Tensor, device: torch.device,
              result: TrainResult) -> tuple[dict, str]:
        metrics = model.evaluate(test_x, config.tau0)
        scored = cluster_accuracy(predict_clusters(model, test_x), test_y, model.num_categories, 10)
        final = {"temperature": config.tau0,
                 "test_set": ("MNIST test, intensities (load_mnist binarize='none')" if args.intensities else
                              "MNIST test, fixed binarization (load_mnist binarize='fixed', seed 0)")
                 + ("" if image_size == 28 else f", resized to {image_size}x{image_size} (resize_images)"),
                 **{f"test_{k}": v for k, v in metrics.items()},
                 "cluster_accuracy": scored.accuracy, "mapping": scored.mapping.tolist(),
                 "confusion": scored.confusion.tolist()}
        if args.intensities:  # for comparison with the binarized runs: the same codes on binarized digits
            binary_x = binarize_fixed(test_x, seed=0)  # = load_mnist(binarize="fixed", seed=0), resized if asked
            final["cluster_accuracy_binarized_test"] = cluster_accuracy(
                predict_clusters(model, binary_x), test_y, model.num_categories, 10).accuracy
        line = (f"final test metrics (eval mode: mean + argmax): cluster accuracy={scored.accuracy:.4f}, "
                + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k != "cluster_acc"))
        return final, line

    return _Job(model, config, Path(args.out or f"runs/jointvae-seed{args.seed}"),
                f"JointVAE({model.extra_repr()})", test_binarize="none" if args.intensities else "fixed",
                image_size=image_size, score=score)


_JOBS = {"catvae": _catvae_job, "jointvae": _jointvae_job}


def _load_run_data(args: argparse.Namespace, device: torch.device, test_binarize: str,
                   image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training intensities (the first ``--train-size`` images when given), the test images (a fixed
    binarization, or the intensities) and the test labels, all resized to ``image_size``."""
    train_x, _ = load_mnist("train", args.data_root, device=device)
    if args.train_size is not None:
        if not 1 <= args.train_size <= train_x.shape[0]:
            raise ValueError(f"--train-size must be in [1, {train_x.shape[0]}], got {args.train_size}")
        train_x = train_x[:args.train_size]
    test_x, test_y = load_mnist("test", args.data_root, device=device)
    test_x = resize_images(test_x, image_size)  # 28: unchanged
    if test_binarize == "fixed":  # the same draw as load_mnist(binarize="fixed", seed=0)
        test_x = binarize_fixed(test_x, seed=0)
    return resize_images(train_x, image_size), test_x, test_y


@restoring_subnormal_mode()  # subnormals are flushed while a run trains; an in-process caller gets its mode back
def run(args: argparse.Namespace) -> int:
    """Run one parsed subcommand: train (or resume), score, write the files; return the exit status.

    Run in-process (a notebook, a test), it leaves the caller's thread count and subnormal mode as
    it found them.
    """
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if not args.keep_subnormals:  # before any tensor work, so PyTorch's worker threads inherit it
            flush_subnormals()
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    job = _JOBS[args.model](args)
    device = get_device(args.device)
    train_x, test_x, test_y = _load_run_data(args, device, job.test_binarize, job.image_size)
    if job.model.name == JointVAE.name:
        job.model.set_eval_labels(test_y)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    say(f"training {job.name} on {train_x.shape[0]} images, device {device}, {job.config.epochs} epochs; "
        f"outputs in {job.out}")
    result = train(job.model, train_x, job.config, test_x=test_x, out_dir=job.out, resume=not args.fresh,
                   device=device, progress=False if args.quiet else None, log=say)
    if result.resumed_from_epoch:
        say(f"(resumed from epoch {result.resumed_from_epoch} of {job.out / CHECKPOINT_NAME})")
    scores, line = job.score(job.model, test_x, test_y, device, result)
    final = {"epochs": result.epoch, "steps": result.step, "temperature": scores.pop("temperature"),
             "train_wall_s": result.history[-1]["elapsed_s"] if result.history else 0.0, **scores}
    atomic_write(job.out / "final_metrics.json", lambda tmp: tmp.write_text(json.dumps(final, indent=1) + "\n"))
    outputs = [job.out / name for name in (CHECKPOINT_NAME, "history.json", "history.csv", "final_metrics.json")]
    if args.export:
        outputs.append(export_weights(job.model, args.export, dtype=getattr(torch, args.export_dtype),
                                      history=result.history, train_config=dataclasses.asdict(job.config),
                                      final_metrics=final))
    print(line)
    print("wrote:\n" + "\n".join(f"  {p}" for p in outputs))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m gstutorial`` and the ``gstutorial`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, TypeError, CheckpointMismatchError, MNISTDataError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # divergence too: its message says how to resume
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

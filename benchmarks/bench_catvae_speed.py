"""One training epoch of the categorical VAE: the package's trainer vs a tutorial-style loop.

Both train the same 30x10 categorical VAE (784-512-256-300 encoder, 300-256-512-784 decoder) with
batch 100, Adam (lr 1e-3), dynamic binarization and a Gumbel-Softmax sample on the global-step
temperature schedule, and both compute each step's loss with the very same function
(``CategoricalVAE.loss``, with the package's per-call value checks off in both, as the engine runs
it), so the per-step math is identical. What differs is everything around it:

* reference (the way the popular tutorials write it): ``torchvision.datasets.MNIST`` with
  ``transforms.ToTensor()`` (a PIL image and a tensor conversion per sample), a ``DataLoader``
  collating 100 samples per batch, ``torch.bernoulli`` on the batch, ``optim.Adam`` with its default
  (per-parameter loop) implementation, ``loss.item()`` every step;
* package (:func:`gstutorial.engine.train`): MNIST resident as one tensor, batches sliced by a
  permutation, binarization as one uniform draw compared in place, fused Adam, no host sync.

Both carry their model, Adam moments and global step from one round to the next, as in one long
training (the engine resumes from a checkpoint in a temporary folder each round; its epoch is timed
by its own clock, which excludes the checkpoint and the resume).

Also timed: the epoch's matrix multiplications alone (6 forward, 6 weight-gradient and 5
input-gradient products per step, same shapes) — a lower bound for any implementation of this
model on this CPU — and how close the trainer gets to it; and a fuller floor, those products plus a
fused Adam update and the step's random numbers (see :func:`floor_epoch`), which bounds the speed-up
any implementation with the same per-step math could reach against the reference.

The four measurements are interleaved for several rounds in one process, so that a machine shared
with other work slows them alike; medians are reported. Run from the repository root::

    .venv/bin/python benchmarks/bench_catvae_speed.py [--rounds 3] [--data-root data]

The Benchmarks appendix shows the results recorded with ``--json gstutorial/results/catvae_speed.json`` and, with
``--flush-subnormals``, ``--json gstutorial/results/catvae_speed_flush.json`` (files the package ships;
read with ``gstutorial.resources.recorded_results``).

Subnormal floats: after a few hundred steps many of Adam's moment estimates (those of weights whose
gradient is zero on almost every step: into hidden units that have stopped firing, from pixels that
are almost never on) decay below 1.2e-38, where x86 arithmetic is many times slower, and both loops'
epochs after the first slow down. ``--flush-subnormals`` turns on flush-to-zero for the whole process
before anything runs, for all four measurements alike (as ``python -m gstutorial`` does for
training), which changes results only below 1.2e-38.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from gstutorial.catvae import CategoricalVAE
from gstutorial.checks import value_checks
from gstutorial.cli import HelpFormatter
from gstutorial.data import load_mnist
from gstutorial.engine import TrainConfig, make_optimizer, temperature_at, train
from gstutorial.files import atomic_write
from gstutorial.runtime import flush_subnormals

LATENT, CLASSES, BATCH = 30, 10, 100


def reference_epoch(model: CategoricalVAE, optimizer: optim.Optimizer, loader: DataLoader, step: int) -> tuple[float, int]:
    """One epoch written the tutorial way (same per-step math as the package)."""
    model.train()
    train_loss = 0.0
    with value_checks(False):  # a tutorial loop checks nothing; the engine's steps skip the scans too
        for data, _ in loader:
            data = torch.bernoulli(data.view(-1, 784))          # dynamic binarization
            tau = temperature_at(step)                           # global-step schedule, like the package
            optimizer.zero_grad()
            loss = model.loss(data, tau)["loss"]
            loss.backward()
            train_loss += loss.item() * len(data)
            optimizer.step()
            step += 1
    return train_loss / len(loader.dataset), step


def matmul_epoch(model: CategoricalVAE, steps: int) -> None:
    """Only the matrix products of ``steps`` training steps (forward, weight and input gradients)."""
    layers = [m for m in [*model.encoder, *model.decoder] if isinstance(m, torch.nn.Linear)]
    weights = [m.weight.detach().clone() for m in layers]
    biases = [m.bias.detach().clone() for m in layers]
    inputs = [torch.rand(BATCH, w.shape[1]) for w in weights]
    grads = [torch.rand(BATCH, w.shape[0]) for w in weights]
    out_fwd = [torch.empty(BATCH, w.shape[0]) for w in weights]
    out_gw = [torch.empty_like(w) for w in weights]
    out_gx = [torch.empty(BATCH, w.shape[1]) for w in weights]
    for _ in range(steps):
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            torch.addmm(b, inputs[i], w.t(), out=out_fwd[i])      # forward
            torch.mm(grads[i].t(), inputs[i], out=out_gw[i])     # weight gradient
            if i != 0:                                           # no gradient w.r.t. the images
                torch.mm(grads[i], w, out=out_gx[i])             # input gradient


def floor_epoch(model: CategoricalVAE, steps: int) -> None:
    """The work no implementation of this training step can skip: the matrix products of
    :func:`matmul_epoch`, a fused Adam update of every parameter, and the step's random numbers (the
    binarization's and the Gumbel noise's uniforms). Everything else (bias adds, activations, the
    softmax, the losses, their gradients, the framework's bookkeeping) comes on top of this."""
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = make_optimizer(params, lr=1e-3)  # the engine's Adam (fused where PyTorch has the kernel)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        torch.rand(BATCH, 784, generator=generator)
        torch.rand(BATCH, LATENT * CLASSES, generator=generator)
        opt.step()
    matmul_epoch(model, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--data-root", default="data", help="MNIST data root")
    parser.add_argument("--json", default=None,
                        help="also write the results to this JSON file (the Benchmarks appendix reads "
                             "gstutorial/results/catvae_speed.json and catvae_speed_flush.json)")
    parser.add_argument("--flush-subnormals", action="store_true",
                        help="flush subnormal floats to zero in all four measurements (set before anything runs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for all four measurements (default: PyTorch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_subnormals and not flush_subnormals():
        raise SystemExit("this CPU cannot flush subnormal floats to zero")

    os.environ.setdefault("GSTUTORIAL_NO_PROGRESS", "1")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; load average at start {os.getloadavg()[0]:.2f}; "
          f"subnormals {'flushed to zero' if args.flush_subnormals else 'kept (IEEE default)'}")

    # reference: torchvision dataset + DataLoader + ToTensor, batch 100
    dataset = datasets.MNIST(args.data_root, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)
    ref_model = CategoricalVAE(LATENT, CLASSES)
    ref_opt = optim.Adam(ref_model.parameters(), lr=1e-3)

    # package: resident tensors
    train_x, _ = load_mnist("train", args.data_root, device="cpu")
    pkg_model = CategoricalVAE(LATENT, CLASSES)
    pkg_model.load_state_dict(ref_model.state_dict())
    steps = len(loader)

    run_dir = Path(tempfile.mkdtemp(prefix="bench_catvae_speed."))
    times: dict[str, list[float]] = {"reference": [], "package": [], "matmul": [], "floor": []}
    ref_step = 0
    for r in range(args.rounds):
        t = time.perf_counter()
        ref_loss, ref_step = reference_epoch(ref_model, ref_opt, loader, ref_step)
        times["reference"].append(time.perf_counter() - t)

        # the engine continues its run like the reference loop does (model, Adam's moments, global
        # step), resuming from its checkpoint; its own clock times the epoch's loop, not the resume
        result = train(pkg_model, train_x, TrainConfig(epochs=r + 1, seed=0), out_dir=run_dir, device="cpu",
                       progress=False)
        times["package"].append(result.history[-1]["epoch_s"])
        pkg_loss = result.history[-1]["loss"]

        t = time.perf_counter()
        matmul_epoch(pkg_model, steps)
        times["matmul"].append(time.perf_counter() - t)

        t = time.perf_counter()
        floor_epoch(pkg_model, steps)
        times["floor"].append(time.perf_counter() - t)
        print(f"round {r + 1}: reference {times['reference'][-1]:.2f} s (loss {ref_loss:.2f}), "
              f"package {times['package'][-1]:.2f} s (loss {pkg_loss:.2f}), "
              f"matmuls only {times['matmul'][-1]:.2f} s, "
              f"matmuls + Adam + random numbers {times['floor'][-1]:.2f} s", flush=True)

    shutil.rmtree(run_dir, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nper epoch ({steps} steps of batch {BATCH}, latent {LATENT}x{CLASSES}), median of {args.rounds}:")
    print(f"  reference (torchvision MNIST + DataLoader + ToTensor): {med['reference']:6.2f} s")
    print(f"  package trainer (gstutorial.engine.train):             {med['package']:6.2f} s")
    print(f"  matrix multiplications alone (lower bound):             {med['matmul']:6.2f} s")
    print(f"  matmuls + fused Adam + random numbers (the floor):      {med['floor']:6.2f} s")
    print(f"speed-up of the trainer over the reference: {med['reference'] / med['package']:.2f}x (target >= 3x)")
    print(f"3x needs an epoch of at most {med['reference'] / 3:.2f} s; the floor alone leaves "
          f"{med['reference'] / 3 - med['floor']:.2f} s ({1000 * (med['reference'] / 3 - med['floor']) / steps:.2f} ms "
          f"a step) for the rest of the step; an implementation doing only the floor's work would be "
          f"{med['reference'] / med['floor']:.2f}x faster than the reference")
    print(f"trainer time / matmul lower bound: {med['package'] / med['matmul']:.2f}x "
          f"(matmuls are {100 * med['matmul'] / med['package']:.0f}% of the trainer's epoch)")
    print(f"load average at end {os.getloadavg()[0]:.2f} (other processes on the machine slow every number)")
    if args.json:
        out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds,
               "flush_subnormals": args.flush_subnormals,
               "seconds": times, "median_s": med, "speedup": med["reference"] / med["package"],
               "trainer_over_matmul": med["package"] / med["matmul"],
               "floor_speedup": med["reference"] / med["floor"]}
        text = json.dumps(out, indent=1) + "\n"
        atomic_write(args.json, lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()

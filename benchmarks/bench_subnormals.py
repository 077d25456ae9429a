"""How much subnormal floats slow down late epochs of CPU training, and what flushing them buys.

Takes a finished run folder of the chapter-7 reproduction (default: the Gumbel-Softmax seed-0 run
that ``benchmarks/bench_catvae_quality.py`` trains for 100 epochs), copies it twice and trains each
copy for one more epoch with the command line a reader uses::

    python -m gstutorial catvae --latent 20x10 --estimator gs --seed 0 --epochs 101 --out COPY
    python -m gstutorial catvae ... --keep-subnormals

The first flushes subnormal floats to zero (the command line's default), the second keeps IEEE
arithmetic. Each runs in its own process, alternately for ``--rounds`` rounds; the epoch time is
read from the run's history (``epoch_s``: the training loop only, not start-up or evaluation).
Both continue the same checkpoint — weights, Adam moments, random-number state — so they do the
same arithmetic except on numbers below 1.2e-38. How many of the checkpoint's Adam moments are
subnormal is printed and recorded: a run trained with flushing on has none, and then only the
subnormals created during the timed epoch count against the IEEE side. Results go to
``gstutorial/results/subnormals.json``, which the package ships (the Benchmarks appendix reads it with
``gstutorial.resources.recorded_results("subnormals")``).
Run from the repository root after the quality benchmark::

    .venv/bin/python benchmarks/bench_subnormals.py [--run benchmarks/results/runs/catvae-20x10-gs-seed0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from gstutorial.cli import HelpFormatter
from gstutorial.engine import CHECKPOINT_NAME, load_checkpoint
from gstutorial.files import atomic_write

RESULTS = Path("gstutorial/results/subnormals.json")  # shipped in the package (gstutorial.resources)


def one_more_epoch(run: Path, state: dict, keep_subnormals: bool, threads: int | None,
                   data_root: str | None) -> dict:
    """Copy ``run``, train it on the CPU for one more epoch in a fresh process (the command line, with
    the run's own training configuration); return that epoch's history row."""
    model, cfg = state["model_config"], state["train_config"]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        shutil.copytree(run, copy)
        argv = [sys.executable, "-m", "gstutorial", "catvae",
                "--latent", f"{model['latent_dim']}x{model['num_categories']}", "--estimator", model["estimator"],
                "--epochs", str(state["epoch"] + 1), "--batch-size", str(cfg["batch_size"]), "--lr", repr(cfg["lr"]),
                "--tau0", repr(cfg["tau0"]), "--tau-min", repr(cfg["tau_min"]), "--anneal-rate", repr(cfg["anneal_rate"]),
                "--anneal-every", str(cfg["anneal_every"]), "--seed", str(cfg["seed"]),
                "--eval-every", str(cfg["eval_every"]), "--out", str(copy), "--device", "cpu", "--quiet"]
        argv += ["--keep-subnormals"] if keep_subnormals else []
        argv += ["--threads", str(threads)] if threads else []
        argv += ["--data-root", data_root] if data_root else []
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "GSTUTORIAL_NO_PROGRESS": "1"})
        if proc.returncode != 0:
            said = proc.stderr.strip().splitlines()
            raise SystemExit(f"the command line could not continue {run} (exit {proc.returncode}): "
                             f"{said[-1] if said else 'no message'}. This benchmark needs a run that "
                             "`python -m gstutorial catvae` can resume, such as "
                             "benchmarks/bench_catvae_quality.py writes; pass it with --run, and the data "
                             "root it was trained on with --data-root.")
        return json.loads((copy / "history.json").read_text())["history"][-1]


def subnormal_moments(state: dict) -> tuple[int, int]:
    """How many of the checkpoint's Adam moment estimates (first and second) are subnormal, of all."""
    tiny = torch.finfo(torch.float32).tiny
    count = total = 0
    for moments in state["optimizer_state"]["state"].values():
        for key in ("exp_avg", "exp_avg_sq"):
            t = moments[key]
            count += int(((t != 0) & (t.abs() < tiny)).sum())
            total += t.numel()
    return count, total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--run", default="benchmarks/results/runs/catvae-20x10-gs-seed0",
                        help="a finished run folder of bench_catvae_quality.py")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: PyTorch's choice)")
    parser.add_argument("--data-root", default=None, help="MNIST data root the run was trained on")
    parser.add_argument("--results", default=str(RESULTS),
                        help="results file (the package ships the default; the Benchmarks appendix reads it)")
    args = parser.parse_args(argv)

    run = Path(args.run)
    if not (run / CHECKPOINT_NAME).is_file():
        raise SystemExit(f"no checkpoint in {run}; train it first with benchmarks/bench_catvae_quality.py")
    state = load_checkpoint(run / CHECKPOINT_NAME)
    if state["model_config"].get("model") != "catvae" or state["model_config"].get("estimator") not in ("gs", "st"):
        raise SystemExit(f"{run} is not a run of the command line's categorical VAE (model "
                         f"{state['model_config'].get('model')!r}, estimator {state['model_config'].get('estimator')!r}; "
                         "it trains 'catvae' with estimator 'gs' or 'st'); pass one with --run")
    subnormal, moments = subnormal_moments(state)
    print(f"continuing {run} (epoch {state['epoch']}, step {state['step']}) for one epoch on the CPU; "
          f"{subnormal:,} of its {moments:,} Adam moment estimates are subnormal; "
          f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}")
    seconds: dict[str, list[float]] = {"kept": [], "flushed": []}
    losses: dict[str, list[float]] = {"kept": [], "flushed": []}
    for r in range(args.rounds):
        for name in (("kept", "flushed") if r % 2 == 0 else ("flushed", "kept")):  # alternate the order
            row = one_more_epoch(run, state, keep_subnormals=name == "kept", threads=args.threads,
                                 data_root=args.data_root)
            seconds[name].append(row["epoch_s"])
            losses[name].append(row["loss"])
        print(f"round {r + 1}: subnormals kept {seconds['kept'][-1]:.2f} s (loss {losses['kept'][-1]:.4f}), "
              f"flushed {seconds['flushed'][-1]:.2f} s (loss {losses['flushed'][-1]:.4f})", flush=True)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"\nepoch {state['epoch'] + 1} of a {state['epoch']}-epoch run, median of {args.rounds}: "
          f"IEEE subnormals {med['kept']:.2f} s, flushed to zero {med['flushed']:.2f} s "
          f"-> {med['kept'] / med['flushed']:.2f}x")
    print("the epoch's mean loss, subnormals kept: " + ", ".join(f"{v:.4f}" for v in losses["kept"])
          + "; flushed: " + ", ".join(f"{v:.4f}" for v in losses["flushed"])
          + " (multithreaded matrix products need not repeat bit for bit from run to run)")
    print(f"load average at end {os.getloadavg()[0]:.2f} (other processes on the machine slow every number)")
    out = {"run": str(run), "from_epoch": state["epoch"], "subnormal_adam_moments": subnormal,
           "adam_moments": moments, "rounds": args.rounds, "seconds": seconds,
           "median_s": med, "slowdown": med["kept"] / med["flushed"], "epoch_loss": losses,
           "torch": torch.__version__, "threads": args.threads or torch.get_num_threads(),
           "processor": platform.processor() or platform.machine()}
    text = json.dumps(out, indent=1) + "\n"
    atomic_write(args.results, lambda tmp: tmp.write_text(text))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()

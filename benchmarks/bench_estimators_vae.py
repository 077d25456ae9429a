"""Chapter 9's head-to-head: every gradient estimator trains the chapter 7 VAE under one budget.

Each estimator of :mod:`gstutorial.estimators` trains the 20x10 categorical VAE on binarized MNIST
with the package's engine (:func:`gstutorial.engine.train`) under the same budget: the same number of
epochs (600 steps of batch 100 each), the same seeds, learning rate, data and initialisation. Only the
estimator of the reconstruction term differs (:class:`gstutorial.catvae.CategoricalVAE`'s
``estimator=``):

* the pathwise estimators draw one sample of z per image (one decoder pass), Gumbel-Rao with
  ``--k`` conditional Gumbel draws (extra softmaxes in the backward pass, no extra decoder pass);
* the score-function estimators (REINFORCE, REINFORCE + leave-one-out) draw ``--score-samples``
  samples per image, i.e. that many decoder passes per step; they get the same number of *steps*;
* temperature: the training engine's default schedule (τ = max(0.5, exp(−1e-4·t)), refreshed every
  1000 steps) for every estimator that uses one, ReinMax included: below τ = 1 it is outside its
  authors' advice, and its :class:`~gstutorial.estimators.LowTemperatureWarning` is silenced here
  because the benchmark asks for that regime on purpose.

Then, on the MNIST test set (fixed binarization, ``load_mnist("test", binarize="fixed", seed=0)``),
in nats, lower is better: the single-sample hard −ELBO on all 10,000 images (one exact one-hot
sample of q(z|x), analytic KL) and the ``--iw-samples``-sample importance-weighted bound on the first
``--iw-examples`` images; plus training seconds per epoch, both wall-clock and the process's CPU time
(one torch thread per run: CPU seconds do not depend on what else the machine runs, wall seconds
do). Mean and sample std over seeds (std null for
one seed) go to ``gstutorial/results/estimators_vae.json``, the file chapter 9 displays (the package
ships it: ``gstutorial.resources.recorded_results("estimators_vae")``).

Runs go in parallel (``--jobs``, one torch thread each); their checkpoints are kept in ``--runs`` so an
interrupted benchmark resumes, and a run with a larger ``--epochs`` trains further from them (the
temperature follows the global step, so the schedule is the same as an uninterrupted run's).
Examples (the committed results: every estimator for 3 epochs, then four of them trained on from
those runs to 30 epochs, ``gstutorial/results/estimators_vae_30.json``)::

    .venv/bin/python benchmarks/bench_estimators_vae.py --epochs 3 --seeds 0 1 2 --jobs 2
    .venv/bin/python benchmarks/bench_estimators_vae.py --estimators straight_through gumbel_softmax \
        st_gumbel_softmax reinmax --seeds 0 1 2 --epochs 30 --jobs 2 --out gstutorial/results/estimators_vae_30.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from gstutorial.catvae import CategoricalVAE, importance_weighted_bound, negative_elbo
from gstutorial.cli import HelpFormatter
from gstutorial.data import load_mnist
from gstutorial.engine import TrainConfig, train
from gstutorial.estimators import ESTIMATORS, LowTemperatureWarning
from gstutorial.files import atomic_write
from gstutorial.runtime import set_seed


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation; the std is ``None`` (JSON null) for a single seed."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def train_config(estimator: str, epochs: int, seed: int) -> TrainConfig:
    """The engine's default temperature schedule for every estimator (one schedule for all)."""
    return TrainConfig(epochs=epochs, seed=seed)


def model_for(estimator: str, score_samples: int, k: int) -> CategoricalVAE:
    est = ESTIMATORS[estimator]
    return CategoricalVAE(20, 10, estimator=estimator,
                          num_samples=score_samples if est.kind == "score" else 1,
                          k=k if est.uses_k else 1)


def run_one(job: dict) -> dict:
    """Train one (estimator, seed) and measure it; runs in a worker process with one thread."""
    torch.set_num_threads(job["threads"])
    warnings.simplefilter("ignore", LowTemperatureWarning)  # ReinMax below tau = 1, asked for on purpose
    os.environ["GSTUTORIAL_NO_PROGRESS"] = "1"
    est, seed = job["estimator"], job["seed"]
    train_x, _ = load_mnist("train", job["data_root"])
    test_x, _ = load_mnist("test", job["data_root"], binarize="fixed", seed=0)
    set_seed(seed)
    model = model_for(est, job["score_samples"], job["k"])
    config = train_config(est, job["epochs"], seed)
    out_dir = Path(job["runs"]) / f"estvae-20x10-{est}-seed{seed}"
    cpu_file = out_dir / "cpu_seconds.json"  # CPU seconds of each epoch, kept across resumed sessions
    cpu = {int(k): v for k, v in json.loads(cpu_file.read_text()).items()} if cpu_file.is_file() else {}
    clock = [time.process_time()]

    def record_cpu(line: str) -> None:  # called once after each epoch
        epoch = int(re.match(r"epoch=(\d+)", line)[1])
        cpu[epoch] = round(time.process_time() - clock[0], 3)
        clock[0] = time.process_time()
        atomic_write(cpu_file, lambda tmp: tmp.write_text(json.dumps(cpu)))

    history = train(model, train_x, config, out_dir=out_dir, device="cpu", progress=False, log=record_cpu).history
    model.eval()
    gen = torch.Generator().manual_seed(config.eval_seed)
    with torch.no_grad():
        hard = torch.cat([negative_elbo(model, test_x[i:i + 1000], hard=True, generator=gen)
                          for i in range(0, test_x.shape[0], 1000)]).double()
        sub = test_x[:job["iw_examples"]]
        iw = torch.cat([importance_weighted_bound(model, sub[i:i + 100], job["iw_samples"], gen)
                        for i in range(0, sub.shape[0], 100)]).double()
    row = {"estimator": est, "seed": seed, "epochs": history[-1]["epoch"], "steps": history[-1]["step"],
           "final_temperature": history[-1]["temperature"], "hard_nelbo": hard.mean().item(),
           "iw_bound": iw.mean().item(),
           "seconds_per_epoch": statistics.fmean(h["epoch_s"] for h in history),
           "cpu_seconds_per_epoch": (statistics.fmean(cpu[h["epoch"]] for h in history)
                                     if all(h["epoch"] in cpu for h in history) else None),
           "num_samples": model.num_samples, "k": model.k}
    print(f"{est} seed {seed}: hard -ELBO {row['hard_nelbo']:.2f}, IW {row['iw_bound']:.2f}, "
          f"{row['seconds_per_epoch']:.1f} s/epoch ({row['cpu_seconds_per_epoch']} CPU s)", flush=True)
    return row


def settings(estimators: list[str], seeds: list[int], epochs: int, score_samples: int, k: int,
             iw_samples: int, iw_examples: int) -> dict:
    """What a results file is a measurement of: its runs and the test-set budget."""
    runs = sorted((est, seed, epochs, score_samples if ESTIMATORS[est].kind == "score" else 1,
                   k if ESTIMATORS[est].uses_k else 1) for est in estimators for seed in seeds)
    return {"runs (estimator, seed, epochs, S, k)": runs, "IW bound (k, images)": (iw_samples, iw_examples)}


def settings_in(path: Path) -> dict:
    """:func:`settings` read back from a results file this benchmark wrote."""
    saved = json.loads(path.read_text())
    runs = sorted((r["estimator"], r["seed"], r["epochs"], r["num_samples"], r["k"]) for r in saved["runs"])
    iw = re.search(r"IW bound with k = (\d+) on the first (\d+)", saved["budget"])
    return {"runs (estimator, seed, epochs, S, k)": runs,
            "IW bound (k, images)": (int(iw[1]), int(iw[2])) if iw else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Gradient estimators training the 20x10 categorical VAE.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--estimators", nargs="+", choices=list(ESTIMATORS), default=list(ESTIMATORS),
                        help="estimators to train with, one run each per seed")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (600 steps each)")
    parser.add_argument("--score-samples", type=int, default=4, help="S of REINFORCE and REINFORCE + LOO")
    parser.add_argument("--k", type=int, default=10, help="conditional Gumbel draws of Gumbel-Rao")
    parser.add_argument("--iw-samples", type=int, default=100, help="k of the importance-weighted bound")
    parser.add_argument("--iw-examples", type=int, default=1000, help="test images for the IW bound")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--runs", default="benchmarks/results/runs", help="run folders (checkpoints)")
    parser.add_argument("--out", default="gstutorial/results/estimators_vae.json",
                        help="results file (the package ships the default; chapter 9 reads it)")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite a results file that holds other estimators, seeds or budget")
    parser.add_argument("--data-root", default=None, help="MNIST data root (default: $GSTUTORIAL_DATA or ./data)")
    args = parser.parse_args(argv)
    for name in ("epochs", "score_samples", "k", "iw_samples", "iw_examples", "jobs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"--seeds must be non-negative, got {args.seeds}")

    # a quick try (--epochs 1) must not silently replace the runs chapter 9 reads
    asked = settings(args.estimators, args.seeds, args.epochs, args.score_samples, args.k,
                     args.iw_samples, args.iw_examples)
    if Path(args.out).is_file() and not args.replace and (kept := settings_in(Path(args.out))) != asked:
        differ = "; ".join(f"{key}: the file has {kept[key]}, this run would write {asked[key]}"
                           for key in asked if kept[key] != asked[key])
        raise SystemExit(f"{args.out} holds other settings ({differ}). Write elsewhere with --out PATH, "
                         "or pass --replace to overwrite it.")

    jobs = [{"estimator": est, "seed": seed, "epochs": args.epochs, "score_samples": args.score_samples,
             "k": args.k, "iw_samples": args.iw_samples, "iw_examples": args.iw_examples,
             "threads": args.threads, "runs": args.runs, "data_root": args.data_root}
            for est in args.estimators for seed in args.seeds]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(run_one, jobs))
    wall = time.perf_counter() - start

    rows = []
    print(f"\n{'estimator':<20}{'hard -ELBO':>18}{'IW bound':>18}{'s/epoch':>9}")
    for est in args.estimators:
        mine = [r for r in runs if r["estimator"] == est]
        hard, iw = mean_std([r["hard_nelbo"] for r in mine]), mean_std([r["iw_bound"] for r in mine])
        rows.append({"estimator": est, "hard_nelbo_mean": hard[0], "hard_nelbo_std": hard[1],
                     "iw_bound_mean": iw[0], "iw_bound_std": iw[1],
                     "seconds_per_epoch": statistics.fmean(r["seconds_per_epoch"] for r in mine),
                     "cpu_seconds_per_epoch": (statistics.fmean(r["cpu_seconds_per_epoch"] for r in mine)
                                               if all(r["cpu_seconds_per_epoch"] for r in mine) else None),
                     "num_samples": mine[0]["num_samples"], "k": mine[0]["k"]})
        print(f"{est:<20}{hard[0]:>18.2f}{iw[0]:>18.2f}{rows[-1]['seconds_per_epoch']:>9.1f}")
    seeds = ", ".join(str(s) for s in args.seeds)
    budget = (f"Short budget: {args.epochs} epochs ({args.epochs * 600} steps of batch 100, Adam lr 1e-3) per "
              f"estimator, seed{'s' if len(args.seeds) > 1 else ''} {seeds}; one sample of z per image "
              f"(REINFORCE and REINFORCE + LOO: S = {args.score_samples} samples, i.e. {args.score_samples} "
              f"decoder passes per step; Gumbel-Rao: k = {args.k}); every estimator that uses a temperature "
              f"follows the same schedule, tau annealed from 1 (default schedule, ReinMax included). Test set: hard -ELBO on all 10,000 images, IW bound with "
              f"k = {args.iw_samples} on the first {args.iw_examples}. CPU, {args.jobs} runs in parallel, "
              f"{args.threads} thread each; CPU seconds per epoch are the training process's own time.")
    result = {"benchmark": "gradient estimators training the 20x10 categorical VAE, one budget",
              "budget": budget, "torch": torch.__version__, "wall_s": round(wall, 1), "rows": rows, "runs": runs}
    text = json.dumps(result, indent=1, allow_nan=False) + "\n"
    atomic_write(args.out, lambda tmp: tmp.write_text(text))
    print(budget)
    print(f"wrote {args.out} ({wall / 60:.1f} min)")


if __name__ == "__main__":
    main()

"""Reproduction of Jang et al. 2017, Table 1 (categorical VAE, 20x10, binarized MNIST).

Trains the 20x10 categorical VAE with Gumbel-Softmax ("gs") and straight-through Gumbel-Softmax
("st") for several seeds with the package's engine (:func:`gstutorial.engine.train`, the same code
as ``python -m gstutorial catvae``), then reports on the MNIST test set (fixed binarization,
``load_mnist("test", binarize="fixed", seed=0)``), in nats, lower is better:

* the single-sample **hard −ELBO**: −ELBO of the discrete model, the decoder fed one exact
  one-hot sample of q(z|x), KL to the uniform prior analytic — the "negative variational lower
  bound" of the paper's Table 1;
* the **k-sample importance-weighted bound** (default k = 1000) with one-hot samples of the discrete
  posterior — tighter (never above the hard −ELBO in expectation); the paper's text mentions a
  1000-sample evaluation, so both are shown next to the paper's 101.5 (GS) and 107.8 (ST-GS);
* the relaxed −ELBO at the final temperature, for reference only (not a bound on −log p(x) of the
  discrete model).

Mean ± standard deviation over seeds (sample std, n−1) and each seed's numbers and training wall time
are printed and written to ``gstutorial/results/catvae_quality.json`` (the package ships that file:
chapter 7 reads it with ``gstutorial.resources.recorded_results("catvae_quality")``, also where the
package is installed from a wheel). Training resumes from the
run folders (``--runs``), so the script can be stopped and restarted, and ``--epochs`` raised later.
Long: about 100 epochs x 600 steps per run. Example (the paper's settings)::

    .venv/bin/python benchmarks/bench_catvae_quality.py --epochs 100 --seeds 0 1 2 --iw-samples 1000

``--no-train`` only evaluates the checkpoints already in the run folders (whatever epoch they reached).
Each run's evaluation is stored next to its checkpoint (``measured.json``) and reused while the
checkpoint's step and the bound's settings are unchanged, so runs can be trained by several
invocations in parallel (e.g. ``--estimators gs`` and ``--estimators st``, ``--threads 1`` each, with
``--out`` pointing elsewhere) and one last invocation with ``--no-train`` collects them all into the
results file. An invocation whose estimators, seeds or epochs differ from those the results file
already holds stops before training rather than replace them (``--replace`` overrides), so a quick
try such as ``--epochs 1`` cannot overwrite the numbers chapter 7 reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import torch

from gstutorial.catvae import CategoricalVAE, importance_weighted_bound, negative_elbo
from gstutorial.checkpoints import load_model
from gstutorial.cli import HelpFormatter
from gstutorial.data import load_mnist
from gstutorial.engine import CHECKPOINT_NAME, TrainConfig, train
from gstutorial.files import atomic_write
from gstutorial.runtime import flush_subnormals, get_device, set_seed

MEASURED_NAME = "measured.json"  # a run folder's evaluation, reused while its checkpoint is unchanged
PAPER = {"gs": 101.5, "st": 107.8}   # Jang et al. 2017, Table 1, categorical, −ELBO in nats
NAMES = {"gs": "Gumbel-Softmax", "st": "ST Gumbel-Softmax"}


def _pm(std: float | None) -> str:
    return " ± n/a " if std is None else f" ± {std:<4.2f}"


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation; the std is ``None`` (JSON null) for a single seed."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


@torch.no_grad()
def measure(model: CategoricalVAE, test_x: torch.Tensor, tau: float, iw_samples: int, iw_examples: int,
            seed: int) -> dict[str, float]:
    gen = torch.Generator(device=test_x.device).manual_seed(seed)
    hard = torch.cat([negative_elbo(model, test_x[i:i + 1000], hard=True, generator=gen)
                      for i in range(0, test_x.shape[0], 1000)]).double()
    relaxed = torch.cat([negative_elbo(model, test_x[i:i + 1000], tau, generator=gen)
                         for i in range(0, test_x.shape[0], 1000)]).double()
    out = {"hard_nelbo": hard.mean().item(), "relaxed_nelbo": relaxed.mean().item(), "temperature": tau}
    if iw_samples:
        sub = test_x[:iw_examples]
        start = time.perf_counter()
        iw = torch.cat([importance_weighted_bound(model, sub[i:i + 100], iw_samples, gen)
                        for i in range(0, sub.shape[0], 100)]).double()
        out.update({f"iw_nelbo_{iw_samples}": iw.mean().item(), "iw_examples": int(sub.shape[0]),
                    "hard_nelbo_on_iw_examples": hard[:sub.shape[0]].mean().item(),
                    "iw_seconds": round(time.perf_counter() - start, 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Reproduce Jang et al. 2017 Table 1 (categorical 20x10).",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--estimators", nargs="+", choices=sorted(PAPER), default=["gs", "st"],
                        help="gs = Gumbel-Softmax, st = straight-through Gumbel-Softmax")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds, one run each")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per run (600 steps each)")
    parser.add_argument("--anneal-rate", type=float, default=TrainConfig.anneal_rate,
                        help="r in tau_t = max(0.5, exp(-r t)), t = global step")
    parser.add_argument("--iw-samples", type=int, default=1000, help="k of the importance-weighted bound (0: skip)")
    parser.add_argument("--iw-examples", type=int, default=10_000, help="test images for the IW bound")
    parser.add_argument("--no-train", action="store_true", help="only evaluate existing checkpoints")
    parser.add_argument("--runs", default="benchmarks/results/runs", help="run folders (checkpoints)")
    parser.add_argument("--out", default="gstutorial/results/catvae_quality.json",
                        help="results file (the package ships the default; chapter 7 reads it)")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite a results file that holds other estimators, seeds or epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--keep-subnormals", action="store_true",
                        help="do not flush subnormal floats to zero while training (the command line's --keep-subnormals)")
    parser.add_argument("--data-root", default=None, help="MNIST data root (default: $GSTUTORIAL_DATA or ./data)")
    args = parser.parse_args()

    # a quick try (--epochs 1) must not silently replace the runs the chapter reads
    if Path(args.out).is_file() and not args.replace:
        kept = {est: (s["seeds"], max(s["epochs"])) for est, s in json.loads(Path(args.out).read_text())["summary"].items()}
        asked = {est: (list(args.seeds), args.epochs) for est in args.estimators}
        if kept != asked:
            raise SystemExit(f"{args.out} already holds (seeds, epochs) {kept}; this run would write {asked}. "
                             "Write elsewhere with --out PATH, or pass --replace to overwrite it.")
    os.environ.setdefault("GSTUTORIAL_NO_PROGRESS", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.keep_subnormals:
        flush_subnormals()  # as the command line does (see benchmarks/bench_subnormals.py)
    device = get_device()
    train_x, _ = load_mnist("train", args.data_root, device=device)
    test_x, _ = load_mnist("test", args.data_root, binarize="fixed", seed=0, device=device)
    runs: dict[str, list[dict]] = {est: [] for est in args.estimators}
    for est in args.estimators:
        for seed in args.seeds:
            out_dir = Path(args.runs) / f"catvae-20x10-{est}-seed{seed}"
            config = TrainConfig(epochs=args.epochs, seed=seed, anneal_rate=args.anneal_rate)
            if args.no_train:
                if not (out_dir / CHECKPOINT_NAME).is_file():
                    print(f"{est} seed {seed}: no checkpoint in {out_dir}, skipped")
                    continue
                model, meta = load_model(out_dir / CHECKPOINT_NAME, device=device)
                history = meta["history"]
                config = TrainConfig(**meta["train_config"])
            else:
                set_seed(seed)
                model = CategoricalVAE(20, 10, estimator=est)
                history = train(model, train_x, config, test_x=test_x, out_dir=out_dir, device=device,
                                progress=False, log=lambda line, e=est, s=seed: print(f"[{e} seed {s}] {line}",
                                                                                     flush=True)).history
            step = history[-1]["step"]
            tau = config.temperature(max(step - 1, 0))
            cache = out_dir / MEASURED_NAME
            row = json.loads(cache.read_text()) if cache.is_file() else {}
            if (row.get("steps"), row.get("iw_samples", 0), row.get("iw_examples_asked")) != (
                    step, args.iw_samples, args.iw_examples if args.iw_samples else None):
                row = {"seed": seed, "epochs": history[-1]["epoch"], "steps": step,
                       "train_wall_s": history[-1]["elapsed_s"],
                       **measure(model.eval(), test_x, tau, args.iw_samples, args.iw_examples, config.eval_seed),
                       "iw_samples": args.iw_samples, "iw_examples_asked": args.iw_examples if args.iw_samples else None,
                       "train_config": dataclasses.asdict(config),
                       # where the run trained (its last epoch), not where it is scored; histories written
                       # before train() recorded these fall back to this process's settings
                       "device": history[-1].get("device", str(device)),
                       "threads": history[-1].get("threads", torch.get_num_threads())}
                text = json.dumps(row, indent=1, allow_nan=False) + "\n"
                atomic_write(cache, lambda tmp, t=text: tmp.write_text(t))
            runs[est].append(row)
            print(f"{est} seed {seed}: {row['epochs']} epochs, hard -ELBO {row['hard_nelbo']:.2f}"
                  + (f", IW-{args.iw_samples} {row[f'iw_nelbo_{args.iw_samples}']:.2f} on {row['iw_examples']} images"
                     if args.iw_samples else "") + f", trained {row['train_wall_s'] / 60:.1f} min", flush=True)

    key = f"iw_nelbo_{args.iw_samples}"
    summary = {}
    print("\nCategorical VAE 20x10, binarized MNIST test set, nats (lower is better); mean ± std over seeds")
    print(f"{'estimator':<20}{'seeds':>6}{'epochs':>8}{'hard -ELBO':>18}"
          + (f"{'IW k=' + str(args.iw_samples):>18}" if args.iw_samples else "") + f"{'paper':>8}{'train min':>11}")
    for est, rows in runs.items():
        if not rows:
            continue
        hard = mean_std([r["hard_nelbo"] for r in rows])
        summary[est] = {"paper": PAPER[est], "seeds": [r["seed"] for r in rows],
                        "epochs": [r["epochs"] for r in rows], "hard_nelbo_mean": hard[0], "hard_nelbo_std": hard[1],
                        "train_wall_min_mean": statistics.fmean(r["train_wall_s"] for r in rows) / 60}
        line = f"{NAMES[est]:<20}{len(rows):>6}{min(summary[est]['epochs']):>8}{hard[0]:>11.2f}{_pm(hard[1])}"
        if args.iw_samples:
            iw = mean_std([r[key] for r in rows])
            summary[est].update({f"{key}_mean": iw[0], f"{key}_std": iw[1], "iw_examples": rows[0]["iw_examples"]})
            line += f"{iw[0]:>11.2f}{_pm(iw[1])}"
        print(line + f"{PAPER[est]:>8.1f}{summary[est]['train_wall_min_mean']:>11.1f}")
    print("hard -ELBO: single one-hot sample of q(z|x) per image, KL analytic, all 10,000 test images. "
          + (f"IW: k={args.iw_samples} one-hot posterior samples, uniform prior, on the first "
             f"{args.iw_examples} test images." if args.iw_samples else "")
          + " Paper: Jang et al. 2017 Table 1, negative variational lower bound.")
    result = {"benchmark": "catvae 20x10 quality vs Jang et al. 2017 Table 1", "paper": PAPER,
              "test_set": "MNIST test, fixed binarization (load_mnist binarize='fixed', seed 0)",
              "torch": torch.__version__,
              # training only: runs trained by earlier invocations (or before flushing existed) may differ
              "this_invocation_flushes_subnormals": not args.keep_subnormals,
              "summary": summary, "runs": runs}
    text = json.dumps(result, indent=1, allow_nan=False) + "\n"
    atomic_write(args.out, lambda tmp: tmp.write_text(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Chapter 8 benchmark: does the Joint VAE's discrete code discover the MNIST digit classes?

Trains the Joint VAE (:mod:`gstutorial.jointvae`) with the package's training engine for several
seeds, each through the very command line a reader would use::

    python -m gstutorial jointvae --epochs E --seed S --out runs/jointvae-seedS [model options]

and reports, per seed and as a mean, the **unsupervised cluster accuracy** of the discrete code's
argmax on the 10,000 MNIST test images (fixed binarization) after the best one-to-one matching of
the 10 codes to the 10 labels (Hungarian algorithm), plus the training wall time. Labels are never
seen in training. Runs trained on grey levels (model option ``--intensities``) are scored on the test
set's grey levels, and also on its fixed binarization (``cluster_accuracy_binarized_test``). With
``--architecture conv32`` every image, for training and for both test sets, is first resized to
32×32 pixels. Results go to ``gstutorial/results/jointvae.json`` (or ``--results``), which the package
ships: chapter 8 reads it with ``gstutorial.resources.recorded_results("jointvae")``.

Runs resume from their checkpoints, so an interrupted benchmark continues where it stopped, and the
book's committed weights are an export of the seed-0 run (see chapter 8). With ``--variant NAME``
the runs are a side experiment (e.g. a different discrete capacity) stored under that name in the
results file, next to the main runs. With ``--restarts R`` each seed trains R runs (training seeds
S, S + 1000, ...; restart j in ``...-seedS-restartJ``) and keeps the one whose training objective in
its last epoch is lowest: the choice uses no labels and no test data, and the labels score only the
run kept (every candidate's numbers are recorded too). With ``--select-at E`` the objectives compared
are those of epoch E (every run trains E epochs, and only the one kept trains on to ``--epochs``).
Run from the repository root::

    .venv/bin/python benchmarks/bench_jointvae.py [--seeds 0 1 2] [--epochs 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from gstutorial.cli import HelpFormatter
from gstutorial.cli import main as cli_main
from gstutorial.files import atomic_write
from gstutorial.runtime import get_device

RESULTS = Path("gstutorial/results/jointvae.json")  # shipped in the package (gstutorial.resources)


RESTART_STRIDE = 1000  # restart j of seed s trains with seed s + 1000 j


def train_one(seed: int, epochs: int, out: Path, extra: list[str]) -> dict:
    """Train (or resume) one run through the command line; return its measured row."""
    argv = ["--epochs", str(epochs), "--seed", str(seed), "--out", str(out), "--quiet", *extra]
    start = time.perf_counter()
    status = cli_main(["jointvae", *argv])
    if status != 0:
        raise SystemExit(f"training seed {seed} failed with status {status}")
    final = json.loads((out / "final_metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())["history"]
    return {"seed": seed, "command": "python -m gstutorial jointvae " + " ".join(argv),
            "cluster_accuracy": final["cluster_accuracy"], "epochs": final["epochs"], "steps": final["steps"],
            "train_wall_s": final["train_wall_s"], "this_call_s": round(time.perf_counter() - start, 1),
            "final_train_loss": history[-1]["loss"],
            "test_recon": final["test_recon"], "test_kl_cont": final["test_kl_cont"],
            "test_kl_disc": final["test_kl_disc"], "confusion": final["confusion"],
            # runs trained on grey levels (--intensities) are scored on grey levels; this is the same
            # model scored on the fixed binarization the other runs use
            **({"cluster_accuracy_binarized_test": final["cluster_accuracy_binarized_test"]}
               if "cluster_accuracy_binarized_test" in final else {}),
            # where the run trained, as train() recorded it (absent from histories written before it did)
            "trained_on": {k: history[-1][k] for k in ("device", "threads") if k in history[-1]},
            "history": [{k: row[k] for k in ("epoch", "step", "loss", "recon", "kl_cont", "kl_disc", "c_cont",
                                             "c_disc", "test_cluster_acc", "elapsed_s") if k in row}
                        for row in history]}


def run_seed(seed: int, epochs: int, out_root: str, tag: str, extra: list[str], restarts: int = 1,
             select_at: int | None = None) -> dict:
    """Train ``restarts`` runs for benchmark seed ``seed`` (training seeds seed, seed + 1000, ...) and
    keep the one with the lowest training objective — a label-free choice; the labels only score the
    run kept. The objective compared is that of the last epoch, or with ``select_at`` that of epoch
    ``select_at``: then every run trains that many epochs and only the one kept goes on to ``epochs``
    (a run already trained further is read from its history). With one restart this is just the run."""
    base = f"jointvae-seed{seed}" if tag == "main" else f"jointvae-{tag}-seed{seed}"
    dirs = [Path(out_root) / (base if j == 0 else f"{base}-restart{j}") for j in range(restarts)]
    seeds = [seed + RESTART_STRIDE * j for j in range(restarts)]
    candidates = [train_one(seeds[j], epochs if select_at is None else select_at, dirs[j], extra)
                  for j in range(restarts)]
    if select_at is None:
        best = min(range(restarts), key=lambda j: candidates[j]["final_train_loss"])
    else:
        for c in candidates:
            at = c["history"][select_at - 1]
            c["select_train_loss"], c["select_cluster_accuracy"] = at["loss"], at.get("test_cluster_acc")
        best = min(range(restarts), key=lambda j: candidates[j]["select_train_loss"])
        candidates[best] = {**train_one(seeds[best], epochs, dirs[best], extra),
                            **{k: candidates[best][k] for k in ("select_train_loss", "select_cluster_accuracy")}}
    row = {**candidates[best], "seed": seed}
    if restarts > 1:
        row["selected_restart"] = best
        # the cost of all of them; with select_at, the runs not kept count only up to epoch select_at
        # (a run that was trained further for another experiment is charged what this protocol needs)
        row["train_wall_s"] = round(sum(c["train_wall_s"] if select_at is None or j == best
                                        else c["history"][select_at - 1]["elapsed_s"]
                                        for j, c in enumerate(candidates)), 1)
        keys = ("seed", "epochs", "final_train_loss", "cluster_accuracy", "test_recon", "train_wall_s", "command",
                "select_train_loss", "select_cluster_accuracy")
        row["restarts"] = [{k: c[k] for k in keys if k in c} for c in candidates]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds, one run each")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run (938 steps each at batch 64)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for this small model on a shared CPU)")
    parser.add_argument("--out-root", default="runs", help="folder for the run folders (checkpoints)")
    parser.add_argument("--results", default=str(RESULTS),
                        help="results file (the package ships the default; chapter 8 reads it)")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite a section of the results file that holds other settings")
    parser.add_argument("--variant", default="main",
                        help="name of a side experiment; its runs are stored under variants[NAME]")
    parser.add_argument("--note", default="", help="one line describing the variant")
    parser.add_argument("--restarts", type=int, default=1,
                        help="runs per seed; the one with the lowest final training objective is kept (no labels)")
    parser.add_argument("--select-at", type=int, default=None, metavar="E",
                        help="with --restarts: compare the training objectives of epoch E instead of the last "
                             "epoch; every run trains E epochs and only the one kept trains on to --epochs")
    args, extra = parser.parse_known_args(argv)
    if args.restarts < 1:
        raise SystemExit(f"--restarts must be >= 1, got {args.restarts}")
    if args.select_at is not None and not 1 <= args.select_at <= args.epochs:
        raise SystemExit(f"--select-at must be in [1, --epochs = {args.epochs}], got {args.select_at}")
    torch.set_num_threads(args.threads)

    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    # a quick try (--epochs 1) must not silently replace the runs the chapter reads
    section = results if args.variant == "main" else results.get("variants", {}).get(args.variant)
    if section and not args.replace:
        kept = {k: section.get(k) for k in ("seeds", "epochs", "model_options", "restarts")}
        asked = {"seeds": args.seeds, "epochs": args.epochs, "model_options": extra, "restarts": args.restarts}
        if kept != asked:
            raise SystemExit(f"{results_path} already holds variant {args.variant!r} with {kept}; this run has "
                             f"{asked}. Write elsewhere with --results PATH, or pass --replace to overwrite it.")
    runs = []
    for seed in args.seeds:
        row = run_seed(seed, args.epochs, args.out_root, args.variant, extra, args.restarts, args.select_at)
        runs.append(row)
        chosen = "" if args.restarts == 1 else (
            f" (restart {row['selected_restart']} of " + ", ".join(
                f"loss {c.get('select_train_loss', c['final_train_loss']):.2f} / accuracy {c['cluster_accuracy']:.4f}"
                for c in row["restarts"]) + ")")
        print(f"[{args.variant}] seed {seed}: cluster accuracy {row['cluster_accuracy']:.4f}{chosen}, "
              f"training wall time {row['train_wall_s']:.0f} s ({row['epochs']} epochs)", flush=True)
    accs = [r["cluster_accuracy"] for r in runs]
    summary = {"seeds": args.seeds, "epochs": args.epochs, "model_options": extra, "note": args.note,
               "restarts": args.restarts, "select_at": args.select_at,
               "cluster_accuracy_per_seed": accs, "cluster_accuracy_mean": statistics.fmean(accs),
               "cluster_accuracy_min": min(accs),
               "train_wall_s_per_seed": [r["train_wall_s"] for r in runs],
               "train_wall_s_total": round(sum(r["train_wall_s"] for r in runs), 1), "runs": runs}
    if args.variant == "main":
        results.update(summary)
        # where the runs trained, as train() recorded it (older runs: this process's settings)
        trained = runs[0].get("trained_on", {})
        results["machine"] = {"platform": platform.platform(), "processor": platform.processor(),
                              "torch": torch.__version__, "threads": trained.get("threads", args.threads),
                              "device": torch.device(trained.get("device", get_device())).type}
    else:
        results.setdefault("variants", {})[args.variant] = summary
    text = json.dumps(results, indent=1) + "\n"
    atomic_write(results_path, lambda tmp: tmp.write_text(text))
    print(f"[{args.variant}] mean cluster accuracy over seeds {args.seeds}: {statistics.fmean(accs):.4f} "
          f"(min {min(accs):.4f}); total training wall time {summary['train_wall_s_total']:.0f} s; "
          f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

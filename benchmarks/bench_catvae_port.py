"""What the copied PyTorch port's flaws cost: chapter 7's 20x10 model trained with each flaw on its own,
with all of them, and without any, at one fixed budget (same engine, same test set).

Rows (``--rows``): ``fixed`` (no flaw: chapter 7's model), ``relu_logits``, ``epoch_reset``,
``grey_levels`` (each flaw alone) and ``all`` (the three training flaws together). Every model is
scored on the fixed binarization of the MNIST test set by the hard −ELBO (one exact one-hot sample
per image, analytic KL, as chapter 7) and by the number the port itself would report, the relaxed
−ELBO at τ = 1 (:func:`gstutorial.port.port_test_nelbo`): the fourth flaw, ``relaxed_eval``, needs
no training of its own. Results go to ``gstutorial/results/catvae_port.json`` (chapter 7 reads it).

Runs resume from their folders (``--runs``), so several invocations can train rows in parallel
(``--threads 1`` each) and a last one with ``--no-train`` collects them::

    .venv/bin/python benchmarks/bench_catvae_port.py --rows fixed relu_logits all --epochs 10 --threads 1
    .venv/bin/python benchmarks/bench_catvae_port.py --rows epoch_reset grey_levels --epochs 10 --threads 1
    .venv/bin/python benchmarks/bench_catvae_port.py --no-train --epochs 10
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from gstutorial.catvae import negative_elbo
from gstutorial.cli import HelpFormatter
from gstutorial.data import load_mnist
from gstutorial.engine import CHECKPOINT_NAME, load_checkpoint, train
from gstutorial.files import atomic_write
from gstutorial.port import TRAINING_FLAWS, PortVAE, port_test_nelbo, port_train_config
from gstutorial.runtime import flush_subnormals, set_seed

ROWS = {"fixed": (), **{flaw: (flaw,) for flaw in TRAINING_FLAWS}, "all": TRAINING_FLAWS}
MEASURED_NAME = "measured.json"


@torch.no_grad()
def measure(model: PortVAE, test_x: torch.Tensor, eval_seed: int) -> dict[str, float]:
    """Hard −ELBO (chapter 7's test number) and the port's relaxed −ELBO at τ = 1, mean nats per image."""
    model.eval()
    gen = torch.Generator().manual_seed(eval_seed)
    hard = sum(negative_elbo(model, test_x[i:i + 1000], hard=True, generator=gen).double().sum().item()
               for i in range(0, test_x.shape[0], 1000)) / test_x.shape[0]
    return {"hard_nelbo": hard, "port_nelbo": port_test_nelbo(model, test_x, 1.0, generator=gen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS),
                        help="fixed: no flaw; one flaw alone; all: the three training flaws together")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds, one run each")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (600 steps each)")
    parser.add_argument("--no-train", action="store_true", help="only collect runs already trained")
    parser.add_argument("--runs", default="benchmarks/results/runs", help="run folders (checkpoints)")
    parser.add_argument("--out", default="gstutorial/results/catvae_port.json",
                        help="results file (the package ships the default; chapter 7 and the appendix read it)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-root", default=None, help="MNIST data root (default: $GSTUTORIAL_DATA or ./data)")
    args = parser.parse_args()

    os.environ.setdefault("GSTUTORIAL_NO_PROGRESS", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    flush_subnormals()  # as the command line does
    train_x, _ = load_mnist("train", args.data_root)
    test_x, _ = load_mnist("test", args.data_root, binarize="fixed", seed=0)
    runs: dict[str, list[dict]] = {}
    for row in args.rows:
        for seed in args.seeds:
            out_dir = Path(args.runs) / f"catvae-port-{row}-seed{seed}"
            config = port_train_config(ROWS[row], epochs=args.epochs, seed=seed)
            if args.no_train:
                if not (out_dir / CHECKPOINT_NAME).is_file():
                    print(f"{row} seed {seed}: no run in {out_dir}, skipped")
                    continue
                state = load_checkpoint(out_dir / CHECKPOINT_NAME)
                if state["epoch"] != args.epochs:
                    print(f"{row} seed {seed}: {state['epoch']} epochs, not {args.epochs}, skipped")
                    continue
                model = PortVAE.from_config(state["model_config"])
                model.load_state_dict(state["model_state"])
                history = state["history"]
            else:
                set_seed(seed)
                model = PortVAE(20, 10, flaws=ROWS[row])
                history = train(model, train_x, config, test_x=test_x, out_dir=out_dir, progress=False,
                                log=lambda line, r=row, s=seed: print(f"[{r} seed {s}] {line}", flush=True)).history
            cache = out_dir / MEASURED_NAME
            saved = json.loads(cache.read_text()) if cache.is_file() else {}
            if saved.get("steps") != history[-1]["step"]:
                start = time.perf_counter()
                saved = {"row": row, "flaws": list(ROWS[row]), "seed": seed, "epochs": history[-1]["epoch"],
                         "steps": history[-1]["step"], "train_wall_s": history[-1]["elapsed_s"],
                         "threads": history[-1]["threads"], "device": history[-1]["device"],
                         **measure(model, test_x, config.eval_seed)}
                saved["eval_wall_s"] = round(time.perf_counter() - start, 1)
                text = json.dumps(saved, indent=1, allow_nan=False) + "\n"
                atomic_write(cache, lambda tmp, t=text: tmp.write_text(t))
            runs.setdefault(row, []).append(saved)
            print(f"{row:<12} seed {seed}: hard -ELBO {saved['hard_nelbo']:.2f}, port's relaxed -ELBO "
                  f"{saved['port_nelbo']:.2f}, trained {saved['train_wall_s'] / 60:.1f} min", flush=True)
    if not args.no_train:
        return  # a training invocation may hold only some rows: the collecting one writes the file
    result = {"benchmark": "catvae 20x10: the copied port's flaws, each alone and all together, at one budget",
              "port": "https://github.com/YongfeiYan/Gumbel_Softmax_VAE (gumbel_softmax_vae.py)",
              "command": f"python benchmarks/bench_catvae_port.py --seeds SEED --epochs {args.epochs} --threads 1 "
                         f"for each seed in {args.seeds} (training, side by side), then --seeds "
                         f"{' '.join(map(str, args.seeds))} --epochs {args.epochs} --no-train (collecting)",
              "epochs": args.epochs, "seeds": args.seeds,
              "test_set": "MNIST test, fixed binarization (load_mnist binarize='fixed', seed 0)",
              "hard_nelbo": "one exact one-hot sample of q(z|x) per image, analytic KL, all 10,000 images",
              "port_nelbo": "relaxed Gumbel-Softmax code at tau = 1 (the port's test loop), same images",
              "torch": torch.__version__, "rows": runs}
    atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

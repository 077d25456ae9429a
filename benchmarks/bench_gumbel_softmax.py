"""Time gstutorial's gumbel_softmax against torch.nn.functional.gumbel_softmax in the same run.

For each shape and for the soft and the hard (straight-through) sample, one timed call is a forward
pass plus a backward pass through a weighted sum of the sample. The two implementations are timed
in alternation (so drifting machine load hits both alike) and the median over the repetitions is
reported, with the ratio gstutorial / torch. The package's target: a ratio of at most 1.10.

    python benchmarks/bench_gumbel_softmax.py            # CUDA if available, else CPU
    python benchmarks/bench_gumbel_softmax.py --device cpu --repeats 50
"""

from __future__ import annotations

import argparse
import os

# On a shared CPU, OpenMP threads that busy-wait after each parallel region steal time from whatever
# runs next (here: the other implementation), which makes alternating timings noisy. Passive waiting
# treats both implementations alike; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gstutorial.cli import HelpFormatter  # noqa: E402
from gstutorial.gumbel import gumbel_softmax  # noqa: E402
from gstutorial.runtime import get_device  # noqa: E402

SHAPES = [(100, 20, 10), (4096, 1000)]
TEMPERATURE = 0.5


def ours(logits: torch.Tensor, hard: bool) -> torch.Tensor:
    return gumbel_softmax(logits, TEMPERATURE, hard=hard)


def theirs(logits: torch.Tensor, hard: bool) -> torch.Tensor:
    return F.gumbel_softmax(logits, tau=TEMPERATURE, hard=hard)


def one_step(sampler, logits: torch.Tensor, weights: torch.Tensor, hard: bool) -> None:
    logits.grad = None
    (sampler(logits, hard) * weights).sum().backward()


def timed(sampler, logits, weights, hard, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    one_step(sampler, logits, weights, hard)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per implementation and case")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="dtype of the logits")
    args = parser.parse_args()
    device = get_device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    print(f"device: {device}   dtype: {args.dtype}   torch {torch.__version__}   "
          f"threads: {torch.get_num_threads()}   OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}   repeats: {args.repeats}   temperature: {TEMPERATURE}")
    print(f"{'shape':<16}{'mode':<6}{'gstutorial ms':>15}{'torch ms':>11}{'ratio':>8}")
    worst = 0.0
    for shape in SHAPES:
        logits = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        weights = torch.randn(shape, device=device, dtype=dtype)
        for hard in (False, True):
            for sampler in (ours, theirs):  # warm-up
                for _ in range(3):
                    one_step(sampler, logits, weights, hard)
            times = {ours: [], theirs: []}
            for _ in range(args.repeats):
                for sampler in (ours, theirs):
                    times[sampler].append(timed(sampler, logits, weights, hard, device))
            t_ours, t_theirs = statistics.median(times[ours]), statistics.median(times[theirs])
            ratio = t_ours / t_theirs
            worst = max(worst, ratio)
            print(f"{'x'.join(map(str, shape)):<16}{'hard' if hard else 'soft':<6}"
                  f"{1e3 * t_ours:>15.3f}{1e3 * t_theirs:>11.3f}{ratio:>8.2f}")
    verdict = "within" if worst <= 1.10 else "NOT within"
    print(f"worst ratio {worst:.2f}: {verdict} the 10% budget")


if __name__ == "__main__":
    main()

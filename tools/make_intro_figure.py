"""Draw the opening figure of the book: Gumbel-Softmax samples on the 2-simplex at four temperatures.

For K = 3 categories with probabilities pi = softmax(x) = (0.6, 0.3, 0.1), it draws S = 1000 samples
of ``gstutorial.gumbel.gumbel_softmax`` at tau = 5, 1, 0.5 and 0.1 and scatters them on the triangle
whose corners are the one-hot vectors. Every panel uses the same Gumbel noise (one seed), so each dot
is one noise draw seen at four temperatures. The output is the same bytes on every run.

Usage: .venv/bin/python tools/make_intro_figure.py [--out book/_static/intro_relaxation.png]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; set before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gstutorial.files import atomic_write  # noqa: E402
from gstutorial.gumbel import gumbel_softmax  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "book" / "_static" / "intro_relaxation.png"

PROBS = (0.6, 0.3, 0.1)  # pi = softmax(x) for the logits x = log pi
TEMPERATURES = (5.0, 1.0, 0.5, 0.1)
NUM_SAMPLES = 1000  # S
SEED = 0
DPI = 110
FIGSIZE = (9.1, 3.4)  # inches: 1001 x 374 pixels at DPI
COLOURS = ("#1b6ca8", "#e07b00", "#3a9a3a")  # class 0, 1, 2 (the sample's largest entry)

# Corners of the equilateral triangle, one per category: a point y of the simplex is drawn at
# y @ CORNERS (barycentric coordinates).
CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])


def samples(temperature: float) -> np.ndarray:
    """S Gumbel-Softmax samples, shape (S, 3), float64; the same noise for every temperature."""
    logits = torch.tensor(PROBS, dtype=torch.float64).log().expand(NUM_SAMPLES, len(PROBS))
    generator = torch.Generator().manual_seed(SEED)
    return gumbel_softmax(logits, temperature, generator=generator).numpy()


def draw() -> plt.Figure:
    plt.rcParams.update({"font.size": 11})
    fig, axes = plt.subplots(1, len(TEMPERATURES), figsize=FIGSIZE)
    centre = CORNERS.mean(0)
    pi_point = np.asarray(PROBS) @ CORNERS
    for ax, tau in zip(axes, TEMPERATURES, strict=True):
        y = samples(tau)
        xy = y @ CORNERS
        ax.fill(*CORNERS.T, facecolor="#f4f4f4", edgecolor="0.35", linewidth=0.8, zorder=0)
        ax.scatter(*xy.T, s=6, c=np.asarray(COLOURS)[y.argmax(-1)], alpha=0.45, linewidths=0, zorder=1)
        ax.plot(*centre, marker="+", color="0.2", markersize=7, zorder=2)
        ax.plot(*pi_point, marker="*", color="#c0392b", markeredgecolor="white", markeredgewidth=0.6,
                markersize=13, zorder=3)
        for k, (cx, cy) in enumerate(CORNERS):
            ax.annotate(str(k), (cx, cy), xytext=((-7, -8), (7, -8), (0, 9))[k],  # outside corner k
                        textcoords="offset points", ha="center", va="center", fontsize=11,
                        fontweight="bold", color=COLOURS[k])
        near_corner = (y.max(-1) > 0.95).mean()
        ax.set_title(rf"$\tau$ = {tau:g}", fontsize=13)
        ax.text(0.5, -0.2, f"{100 * near_corner:.0f}% with an entry > 0.95", ha="center",
                va="top", fontsize=10.5, color="0.25")
        ax.set_xlim(-0.12, 1.12)
        ax.set_ylim(-0.32, 1.0)
        ax.set_aspect("equal")
        ax.axis("off")
    dot = {"marker": "o", "linestyle": "", "markersize": 5, "markeredgewidth": 0}
    handles = [plt.Line2D([], [], marker="*", color="#c0392b", linestyle="", markersize=10,
                          label=r"$\pi = \mathrm{softmax}(x)$"),
               plt.Line2D([], [], marker="+", color="0.2", linestyle="", markersize=7,
                          label="centre of the simplex")]
    handles += [plt.Line2D([], [], color=colour, label=("a sample's largest entry: " if k == 0 else "")
                           + f"class {k}", **dot) for k, colour in enumerate(COLOURS)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=10,
               handletextpad=0.1, columnspacing=0.9)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.1, top=0.92, wspace=0.02)
    return fig


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT})")
    out = parser.parse_args(argv).out
    fig = draw()
    # No date or version in the file's metadata, so two runs write the same bytes.
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI,
                                              metadata={"Software": None}))
    plt.close(fig)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return out


if __name__ == "__main__":
    main()

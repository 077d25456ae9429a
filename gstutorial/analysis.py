"""Chapter 8 — what a trained Joint VAE learned: its discrete code as a clustering of the digits,
scored against the labels (Hungarian matching or a majority vote, confusion matrix), the information
each continuous latent carries, traversals of class × style, samples from the prior for each class,
and the figures that show them (image grids, the spread of accuracies over training seeds).

The functions take a trained :class:`gstutorial.jointvae.JointVAE` (or any model with its ``encode``,
``decode``, ``continuous_dim``, ``num_categories`` and ``input_dim``); this module does not import the
model, so the model's own evaluation can use :func:`cluster_accuracy`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .checks import check_int, check_real
from .kl import kl_normal_std
from .nets import check_images

__all__ = ["ClusterAccuracy", "cluster_accuracy", "describe_setting", "kl_per_dimension", "majority_vote_accuracy",
           "plot_confusion", "plot_image_grid", "plot_spread", "predict_clusters", "sample_prior", "tile_images",
           "traverse"]


@dataclasses.dataclass
class ClusterAccuracy:
    """Result of :func:`cluster_accuracy`.

    accuracy : fraction of examples whose cluster, mapped to a label, equals the true label.
    mapping : ``(num_clusters,)`` int array, the label each cluster is matched to (−1: unmatched,
        when there are more clusters than labels, or a cluster without examples in a majority vote).
    contingency : ``(num_clusters, num_classes)`` counts of (cluster, true label).
    confusion : ``(num_classes, num_classes)`` counts of (true label, predicted label) after
        mapping (examples in unmatched clusters are left out).
    """

    accuracy: float
    mapping: np.ndarray
    contingency: np.ndarray
    confusion: np.ndarray


def _as_index_array(values: object, name: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one index per example), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must hold non-negative indices, got {arr.min()}")
    return arr.astype(np.int64)


def cluster_accuracy(clusters: object, labels: object, num_clusters: int | None = None,
                     num_classes: int | None = None) -> ClusterAccuracy:
    """Unsupervised clustering accuracy under the best one-to-one matching of clusters to labels.

    The matching maximises the number of examples whose cluster is matched to their label (a linear
    assignment problem, solved by ``scipy.optimize.linear_sum_assignment``, the Hungarian algorithm
    of Kuhn 1955). Cluster indices are arbitrary names, so any permutation of them scores the same.

    Parameters
    ----------
    clusters, labels : 1-D integer arrays or tensors of the same length (cluster index, true label).
    num_clusters, num_classes : sizes of the two index sets (default: 1 + the largest index seen).
    """
    c, y, contingency = _contingency(clusters, labels, num_clusters, num_classes)
    rows, cols = linear_sum_assignment(contingency, maximize=True)
    mapping = np.full(contingency.shape[0], -1, dtype=np.int64)
    mapping[rows] = cols
    return _scored(c, y, contingency, mapping)


def majority_vote_accuracy(clusters: object, labels: object, num_clusters: int | None = None,
                           num_classes: int | None = None) -> ClusterAccuracy:
    """Clustering accuracy when each cluster takes its most frequent label (a many-to-one mapping).

    Several clusters may take the same label, so this is never below :func:`cluster_accuracy`'s
    one-to-one figure, and it equals it when the majority labels are all different. Some papers
    score clusterings this way; with as many clusters as classes the two differ where clusters
    share a label. A cluster without examples is mapped to −1; ties go to the smaller label.

    Parameters and result as in :func:`cluster_accuracy`.
    """
    c, y, contingency = _contingency(clusters, labels, num_clusters, num_classes)
    mapping = np.where(contingency.sum(1) > 0, contingency.argmax(1), -1)
    return _scored(c, y, contingency, mapping)


def _contingency(clusters: object, labels: object, num_clusters: int | None,
                 num_classes: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated cluster and label indices and their ``(num_clusters, num_classes)`` count table."""
    c = _as_index_array(clusters, "clusters")
    y = _as_index_array(labels, "labels")
    if c.shape != y.shape:
        raise ValueError(f"clusters and labels must have the same length, got {c.size} and {y.size}")
    if c.size == 0:
        raise ValueError("need at least one example")
    n_c = int(c.max()) + 1 if num_clusters is None else check_int(num_clusters, "num_clusters", 1)
    n_y = int(y.max()) + 1 if num_classes is None else check_int(num_classes, "num_classes", 1)
    if c.max() >= n_c or y.max() >= n_y:
        raise ValueError(f"indices out of range: clusters < {n_c} and labels < {n_y} required, got "
                         f"max cluster {c.max()} and max label {y.max()}")
    contingency = np.zeros((n_c, n_y), dtype=np.int64)
    np.add.at(contingency, (c, y), 1)
    return c, y, contingency


def _scored(c: np.ndarray, y: np.ndarray, contingency: np.ndarray, mapping: np.ndarray) -> ClusterAccuracy:
    """Accuracy and confusion matrix of the cluster-to-label ``mapping`` (−1: cluster left out)."""
    n_y = contingency.shape[1]
    kept = mapping >= 0
    accuracy = float(contingency[np.flatnonzero(kept), mapping[kept]].sum() / c.size)
    confusion = np.zeros((n_y, n_y), dtype=np.int64)
    matched = mapping[c] >= 0
    np.add.at(confusion, (y[matched], mapping[c][matched]), 1)
    return ClusterAccuracy(accuracy=accuracy, mapping=mapping, contingency=contingency, confusion=confusion)


def plot_confusion(confusion: object, title: str, ax=None):
    """Draw a confusion matrix ``(true label, matched cluster)`` with its counts; return the axes.

    ``confusion`` is :attr:`ClusterAccuracy.confusion` (or any square count matrix); ``ax`` is a
    matplotlib axes (default: a new figure).
    """
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {counts.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(counts, cmap="Blues")
    for i, j in np.ndindex(counts.shape):
        ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=6.5,
                color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set(xticks=range(len(counts)), yticks=range(len(counts)), xlabel="predicted digit (matched code)",
           ylabel="true digit", title=title)
    return ax


_MODEL_INTERFACE = ("encode", "decode", "continuous_dim", "num_categories", "input_dim")


def _check_model(model: object) -> None:
    missing = [name for name in _MODEL_INTERFACE if not hasattr(model, name)]
    if missing:
        raise TypeError(f"model must be a JointVAE (it lacks {', '.join(missing)}), got {type(model).__name__}")


@torch.no_grad()
def predict_clusters(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The discrete code's argmax for each image (evaluation mode): ``(B,)`` int64."""
    _check_model(model)
    check_images(x, model.input_dim, binary=False)
    batch_size = check_int(batch_size, "batch_size", 1)
    return torch.cat([model.encode(x[i:i + batch_size])[2].argmax(-1) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def kl_per_dimension(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Average KL(q(z_d | x) ‖ N(0, 1)) of each continuous latent over the images: ``(D,)``.

    A latent whose KL is near 0 is unused (its posterior is the prior); the large ones carry the
    information, so they are the ones worth traversing.
    """
    _check_model(model)
    check_images(x, model.input_dim, binary=False)
    batch_size = check_int(batch_size, "batch_size", 1)
    total = torch.zeros(model.continuous_dim, dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], batch_size):
        mu, logvar, _ = model.encode(x[i:i + batch_size])
        total += kl_normal_std(mu.unsqueeze(-1), logvar.unsqueeze(-1)).double().sum(0)
    return total / x.shape[0]


@torch.no_grad()
def traverse(model: torch.nn.Module, dim: int, values: Sequence[float] | torch.Tensor,
             categories: Sequence[int] | None = None, base: torch.Tensor | None = None) -> torch.Tensor:
    """Decoded images for each discrete class × each value of one continuous latent.

    Parameters
    ----------
    dim : the continuous latent to vary (0 ≤ dim < D).
    values : the values it takes (e.g. quantiles of N(0, 1)), length V.
    categories : the discrete classes, one per row (default: all K).
    base : ``(D,)`` values of the other continuous latents (default: 0, the prior mean).

    Returns
    -------
    ``(len(categories), V, 784)`` pixel probabilities.
    """
    _check_model(model)
    dim = check_int(dim, "dim", 0)
    if dim >= model.continuous_dim:
        raise ValueError(f"dim must be < continuous_dim = {model.continuous_dim}, got {dim}")
    p = next(model.parameters())
    values = torch.as_tensor(values, dtype=p.dtype, device=p.device).flatten()
    if values.numel() == 0:
        raise ValueError("values must hold at least one value")
    categories = list(range(model.num_categories)) if categories is None else [int(k) for k in categories]
    if not categories or min(categories) < 0 or max(categories) >= model.num_categories:
        raise ValueError(f"categories must be non-empty indices in [0, {model.num_categories})")
    base = torch.zeros(model.continuous_dim, dtype=p.dtype, device=p.device) if base is None else \
        torch.as_tensor(base, dtype=p.dtype, device=p.device)
    if base.shape != (model.continuous_dim,):
        raise ValueError(f"base must have shape ({model.continuous_dim},), got {tuple(base.shape)}")
    rows, v = len(categories), values.numel()
    z_cont = base.expand(rows, v, -1).clone()
    z_cont[:, :, dim] = values
    index = torch.tensor(categories, device=p.device).repeat_interleave(v)
    z_disc = F.one_hot(index, model.num_categories).to(p.dtype)
    images = torch.sigmoid(model.decode(z_cont.reshape(rows * v, -1), z_disc))
    return images.view(rows, v, -1)


@torch.no_grad()
def sample_prior(model: torch.nn.Module, num_samples: int, categories: Sequence[int] | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Images decoded from the prior, one row per discrete class: ``z ~ N(0, I)``, ``c`` one-hot.

    The same ``num_samples`` draws of ``z`` (drawn on the CPU from ``generator``) are decoded in
    every row, so a column holds one style written as each class.

    Returns
    -------
    ``(len(categories), num_samples, input_dim)`` pixel probabilities.
    """
    _check_model(model)
    num_samples = check_int(num_samples, "num_samples", 1)
    categories = list(range(model.num_categories)) if categories is None else [int(k) for k in categories]
    if not categories or min(categories) < 0 or max(categories) >= model.num_categories:
        raise ValueError(f"categories must be non-empty indices in [0, {model.num_categories})")
    p = next(model.parameters())
    z = torch.randn(num_samples, model.continuous_dim, generator=generator, dtype=torch.float64)
    z = z.to(p.dtype).to(p.device)
    rows = len(categories)
    index = torch.tensor(categories, device=p.device).repeat_interleave(num_samples)
    z_disc = F.one_hot(index, model.num_categories).to(p.dtype)
    images = torch.sigmoid(model.decode(z.repeat(rows, 1), z_disc))
    return images.view(rows, num_samples, -1)


def tile_images(images: object, gap: int = 1) -> np.ndarray:
    """Tile a ``(rows, cols, side * side)`` array of images into one ``2-D`` array, ``gap`` pixels of
    0 between neighbours: shape ``(rows * (side + gap) - gap, cols * (side + gap) - gap)``."""
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 3:
        raise ValueError(f"images must have shape (rows, cols, pixels), got {arr.shape}")
    side = int(round(arr.shape[2] ** 0.5))
    if side * side != arr.shape[2]:
        raise ValueError(f"images must be square (pixels a perfect square), got {arr.shape[2]} pixels")
    gap = check_int(gap, "gap", 0)
    rows, cols = arr.shape[:2]
    step = side + gap
    out = np.zeros((rows * step - gap, cols * step - gap), dtype=np.float64)
    for r, c in np.ndindex(rows, cols):
        out[r * step:r * step + side, c * step:c * step + side] = arr[r, c].reshape(side, side)
    return out


def plot_image_grid(images: object, title: str = "", row_labels: Sequence[str] | None = None, ax=None):
    """Draw a ``(rows, cols, pixels)`` array of pixel probabilities as one grid (ink dark); return the
    axes. ``row_labels`` name the rows on the left."""
    import matplotlib.pyplot as plt

    tiled = tile_images(images, gap=2)
    rows, cols, pixels = np.shape(images)
    side = int(round(pixels ** 0.5))
    if ax is None:
        _, ax = plt.subplots(figsize=(0.42 * cols + 0.8, 0.42 * rows + 0.4))
    ax.imshow(tiled, cmap="gray_r", vmin=0, vmax=1)
    ax.set(xticks=[], title=title)
    if row_labels is not None:
        if len(row_labels) != rows:
            raise ValueError(f"row_labels must name the {rows} rows, got {len(row_labels)}")
        ax.set_yticks([r * (side + 2) + side / 2 for r in range(rows)], list(row_labels), fontsize=7)
    else:
        ax.set_yticks([])
    ax.tick_params(length=0)
    return ax


def plot_spread(values: Sequence[float], references: dict[str, float] | None = None, bin_width: float = 0.02,
                xlabel: str = "test cluster accuracy", title: str = "", ax=None):
    """A dot plot of run-to-run spread: each value a dot, stacked in bins of ``bin_width``, with the
    mean ± one standard deviation (n − 1) drawn below and each of ``references`` (label → value) as a
    dashed vertical line. Returns the axes."""
    import matplotlib.pyplot as plt

    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim != 1 or vals.size < 2:
        raise ValueError(f"values must be a 1-D sequence of at least two numbers, got shape {vals.shape}")
    bin_width = check_real(bin_width, "bin_width", positive=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(9.5, 2.8))
    bins = np.floor(vals / bin_width + 1e-9).astype(np.int64)  # a value on a bin edge goes up
    heights = np.zeros_like(bins)
    height = dict.fromkeys(bins.tolist(), 0)
    for i in np.argsort(vals, kind="stable"):
        heights[i] = height[bins[i]]
        height[bins[i]] += 1
    ax.plot((bins + 0.5) * bin_width, heights + 1, "o", color="C0", ms=7, label=f"{vals.size} runs")
    mean, sd = vals.mean(), vals.std(ddof=1)
    ax.errorbar([mean], [-0.2], xerr=[sd], fmt="D", color="k", capsize=4, label=f"mean {mean:.2f} ± sd {sd:.3f}")
    for i, (label, value) in enumerate((references or {}).items()):
        ax.axvline(value, color=f"C{i + 1}", ls="--", lw=1.2, label=label)
    ax.set(xlabel=xlabel, ylabel="runs", title=title, ylim=(-1, max(height.values()) + 1.5))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def describe_setting(section: dict, label: str) -> str:
    """One line for a recorded setting of the Joint VAE benchmark: its label, epochs, seeds, each
    seed's test cluster accuracy and their mean.

    ``section`` is the benchmark's record of the setting (the main runs, or one of its variants):
    a mapping with ``epochs``, ``seeds``, ``cluster_accuracy_per_seed`` and, for a choice among
    several runs per seed, ``restarts`` and ``select_at``.
    """
    missing = [k for k in ("epochs", "seeds", "cluster_accuracy_per_seed") if k not in section]
    if missing:
        raise ValueError(f"section must be a recorded setting (it lacks {', '.join(missing)})")
    accs = [float(a) for a in section["cluster_accuracy_per_seed"]]
    if len(accs) != len(section["seeds"]) or not accs:
        raise ValueError(f"section must hold one accuracy per seed, got {len(accs)} for {len(section['seeds'])} seeds")
    restarts = section.get("restarts") or 1
    chosen = "" if restarts == 1 else (
        f", lowest objective of {restarts} runs per seed at epoch {section.get('select_at') or section['epochs']}")
    seeds = ("seed " if len(accs) == 1 else "seeds ") + " ".join(str(s) for s in section["seeds"])
    per_seed = " ".join(f"{a:.2f}" for a in accs)
    mean = "" if len(accs) == 1 else f"; mean {sum(accs) / len(accs):.3f}"
    return f"{label}: {section['epochs']} epochs{chosen}; {seeds}: {per_seed}{mean}"

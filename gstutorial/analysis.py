"""Chapter 8 — what a trained Joint VAE learned: its discrete code as a clustering of the digits,
scored against the labels (Hungarian matching, confusion matrix), the information each continuous
latent carries, and traversals of class × style.

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

from .checks import check_int
from .kl import kl_normal_std
from .nets import check_images

__all__ = ["ClusterAccuracy", "cluster_accuracy", "kl_per_dimension", "plot_confusion", "predict_clusters",
           "traverse"]


@dataclasses.dataclass
class ClusterAccuracy:
    """Result of :func:`cluster_accuracy`.

    accuracy : fraction of examples whose cluster, mapped to a label, equals the true label.
    mapping : ``(num_clusters,)`` int array, the label each cluster is matched to (−1: unmatched,
        when there are more clusters than labels).
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
    rows, cols = linear_sum_assignment(contingency, maximize=True)
    mapping = np.full(n_c, -1, dtype=np.int64)
    mapping[rows] = cols
    accuracy = float(contingency[rows, cols].sum() / c.size)
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



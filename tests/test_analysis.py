"""gstutorial.analysis: what a trained Joint VAE learned — Hungarian-matched cluster accuracy, the
confusion plot, cluster predictions, the KL of each continuous latent, and class × style traversals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gstutorial import kl
from gstutorial.analysis import (
    cluster_accuracy,
    kl_per_dimension,
    plot_confusion,
    predict_clusters,
    traverse,
)
from gstutorial.jointvae import JointVAE

SMALL = {"hidden": (32, 16)}


def binary_batch(n: int = 8, pixels: int = 784, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, pixels, generator=g) < 0.3).float()


# ------------------------------------------------------------------------------------------------
# Hungarian-matching cluster accuracy
# ------------------------------------------------------------------------------------------------

def test_permuted_labelling_scores_one():
    labels = np.repeat(np.arange(10), 7)
    perm = np.random.default_rng(0).permutation(10)
    clusters = perm[labels]                      # cluster c = perm[label]
    result = cluster_accuracy(clusters, labels)
    assert result.accuracy == 1.0
    assert np.array_equal(result.mapping[perm], np.arange(10))   # cluster perm[k] maps back to k
    assert np.array_equal(result.confusion, np.diag(np.full(10, 7)))


def test_known_confusion():
    # contingency (cluster × label): cluster 0 holds 8 of label 1 and 2 of label 0, cluster 1 holds
    # 5 of label 0 and 1 of label 2, cluster 2 holds 4 of label 2 and 3 of label 1 and 2 of label 0.
    table = np.array([[2, 8, 0], [5, 0, 1], [2, 3, 4]])
    clusters = np.repeat(np.arange(3), table.sum(1))
    labels = np.concatenate([np.repeat(np.arange(3), row) for row in table])
    result = cluster_accuracy(torch.as_tensor(clusters), torch.as_tensor(labels))
    assert np.array_equal(result.contingency, table)
    assert result.mapping.tolist() == [1, 0, 2]
    assert result.accuracy == pytest.approx((8 + 5 + 4) / 25)
    assert result.confusion.tolist() == [[5, 2, 2], [0, 8, 3], [1, 0, 4]]   # true × predicted


def test_more_clusters_than_labels():
    result = cluster_accuracy([0, 0, 1, 2, 2, 2], [0, 0, 1, 1, 1, 1], num_classes=2)
    assert result.mapping.tolist() == [0, -1, 1]
    assert result.accuracy == pytest.approx(5 / 6)
    # examples of the unmatched cluster 1 are left out of the confusion matrix
    assert result.confusion.tolist() == [[2, 0], [0, 3]]


def test_sizes_given_beyond_the_indices_seen():
    result = cluster_accuracy([0, 1], [1, 0], num_clusters=np.int64(4), num_classes=3)
    assert result.contingency.shape == (4, 3) and result.confusion.shape == (3, 3)
    assert result.accuracy == 1.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_hungarian_equals_brute_force(pairs):
    clusters, labels = (np.array(v) for v in zip(*pairs, strict=True))
    best = max(sum(int(perm[c] == y) for c, y in pairs) for perm in itertools.permutations(range(4)))
    assert cluster_accuracy(clusters, labels, 4, 4).accuracy == pytest.approx(best / len(pairs))


def test_cluster_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        cluster_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="at least one"):
        cluster_accuracy([], [])
    with pytest.raises(TypeError, match="clusters"):
        cluster_accuracy([0.5], [0])
    with pytest.raises(ValueError, match="labels"):
        cluster_accuracy([0], [-1])
    with pytest.raises(ValueError, match="clusters"):
        cluster_accuracy([[0, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="out of range"):
        cluster_accuracy([3], [0], num_clusters=2)
    with pytest.raises(ValueError, match="num_classes"):
        cluster_accuracy([0], [0], num_classes=0)
    with pytest.raises(TypeError, match="num_clusters"):
        cluster_accuracy([0], [0], num_clusters=2.0)


def test_plot_confusion_draws_every_count():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.array([[5, 1, 0], [0, 7, 2], [3, 0, 9]])
    ax = plot_confusion(confusion, "toy")
    assert ax.get_title() == "toy" and ax.get_xlabel() == "predicted digit (matched code)"
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(confusion.ravel().tolist())
    dark = [t.get_text() for t in ax.texts if t.get_color() == "white"]
    assert sorted(dark) == ["5", "7", "9"]            # counts above half the maximum are drawn in white
    plt.close(ax.figure)
    _, given_ax = plt.subplots()
    assert plot_confusion(confusion, "onto given axes", ax=given_ax) is given_ax
    plt.close(given_ax.figure)
    with pytest.raises(ValueError, match="square"):
        plot_confusion(np.zeros((2, 3)), "bad")


# ------------------------------------------------------------------------------------------------
# What a model learned: clusters, KL per latent, traversals
# ------------------------------------------------------------------------------------------------

def test_predict_clusters_is_the_argmax_of_the_discrete_logits_in_any_batch_size():
    torch.manual_seed(0)
    model = JointVAE(5, 7, **SMALL)
    x = binary_batch(10)
    clusters = predict_clusters(model, x)
    assert clusters.shape == (10,) and clusters.dtype == torch.int64
    assert torch.equal(clusters, model.encode(x)[2].argmax(-1))
    assert torch.equal(predict_clusters(model, x, batch_size=3), clusters)


def test_kl_per_dimension_is_the_mean_kl_of_each_latent():
    torch.manual_seed(0)
    model = JointVAE(4, 3, **SMALL)
    with torch.no_grad():   # give the latents clearly different posteriors: mean 0, 1, 2, 3 and variance e^0 ... e^-3
        model.encoder[-1].bias[:4] += torch.arange(4.0)
        model.encoder[-1].bias[4:8] -= torch.arange(4.0)
    x = binary_batch(10)
    per_dim = kl_per_dimension(model, x, batch_size=3)   # chunks of 3, 3, 3 and 1 images
    mu, logvar, _ = model.encode(x)                      # deterministic: the same mu, logvar every call
    q = torch.distributions.Normal(mu.double(), (0.5 * logvar.double()).exp())
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean(0)
    assert per_dim.shape == (4,) and per_dim.dtype == torch.float64
    torch.testing.assert_close(per_dim, expected, rtol=1e-5, atol=1e-6)
    assert per_dim[3] > 3 * per_dim[1] > 0              # far from an even split of the total
    # summed over the latents it is the objective's continuous KL (and evaluate's kl_cont)
    total = kl.kl_normal_std(mu, logvar).mean().item()
    assert per_dim.sum().item() == pytest.approx(total, rel=1e-5)
    assert model.evaluate(x, 0.67)["kl_cont"] == pytest.approx(total, rel=1e-5)
    torch.testing.assert_close(kl_per_dimension(model, x), per_dim)   # one chunk: the same values


def test_traverse_rows_are_the_decoded_codes():
    torch.manual_seed(0)
    model = JointVAE(3, 4, **SMALL)
    values = torch.tensor([-1.0, 0.5])
    grid = traverse(model, 1, values, categories=[2])
    z_cont = torch.zeros(2, 3)
    z_cont[:, 1] = values
    torch.testing.assert_close(grid[0], torch.sigmoid(model.decode(z_cont, F.one_hot(torch.tensor([2, 2]), 4).float())))
    # the other latents sit at base; by default every class gets a row
    base = torch.tensor([0.3, 9.0, -0.7])
    grid = traverse(model, 1, values, base=base)
    assert grid.shape == (4, 2, 784) and bool(((grid >= 0) & (grid <= 1)).all())
    z_cont = base.repeat(2, 1)
    z_cont[:, 1] = values
    torch.testing.assert_close(grid[3], torch.sigmoid(model.decode(z_cont, F.one_hot(torch.tensor([3, 3]), 4).float())))
    assert traverse(model, 0, [0.0, 1.0, 2.0], categories=[3, 1]).shape == (2, 3, 784)


def test_analysis_rejects_bad_arguments():
    model = JointVAE(3, 4, **SMALL)
    x = binary_batch(2)
    with pytest.raises(TypeError, match="model must be a JointVAE"):
        predict_clusters(torch.nn.Linear(784, 4), x)
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 784\)"):
        kl_per_dimension(model, x[:, :100])
    with pytest.raises(ValueError, match="batch_size"):
        predict_clusters(model, x, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        kl_per_dimension(model, x, batch_size=1.0)
    with pytest.raises(ValueError, match="dim"):
        traverse(model, 3, [0.0])
    with pytest.raises(TypeError, match="dim"):
        traverse(model, 1.0, [0.0])
    with pytest.raises(ValueError, match="values"):
        traverse(model, 0, [])
    with pytest.raises(ValueError, match="categories"):
        traverse(model, 0, [0.0], categories=[4])
    with pytest.raises(ValueError, match="base"):
        traverse(model, 0, [0.0], base=torch.zeros(2))

"""gstutorial.analysis: what a trained Joint VAE learned — Hungarian-matched and majority-vote cluster
accuracy, the confusion plot, cluster predictions, the KL of each continuous latent, class × style
traversals, samples from the prior per class, and the image-grid and spread figures."""

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
    describe_setting,
    kl_per_dimension,
    majority_vote_accuracy,
    plot_confusion,
    plot_image_grid,
    plot_spread,
    predict_clusters,
    sample_prior,
    tile_images,
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


def test_majority_vote_lets_two_clusters_share_a_label():
    # contingency (cluster × label) [[5, 1], [4, 2]]: both clusters hold mostly label 0. One-to-one
    # matching must give label 1 to one of them, (5 + 2) / 12; the majority vote gives both label 0,
    # (5 + 4) / 12, and predicts label 0 for every example.
    table = np.array([[5, 1], [4, 2]])
    clusters = np.repeat(np.arange(2), table.sum(1))
    labels = np.concatenate([np.repeat(np.arange(2), row) for row in table])
    hungarian = cluster_accuracy(clusters, labels)
    majority = majority_vote_accuracy(clusters, labels)
    assert hungarian.accuracy == pytest.approx(7 / 12) and hungarian.mapping.tolist() == [0, 1]
    assert majority.accuracy == pytest.approx(9 / 12) and majority.mapping.tolist() == [0, 0]
    assert majority.confusion.tolist() == [[9, 0], [3, 0]]
    assert np.array_equal(majority.contingency, table)


def test_majority_vote_equals_hungarian_when_the_majorities_differ():
    table = np.array([[2, 8, 0], [5, 0, 1], [2, 3, 4]])   # majorities 1, 0, 2: already one-to-one
    clusters = np.repeat(np.arange(3), table.sum(1))
    labels = np.concatenate([np.repeat(np.arange(3), row) for row in table])
    majority = majority_vote_accuracy(torch.as_tensor(clusters), torch.as_tensor(labels))
    assert majority.accuracy == pytest.approx(17 / 25) == cluster_accuracy(clusters, labels).accuracy
    assert majority.mapping.tolist() == [1, 0, 2]


def test_majority_vote_leaves_empty_clusters_unmapped():
    result = majority_vote_accuracy([0, 0, 2], [1, 1, 0], num_clusters=4, num_classes=2)
    assert result.mapping.tolist() == [1, -1, 0, -1] and result.accuracy == 1.0
    with pytest.raises(ValueError, match="same length"):
        majority_vote_accuracy([0, 1], [0])
    with pytest.raises(TypeError, match="labels"):
        majority_vote_accuracy([0], [0.5])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=60))
def test_majority_vote_is_never_below_hungarian(pairs):
    clusters, labels = (np.array(v) for v in zip(*pairs, strict=True))
    majority = majority_vote_accuracy(clusters, labels, 5, 4)
    assert majority.accuracy >= cluster_accuracy(clusters, labels, 5, 4).accuracy - 1e-12
    # and it is the largest accuracy any many-to-one mapping can reach (brute force over 4^5 maps)
    best = max(np.mean(np.array(m)[clusters] == labels) for m in itertools.product(range(4), repeat=5))
    assert majority.accuracy == pytest.approx(best)
    assert majority.confusion.sum() == len(pairs)


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


def test_sample_prior_decodes_one_set_of_draws_in_every_row():
    torch.manual_seed(0)
    model = JointVAE(3, 4, **SMALL)
    images = sample_prior(model, 5, categories=[2, 0], generator=torch.Generator().manual_seed(7))
    assert images.shape == (2, 5, 784) and bool(((images > 0) & (images < 1)).all())
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64).float()
    for row, k in enumerate([2, 0]):
        expected = torch.sigmoid(model.decode(z, F.one_hot(torch.full((5,), k), 4).float()))
        torch.testing.assert_close(images[row], expected)
    # the same generator seed gives the same images; every class gets a row by default
    again = sample_prior(model, 5, generator=torch.Generator().manual_seed(7))
    assert again.shape == (4, 5, 784)
    torch.testing.assert_close(again[2], images[0])
    with pytest.raises(ValueError, match="num_samples"):
        sample_prior(model, 0)
    with pytest.raises(ValueError, match="categories"):
        sample_prior(model, 2, categories=[4])


def test_tile_images_places_every_image_with_gaps():
    images = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)   # 2 × 3 images of 2 × 2 pixels
    tiled = tile_images(images, gap=1)
    assert tiled.shape == (2 * 3 - 1, 3 * 3 - 1)
    assert np.array_equal(tiled[3:5, 6:8], images[1, 2].reshape(2, 2))
    assert np.array_equal(tiled[2], np.zeros(8)) and np.array_equal(tiled[:, 2], np.zeros(5))   # the gaps
    assert np.array_equal(tile_images(torch.as_tensor(images), gap=0)[:2, :2], images[0, 0].reshape(2, 2))
    with pytest.raises(ValueError, match="square"):
        tile_images(np.zeros((1, 1, 5)))
    with pytest.raises(ValueError, match="rows, cols, pixels"):
        tile_images(np.zeros((2, 4)))


def test_plot_image_grid_and_plot_spread_draw_what_they_are_given():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.random.default_rng(0).random((3, 4, 784))
    ax = plot_image_grid(images, "grid", row_labels=["a", "b", "c"])
    assert ax.get_images()[0].get_array().shape == (3 * 30 - 2, 4 * 30 - 2)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="row_labels"):
        plot_image_grid(images, row_labels=["a"])

    values = [0.60, 0.61, 0.615, 0.70, 0.80]
    ax = plot_spread(values, references={"paper": 0.9}, bin_width=0.02)
    dots = ax.lines[0]
    assert len(dots.get_xdata()) == 5
    assert sorted(dots.get_ydata().tolist()) == [1, 1, 1, 2, 3]   # 0.60, 0.61 and 0.615 share a bin
    labels = ax.get_legend_handles_labels()[1]
    assert f"mean {np.mean(values):.2f} ± sd {np.std(values, ddof=1):.3f}" in labels and "paper" in labels
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="at least two"):
        plot_spread([0.5])


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


def test_describe_setting_prints_one_line_per_setting():
    single = {"epochs": 100, "seeds": [9, 10, 11], "cluster_accuracy_per_seed": [0.7058, 0.6747, 0.6667]}
    assert describe_setting(single, "held back") == (
        "held back: 100 epochs; seeds 9 10 11: 0.71 0.67 0.67; mean 0.682")
    chosen = {**single, "restarts": 5, "select_at": 30, "epochs": 150, "cluster_accuracy_per_seed": [0.5, 1.0, 0.75]}
    assert describe_setting(chosen, "choice") == (
        "choice: 150 epochs, lowest objective of 5 runs per seed at epoch 30; seeds 9 10 11: 0.50 1.00 0.75; "
        "mean 0.750")
    one = {"epochs": 15, "seeds": [0], "cluster_accuracy_per_seed": [0.1784]}
    assert describe_setting(one, "plain ELBO") == "plain ELBO: 15 epochs; seed 0: 0.18"
    with pytest.raises(ValueError, match="lacks seeds"):
        describe_setting({"epochs": 1, "cluster_accuracy_per_seed": [0.5]}, "x")
    with pytest.raises(ValueError, match="one accuracy per seed"):
        describe_setting({**single, "seeds": [1]}, "x")

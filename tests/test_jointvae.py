"""Tests for chapter 8's Joint VAE: capacity schedule, KL terms, Hungarian matching, engine round trip."""

from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gstutorial import kl, train
from gstutorial.catvae import reconstruction_nll
from gstutorial.data import binarize_fixed, load_mnist, resize_images
from gstutorial.jointvae import (
    PAPER_SETTINGS,
    JointVAE,
    add_cli,
    capacity_at,
    cluster_accuracy,
    conv_encoder,
    default_train_config,
    kl_per_dimension,
    main,
    plot_confusion,
    predict_clusters,
    run_cli,
    traverse,
)

SMALL = {"hidden": (32, 16)}


def binary_batch(n: int = 8, pixels: int = 784, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, pixels, generator=g) < 0.3).float()


# ------------------------------------------------------------------------------------------------
# Capacity schedule
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (1, 5.0 / 25_000), (12_500, 2.5), (25_000, 5.0),
                                                (10**6, 5.0)])
def test_capacity_at_is_linear_then_flat(step, expected):
    assert capacity_at(step, 5.0, 25_000) == pytest.approx(expected, abs=1e-12)


def test_capacity_at_zero_capacity_and_one_iteration():
    assert capacity_at(7, 0.0, 100) == 0.0
    assert capacity_at(0, 3.0, 1) == 0.0
    assert capacity_at(1, 3.0, 1) == 3.0


@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (999, 0.0), (1000, 0.0), (1001, 5.0 / 25_000),
                                                (13_500, 2.5), (26_000, 5.0), (10**6, 5.0)])
def test_capacity_at_holds_at_zero_for_the_delay_then_ramps(step, expected):
    assert capacity_at(step, 5.0, 25_000, delay=1000) == pytest.approx(expected, abs=1e-12)


def test_cont_delay_holds_only_the_continuous_capacity():
    model = JointVAE(4, 10, cont_iters=100, disc_iters=100, cont_delay=50, **SMALL)
    assert model.capacities(40) == (0.0, pytest.approx(2.0))
    assert model.capacities(50)[0] == 0.0
    assert model.capacities(75) == (pytest.approx(1.25), pytest.approx(math.log(10)))
    assert model.capacities(150)[0] == pytest.approx(5.0)
    assert JointVAE.from_config(model.config()).cont_delay == 50
    assert "after 50" in repr(model)
    # a configuration saved before the option existed rebuilds with no hold
    old = {k: v for k, v in model.config().items() if k != "cont_delay"}
    assert JointVAE.from_config(old).capacities(10) == (pytest.approx(0.5), pytest.approx(0.5))


def test_discrete_capacity_is_capped_at_log_k():
    model = JointVAE(4, 10, disc_capacity=5.0, disc_iters=1000, **SMALL)
    assert model.capacities(0) == (0.0, 0.0)
    c_cont, c_disc = model.capacities(200)
    assert c_cont == pytest.approx(5.0 * 200 / 25_000)
    assert c_disc == pytest.approx(1.0)                      # 5 · 200/1000, below log 10
    assert model.capacities(1000)[1] == pytest.approx(math.log(10))   # 5 capped at log 10 ≈ 2.303
    assert JointVAE(4, 3, disc_capacity=0.5, **SMALL).capacities(10**6)[1] == pytest.approx(0.5)


@pytest.mark.parametrize(("args", "error"), [((-1, 5.0, 10), ValueError), ((0, -0.1, 10), ValueError),
                                             ((0, 5.0, 0), ValueError), ((0, float("nan"), 10), ValueError),
                                             ((1.5, 5.0, 10), TypeError), ((0, 5.0, 2.0), TypeError),
                                             ((0, 5.0, 10, -1), ValueError)])
def test_capacity_at_rejects_bad_arguments(args, error):
    with pytest.raises(error):
        capacity_at(*args)


# ------------------------------------------------------------------------------------------------
# The objective and its KL terms
# ------------------------------------------------------------------------------------------------

def test_loss_terms_match_the_package_kls_and_the_formula():
    torch.manual_seed(0)
    model = JointVAE(6, 5, cont_capacity=4.0, disc_capacity=5.0, cont_iters=100, disc_iters=50,
                     cont_gamma=3.0, disc_gamma=7.0, **SMALL)
    x = binary_batch(16)
    step = 30
    terms = model.loss(x, 0.67, torch.Generator().manual_seed(1), step)
    assert set(terms) == {"loss", "recon", "kl_cont", "kl_disc", "c_cont", "c_disc"}
    assert all(t.ndim == 0 for t in terms.values())
    mu, logvar, logits = model.encode(x)
    torch.testing.assert_close(terms["kl_cont"], kl.kl_normal_std(mu, logvar).mean())
    torch.testing.assert_close(terms["kl_disc"], kl.kl_categorical_uniform(logits).mean())
    # the continuous KL also agrees with torch.distributions, summed over the D dimensions
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(terms["kl_cont"], torch.distributions.kl_divergence(q, p).sum(-1).mean())
    assert terms["c_cont"].item() == pytest.approx(4.0 * 30 / 100)
    assert terms["c_disc"].item() == pytest.approx(min(5.0 * 30 / 50, math.log(5)))
    expected = (terms["recon"] + 3.0 * (terms["kl_cont"] - terms["c_cont"]).abs()
                + 7.0 * (terms["kl_disc"] - terms["c_disc"]).abs())
    torch.testing.assert_close(terms["loss"], expected)


def test_grey_levels_are_accepted_and_scored_by_cross_entropy():
    """Dupont's data: intensities in [0, 1] as soft targets of the same summed cross-entropy."""
    torch.manual_seed(0)
    model = JointVAE(**SMALL).eval()
    x = torch.rand(3, 784)
    terms = model.loss(x, 0.67, None, 0)
    recon_logits = model(x, 0.67)[0]
    p = torch.sigmoid(recon_logits.double())
    expected = -(x * p.log() + (1 - x) * (1 - p).log()).sum(1).mean()
    torch.testing.assert_close(terms["recon"].double(), expected, rtol=1e-5, atol=1e-4)
    assert model.evaluate(x, 0.67)["recon"] == pytest.approx(expected.item(), rel=1e-5)


def test_reconstruction_is_a_summed_bernoulli_nll_in_nats():
    """Σ_pixels of −[x log p + (1−x) log(1−p)], averaged over images — never a per-pixel mean."""
    torch.manual_seed(0)
    model = JointVAE(3, 4, **SMALL).eval()       # eval mode: deterministic code, exact comparison
    x = binary_batch(5)
    terms = model.loss(x, 0.67, None, 0)
    recon_logits, *_ = model(x, 0.67)
    probs = torch.sigmoid(recon_logits.double())
    by_hand = -(x * probs.log() + (1 - x) * (1 - probs).log()).sum(1).mean()
    assert terms["recon"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert terms["recon"].item() == pytest.approx(reconstruction_nll(recon_logits, x).mean().item(), rel=1e-6)
    assert terms["recon"].item() > 100           # ~784 · log 2 for an untrained decoder, not ~0.69


def test_eval_mode_uses_the_mean_and_the_argmax():
    torch.manual_seed(0)
    model = JointVAE(3, 4, **SMALL).eval()
    x = binary_batch(6)
    recon, mu, _, logits = model(x, 0.67, torch.Generator().manual_seed(0))
    again, *_ = model(x, 0.67, torch.Generator().manual_seed(99))
    torch.testing.assert_close(recon, again)
    torch.testing.assert_close(recon, model.decode(mu, F.one_hot(logits.argmax(-1), 4).float()))
    code_mu, code_disc = model.encode_deterministic(x)
    torch.testing.assert_close(code_mu, mu)
    assert torch.equal(code_disc.argmax(-1), logits.argmax(-1)) and torch.all(code_disc.sum(-1) == 1)


def test_training_mode_samples_and_gradients_reach_both_heads():
    torch.manual_seed(0)
    model = JointVAE(3, 4, **SMALL).train()
    x = binary_batch(6)
    a = model.loss(x, 0.67, torch.Generator().manual_seed(0), 10)
    b = model.loss(x, 0.67, torch.Generator().manual_seed(1), 10)
    assert a["recon"].item() != b["recon"].item()
    a["loss"].backward()
    head = model.encoder[-1].weight.grad          # rows: mu (3), logvar (3), logits (4)
    assert head[:3].abs().sum() > 0 and head[3:6].abs().sum() > 0 and head[6:].abs().sum() > 0


def test_shapes():
    model = JointVAE(5, 7, **SMALL)
    x = binary_batch(3)
    mu, logvar, logits = model.encode(x)
    assert mu.shape == logvar.shape == (3, 5) and logits.shape == (3, 7)
    assert model.decode(mu, torch.softmax(logits, -1)).shape == (3, 784)
    assert model.sample_prior(4, torch.Generator().manual_seed(0)).shape == (4, 784)
    assert predict_clusters(model, x).shape == (3,)
    assert kl_per_dimension(model, x).shape == (5,)
    grid = traverse(model, 2, torch.linspace(-2, 2, 6))
    assert grid.shape == (7, 6, 784) and bool(((grid >= 0) & (grid <= 1)).all())
    assert traverse(model, 0, [0.0, 1.0], categories=[3, 1]).shape == (2, 2, 784)


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


# ------------------------------------------------------------------------------------------------
# Bad arguments
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"cont_capacity": -1.0}, "cont_capacity"), ({"disc_capacity": -0.5}, "disc_capacity"),
    ({"cont_gamma": 0.0}, "cont_gamma"), ({"disc_gamma": -30.0}, "disc_gamma"),
    ({"cont_iters": 0}, "cont_iters"), ({"cont_delay": -1}, "cont_delay"), ({"num_categories": 1}, "num_categories"),
    ({"continuous_dim": 0}, "continuous_dim"), ({"hidden": ()}, "hidden"),
])
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JointVAE(**{**SMALL, **kwargs})


@pytest.mark.parametrize("tau", [0.0, -0.67, float("inf")])
def test_loss_rejects_nonpositive_temperature(tau):
    with pytest.raises(ValueError, match="temperature"):
        JointVAE(**SMALL).loss(binary_batch(2), tau, None, 0)


def test_loss_rejects_bad_images_and_steps():
    model = JointVAE(**SMALL)
    with pytest.raises(ValueError, match=r"\(batch, 784\)"):
        model.loss(torch.zeros(2, 28, 28), 0.67, None, 0)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
            model.loss(torch.full((2, 784), bad), 0.67, None, 0)
        with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
            model.evaluate(torch.full((2, 784), bad), 0.67)
    with pytest.raises(TypeError, match="floating-point"):
        model.loss(torch.zeros(2, 784, dtype=torch.long), 0.67, None, 0)
    with pytest.raises(ValueError, match="step"):
        model.loss(binary_batch(2), 0.67, None, -1)
    with pytest.raises(ValueError, match="z_disc"):
        model.decode(torch.zeros(2, 10), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 784\), got \(2, 780\)"):
        model.encode(torch.zeros(2, 780))  # torch's matrix-size error before
    with pytest.raises(ValueError, match="dim"):
        traverse(model, 10, [0.0])


def test_evaluate_rejects_bad_batch_sizes_and_mismatched_labels():
    model = JointVAE(**SMALL)
    x = binary_batch(4)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        model.evaluate(x, 0.67, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int, got float"):
        model.evaluate(x, 0.67, batch_size=2.0)
    model.set_eval_labels(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="evaluation labels hold 3 labels but x holds 4 images"):
        model.evaluate(x, 0.67)
    model.set_eval_labels(torch.tensor([0, 1, 2, 1]))
    clusters = model.encode(x)[2].argmax(-1)
    assert model.evaluate(x, 0.67, batch_size=3)["cluster_acc"] == cluster_accuracy(
        clusters, torch.tensor([0, 1, 2, 1]), 10).accuracy
    model.set_eval_labels(None)
    assert "cluster_acc" not in model.evaluate(x, 0.67)


def test_sample_prior_rejects_bad_counts():
    model = JointVAE(**SMALL)
    with pytest.raises(ValueError, match="num must be >= 1, got 0"):
        model.sample_prior(0)
    with pytest.raises(TypeError, match="num must be an int, got float"):
        model.sample_prior(2.0)


def test_config_round_trip_and_registry():
    model = JointVAE(4, 6, cont_capacity=3.0, disc_gamma=10.0, **SMALL)
    clone = JointVAE.from_config(model.config())
    assert clone.config() == model.config()
    assert json.loads(json.dumps(model.config())) == model.config()
    with pytest.raises(ValueError, match="catvae"):
        JointVAE.from_config({**model.config(), "model": "catvae"})
    assert train.MODEL_REGISTRY["jointvae"] == JointVAE.from_config
    assert isinstance(train.build_model(model.config()), JointVAE)


def test_paper_defaults():
    model = JointVAE()
    assert (model.continuous_dim, model.num_categories) == (10, 10)
    assert (model.cont_capacity, model.disc_capacity, model.cont_iters, model.disc_iters) == (5.0, 5.0, 25_000, 25_000)
    assert (model.cont_gamma, model.disc_gamma) == (30.0, 30.0)
    config = default_train_config()
    assert (config.batch_size, config.lr) == (64, 5e-4)
    assert config.temperature(0) == config.temperature(10**6) == PAPER_SETTINGS["temperature"] == 0.67


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
    with pytest.raises(TypeError, match="integer"):
        cluster_accuracy([0.5], [0])
    with pytest.raises(ValueError, match="out of range"):
        cluster_accuracy([3], [0], num_clusters=2)


# ------------------------------------------------------------------------------------------------
# Through the engine: a short run, checkpoints, the command line
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_small(mnist_raw):
    from gstutorial.data import load_mnist

    train_x, _ = load_mnist("train", mnist_raw.parents[1])
    test_x, test_y = load_mnist("test", mnist_raw.parents[1], binarize="fixed")
    return train_x[:640], test_x[:300], test_y[:300]


def test_short_training_run_decreases_the_loss(mnist_small, tmp_path):
    train_x, test_x, test_y = mnist_small
    torch.manual_seed(0)
    model = JointVAE(cont_iters=50, disc_iters=50, hidden=(128, 64))
    model.set_eval_labels(test_y)
    config = default_train_config(epochs=4, seed=0)
    result = train.train(model, train_x, config, test_x=test_x, out_dir=tmp_path, device="cpu", progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] - 20
    last = result.history[-1]
    assert {"recon", "kl_cont", "kl_disc", "c_cont", "c_disc", "test_cluster_acc"} <= set(last)
    # the engine's score is the Hungarian accuracy of the final model's own argmax codes on the test images
    codes = model.encode(test_x)[2].argmax(-1)
    assert last["test_cluster_acc"] == cluster_accuracy(codes, test_y, 10).accuracy
    assert last["test_cluster_acc"] >= 0.1            # the best matching beats the mean over permutations, 1/K
    assert last["c_disc"] == pytest.approx(math.log(10))        # 10 steps/epoch: 5·30/50 > log 10 in epoch 4

    # checkpoint round trip: same weights, same deterministic outputs
    loaded, meta = train.load_model(tmp_path / "checkpoint.pt", device="cpu")
    assert isinstance(loaded, JointVAE) and loaded.config() == model.config()
    assert meta["history"] == result.history
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    torch.testing.assert_close(loaded(test_x, 0.67)[0], model(test_x, 0.67)[0])

    # fp16 weights file
    path = train.export_weights(model, tmp_path / "w.pt", history=result.history)
    half, _ = train.load_model(path, device="cpu")
    assert (predict_clusters(half, test_x) == predict_clusters(model, test_x)).float().mean() > 0.98

    # resuming with another capacity is refused
    other = JointVAE(cont_iters=50, disc_iters=50, disc_capacity=1.0, hidden=(128, 64))
    with pytest.raises(train.CheckpointMismatchError, match="disc_capacity"):
        train.train(other, train_x, config, out_dir=tmp_path, device="cpu", progress=False)


def test_command_line(mnist_raw, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--disc-capacity" in capsys.readouterr().out

    parser = argparse.ArgumentParser(prog="python -m gstutorial.train")
    sub = parser.add_subparsers(dest="model")
    add_cli(sub)
    args = parser.parse_args(["jointvae", "--epochs", "1", "--train-size", "128", "--out", str(tmp_path / "run"),
                              "--data-root", str(mnist_raw.parents[1]), "--device", "cpu", "--quiet",
                              "--export", str(tmp_path / "w.pt")])
    assert (args.batch_size, args.lr, args.temperature, args.disc_gamma) == (64, 5e-4, 0.67, 30.0)
    assert run_cli(args) == 0
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert np.array(final["confusion"]).sum() == 10_000
    assert (tmp_path / "w.pt").is_file()
    assert final["test_set"].startswith("MNIST test, fixed binarization")
    # the reported scores are those of the saved model's argmax codes on the fixed binarization of the test set
    model, _ = train.load_model(tmp_path / "run" / "checkpoint.pt", device="cpu")
    binary_test, labels = load_mnist("test", mnist_raw.parents[1], binarize="fixed")
    with torch.no_grad():
        codes = model.encode(binary_test)[2].argmax(-1)
    expected = cluster_accuracy(codes, labels, 10, 10)
    assert final["cluster_accuracy"] == final["test_cluster_acc"] == expected.accuracy >= 0.1
    assert final["mapping"] == expected.mapping.tolist() and final["confusion"] == expected.confusion.tolist()

    # --intensities: trained and scored on grey levels; the run's checkpoint records it
    grey = parser.parse_args(["jointvae", "--epochs", "1", "--train-size", "128", "--out", str(tmp_path / "grey"),
                              "--data-root", str(mnist_raw.parents[1]), "--device", "cpu", "--quiet",
                              "--intensities"])
    assert run_cli(grey) == 0
    final = json.loads((tmp_path / "grey" / "final_metrics.json").read_text())
    assert final["test_set"].startswith("MNIST test, intensities") and np.array(final["confusion"]).sum() == 10_000
    assert train.load_checkpoint(tmp_path / "grey" / "checkpoint.pt")["train_config"]["binarize"] is False
    model, _ = train.load_model(tmp_path / "grey" / "checkpoint.pt", device="cpu")
    grey_test, labels = load_mnist("test", mnist_raw.parents[1])
    with torch.no_grad():
        grey_codes = model.encode(grey_test)[2].argmax(-1)
        binary_codes = model.encode(binarize_fixed(grey_test, seed=0))[2].argmax(-1)
    assert final["cluster_accuracy"] == cluster_accuracy(grey_codes, labels, 10, 10).accuracy
    assert final["cluster_accuracy_binarized_test"] == cluster_accuracy(binary_codes, labels, 10, 10).accuracy
    assert "cluster_accuracy_binarized_test" not in json.loads((tmp_path / "run" / "final_metrics.json").read_text())

    # --architecture conv32: Dupont's network on grey levels resized to 32x32; the binarized
    # score is that of the same model on the fixed binarization of the resized test set
    c32 = parser.parse_args(["jointvae", "--epochs", "1", "--train-size", "128", "--out", str(tmp_path / "c32"),
                             "--data-root", str(mnist_raw.parents[1]), "--device", "cpu", "--quiet",
                             "--intensities", "--architecture", "conv32"])
    assert run_cli(c32) == 0
    final = json.loads((tmp_path / "c32" / "final_metrics.json").read_text())
    assert final["test_set"] == ("MNIST test, intensities (load_mnist binarize='none'), resized to 32x32 "
                                 "(resize_images)")
    model, _ = train.load_model(tmp_path / "c32" / "checkpoint.pt", device="cpu")
    assert model.architecture == "conv32" and model.input_dim == 1024
    binary_test = binarize_fixed(resize_images(grey_test, 32), seed=0)
    expected = cluster_accuracy(predict_clusters(model, binary_test), labels, 10, 10).accuracy
    assert final["cluster_accuracy_binarized_test"] == expected

    assert main(["--epochs", "1", "--temperature", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "temperature" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Convolutional architecture
# ------------------------------------------------------------------------------------------------

def test_conv_architecture_shapes_gradients_and_config():
    torch.manual_seed(0)
    model = JointVAE(4, 6, architecture="conv")
    x = binary_batch(3)
    mu, logvar, logits = model.encode(x)
    assert mu.shape == logvar.shape == (3, 4) and logits.shape == (3, 6)
    assert model.decode(mu, torch.softmax(logits, -1)).shape == (3, 784)
    assert isinstance(model.encoder[1], torch.nn.Conv2d) and isinstance(model.decoder[-2], torch.nn.ConvTranspose2d)
    model.loss(x, 0.67, torch.Generator().manual_seed(0), 100)["loss"].backward()
    assert model.encoder[1].weight.grad.abs().sum() > 0 and model.decoder[-2].weight.grad.abs().sum() > 0
    clone = train.build_model(model.config())
    assert clone.architecture == "conv" and clone.config() == model.config()
    assert "architecture='conv'" in model.extra_repr()


def test_conv32_is_duponts_network_on_32x32_images():
    torch.manual_seed(0)
    model = JointVAE(4, 6, architecture="conv32")
    assert model.input_dim == 1024 and JointVAE(architecture="conv").input_dim == 784
    x = binary_batch(3, 1024)
    mu, logvar, logits = model.encode(x)
    assert mu.shape == logvar.shape == (3, 4) and logits.shape == (3, 6)
    assert model.decode(mu, torch.softmax(logits, -1)).shape == (3, 1024)
    # every convolution 4x4 with stride 2: 32 -> 16 -> 8 -> 4 and back
    convs = [m for m in [*model.encoder, *model.decoder] if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert [(m.kernel_size, m.stride) for m in convs] == [((4, 4), (2, 2))] * 6
    sizes, h = [], x.view(3, 1, 32, 32)
    for m in model.encoder[1:7]:
        h = m(h)
        sizes += [h.shape[-1]] if isinstance(m, torch.nn.Conv2d) else []
    assert sizes == [16, 8, 4]
    # the 28x28 network keeps its 3x3 third convolution (committed checkpoints load unchanged)
    assert JointVAE(architecture="conv").encoder[5].kernel_size == (3, 3)
    model.loss(x, 0.67, torch.Generator().manual_seed(0), 100)["loss"].backward()
    assert model.encoder[1].weight.grad.abs().sum() > 0
    clone = train.build_model(model.config())
    assert clone.architecture == "conv32" and clone.config() == model.config()
    assert "architecture='conv32'" in model.extra_repr()


def test_architecture_rejects_bad_values():
    with pytest.raises(ValueError, match="architecture must be one of"):
        JointVAE(architecture="resnet")
    with pytest.raises(ValueError, match="28x28"):
        JointVAE(input_dim=100, architecture="conv")
    with pytest.raises(ValueError, match="32x32 images \\(input_dim 1024\\), got input_dim 784"):
        JointVAE(input_dim=784, architecture="conv32")
    with pytest.raises(ValueError, match="image_size must be 28 or 32"):
        conv_encoder(10, image_size=64)


def test_checkpoint_config_written_before_the_architecture_option_still_resumes(mnist_small, tmp_path):
    train_x, _, _ = mnist_small
    torch.manual_seed(0)
    model = JointVAE(**SMALL)
    config = default_train_config(epochs=1, seed=0)
    train.train(model, train_x, config, out_dir=tmp_path, device="cpu", progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del state["model_config"]["architecture"]          # the configuration as older code wrote it
    torch.save(state, tmp_path / "checkpoint.pt")
    resumed = train.train(JointVAE(**SMALL), train_x, default_train_config(epochs=2, seed=0), out_dir=tmp_path,
                          device="cpu", progress=False)
    assert resumed.history[-1]["epoch"] == 2
    with pytest.raises(train.CheckpointMismatchError, match="architecture"):
        train.train(JointVAE(architecture="conv"), train_x, default_train_config(epochs=3, seed=0),
                    out_dir=tmp_path, device="cpu", progress=False)


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
    with pytest.raises(ValueError, match="square"):
        plot_confusion(np.zeros((2, 3)), "bad")

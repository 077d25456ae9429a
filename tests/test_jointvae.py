"""Chapter 8's Joint VAE: capacity schedule, the objective and its KL terms, evaluation, argument
errors, the convolutional architectures, and a short run through the engine with its checkpoints.
(What a trained model learned is tests/test_analysis.py; the command line is tests/test_cli.py.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gstutorial import kl
from gstutorial.analysis import cluster_accuracy, predict_clusters
from gstutorial.checkpoints import build_model, export_weights, load_model
from gstutorial.data import load_mnist
from gstutorial.engine import CheckpointMismatchError, TrainableModel, train
from gstutorial.jointvae import PAPER_SETTINGS, JointVAE, capacity_at, default_train_config
from gstutorial.nets import reconstruction_nll

pytestmark = pytest.mark.usefixtures("one_torch_thread")

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
    images = model.sample_prior(4, torch.Generator().manual_seed(0))
    assert images.shape == (4, 784) and bool(((images >= 0) & (images <= 1)).all())


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
    with pytest.raises(ValueError, match=r"^images must have shape \(batch, 784\)"):
        model.encode(torch.zeros(2, 780))  # named, not torch's matrix-size error
    with pytest.raises(TypeError, match="z_cont"):
        model.decode(np.zeros((2, 10)), torch.zeros(2, 10))
    with pytest.raises(ValueError, match="z_cont and z_disc"):
        model.decode(torch.zeros(2, 10), torch.zeros(3, 10))


def test_evaluate_rejects_bad_batch_sizes_and_mismatched_labels():
    model = JointVAE(**SMALL)
    x = binary_batch(4)
    with pytest.raises(ValueError, match="^batch_size"):
        model.evaluate(x, 0.67, batch_size=0)
    with pytest.raises(TypeError, match="^batch_size"):
        model.evaluate(x, 0.67, batch_size=2.0)
    model.set_eval_labels(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
        model.evaluate(x, 0.67)
    model.set_eval_labels(torch.tensor([0, 1, 2, 1]))
    clusters = model.encode(x)[2].argmax(-1)
    assert model.evaluate(x, 0.67, batch_size=3)["cluster_acc"] == cluster_accuracy(
        clusters, torch.tensor([0, 1, 2, 1]), 10).accuracy
    model.set_eval_labels(None)
    assert "cluster_acc" not in model.evaluate(x, 0.67)
    with pytest.raises(ValueError, match="^labels"):
        model.set_eval_labels(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="^labels"):
        model.set_eval_labels(torch.tensor([0.0, 1.0, 2.0, 1.0]))


def test_sample_prior_rejects_bad_counts():
    model = JointVAE(**SMALL)
    with pytest.raises(ValueError, match="^num"):
        model.sample_prior(0)
    with pytest.raises(TypeError, match="^num"):
        model.sample_prior(2.0)


def test_config_round_trip():
    model = JointVAE(4, 6, cont_capacity=3.0, disc_gamma=10.0, cont_delay=7, **SMALL)
    clone = JointVAE.from_config(model.config())
    assert clone.config() == model.config()
    assert json.loads(json.dumps(model.config())) == model.config()
    with pytest.raises(ValueError, match="catvae"):
        JointVAE.from_config({**model.config(), "model": "catvae"})
    assert build_model(model.config()).config() == model.config()
    assert isinstance(model, TrainableModel)   # what the engine needs: loss, config, from_config


def test_defaults_are_the_paper_settings():
    """The model's defaults, default_train_config and PAPER_SETTINGS describe one setting."""
    model = JointVAE().config()
    assert {k: model[k] for k in PAPER_SETTINGS if k in model} == {
        k: v for k, v in PAPER_SETTINGS.items() if k in model}
    config = default_train_config(epochs=3, seed=4)
    assert (config.epochs, config.seed, config.batch_size, config.lr) == (
        3, 4, PAPER_SETTINGS["batch_size"], PAPER_SETTINGS["lr"])
    # a fixed temperature: no annealing at any step
    assert config.temperature(0) == config.temperature(10**6) == PAPER_SETTINGS["temperature"]
    assert default_train_config(batch_size=32, binarize=False).batch_size == 32


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"continuous_dim": 2.0}, "continuous_dim"), ({"num_categories": True}, "num_categories"),
    ({"cont_iters": 100.5}, "cont_iters"), ({"cont_delay": "0"}, "cont_delay"),
    ({"cont_capacity": "5"}, "cont_capacity"), ({"disc_gamma": False}, "disc_gamma"),
    ({"input_dim": 784.0}, "input_dim"), ({"hidden": (32.5,)}, "hidden width"),
])
def test_constructor_rejects_wrong_types(kwargs, name):
    with pytest.raises(TypeError, match=name):
        JointVAE(**{**SMALL, **kwargs})


def test_constructor_accepts_numpy_numbers():
    model = JointVAE(np.int64(3), np.int32(4), cont_capacity=np.float32(2.5), cont_iters=np.int64(10),
                     hidden=(np.int64(8),))
    assert model.config()["continuous_dim"] == 3 and type(model.config()["cont_iters"]) is int
    assert json.loads(json.dumps(model.config())) == model.config()   # plain Python numbers


# ------------------------------------------------------------------------------------------------
# Through the engine: a short run, checkpoints
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_small(mnist_root):
    train_x, _ = load_mnist("train", mnist_root)
    test_x, test_y = load_mnist("test", mnist_root, binarize="fixed")
    return train_x[:640], test_x[:300], test_y[:300]


def test_short_training_run_decreases_the_loss(mnist_small, tmp_path):
    train_x, test_x, test_y = mnist_small
    torch.manual_seed(0)
    model = JointVAE(cont_iters=50, disc_iters=50, hidden=(128, 64))
    model.set_eval_labels(test_y)
    config = default_train_config(epochs=4, seed=0)
    result = train(model, train_x, config, test_x=test_x, out_dir=tmp_path, device="cpu", progress=False)
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
    loaded, meta = load_model(tmp_path / "checkpoint.pt", device="cpu")
    assert isinstance(loaded, JointVAE) and loaded.config() == model.config()
    assert meta["history"] == result.history
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    torch.testing.assert_close(loaded(test_x, 0.67)[0], model(test_x, 0.67)[0])

    # fp16 weights file
    path = export_weights(model, tmp_path / "w.pt", history=result.history)
    half, _ = load_model(path, device="cpu")
    assert (predict_clusters(half, test_x) == predict_clusters(model, test_x)).float().mean() > 0.98

    # resuming with another capacity is refused
    other = JointVAE(cont_iters=50, disc_iters=50, disc_capacity=1.0, hidden=(128, 64))
    with pytest.raises(CheckpointMismatchError, match="disc_capacity"):
        train(other, train_x, config, out_dir=tmp_path, device="cpu", progress=False)


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
    clone = build_model(model.config())
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
    clone = build_model(model.config())
    assert clone.architecture == "conv32" and clone.config() == model.config()
    assert "architecture='conv32'" in model.extra_repr()


def test_architecture_rejects_bad_values():
    with pytest.raises(ValueError, match="^architecture"):
        JointVAE(architecture="resnet")
    with pytest.raises(ValueError, match="input_dim"):
        JointVAE(input_dim=100, architecture="conv")
    with pytest.raises(ValueError, match="input_dim"):
        JointVAE(input_dim=784, architecture="conv32")


def test_checkpoint_config_written_before_the_architecture_option_still_resumes(mnist_small, tmp_path):
    train_x, _, _ = mnist_small
    torch.manual_seed(0)
    model = JointVAE(**SMALL)
    config = default_train_config(epochs=1, seed=0)
    train(model, train_x, config, out_dir=tmp_path, device="cpu", progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del state["model_config"]["architecture"]          # the configuration as older code wrote it
    torch.save(state, tmp_path / "checkpoint.pt")
    resumed = train(JointVAE(**SMALL), train_x, default_train_config(epochs=2, seed=0), out_dir=tmp_path,
                          device="cpu", progress=False)
    assert resumed.history[-1]["epoch"] == 2
    with pytest.raises(CheckpointMismatchError, match="architecture"):
        train(JointVAE(architecture="conv"), train_x, default_train_config(epochs=3, seed=0),
                    out_dir=tmp_path, device="cpu", progress=False)

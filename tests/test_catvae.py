"""Chapter 7's model: shapes, the loss by hand, the KL term, evaluation bounds, argument errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gstutorial import kl
from gstutorial.catvae import (
    CategoricalVAE,
    evaluate,
    importance_weighted_bound,
    kl_to_uniform,
    negative_elbo,
    parse_latent,
)
from gstutorial.engine import TrainableModel
from gstutorial.estimators import ESTIMATORS as LAB_ESTIMATORS
from gstutorial.estimators import LowTemperatureWarning
from gstutorial.gumbel import gumbel_noise, one_hot_sample
from gstutorial.nets import reconstruction_nll

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def binary_batch(b: int = 8, d: int = 784, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((b, d), 0.3), generator=torch.Generator().manual_seed(seed))


def tiny_model(n: int = 2, k: int = 3, d: int = 4, estimator: str = "gs", seed: int = 0) -> CategoricalVAE:
    torch.manual_seed(seed)
    return CategoricalVAE(n, k, estimator=estimator, input_dim=d, hidden=(5,)).double()


# --------------------------------------------------------------------------------------------------
# Architecture and shapes
# --------------------------------------------------------------------------------------------------

def test_architecture_matches_the_paper():
    model = CategoricalVAE(20, 10)
    enc = [(m.in_features, m.out_features) for m in model.encoder if isinstance(m, torch.nn.Linear)]
    dec = [(m.in_features, m.out_features) for m in model.decoder if isinstance(m, torch.nn.Linear)]
    assert enc == [(784, 512), (512, 256), (256, 200)]
    assert dec == [(200, 256), (256, 512), (512, 784)]
    # hidden layers are ReLU; nothing after the last Linear: logits are unconstrained
    assert isinstance(model.encoder[-1], torch.nn.Linear) and isinstance(model.decoder[-1], torch.nn.Linear)
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.encoder) == 2
    assert sum(p.numel() for p in model.parameters()) == 1_169_880  # 401920 + 131328 + 51400 + 51456 + 131584 + 402192


def test_logits_are_unconstrained():
    model = CategoricalVAE(20, 10)
    logits = model.encode(binary_batch())
    assert (logits < 0).any() and (logits > 0).any()  # a ReLU on the logits would forbid the negatives


def test_shapes():
    model = CategoricalVAE(20, 10)
    x = binary_batch(8)
    recon, logits, z = model(x, 0.7, torch.Generator().manual_seed(0))
    assert recon.shape == (8, 784) and logits.shape == (8, 20, 10) and z.shape == (8, 20, 10)
    torch.testing.assert_close(z.sum(-1), torch.ones(8, 20))
    terms = model.loss(x, 0.7)
    assert set(terms) == {"loss", "recon", "kl"} and all(t.ndim == 0 for t in terms.values())
    torch.testing.assert_close(terms["loss"], terms["recon"] + terms["kl"])
    images = model.sample_prior(5, torch.Generator().manual_seed(0))
    assert images.shape == (5, 784) and images.min() >= 0 and images.max() <= 1


def test_straight_through_feeds_exact_one_hot_codes():
    model = CategoricalVAE(20, 10, estimator="st")
    _, _, z = model(binary_batch(4), 0.5, torch.Generator().manual_seed(1))
    assert set(z.detach().unique().tolist()) == {0.0, 1.0}
    assert torch.equal(z.detach().sum(-1), torch.ones(4, 20))


def test_config_round_trip():
    model = CategoricalVAE(30, 10, estimator="st")
    assert model.config() == {"model": "catvae", "latent_dim": 30, "num_categories": 10, "estimator": "st",
                              "input_dim": 784, "hidden": [512, 256]}
    clone = CategoricalVAE.from_config(model.config())
    clone.load_state_dict(model.state_dict())
    assert clone.config() == model.config()
    assert isinstance(model, TrainableModel)   # what the engine needs: loss, config, from_config
    with pytest.raises(ValueError, match="jointvae"):
        CategoricalVAE.from_config({**model.config(), "model": "jointvae"})


def test_parse_latent():
    assert parse_latent("20x10") == (20, 10)
    assert parse_latent(" 30 X 10 ") == (30, 10)


# --------------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------------

def test_loss_by_hand_on_a_tiny_batch():
    """All weights zero: q = softmax(encoder bias) and decoder logits = decoder bias, whatever z is.

    Encoder bias per variable (0, log 3) -> q = (1/4, 3/4): KL = ¼ log ¼ + ¾ log ¾ + log 2 = 0.130812
    nats per variable, 2 variables. Decoder bias 0 -> every pixel costs log 2, 4 pixels. Decoder bias
    b = (1, -2, 0, 3) for image x = (1, 0, 1, 0): BCE = softplus(b) - x·b summed
    = log(1+e^-1) + log(1+e^-2) + log 2 + log(1+e^3) = 0.313262 + 0.126928 + 0.693147 + 3.048587.
    """
    model = CategoricalVAE(2, 2, input_dim=4, hidden=(3,)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.encoder[-1].bias.copy_(torch.tensor([0.0, math.log(3.0)] * 2, dtype=torch.float64))
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    kl_per_var = 0.25 * math.log(0.25) + 0.75 * math.log(0.75) + math.log(2.0)
    assert kl_per_var == pytest.approx(0.130812035, abs=1e-9)
    for estimator in ("gs", "st"):
        model.estimator = estimator
        terms = model.loss(x, 0.5, torch.Generator().manual_seed(0))
        assert terms["recon"].item() == pytest.approx(4 * math.log(2.0), abs=1e-12)
        assert terms["kl"].item() == pytest.approx(2 * kl_per_var, abs=1e-12)
        assert terms["loss"].item() == pytest.approx(3.034213, abs=1e-6)
    with torch.no_grad():
        model.decoder[-1].bias.copy_(torch.tensor([1.0, -2.0, 0.0, 3.0]))
    terms = model.loss(x[:1], 0.5)
    assert terms["recon"].item() == pytest.approx(0.313262 + 0.126928 + 0.693147 + 3.048587, abs=2e-6)


def test_loss_matches_an_explicit_computation_with_the_same_noise():
    model = tiny_model(2, 3, 4)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    tau = 0.7
    terms = model.loss(x, tau, torch.Generator().manual_seed(5))
    # by hand: encoder MLP, z = softmax((logits + g) / tau), decoder MLP, Bernoulli NLL, KL
    enc1, enc2 = model.encoder[0], model.encoder[2]
    logits = (torch.relu(x @ enc1.weight.T + enc1.bias) @ enc2.weight.T + enc2.bias).view(3, 2, 3)
    g = gumbel_noise(logits, torch.Generator().manual_seed(5))
    z = torch.softmax((logits + g) / tau, -1)
    dec1, dec2 = model.decoder[0], model.decoder[2]
    r = torch.relu(z.reshape(3, 6) @ dec1.weight.T + dec1.bias) @ dec2.weight.T + dec2.bias
    bce = (torch.clamp(r, min=0) - r * x + torch.log1p(torch.exp(-r.abs()))).sum(-1)
    q = torch.softmax(logits, -1)
    kl_term = (q * torch.log(q)).sum((-1, -2)) + 2 * math.log(3)
    torch.testing.assert_close(terms["recon"], bce.mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(terms["kl"], kl_term.mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(terms["loss"], (bce + kl_term).mean(), rtol=0, atol=1e-12)


def test_kl_term_is_chapter_ones_function():
    logits = torch.randn(6, 20, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    expected = kl.kl_categorical_uniform(logits).sum(-1)
    torch.testing.assert_close(kl_to_uniform(logits), expected, rtol=0, atol=0)
    probs = torch.softmax(logits, -1)
    uniform = torch.full_like(probs, 0.1)
    torch.testing.assert_close(kl_to_uniform(logits), kl.kl_categorical(probs, uniform).sum(-1))
    assert kl_to_uniform(torch.zeros(2, 20, 10, dtype=torch.float64)).abs().max() < 1e-12  # q uniform: KL 0
    assert kl_to_uniform(torch.tensor([[[60.0] + [0.0] * 9]], dtype=torch.float64)).item() == pytest.approx(math.log(10), abs=1e-12)


def test_gradients_reach_the_encoder_for_both_estimators():
    for estimator in ("gs", "st"):
        model = CategoricalVAE(20, 10, estimator=estimator)
        model.loss(binary_batch(4), 0.5, torch.Generator().manual_seed(0))["loss"].backward()
        assert model.encoder[0].weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------

def test_hard_elbo_feeds_one_hot_samples_of_q():
    model = tiny_model(2, 3, 4)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    got = negative_elbo(model, x, hard=True, generator=torch.Generator().manual_seed(3))
    logits = model.encode(x)
    z = one_hot_sample(logits, torch.Generator().manual_seed(3))
    assert set(z.unique().tolist()) == {0.0, 1.0}
    expected = reconstruction_nll(model.decode(z), x) + kl_to_uniform(logits)
    torch.testing.assert_close(got, expected.detach(), rtol=0, atol=0)


def exact_nll(model: CategoricalVAE, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) by enumerating all K^N codes (tiny models only)."""
    n, k = model.latent_dim, model.num_categories
    codes = torch.cartesian_prod(*[torch.arange(k)] * n).view(-1, n)           # (K^N, N)
    z = F.one_hot(codes, k).double()
    log_px_z = -reconstruction_nll(model.decode(z).unsqueeze(0).expand(x.shape[0], -1, -1),
                                   x.unsqueeze(1).expand(-1, z.shape[0], -1))  # (B, K^N)
    return -(torch.logsumexp(log_px_z, -1) - n * math.log(k))


def test_importance_weighted_bound_approaches_the_exact_likelihood():
    model = tiny_model(2, 3, 6, seed=1)
    x = torch.bernoulli(torch.full((5, 6), 0.5), generator=torch.Generator().manual_seed(2)).double()
    exact = exact_nll(model, x)
    with torch.no_grad():
        repeated = x.repeat(4000, 1)  # 4000 independent single-sample estimates per image
        hard = negative_elbo(model, repeated, hard=True, generator=torch.Generator().manual_seed(0))
        hard = hard.view(4000, 5).mean(0)
        iw_1 = importance_weighted_bound(model, repeated, 1, torch.Generator().manual_seed(1)).view(4000, 5).mean(0)
        iw_big = importance_weighted_bound(model, x, 20_000, torch.Generator().manual_seed(0), max_rows=7_000)
    # ELBO <= IW bound <= log p(x), i.e. in nats: -log p(x) <= -IW_k <= -ELBO
    assert (hard > exact + 1e-3).all()
    torch.testing.assert_close(iw_1, hard, atol=0.05, rtol=0)   # k = 1: the hard -ELBO (in expectation)
    torch.testing.assert_close(iw_big, exact, atol=2e-3, rtol=0)
    assert (iw_big < hard).all()


def test_evaluate_reports_the_three_bounds():
    model = CategoricalVAE(20, 10)
    x = binary_batch(12)
    model.train()
    out = evaluate(model, x, 0.5, num_samples=20, generator=torch.Generator().manual_seed(0), batch_size=5)
    assert set(out) == {"relaxed_nelbo", "hard_nelbo", "iw_nelbo_20"}
    assert model.training  # mode restored
    assert all(400 < v < 700 for v in out.values())  # an untrained model: about 784·log 2 ≈ 543 nats
    assert out["iw_nelbo_20"] <= out["hard_nelbo"] + 1.0


# --------------------------------------------------------------------------------------------------
# Argument errors
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["20-10", "20x", "x10", "20x10x3", "0x10", "20x1", ""])
def test_bad_latent_spec(spec):
    with pytest.raises(ValueError, match="latent|latent_dim|num_categories"):
        parse_latent(spec)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="latent_dim"):
        CategoricalVAE(0, 10)
    with pytest.raises(ValueError, match="num_categories"):
        CategoricalVAE(20, 1)
    with pytest.raises(TypeError, match="latent_dim"):
        CategoricalVAE(20.0, 10)
    with pytest.raises(ValueError, match="estimator"):
        CategoricalVAE(20, 10, estimator="gumbel")  # "reinforce" is valid since chapter 9's estimators


@pytest.mark.parametrize(("hidden", "error", "match"), [
    ((64.7,), TypeError, "hidden width"),
    ((32, True), TypeError, "hidden width"),
    (("64",), TypeError, "hidden width"),
    ((0,), ValueError, "hidden width"),
    ((), ValueError, "hidden"),
])
def test_hidden_widths_must_be_positive_ints(hidden, error, match):
    with pytest.raises(error, match=match):
        CategoricalVAE(2, 3, input_dim=4, hidden=hidden)


def test_input_dim_must_be_an_int():
    with pytest.raises(TypeError, match="input_dim"):
        CategoricalVAE(2, 3, input_dim=784.5)
    with pytest.raises(TypeError, match="input_dim"):
        CategoricalVAE(2, 3, input_dim=True)
    with pytest.raises(ValueError, match="input_dim"):
        CategoricalVAE(2, 3, input_dim=0)


def test_integer_hidden_widths_build_exactly_those_layers():
    import numpy as np

    model = CategoricalVAE(2, 3, input_dim=4, hidden=[7, np.int64(5)])
    assert model.hidden == (7, 5) and all(type(h) is int for h in model.hidden)
    assert [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)] == [7, 5, 6]


@pytest.mark.parametrize(("num", "error"), [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)])
def test_sample_prior_rejects_bad_counts(num, error):
    with pytest.raises(error, match="^num"):
        tiny_model().sample_prior(num)


def test_sample_prior_decodes_uniform_one_hot_codes():
    model = tiny_model()
    images = model.sample_prior(3, torch.Generator().manual_seed(4))
    codes = one_hot_sample(torch.zeros(3, 2, 3, dtype=torch.float64), torch.Generator().manual_seed(4))
    torch.testing.assert_close(images, torch.sigmoid(model.decode(codes)))


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(tau):
    model = CategoricalVAE(20, 10)
    with pytest.raises(ValueError, match="temperature"):
        model.loss(binary_batch(2), tau)
    with pytest.raises(ValueError, match="temperature"):
        negative_elbo(model, binary_batch(2), tau)


def test_bad_inputs():
    model = CategoricalVAE(20, 10)
    with pytest.raises(ValueError, match=r"shape \(batch, 784\)"):
        model.loss(torch.zeros(2, 28, 28), 1.0)
    with pytest.raises(ValueError, match="binarized"):
        model.loss(torch.full((2, 784), 0.5), 1.0)
    with pytest.raises(ValueError, match="binarized"):
        evaluate(model, torch.cat([binary_batch(3), torch.full((1, 784), 0.5)]), 1.0)
    with pytest.raises(TypeError, match="floating-point"):
        model.loss(torch.zeros(2, 784, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="never raw logits"):
        model.decode(torch.zeros(2, 200))  # flat logits instead of (B, N, K) codes
    with pytest.raises(ValueError, match="num_samples"):
        importance_weighted_bound(model, binary_batch(2), 0)
    with pytest.raises(ValueError, match="temperature"):
        negative_elbo(model, binary_batch(2))
    with pytest.raises(ValueError, match="^logits"):
        kl_to_uniform(torch.zeros(5, 10))  # it summed over the batch and returned one number


# --------------------------------------------------------------------------------------------------
# Chapter 9's estimators on the same model
# --------------------------------------------------------------------------------------------------

def lab_model(estimator: str, seed: int = 0) -> CategoricalVAE:
    est = LAB_ESTIMATORS[estimator]
    torch.manual_seed(seed)
    return CategoricalVAE(3, 4, estimator=estimator, input_dim=784, hidden=(16,),
                          num_samples=3 if est.kind == "score" else 1, k=5 if est.uses_k else 1).double()


@pytest.mark.parametrize("estimator", list(LAB_ESTIMATORS))
def test_every_lab_estimator_trains_encoder_and_decoder(estimator):
    model = lab_model(estimator)
    x = binary_batch(6).double()
    terms = model.loss(x, 1.0, torch.Generator().manual_seed(0))
    assert set(terms) == {"loss", "recon", "kl"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    torch.testing.assert_close(terms["loss"], terms["recon"] + terms["kl"])
    torch.testing.assert_close(terms["kl"], kl_to_uniform(model.encode(x)).mean())
    terms["loss"].backward()
    for net in (model.encoder, model.decoder):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
        assert net[0].weight.grad.abs().sum() > 0


def test_st_alias_forward_is_the_one_hot_gumbel_max_sample_of_the_same_noise():
    """'st' goes through the registry's st_gumbel_softmax: its forward value is the Bernoulli NLL of
    the decoder at the exact one-hot argmax(logits + g), for the very noise the generator gives."""
    model = lab_model("st_gumbel_softmax")
    model.estimator = "st"  # chapter 7's name for the same estimator
    x = binary_batch(5).double()
    recon = model.loss(x, 0.7, torch.Generator().manual_seed(3))["recon"]
    logits = model.encode(x)
    g = gumbel_noise(logits.expand(1, *logits.shape), torch.Generator().manual_seed(3))[0]
    z = F.one_hot(torch.argmax(logits + g, -1), logits.shape[-1]).double()
    expected = reconstruction_nll(model.decoder(z.reshape(x.shape[0], -1)), x).mean()
    torch.testing.assert_close(recon, expected, rtol=0, atol=1e-10)


def test_score_function_recon_value_is_the_mean_nll_of_one_hot_samples():
    model = lab_model("reinforce")
    x = binary_batch(4).double()
    recon = model.loss(x, 1.0, torch.Generator().manual_seed(1))["recon"]
    # same draws by hand: Gumbel-Max one-hot samples of q(z|x), S = 3 of them
    logits = model.encode(x)
    index = torch.argmax(logits.expand(3, *logits.shape) + gumbel_noise(logits.expand(3, *logits.shape),
                                                                      torch.Generator().manual_seed(1)), -1)
    z = F.one_hot(index, 4).double()
    nll = reconstruction_nll(model.decoder(z.reshape(12, 12)), x.repeat(3, 1))
    torch.testing.assert_close(recon, nll.mean())


def test_chapter_seven_configs_are_unchanged_and_lab_configs_round_trip():
    for estimator in ("gs", "st"):
        assert set(CategoricalVAE(20, 10, estimator=estimator).config()) == {
            "model", "latent_dim", "num_categories", "estimator", "input_dim", "hidden"}
    for estimator in LAB_ESTIMATORS:
        model = lab_model(estimator)
        clone = CategoricalVAE.from_config(model.config())
        assert clone.config() == model.config()
        assert (clone.num_samples, clone.k) == (model.num_samples, model.k)
    assert lab_model("gumbel_rao").config()["k"] == 5
    assert lab_model("reinforce_loo").config()["num_samples"] == 3
    assert "k" not in lab_model("reinmax").config()


def test_lab_estimator_errors():
    with pytest.raises(ValueError, match="gstutorial.estimators"):
        CategoricalVAE(20, 10, estimator="rebar")
    with pytest.raises(ValueError, match="num_samples"):
        CategoricalVAE(20, 10, estimator="reinforce_loo")
    with pytest.raises(ValueError, match="chapter 9's estimators only"):
        CategoricalVAE(20, 10, estimator="gs", num_samples=4)
    with pytest.raises(ValueError, match="k must be"):
        CategoricalVAE(20, 10, estimator="gumbel_rao", k=0)
    with pytest.raises(TypeError, match="num_samples"):
        CategoricalVAE(20, 10, estimator="reinforce", num_samples=2.0)
    with pytest.raises(TypeError, match="k must be"):
        CategoricalVAE(20, 10, estimator="gumbel_rao", k=True)
    with pytest.warns(LowTemperatureWarning, match="temperature 0.5 < 1"):  # computed below tau = 1, with a warning
        lab_model("reinmax").loss(binary_batch(2).double(), 0.5)

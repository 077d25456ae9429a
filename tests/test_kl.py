"""gstutorial.kl: closed forms, agreement with torch/scipy, invariants, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from gstutorial import kl

# float64 for the exact comparisons, set and restored around this module (never at import time)
pytestmark = pytest.mark.usefixtures("float64_default")


def test_kl_categorical_known_value():
    p = torch.tensor([0.5, 0.5])
    q = torch.tensor([0.25, 0.75])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl.kl_categorical(p, q).item() == pytest.approx(expected, abs=1e-15)


def test_kl_categorical_zero_and_infinite_conventions():
    assert kl.kl_categorical(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])).item() == pytest.approx(math.log(2))
    assert kl.kl_categorical(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])).item() == math.inf


def test_kl_categorical_matches_torch_batched():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(3, 5, 7), -1)
    q = torch.softmax(torch.randn(3, 5, 7), -1)
    ours = kl.kl_categorical(p, q)
    assert ours.shape == (3, 5)
    torch.testing.assert_close(ours, kl_divergence(Categorical(probs=p), Categorical(probs=q)))


def test_entropy_and_cross_entropy_identity():
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    q = torch.tensor([0.4, 0.3, 0.2, 0.1])
    assert kl.entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(math.log(8))
    assert kl.entropy(p).item() == pytest.approx(stats.entropy(p.numpy()))
    assert (kl.cross_entropy(p, q) - kl.entropy(p)).item() == pytest.approx(kl.kl_categorical(p, q).item())


probability_vectors = st.integers(2, 8).flatmap(
    lambda k: st.tuples(
        st.lists(st.floats(1e-3, 10.0), min_size=k, max_size=k),
        st.lists(st.floats(1e-3, 10.0), min_size=k, max_size=k),
    )
)


@settings(max_examples=200, deadline=None)
@given(probability_vectors)
def test_gibbs_inequality_and_identity(pair):
    a, b = (torch.tensor(v) / sum(v) for v in pair)
    assert kl.kl_categorical(a, b).item() >= -1e-12
    assert abs(kl.kl_categorical(a, a).item()) < 1e-12


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-30, 30), min_size=1, max_size=12))
def test_kl_uniform_bounds_and_agreement(logits):
    logits = torch.tensor(logits)
    value = kl.kl_categorical_uniform(logits).item()
    k = logits.numel()
    assert -1e-12 <= value <= math.log(k) + 1e-12
    general = kl.kl_categorical(torch.softmax(logits, -1), torch.full((k,), 1 / k)).item()
    assert value == pytest.approx(general, abs=1e-10)


def test_kl_uniform_extremes_and_masks():
    assert kl.kl_categorical_uniform(torch.zeros(10)).item() == pytest.approx(0.0, abs=1e-15)
    assert kl.kl_categorical_uniform(torch.tensor([1e4, 0.0, 0.0, 0.0])).item() == pytest.approx(math.log(4))
    masked = torch.tensor([0.0, 0.0, -math.inf])  # q = (1/2, 1/2, 0)
    assert kl.kl_categorical_uniform(masked).item() == pytest.approx(math.log(3) - math.log(2))


@settings(max_examples=100, deadline=None)
@given(st.floats(-5, 5), st.floats(0.05, 5), st.floats(-5, 5), st.floats(0.05, 5))
def test_kl_normal_matches_torch_and_is_non_negative(m1, s1, m2, s2):
    ours = kl.kl_normal(torch.tensor([m1]), torch.tensor([s1]), torch.tensor([m2]), torch.tensor([s2])).item()
    theirs = kl_divergence(Normal(m1, s1), Normal(m2, s2)).item()
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert ours >= -1e-12


def test_kl_normal_std_known_values():
    # mu = 0, sigma = 1 -> 0; mu = 1, sigma = 1 -> 1/2 per dimension
    assert kl.kl_normal_std(torch.zeros(5), torch.zeros(5)).item() == 0.0
    assert kl.kl_normal_std(torch.ones(4), torch.zeros(4)).item() == pytest.approx(2.0)
    mu, logvar = torch.tensor([0.8]), torch.tensor([math.log(0.25)])
    expected = -0.5 * (1 + math.log(0.25) - 0.64 - 0.25)
    assert kl.kl_normal_std(mu, logvar).item() == pytest.approx(expected, abs=1e-15)
    general = kl.kl_normal(mu, torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([1.0])).item()
    assert general == pytest.approx(expected, abs=1e-15)


def test_quadrature_and_monte_carlo_agree_with_closed_form():
    closed = kl.kl_normal(torch.tensor([1.0]), torch.tensor([0.7]), torch.tensor([-0.5]), torch.tensor([2.0])).item()
    quad = kl.kl_quad(stats.norm(1.0, 0.7).logpdf, stats.norm(-0.5, 2.0).logpdf)
    assert quad == pytest.approx(closed, abs=1e-10)
    mc, se = kl.kl_monte_carlo(Normal(1.0, 0.7), Normal(-0.5, 2.0), 200_000, generator_seed=0)
    assert abs(mc - closed) < 4 * se and se < 0.01


def test_forward_fit_matches_moments_and_reverse_fit_finds_a_mode():
    w, m, s = np.array([0.6, 0.4]), np.array([-2.0, 2.0]), 0.6

    def log_mix(x):
        return np.logaddexp.reduce(np.log(w) + stats.norm(m, s).logpdf(np.asarray(x)[..., None]), axis=-1)

    mean = float(w @ m)
    sd = math.sqrt(float(w @ (s**2 + m**2)) - mean**2)
    fm, fs = kl.fit_gaussian(log_mix, "forward")
    assert fm == pytest.approx(mean, abs=1e-6) and fs == pytest.approx(sd, abs=1e-6)
    rm, rs = kl.fit_gaussian(log_mix, "reverse", init=(0.5, 1.0))
    assert abs(abs(rm) - 2.0) < 0.05 and rs == pytest.approx(0.6, abs=0.05)


@pytest.mark.parametrize(
    ("p", "match"),
    [
        (torch.tensor([0.5, 0.6]), "sum to 1"),
        (torch.tensor([1.5, -0.5]), "negative"),
        (torch.tensor([math.nan, 1.0]), "non-finite"),
        (torch.zeros(0), "non-empty"),
    ],
)
def test_bad_probability_vectors(p, match):
    with pytest.raises(ValueError, match=match):
        kl.kl_categorical(p, torch.tensor([0.5, 0.5]))


def test_other_bad_inputs():
    with pytest.raises(TypeError):
        kl.entropy([0.5, 0.5])
    with pytest.raises(ValueError, match="same number of categories"):
        kl.kl_categorical(torch.tensor([0.5, 0.5]), torch.tensor([1 / 3, 1 / 3, 1 / 3]))
    with pytest.raises(ValueError, match="sigma_q"):
        kl.kl_normal(torch.zeros(2), torch.tensor([1.0, 0.0]), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        kl.kl_categorical_uniform(torch.tensor([0.0, math.nan]))
    with pytest.raises(ValueError, match="finite"):
        kl.kl_normal_std(torch.tensor([math.inf]), torch.zeros(1))
    with pytest.raises(ValueError, match="direction"):
        kl.fit_gaussian(lambda x: 0.0, "sideways")
    with pytest.raises(ValueError, match="num_samples"):
        kl.kl_monte_carlo(Normal(0.0, 1.0), Normal(0.0, 1.0), 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_gpu_tensors():
    p = torch.tensor([0.2, 0.8], device="cuda")
    value = kl.kl_categorical(p, torch.tensor([0.5, 0.5], device="cuda"))
    assert value.device.type == "cuda"
    assert kl.kl_categorical_uniform(torch.zeros(3, 4, device="cuda")).device.type == "cuda"


def test_kl_uniform_masked_gradient_and_all_masked_row():
    # masked categories: value and gradient as if the category were absent
    logits = torch.tensor([[0.3, -0.2, -math.inf], [1.0, 0.0, 0.5]], dtype=torch.float64, requires_grad=True)
    kl.kl_categorical_uniform(logits).sum().backward()
    present = logits.detach()[:, :2].clone().requires_grad_(True)
    expected = kl.kl_categorical_uniform(present[:1]) - math.log(2) + math.log(3)
    expected.sum().backward()
    assert torch.allclose(logits.grad[0, :2], present.grad[0], atol=1e-15)
    assert logits.grad[0, 2].item() == 0.0
    with pytest.raises(ValueError, match="every category of some row is masked"):
        kl.kl_categorical_uniform(torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]))
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        kl.kl_categorical_uniform(torch.tensor([0.0, math.inf]))


@pytest.mark.parametrize("masked", [False, True])
def test_kl_uniform_same_value_and_gradient_without_value_checks(masked):
    """The training engine runs with value checks off: the KL must not change, masked or not."""
    from gstutorial.utils import value_checks

    torch.manual_seed(3)
    base = torch.randn(5, 4, 6, dtype=torch.float64)
    if masked:
        base[0, 1, 2] = base[3, 0, 5] = -math.inf
    values, grads = [], []
    for enabled in (True, False):
        logits = base.clone().requires_grad_(True)
        with value_checks(enabled):
            value = kl.kl_categorical_uniform(logits)
        (value * torch.linspace(0.5, 2.0, 20, dtype=torch.float64).view(5, 4)).sum().backward()
        values.append(value.detach())
        grads.append(logits.grad)
    assert torch.isfinite(values[1]).all() and torch.isfinite(grads[1]).all()
    torch.testing.assert_close(values[1], values[0], rtol=0, atol=1e-15)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-15)


# -------------------------------------------------------------------------------- review fixes

def test_kl_monte_carlo_rejects_batched_distributions_and_names_independent():
    p, q = Normal(torch.zeros(3), torch.ones(3)), Normal(torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match=r"p has batch shape \(3,\).*Independent\(p, 1\)"):
        kl.kl_monte_carlo(p, q, 1000, generator_seed=0)
    with pytest.raises(ValueError, match=r"q has batch shape \(2, 3\).*Independent\(q, 2\)"):
        kl.kl_monte_carlo(Normal(0.0, 1.0), Normal(torch.zeros(2, 3), 1.0), 1000)
    with pytest.raises(TypeError, match="torch.distributions.Distribution"):
        kl.kl_monte_carlo(Normal(0.0, 1.0), "normal", 1000)
    # the fix the message names: the KL of the joint, the sum of the three per-entry KLs of 0.5
    mc, se = kl.kl_monte_carlo(Independent(p, 1), Independent(q, 1), 100_000, generator_seed=0)
    assert abs(mc - 1.5) < 4 * se and se < 0.01


def test_kl_monte_carlo_seed_restores_the_global_rng_and_keeps_the_draws():
    p, q = Normal(0.8, 0.5), Normal(0.0, 1.0)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    mc, se = kl.kl_monte_carlo(p, q, 1000, generator_seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    torch.manual_seed(3)  # the same draws as before the fix: seeded global RNG
    x = p.sample((1000,))
    log_ratio = (p.log_prob(x) - q.log_prob(x)).double()
    assert mc == log_ratio.mean().item() and se == (log_ratio.std() / math.sqrt(1000)).item()
    torch.manual_seed(11)
    kl.kl_monte_carlo(p, q, 10, generator_seed=None)  # unseeded: the global RNG advances as usual
    assert not torch.equal(torch.get_rng_state(), before)


def test_kl_normal_and_kl_normal_std_reject_non_finite_means_naming_them():
    one = torch.ones(2)
    with pytest.raises(ValueError, match="^mu_q has NaN or infinite entries"):
        kl.kl_normal(torch.tensor([0.0, math.nan]), one, torch.zeros(2), one)
    with pytest.raises(ValueError, match="^mu_p has NaN or infinite entries"):
        kl.kl_normal(torch.zeros(2), one, torch.tensor([math.inf, 0.0]), one)
    with pytest.raises(ValueError, match="^mu has NaN or infinite entries"):
        kl.kl_normal_std(torch.tensor([math.nan]), torch.zeros(1))
    with pytest.raises(ValueError, match="^logvar has NaN or infinite entries"):
        kl.kl_normal_std(torch.zeros(1), torch.tensor([-math.inf]))


def test_shape_mismatches_name_both_shapes():
    with pytest.raises(ValueError, match=r"mu_q \(2,\), sigma_q \(3,\), mu_p \(2,\), sigma_p \(2,\) do not broadcast"):
        kl.kl_normal(torch.zeros(2), torch.ones(3), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"mu \(2, 3\), logvar \(4, 3\) do not broadcast"):
        kl.kl_normal_std(torch.zeros(2, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"p \(2, 3\), q \(4, 3\) do not broadcast"):
        kl.kl_categorical(torch.full((2, 3), 1 / 3), torch.full((4, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"p \(2, 3\), q \(4, 3\) do not broadcast"):
        kl.cross_entropy(torch.full((2, 3), 1 / 3), torch.full((4, 3), 1 / 3))
    with pytest.raises(ValueError, match="same number of categories, got 2 and 3"):
        kl.cross_entropy(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]))
    # shapes that do broadcast keep working: a shared prior row against a batch
    value = kl.kl_categorical(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(value, torch.tensor([0.0, math.log(2)]), rtol=0, atol=1e-15)


def test_kl_normal_std_takes_plain_numbers_like_kl_normal():
    # -1/2 (1 + log s2 - mu^2 - s2) at mu = 1, s2 = 1 is 1/2; at mu = 0, log s2 = log 2 it is (1 - log 2)/2
    assert kl.kl_normal_std(1.0, 0.0).item() == 0.5
    assert kl.kl_normal_std(0.0, math.log(2.0)).item() == pytest.approx((1 - math.log(2.0)) / 2, rel=1e-6)
    assert kl.kl_normal_std(1.0, 0.0).item() == kl.kl_normal(1.0, 1.0, 0.0, 1.0).item()


def test_kl_categorical_uniform_asks_for_floating_point_logits():
    with pytest.raises(TypeError, match=r"floating-point tensor, got torch.int64.*logits.float\(\)"):
        kl.kl_categorical_uniform(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        kl.kl_categorical_uniform([0.0, 1.0])

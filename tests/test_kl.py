"""gstutorial.kl: closed forms, agreement with torch/scipy, invariants, numerical range, and bad input."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from gstutorial import kl
from gstutorial.checks import value_checks

# float64 for the exact comparisons, set and restored around this module (never at import time)
pytestmark = pytest.mark.usefixtures("float64_default")


# ---------------------------------------------------------------- categorical KL, entropy, cross-entropy


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


def test_kl_categorical_broadcasts_a_shared_row_against_a_batch():
    value = kl.kl_categorical(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(value, torch.tensor([0.0, math.log(2)]), rtol=0, atol=1e-15)


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


# ---------------------------------------------------------------- KL to the uniform distribution


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
    with pytest.raises(ValueError, match=r"^logits contain NaN or \+inf"):
        kl.kl_categorical_uniform(torch.tensor([0.0, math.inf]))
    with pytest.raises(ValueError, match="^logits contain NaN"):
        kl.kl_categorical_uniform(torch.tensor([0.0, math.nan]))


@pytest.mark.parametrize("masked", [False, True])
def test_kl_uniform_same_value_and_gradient_without_value_checks(masked):
    """The training engine runs with value checks off: the KL must not change, masked or not."""
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


# ---------------------------------------------------------------- Gaussian KL in closed form


def exact_kl_normal(mu_q: float, sigma_q: float, mu_p: float, sigma_p: float) -> Decimal:
    """log(σp/σq) + ((σq/σp)² + ((μq − μp)/σp)² − 1)/2 in 60-digit decimal arithmetic (no overflow, no
    underflow: Decimal's exponent range is far wider than float64's; exactly 0 for equal arguments)."""
    with localcontext() as context:
        context.prec = 60
        mq, sq, mp, sp = (Decimal(float(v)) for v in (mu_q, sigma_q, mu_p, sigma_p))
        return (sp / sq).ln() + ((sq / sp) ** 2 + ((mq - mp) / sp) ** 2 - 1) / 2


def exact_kl_normal_std(mu: float, logvar: float) -> Decimal:
    """−½ (1 + logvar − μ² − e^logvar) in 60-digit decimal arithmetic."""
    with localcontext() as context:
        context.prec = 60
        m, lv = Decimal(float(mu)), Decimal(float(logvar))
        return -(1 + lv - m * m - lv.exp()) / 2


def as_dtype(exact: Decimal, dtype: torch.dtype) -> float:
    """The value a correct result has in ``dtype``: ``inf`` above its largest finite number."""
    return math.inf if exact > Decimal(torch.finfo(dtype).max) else float(exact)


@settings(max_examples=100, deadline=None)
@given(st.floats(-5, 5), st.floats(0.05, 5), st.floats(-5, 5), st.floats(0.05, 5))
def test_kl_normal_matches_torch_and_is_non_negative(m1, s1, m2, s2):
    ours = kl.kl_normal(torch.tensor([m1]), torch.tensor([s1]), torch.tensor([m2]), torch.tensor([s2])).item()
    theirs = kl_divergence(Normal(m1, s1), Normal(m2, s2)).item()
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert ours >= -1e-12


def test_kl_normal_closed_form_values():
    zero, one, three = torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([3.0])
    # equal widths: (μ1 − μ2)² / (2σ²), exactly; the same distribution: exactly 0
    assert kl.kl_normal(zero, one, torch.tensor([2.0]), one).item() == 2.0
    assert kl.kl_normal(torch.tensor([0.4]), three, torch.tensor([0.4]), three).item() == 0.0
    assert kl.kl_normal(zero, one, zero, three).item() == pytest.approx(math.log(3) + 1 / 18 - 1 / 2, abs=1e-15)
    assert kl.kl_normal(zero, three, zero, one).item() == pytest.approx(-math.log(3) + 9 / 2 - 1 / 2, abs=1e-15)
    # summed over the last axis, batch axes kept
    batch = kl.kl_normal(torch.zeros(4, 2), torch.ones(4, 2), torch.full((4, 2), 2.0), torch.ones(1, 2))
    torch.testing.assert_close(batch, torch.full((4,), 4.0), rtol=0, atol=0)


# (mu_q, sigma_q, mu_p, sigma_p): tiny and huge standard deviations, and results next to the overflow
# threshold; the squared ratio (σq/σp)² overflowed or underflowed in most of them (NaN or a wrong +inf)
EXTREME_NORMALS = {
    torch.float32: [
        (0.0, 1.0, 0.0, 1e-20),  # true KL 5e39: overflows float32 (the squared ratio gave NaN)
        (1.0, 1.0, 0.0, 1e-20),  # the mean term overflows too
        (0.5, 1e-30, 0.0, 1.0),  # 68.70 nats (gave +inf)
        (0.0, 1e-19, 0.0, 1e19),  # 87.0 nats (gave +inf)
        (0.0, 2e-38, 0.0, 3e38),  # the smallest normal σq against the largest σp: 175.8 nats
        (0.0, 1.0, 0.0, 1 / 2.236e19),  # 2.5e38: finite although (σq/σp)² = 5e38 is not (gave NaN)
        (0.0, 1.0, 2.3e19, 1.0),  # 2.6e38: finite although (μq − μp)² = 5.3e38 is not
        (1.0, 1e-30, 1.0, 1e-30),  # the same distribution: 0
        (0.3, 0.7, -0.2, 1.3),  # an ordinary one
    ],
    torch.float64: [
        (0.0, 1.0, 0.0, 1e-200),  # true KL 5e399: overflows float64 (the squared ratio gave NaN)
        (0.5, 1e-200, 0.0, 1.0),  # 460.1 nats (gave +inf)
        (0.0, 1e-300, 0.0, 1e300),  # 1381.1 nats (gave +inf)
        (0.0, 1.0, 0.0, 1 / 1.58e154),  # 1.25e308: finite although (σq/σp)² is not (gave NaN)
        (0.0, 1.0, 1.5e154, 1.0),  # 1.125e308: finite although (μq − μp)² is not
        (1.0, 1e-200, 0.0, 1e-200),  # 5e399 from the mean term: overflows
        (1.0, 1e-300, 1.0, 1e-300),  # the same distribution: 0
        (0.3, 0.7, -0.2, 1.3),
    ],
}
RELATIVE_ERROR = {torch.float32: 1e-6, torch.float64: 1e-14}  # a few units in the last place


@pytest.mark.parametrize(("dtype", "case"), [(dtype, case) for dtype, cases in EXTREME_NORMALS.items()
                                             for case in cases])
def test_kl_normal_is_finite_wherever_the_true_kl_is(dtype, case):
    """Finite where the true KL is finite in ``dtype``, +inf where it overflows, never NaN."""
    inputs = [torch.tensor([v], dtype=dtype) for v in case]
    value = kl.kl_normal(*inputs)
    assert value.dtype == dtype
    expected = as_dtype(exact_kl_normal(*(t.item() for t in inputs)), dtype)
    assert value.item() == pytest.approx(expected, rel=RELATIVE_ERROR[dtype], abs=0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([torch.float32, torch.float64]), st.floats(-1, 1), st.floats(-1, 1),
       st.floats(-1, 1), st.floats(-1, 1))
def test_kl_normal_over_the_whole_range_of_standard_deviations(dtype, mu_q, mu_p, log_sq, log_sp):
    # σ = 10^(e · 37) in float32, 10^(e · 300) in float64: every order of magnitude the dtype holds
    decades = 37 if dtype == torch.float32 else 300
    sigma_q, sigma_p = 10 ** (log_sq * decades), 10 ** (log_sp * decades)
    inputs = [torch.tensor([v], dtype=dtype) for v in (mu_q, sigma_q, mu_p, sigma_p)]
    value = kl.kl_normal(*inputs).item()
    assert not math.isnan(value)
    expected = as_dtype(exact_kl_normal(*(t.item() for t in inputs)), dtype)
    assert value == pytest.approx(expected, rel=RELATIVE_ERROR[dtype], abs=10 * torch.finfo(dtype).eps)


@pytest.mark.parametrize(("dtype", "sigma_q", "sigma_p"), [(torch.float32, 1e-30, 1e10), (torch.float32, 3.0, 0.5),
                                                         (torch.float64, 1e-300, 1e10), (torch.float64, 3.0, 0.5)])
def test_kl_normal_gradient_is_finite_where_the_ratio_underflows(dtype, sigma_q, sigma_p):
    # ∂KL/∂μ_q = (μ_q − μ_p)/σ_p², ∂KL/∂σ_q = σ_q/σ_p² − 1/σ_q, ∂KL/∂σ_p = 1/σ_p − (σ_q² + (μ_q − μ_p)²)/σ_p³
    mu_q, s_q, s_p = (torch.tensor([v], dtype=dtype, requires_grad=True) for v in (0.5, sigma_q, sigma_p))
    s_q_, s_p_ = s_q.item(), s_p.item()  # the values the dtype holds
    grads = torch.autograd.grad(kl.kl_normal(mu_q, s_q, 0.0, s_p), (mu_q, s_q, s_p))
    expected = (0.5 / s_p_**2, s_q_ / s_p_**2 - 1 / s_q_, 1 / s_p_ - (s_q_**2 + 0.25) / s_p_**3)
    for grad, value in zip(grads, expected, strict=True):
        assert grad.item() == pytest.approx(value, rel=RELATIVE_ERROR[dtype], abs=1e-300)


def test_kl_normal_std_known_values():
    # mu = 0, sigma = 1 -> 0; mu = 1, sigma = 1 -> 1/2 per dimension
    assert kl.kl_normal_std(torch.zeros(5), torch.zeros(5)).item() == 0.0
    assert kl.kl_normal_std(torch.ones(4), torch.zeros(4)).item() == pytest.approx(2.0)
    mu, logvar = torch.tensor([0.8]), torch.tensor([math.log(0.25)])
    expected = -0.5 * (1 + math.log(0.25) - 0.64 - 0.25)
    assert kl.kl_normal_std(mu, logvar).item() == pytest.approx(expected, abs=1e-15)
    general = kl.kl_normal(mu, torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([1.0])).item()
    assert general == pytest.approx(expected, abs=1e-15)


# (mu, logvar): tiny and huge variances, and a mean whose square overflows
EXTREME_STANDARD_NORMALS = {
    torch.float32: [(0.0, 80.0), (0.0, 100.0), (0.0, -1000.0), (3.0, -80.0), (1e19, 0.0), (1e30, -1000.0)],
    torch.float64: [(0.0, 700.0), (0.0, 1000.0), (0.0, -1e5), (3.0, -800.0), (1e150, 0.0), (1e200, -1e5)],
}


@pytest.mark.parametrize(("dtype", "case"), [(dtype, case) for dtype, cases in EXTREME_STANDARD_NORMALS.items()
                                             for case in cases])
def test_kl_normal_std_is_finite_for_any_variance_and_never_nan(dtype, case):
    """logvar is already a log: a tiny variance gives its finite KL, a huge one +inf, never NaN."""
    inputs = [torch.tensor([v], dtype=dtype) for v in case]
    value = kl.kl_normal_std(*inputs)
    expected = as_dtype(exact_kl_normal_std(*(t.item() for t in inputs)), dtype)
    assert value.item() == pytest.approx(expected, rel=RELATIVE_ERROR[dtype], abs=0)


def test_kl_normal_std_takes_plain_numbers_like_kl_normal():
    # -1/2 (1 + log s2 - mu^2 - s2) at mu = 1, s2 = 1 is 1/2; at mu = 0, log s2 = log 2 it is (1 - log 2)/2
    assert kl.kl_normal_std(1.0, 0.0).item() == 0.5
    assert kl.kl_normal_std(0.0, math.log(2.0)).item() == pytest.approx((1 - math.log(2.0)) / 2, rel=1e-6)
    assert kl.kl_normal_std(1.0, 0.0).item() == kl.kl_normal(1.0, 1.0, 0.0, 1.0).item()
    # NumPy numbers and Python ints are numbers too
    assert kl.kl_normal_std(np.float32(1.0), np.int64(0)).item() == 0.5
    assert kl.kl_normal(np.float64(1.0), 1, np.int32(0), np.float32(1.0)).item() == 0.5


# ---------------------------------------------------------------- KL by quadrature, Monte Carlo and fitting


def test_quadrature_and_monte_carlo_agree_with_closed_form():
    closed = kl.kl_normal(torch.tensor([1.0]), torch.tensor([0.7]), torch.tensor([-0.5]), torch.tensor([2.0])).item()
    quad = kl.kl_quad(stats.norm(1.0, 0.7).logpdf, stats.norm(-0.5, 2.0).logpdf)
    assert quad == pytest.approx(closed, abs=1e-10)
    mc, se = kl.kl_monte_carlo(Normal(1.0, 0.7), Normal(-0.5, 2.0), 200_000, generator_seed=0)
    assert abs(mc - closed) < 4 * se and se < 0.01


def test_kl_monte_carlo_of_independent_entries_is_their_sum():
    p, q = Normal(torch.zeros(3), torch.ones(3)), Normal(torch.ones(3), torch.ones(3))
    mc, se = kl.kl_monte_carlo(Independent(p, 1), Independent(q, 1), 100_000, generator_seed=0)
    assert abs(mc - 1.5) < 4 * se and se < 0.01  # three entries with KL 1/2 each


def test_kl_monte_carlo_seed_restores_the_global_rng_and_keeps_the_draws():
    p, q = Normal(0.8, 0.5), Normal(0.0, 1.0)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    mc, se = kl.kl_monte_carlo(p, q, 1000, generator_seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    torch.manual_seed(3)  # the draws are those of the global RNG seeded with generator_seed
    x = p.sample((1000,))
    log_ratio = (p.log_prob(x) - q.log_prob(x)).double()
    assert mc == log_ratio.mean().item() and se == (log_ratio.std() / math.sqrt(1000)).item()
    torch.manual_seed(11)
    kl.kl_monte_carlo(p, q, 10, generator_seed=None)  # unseeded: the global RNG advances as usual
    assert not torch.equal(torch.get_rng_state(), before)


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
    assert kl.fit_gaussian(log_mix, "reverse", init=(np.float32(0.5), np.int64(1))) == (rm, rs)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("p", "match"),
    [
        (torch.tensor([0.5, 0.6]), "sum to 1"),
        (torch.tensor([1.5, -0.5]), "negative"),
        (torch.tensor([math.nan, 1.0]), "non-finite"),
        (torch.zeros(0), "non-empty category axis"),
        (torch.tensor(1.0), "non-empty category axis"),
    ],
)
def test_bad_probability_vectors(p, match):
    with pytest.raises(ValueError, match=rf"^p\b.*{match}"):
        kl.kl_categorical(p, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=rf"^q\b.*{match}"):
        kl.cross_entropy(torch.tensor([0.5, 0.5]), p)


def test_probability_vectors_must_be_tensors():
    for bad in ([0.5, 0.5], np.array([0.5, 0.5])):
        with pytest.raises(TypeError, match="^p must be a torch.Tensor"):
            kl.entropy(bad)
    with pytest.raises(TypeError, match="^prior must be a torch.Tensor"):
        kl.check_probabilities((0.5, 0.5), "prior")


def test_shape_mismatches_name_every_shape():
    with pytest.raises(ValueError, match=r"mu_q \(2,\), sigma_q \(3,\), mu_p \(2,\), sigma_p \(2,\) do not broadcast"):
        kl.kl_normal(torch.zeros(2), torch.ones(3), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"mu \(2, 3\), logvar \(4, 3\) do not broadcast"):
        kl.kl_normal_std(torch.zeros(2, 3), torch.zeros(4, 3))
    for function in (kl.kl_categorical, kl.cross_entropy):
        with pytest.raises(ValueError, match=r"p \(2, 3\), q \(4, 3\) do not broadcast"):
            function(torch.full((2, 3), 1 / 3), torch.full((4, 3), 1 / 3))
        with pytest.raises(ValueError, match="same number of categories, got 2 and 3"):
            function(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]))


def test_logits_must_be_a_floating_point_tensor_with_a_category_axis():
    with pytest.raises(TypeError, match=r"^logits must be a floating-point tensor.*logits.float\(\)"):
        kl.kl_categorical_uniform(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="^logits must be a torch.Tensor"):
        kl.kl_categorical_uniform([0.0, 1.0])
    with pytest.raises(ValueError, match="^logits needs a non-empty category axis"):
        kl.kl_categorical_uniform(torch.zeros(2, 0))


GAUSSIAN_ARGUMENTS = ("mu_q", "sigma_q", "mu_p", "sigma_p")


@pytest.mark.parametrize("position", range(4))
def test_kl_normal_arguments_are_floating_tensors_or_numbers(position):
    name = GAUSSIAN_ARGUMENTS[position]

    def call_with(value):
        args = [torch.zeros(2), torch.ones(2), torch.zeros(2), torch.ones(2)]
        args[position] = value
        return kl.kl_normal(*args)

    for bad in ([1.0, 1.0], np.ones(2), True, "1"):
        with pytest.raises(TypeError, match=rf"^{name} must be a"):
            call_with(bad)
    with pytest.raises(TypeError, match=rf"^{name} must be a floating-point tensor"):
        call_with(torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match=rf"^{name}\b.*finite"):
        call_with(torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError, match=rf"^{name}\b.*finite"):
        call_with(math.inf)
    assert call_with(np.float32(1.0)).shape == ()  # a NumPy number is accepted


@pytest.mark.parametrize("name", ["sigma_q", "sigma_p"])
@pytest.mark.parametrize("sigma", [0.0, -1.0])
def test_kl_normal_standard_deviations_must_be_positive(name, sigma):
    args = {"mu_q": torch.zeros(2), "sigma_q": torch.ones(2), "mu_p": torch.zeros(2), "sigma_p": torch.ones(2)}
    args[name] = torch.tensor([1.0, sigma])
    with pytest.raises(ValueError, match=rf"^{name} must be finite and > 0"):
        kl.kl_normal(**args)
    with value_checks(False):  # a domain check, not a scan of values: it stays on
        with pytest.raises(ValueError, match=rf"^{name} must be finite and > 0"):
            kl.kl_normal(**args)


def test_kl_normal_std_arguments_are_floating_tensors_or_numbers():
    with pytest.raises(ValueError, match="^mu has NaN or infinite entries"):
        kl.kl_normal_std(torch.tensor([math.nan]), torch.zeros(1))
    with pytest.raises(ValueError, match="^logvar has NaN or infinite entries"):
        kl.kl_normal_std(torch.zeros(1), torch.tensor([-math.inf]))
    with pytest.raises(ValueError, match="^mu must be finite"):
        kl.kl_normal_std(math.inf, 0.0)
    with pytest.raises(TypeError, match="^logvar must be a torch.Tensor"):
        kl.kl_normal_std(0.0, [0.0])
    with pytest.raises(TypeError, match="^mu must be a real number"):
        kl.kl_normal_std(False, 0.0)
    with pytest.raises(TypeError, match="^logvar must be a floating-point tensor"):
        kl.kl_normal_std(torch.zeros(1), torch.zeros(1, dtype=torch.int32))


def test_kl_monte_carlo_arguments():
    p, q = Normal(0.0, 1.0), Normal(0.5, 1.0)
    # counts and seeds: Python or NumPy ints; a float or a bool is a TypeError, too few draws a ValueError
    assert kl.kl_monte_carlo(p, q, np.int64(100), generator_seed=np.int32(5)) == kl.kl_monte_carlo(
        p, q, 100, generator_seed=5)
    for bad in (100.0, True):
        with pytest.raises(TypeError, match="^num_samples must be an int"):
            kl.kl_monte_carlo(p, q, bad)
    with pytest.raises(ValueError, match="^num_samples must be >= 2"):
        kl.kl_monte_carlo(p, q, 1)
    with pytest.raises(TypeError, match="^generator_seed must be an int"):
        kl.kl_monte_carlo(p, q, 100, generator_seed=3.0)
    # one distribution each; a batch shape gets a hint: wrap it in Independent
    with pytest.raises(TypeError, match="^q must be a torch.distributions.Distribution"):
        kl.kl_monte_carlo(p, "normal", 1000)
    batch = Normal(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match=r"^p has batch shape \(3,\).*Independent\(p, 1\)"):
        kl.kl_monte_carlo(batch, q, 1000, generator_seed=0)
    with pytest.raises(ValueError, match=r"^q has batch shape \(2, 3\).*Independent\(q, 2\)"):
        kl.kl_monte_carlo(p, Normal(torch.zeros(2, 3), 1.0), 1000)


def test_fit_gaussian_arguments():
    with pytest.raises(ValueError, match="^direction must be one of"):
        kl.fit_gaussian(lambda x: 0.0, "sideways")
    with pytest.raises(ValueError, match=r"^init\[1\] \(the initial standard deviation\) must be > 0"):
        kl.fit_gaussian(lambda x: 0.0, "forward", init=(0.0, 0.0))
    with pytest.raises(TypeError, match=r"^init\[0\]"):
        kl.fit_gaussian(lambda x: 0.0, "forward", init=("0", 1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_gpu_tensors():
    p = torch.tensor([0.2, 0.8], device="cuda")
    value = kl.kl_categorical(p, torch.tensor([0.5, 0.5], device="cuda"))
    assert value.device.type == "cuda"
    assert kl.kl_categorical_uniform(torch.zeros(3, 4, device="cuda")).device.type == "cuda"
    ones = torch.ones(3, device="cuda")
    assert kl.kl_normal(ones, ones, 0.0, 2.0).device.type == "cuda"
    assert kl.kl_normal_std(ones, 0.0).device.type == "cuda"


def test_kl_normal_std_on_a_batch_matches_torch_summed_over_the_last_axis():
    gen = torch.Generator().manual_seed(3)
    mu = torch.randn(64, 20, generator=gen, dtype=torch.float64)
    logvar = torch.randn(64, 20, generator=gen, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    got = kl.kl_normal_std(mu, logvar)
    assert got.shape == (64,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)

"""gstutorial.gumbel: distributions (fixed seeds, scipy.stats), agreement with torch, robustness, argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from torch.distributions import RelaxedOneHotCategorical
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from gstutorial import gumbel as G
from gstutorial.checks import value_checks
from gstutorial.primitives import softmax_last

CUDA = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
DEVICES = ["cpu", *CUDA]
NEG_INF = -math.inf


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def chisquare_pvalue(samples: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(samples.flatten().cpu(), minlength=probs.numel()).double().numpy()
    probs = probs.double().cpu().numpy()
    expected = probs / probs.sum() * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a zero-probability category was sampled"
    return stats.chisquare(counts[keep], expected[keep]).pvalue

# -------------------------------------------------------------------------------- Gumbel noise

def test_gumbel_pdf_cdf_match_scipy():
    z = np.linspace(-4, 12, 97)
    np.testing.assert_allclose(G.gumbel_pdf(z), stats.gumbel_r.pdf(z), rtol=1e-12, atol=0)
    np.testing.assert_allclose(G.gumbel_cdf(z), stats.gumbel_r.cdf(z), rtol=1e-12, atol=0)
    np.testing.assert_allclose(G.gumbel_log_pdf(z), stats.gumbel_r.logpdf(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(G.gumbel_pdf(torch.from_numpy(z)), torch.from_numpy(stats.gumbel_r.pdf(z)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_from_uniform_endpoints_are_finite(dtype):
    below_one = 1 - torch.finfo(dtype).eps / 2
    u = torch.tensor([0.0, torch.finfo(dtype).tiny, 0.3, below_one, 1.0], dtype=dtype)
    g = G.gumbel_from_uniform(u)
    assert torch.isfinite(g).all() and g.dtype == dtype
    assert (g.diff() >= 0).all()  # monotone, and the clamped endpoints equal their neighbours
    assert g[0] == g[1] and g[-1] == g[-2]
    assert g[2].item() == pytest.approx(-math.log(-math.log(0.3)), rel=1e-6)


def test_gumbel_noise_survives_a_uniform_source_that_returns_0(monkeypatch):
    real_rand = torch.rand

    def extreme_rand(shape, **kwargs):  # alternating U = 0 and the largest float below 1
        u = real_rand(shape, **kwargs)
        u.view(-1)[0::2] = 0.0
        u.view(-1)[1::2] = 1 - torch.finfo(u.dtype).eps / 2
        return u

    monkeypatch.setattr(torch, "rand", extreme_rand)
    for dtype in (torch.float32, torch.float64, torch.float16):
        g = G.gumbel_noise(torch.empty(6, dtype=dtype))
        assert torch.isfinite(g).all()
        logits = torch.tensor([[0.0, 0.0, NEG_INF]], dtype=dtype, requires_grad=True)
        y = G.gumbel_softmax(logits, 0.5, hard=True)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_gumbel_noise_shape_dtype_device(device, dtype):
    like = torch.empty(3, 4, 5, dtype=dtype, device=device)
    g = G.gumbel_noise(like)
    assert g.shape == like.shape and g.dtype == dtype and g.device == like.device
    assert torch.isfinite(g).all()


def test_gumbel_noise_moments_and_ks():
    g = G.gumbel_noise(torch.empty(400_000, dtype=torch.float64), generator=gen(0))
    n = g.numel()
    assert abs(g.mean().item() - G.EULER_GAMMA) < 4 * math.sqrt(math.pi**2 / 6 / n)
    assert abs(g.var().item() - math.pi**2 / 6) < 0.02
    assert stats.kstest(g[:20_000].numpy(), stats.gumbel_r.cdf).pvalue > 1e-3
    # and a test that can fail: a shifted Gumbel is rejected
    assert stats.kstest(g[:20_000].numpy() + 0.1, stats.gumbel_r.cdf).pvalue < 1e-6


def test_generator_makes_noise_reproducible():
    like = torch.empty(10, 7)
    torch.testing.assert_close(G.gumbel_noise(like, gen(3)), G.gumbel_noise(like, gen(3)), rtol=0, atol=0)
    assert not torch.equal(G.gumbel_noise(like, gen(3)), G.gumbel_noise(like, gen(4)))


def test_noise_has_no_category_axis_so_any_shape_is_accepted():
    # a scalar u = 1/2 gives -log(log 2); a 0-d `like` gives 0-d noise; logits still need their axis
    assert G.gumbel_from_uniform(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(
        -math.log(math.log(2.0)), rel=1e-15)
    assert G.gumbel_noise(torch.tensor(0.5)).shape == () and G.gumbel_noise(torch.zeros(4, 0)).shape == (4, 0)
    with pytest.raises(ValueError, match="non-empty category axis"):
        G.gumbel_max(torch.tensor(0.5))


BAD_UNIFORMS = [(bad, dtype) for dtype in (torch.float32, torch.float64) for bad in (math.nan, -1.0, 2.0, -1e-30, 1 + 1e-6)]


@pytest.mark.parametrize(("bad", "dtype"), [*BAD_UNIFORMS, (math.nan, torch.float16), (-1.0, torch.bfloat16)])
def test_gumbel_from_uniform_rejects_nan_and_values_outside_0_1(bad, dtype):
    u = torch.tensor([0.0, 0.5, bad, 1.0], dtype=dtype)  # 0 and 1 themselves are valid (clamped)
    with pytest.raises(ValueError, match=r"^u must lie in \[0, 1\]"):
        G.gumbel_from_uniform(u)


def test_gumbel_from_uniform_accepts_torch_rand_and_skips_the_scan_without_value_checks():
    u = torch.rand(4, 1000, dtype=torch.float64, generator=gen(30))
    torch.testing.assert_close(G.gumbel_from_uniform(u), -torch.log(-torch.log(u)), rtol=0, atol=0)
    assert G.gumbel_from_uniform(torch.zeros(0, 3)).shape == (0, 3)
    with value_checks(False):
        assert torch.isnan(G.gumbel_from_uniform(torch.tensor([math.nan, 0.5]))[0])


# -------------------------------------------------------------------------------- inverse CDF

def test_inverse_cdf_worked_example():
    theta = torch.tensor([0.05, 0.25, 0.7], dtype=torch.float64)
    assert G.categorical_inverse_cdf(theta, torch.tensor(0.31)).item() == 2
    u = torch.tensor([0.0, 0.049, 0.05, 0.2999, 0.3, 0.999999])
    assert G.categorical_inverse_cdf(theta.expand(6, 3), u.double()).tolist() == [0, 0, 1, 1, 2, 2]


def test_inverse_cdf_distribution_and_zero_probabilities():
    probs = torch.tensor([0.0, 0.3, 0.0, 0.5, 0.2, 0.0])
    u = torch.rand(100_000, generator=gen(1))
    samples = G.categorical_inverse_cdf(probs.expand(100_000, 6), u)
    assert chisquare_pvalue(samples, probs) > 1e-3  # also asserts the zero categories never occur


def test_inverse_cdf_bad_input():
    with pytest.raises(ValueError, match=r"^u must lie in \[0, 1\)"):
        G.categorical_inverse_cdf(torch.tensor([0.5, 0.5]), torch.tensor(1.0))
    with pytest.raises(ValueError, match="^u must have the batch shape"):
        G.categorical_inverse_cdf(torch.tensor([0.5, 0.5]), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="^probs"):
        G.categorical_inverse_cdf(torch.tensor([0.5, 0.6]), torch.tensor(0.1))
    with pytest.raises(TypeError, match="^probs"):
        G.categorical_inverse_cdf([0.5, 0.5], torch.tensor(0.1))


# -------------------------------------------------------------------------------- Gumbel-Max

@pytest.mark.parametrize(
    "logits",
    [[2.0, 1.0, 0.5, -1.0], [1000.0, 999.0, 990.0], [1e-8, 0.0, -1e-8], [0.0] * 5, [20.0, -20.0, 0.0],
     [3.0, NEG_INF, 1.0]],
)
def test_quad_probability_integral_equals_softmax(logits):
    p = G.gumbel_max_probabilities(logits)
    expected = torch.softmax(torch.tensor(logits, dtype=torch.float64), -1).numpy()
    np.testing.assert_allclose(p, expected, rtol=1e-10, atol=1e-14)


def test_quad_bad_input():
    for bad in ([], [math.nan, 1.0], [math.inf, 0.0], [NEG_INF, NEG_INF]):
        with pytest.raises(ValueError, match="^logits"):
            G.gumbel_max_probabilities(bad)
    with pytest.raises(ValueError, match="^epsrel"):
        G.gumbel_max_probabilities([0.0, 1.0], epsrel=0.0)
    with pytest.raises(TypeError, match="^epsrel"):
        G.gumbel_max_probabilities([0.0, 1.0], epsrel="1e-8")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_max_chi_square(dtype):
    logits = torch.tensor([1.5, 0.0, -1.0, 0.7, NEG_INF, -3.0], dtype=dtype)
    samples = G.gumbel_max(logits.expand(200_000, 6), generator=gen(5))
    assert samples.shape == (200_000,) and samples.dtype == torch.long
    assert chisquare_pvalue(samples, torch.softmax(logits.double(), -1)) > 1e-3


def test_gumbel_max_chi_square_rejects_the_wrong_distribution():
    logits = torch.tensor([1.5, 0.0, -1.0])
    samples = G.gumbel_max(logits.expand(200_000, 3), generator=gen(5))
    assert chisquare_pvalue(samples, torch.softmax(logits * 1.05, -1)) < 1e-6


def test_gumbel_max_shift_invariance_and_batch_shape():
    logits = torch.randn(4, 5, 8, generator=gen(6), dtype=torch.float64)
    a = G.gumbel_max(logits, generator=gen(7))
    b = G.gumbel_max(torch.log_softmax(logits, -1), generator=gen(7))
    c = G.gumbel_max(logits + 123.0, generator=gen(7))
    assert a.shape == (4, 5) and torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("device", DEVICES)
def test_hard_sample_is_the_gumbel_max_sample(device):
    logits = torch.randn(50, 10, generator=gen(8), device="cpu").to(device)
    one_hot = G.gumbel_softmax(logits, 0.3, hard=True, generator=gen(9, device))
    index = G.gumbel_max(logits, generator=gen(9, device))
    assert torch.equal(one_hot.argmax(-1), index)


# -------------------------------------------------------------------------------- Gumbel-Softmax

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 7), (2, 3, 4, 7)])
def test_gumbel_softmax_shape_dtype_simplex(device, dtype, shape):
    logits = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    y = G.gumbel_softmax(logits, 0.7)
    assert y.shape == shape and y.dtype == dtype and y.device == logits.device
    assert (y >= 0).all()
    torch.testing.assert_close(y.sum(-1), torch.ones(shape[:-1], dtype=dtype, device=device))
    y[..., 0].sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_straight_through_forward_is_exactly_one_hot_and_backward_is_soft(dtype):
    logits = torch.randn(500, 6, dtype=dtype, generator=gen(10)).requires_grad_()
    weights = torch.randn(6, dtype=dtype, generator=gen(11))
    hard = G.gumbel_softmax(logits, 0.5, hard=True, generator=gen(12))
    assert set(hard.detach().unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard.detach().sum(-1), torch.ones(500, dtype=dtype))  # exact, not approximate
    (grad_hard,) = torch.autograd.grad((hard * weights).sum(), logits)
    soft = G.gumbel_softmax(logits, 0.5, hard=False, generator=gen(12))
    (grad_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    torch.testing.assert_close(grad_hard, grad_soft, rtol=0, atol=0)
    assert grad_soft.abs().max() > 0
    torch.testing.assert_close(hard.argmax(-1), soft.argmax(-1), rtol=0, atol=0)


def test_hard_samples_follow_softmax_chi_square():
    logits = torch.tensor([0.3, -0.4, 1.1, NEG_INF, 0.0])
    y = G.gumbel_softmax(logits.expand(100_000, 5), 2.0, hard=True, generator=gen(13))
    assert chisquare_pvalue(y.argmax(-1), torch.softmax(logits.double(), -1)) > 1e-3


def test_temperature_limits():
    logits = torch.tensor([1.0, -0.5, 0.2], dtype=torch.float64)
    cold = G.gumbel_softmax(logits.expand(50_000, 3), 0.001, generator=gen(14))
    assert (cold.max(-1).values > 0.99).float().mean() > 0.99  # almost one-hot
    assert chisquare_pvalue(cold.argmax(-1), torch.softmax(logits, -1)) > 1e-3
    hot = G.gumbel_softmax(logits.expand(1_000, 3), 1e4, generator=gen(15))
    assert (hot - 1 / 3).abs().max() < 3e-3  # the centre of the simplex


def test_same_distribution_as_torch_gumbel_softmax():
    logits = torch.tensor([0.5, -1.0, 1.5, 0.0])
    n = 20_000
    ours = G.gumbel_softmax(logits.expand(n, 4), 0.7, generator=gen(16))
    torch.manual_seed(17)
    theirs = F.gumbel_softmax(logits.expand(n, 4), tau=0.7)
    for k in range(4):
        assert stats.ks_2samp(ours[:, k].numpy(), theirs[:, k].numpy()).pvalue > 1e-3
    # the same test detects a different temperature
    other = F.gumbel_softmax(logits.expand(n, 4), tau=0.9)
    assert stats.ks_2samp(ours[:, 2].numpy(), other[:, 2].numpy()).pvalue < 1e-6


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hard", [False, True])
def test_extreme_and_masked_logits(device, dtype, hard):
    logits = torch.tensor([[1e4, -1e4, 0.0, NEG_INF], [-1e4, -1e4 + 1, NEG_INF, -1e4]] * 500,
                          dtype=dtype, device=device, requires_grad=True)
    y = G.gumbel_softmax(logits, 0.1, hard=hard, generator=gen(18, device))
    assert torch.isfinite(y).all()
    assert (y[::2, 3] == 0).all() and (y[1::2, 2] == 0).all()  # masked entries exactly 0
    assert (y[::2, 0] == 1).all()  # 1e4 wins every time
    (y * torch.arange(4.0, dtype=dtype, device=device)).sum().backward()
    assert torch.isfinite(logits.grad).all()
    index = G.gumbel_max(logits.detach(), generator=gen(18, device))
    assert (index[::2] == 0).all() and (index[1::2] != 2).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_cast_back(dtype):
    logits = torch.tensor([[1e4, -1e4, 0.0], [0.1, 0.2, NEG_INF]], dtype=dtype).repeat(100, 1)
    logits.requires_grad_(True)
    y = G.gumbel_softmax(logits, 0.5, hard=True, generator=gen(19))
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert torch.equal(y.sum(-1), torch.ones(200, dtype=dtype))
    y[:, 1].sum().backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad).all()
    assert (G.gumbel_max(logits.detach())[::2] == 0).all()
    # identical draws to the float32 computation
    y32 = G.gumbel_softmax(logits.detach().float(), 0.5, generator=gen(19))
    torch.testing.assert_close(G.gumbel_softmax(logits.detach(), 0.5, generator=gen(19)), y32.to(dtype))


logit_rows = st.integers(1, 8).flatmap(
    lambda k: st.lists(st.one_of(st.floats(-50, 50), st.just(NEG_INF)), min_size=k, max_size=k)
).filter(lambda row: any(math.isfinite(v) for v in row))


@settings(max_examples=150, deadline=None)
@given(logit_rows, st.floats(0.05, 20.0), st.booleans(), st.integers(0, 2**31 - 1))
def test_property_samples_live_on_the_simplex(row, tau, hard, seed):
    logits = torch.tensor(row, dtype=torch.float64, requires_grad=True)
    y = G.gumbel_softmax(logits, tau, hard=hard, generator=gen(seed))
    masked = torch.isneginf(logits.detach())
    assert torch.isfinite(y).all() and (y >= 0).all() and (y[masked] == 0).all()
    assert abs(y.sum().item() - 1) < 1e-12
    if hard:
        assert y.max().item() == 1.0 and (y != 0).sum() == 1
    (y * torch.arange(len(row), dtype=torch.float64)).sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[masked] == 0).all()


def test_overflow_is_explained():
    with pytest.raises(ValueError, match="overflow.*larger temperature"):
        G.gumbel_softmax(torch.tensor([3e38, 0.0]), 1e-3)


# -------------------------------------------------------------------------------- Concrete density

@pytest.mark.parametrize("tau", [0.3, 0.7, 1.0, 2.5])
def test_concrete_log_prob_matches_torch(tau):
    logits = torch.randn(6, 5, dtype=torch.float64, generator=gen(20))
    dist = RelaxedOneHotCategorical(torch.tensor(tau, dtype=torch.float64), logits=logits)
    torch.manual_seed(21)
    y = dist.sample((3,))
    ours = G.concrete_log_prob(y, logits, tau)
    assert ours.shape == (3, 6)
    torch.testing.assert_close(ours, dist.log_prob(y), rtol=1e-10, atol=1e-10)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-8, 8), min_size=2, max_size=6), st.floats(0.2, 5.0), st.integers(0, 2**31 - 1))
def test_property_log_prob_matches_torch(row, tau, seed):
    logits = torch.tensor(row, dtype=torch.float64)
    y = G.gumbel_softmax(logits, tau, generator=gen(seed))
    if (y == 0).any():  # underflow at an extreme corner: outside the density's domain
        return
    expected = RelaxedOneHotCategorical(torch.tensor(tau, dtype=torch.float64), logits=logits).log_prob(y)
    assert G.concrete_log_prob(y, logits, tau).item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-9)


def _density_from_logratios(s: list[float], logits: torch.Tensor, tau: float) -> float:
    y = torch.softmax(torch.tensor([*s, 0.0], dtype=torch.float64), -1)
    if (y == 0).any():  # far out in the tails y underflows; the integrand there is below 1e-300
        return 0.0
    # density on the simplex times the Jacobian prod(y) of the log-ratio coordinates
    return math.exp(G.concrete_log_prob(y, logits, tau).item() + torch.log(y).sum().item())


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_concrete_density_integrates_to_one_k2(tau):
    logits = torch.tensor([0.8, -0.3], dtype=torch.float64)
    mass, _ = integrate.quad(lambda t: math.exp(G.concrete_log_prob(
        torch.tensor([t, 1 - t], dtype=torch.float64), logits, tau).item()), 0, 1, limit=200)
    assert mass == pytest.approx(1.0, abs=1e-7)
    mass, _ = integrate.quad(lambda s: _density_from_logratios([s], logits, tau), -np.inf, np.inf)
    assert mass == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize(("logits", "tau"), [([0.5, -0.2, 0.1], 0.8), ([0.5, -0.2, 0.1], 0.3),
                                             ([5.0, -5.0, 0.0], 0.5), ([2.0, -1.0, 0.0], 3.0), ([0.8, -0.3], 0.5)])
def test_concrete_density_integrates_to_one_k3(logits, tau):
    mass = G.concrete_total_mass(torch.tensor(logits, dtype=torch.float64), tau, nodes=300)
    assert mass == pytest.approx(1.0, abs=1e-10)


def test_concrete_log_prob_with_a_mask_equals_the_smaller_distribution():
    logits = torch.tensor([0.4, NEG_INF, -0.7, 1.2], dtype=torch.float64, requires_grad=True)
    y = G.gumbel_softmax(logits.detach(), 0.6, generator=gen(22))
    assert y[1] == 0
    value = G.concrete_log_prob(y, logits, 0.6)
    smaller = RelaxedOneHotCategorical(torch.tensor(0.6, dtype=torch.float64),
                                       logits=logits.detach()[[0, 2, 3]]).log_prob(y[[0, 2, 3]])
    assert value.item() == pytest.approx(smaller.item(), rel=1e-12)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1] == 0


def test_concrete_log_prob_half_inputs():
    logits = torch.tensor([0.5, -0.5, 0.0])
    y = G.gumbel_softmax(logits, 1.0, generator=gen(23))
    value = G.concrete_log_prob(y.half(), logits.half(), 1.0)
    assert value.dtype == torch.float16
    assert value.item() == pytest.approx(G.concrete_log_prob(y, logits, 1.0).item(), abs=0.05)


def test_concrete_log_prob_promotes_mixed_dtypes():
    # chapter 5 evaluates float64 grid points against float32 logits: promoted, exactly as in float64
    logits = torch.tensor([0.3, -0.4, 0.1])
    y = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    value = G.concrete_log_prob(y, logits, 0.7)
    assert value.dtype == torch.float64
    assert value.item() == G.concrete_log_prob(y, logits.double(), 0.7).item()


@pytest.mark.parametrize(("sample_dtype", "logits_dtype"), [(torch.float32, torch.float64), (torch.float16, torch.float16)])
def test_concrete_log_prob_accepts_samples_rounded_in_their_own_dtype(sample_dtype, logits_dtype):
    """The sum-to-one check allows the sample's own rounding: a float32 draw scored against float64
    logits is held to float32's tolerance, not float64's."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 6, dtype=torch.float64, generator=generator)
    y = G.gumbel_softmax(logits.to(sample_dtype), 0.7, generator=generator)
    value = G.concrete_log_prob(y, logits.to(logits_dtype), 0.7)
    assert value.shape == (50,) and torch.isfinite(value).all()
    reference = G.concrete_log_prob(y.double() / y.double().sum(-1, keepdim=True), logits, 0.7)
    torch.testing.assert_close(value.double(), reference, rtol=0, atol=0.05 if sample_dtype == torch.float16 else 1e-3)


def test_bad_samples_for_log_prob():
    logits = torch.tensor([0.0, 0.0, NEG_INF])
    for bad in ([0.5, 0.6, 0.0], [0.5, 0.4, 0.1], [1.0, 0.0, 0.0], [1.5, -0.5, 0.0], [0.5, 0.5]):
        with pytest.raises(ValueError, match="^sample"):  # off the simplex, on a masked or underflowed category
            G.concrete_log_prob(torch.tensor(bad), logits, 1.0)
    with pytest.raises(ValueError, match="^sample and logits must have broadcastable shapes"):
        G.concrete_log_prob(torch.full((4, 3), 1 / 3), torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match="^sample and logits must be on the same device"):
        G.concrete_log_prob(torch.full((3,), 1 / 3, device="meta"), torch.zeros(3), 1.0)
    with pytest.raises(TypeError, match="^sample"):
        G.concrete_log_prob([1 / 3] * 3, torch.zeros(3), 1.0)
    # batch axes of size 1 broadcast: one point against two rows of logits
    assert G.concrete_log_prob(torch.full((1, 3), 1 / 3), torch.zeros(2, 3), 1.0).shape == (2,)


def test_concrete_total_mass_refuses_k_above_3_and_huge_grids():
    with pytest.raises(ValueError, match=r"K = 2 or 3, got shape \(4,\)"):
        G.concrete_total_mass(torch.zeros(4, dtype=torch.float64), 1.0, nodes=10)
    with pytest.raises(ValueError, match="unmasked logits"):
        G.concrete_total_mass(torch.tensor([0.0, NEG_INF, 0.0], dtype=torch.float64), 1.0, nodes=10)
    with pytest.raises(ValueError, match="^nodes"):
        G.concrete_total_mass(torch.zeros(3, dtype=torch.float64), 1.0, nodes=4000)  # 1.6e7 grid points


# -------------------------------------------------------------------------------- argument checks

@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, math.inf])
def test_bad_temperature(tau):
    with pytest.raises(ValueError, match="^temperature"):
        G.gumbel_softmax(torch.zeros(3), tau)
    with pytest.raises(ValueError, match="^temperature"):
        G.concrete_log_prob(torch.full((3,), 1 / 3), torch.zeros(3), tau)
    with pytest.raises(ValueError, match="^temperature"):
        G.exp_gumbel_softmax(torch.zeros(3), tau)
    with pytest.raises(ValueError, match="^temperature"):
        G.exp_concrete_log_prob(torch.full((3,), -math.log(3)), torch.zeros(3), tau)


def test_temperature_types():
    for bad in ("1.0", True, None):
        with pytest.raises(TypeError, match="^temperature"):
            G.gumbel_softmax(torch.zeros(3), bad)
    with pytest.raises(ValueError, match="^temperature"):
        G.gumbel_softmax(torch.zeros(3), torch.ones(2))
    # a NumPy number or a one-element tensor is read as the same float
    for tau in (np.float32(0.5), np.float64(0.5), torch.tensor(0.5), 1 / 2):
        torch.testing.assert_close(G.gumbel_softmax(torch.zeros(3), tau, generator=gen(0)),
                                   G.gumbel_softmax(torch.zeros(3), 0.5, generator=gen(0)), rtol=0, atol=0)


def test_learnable_temperature_is_checked_like_a_number():
    for bad in (0.0, -0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="^temperature must be a finite number > 0"):
            G.gumbel_softmax(torch.zeros(3), torch.tensor(bad, requires_grad=True))
    with pytest.raises(ValueError, match="^temperature must be a single number"):
        G.exp_gumbel_softmax(torch.zeros(3), torch.ones(2, requires_grad=True))
    # a one-element tensor of any shape is the 0-d temperature: the sample keeps the logits' shape
    assert G.gumbel_softmax(torch.zeros(2, 3), torch.ones(1, 1, requires_grad=True)).shape == (2, 3)


def test_hard_must_be_a_bool():
    for bad in (1, 0, "yes", None):
        with pytest.raises(TypeError, match="^hard"):
            G.gumbel_softmax(torch.zeros(3), 1.0, hard=bad)


BAD_LOGITS = [
    (torch.tensor([[0.0, 1.0], [math.nan, 0.0]]), "^logits contain NaN"),
    (torch.tensor([[0.0, 1.0], [math.inf, 0.0]]), r"^logits contain \+inf"),
    (torch.tensor([[0.0, 1.0], [NEG_INF, NEG_INF]]), "masked with -inf"),
    (torch.zeros(3, 0), "^logits needs a non-empty category axis"),
    (torch.tensor(1.0), "^logits needs a non-empty category axis"),
]


@pytest.mark.parametrize(("logits", "match"), BAD_LOGITS)
@pytest.mark.parametrize("call", ["gumbel_max", "soft", "hard", "log_prob", "exp", "exp_log_prob"])
def test_bad_logits(logits, match, call):
    with pytest.raises(ValueError, match=match):
        if call == "gumbel_max":
            G.gumbel_max(logits)
        elif call == "log_prob":
            G.concrete_log_prob(torch.full_like(logits, 0.5), logits, 1.0)
        elif call == "exp":
            G.exp_gumbel_softmax(logits, 1.0)
        elif call == "exp_log_prob":
            G.exp_concrete_log_prob(torch.full_like(logits, -math.log(2)), logits, 1.0)
        else:
            G.gumbel_softmax(logits, 1.0, hard=call == "hard")


def test_non_float_inputs():
    with pytest.raises(TypeError, match="^logits"):
        G.gumbel_softmax(torch.tensor([1, 2]), 1.0)
    with pytest.raises(TypeError, match="^logits"):
        G.gumbel_max([0.0, 1.0])
    with pytest.raises(TypeError, match="^like"):
        G.gumbel_noise(torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="^u"):
        G.gumbel_from_uniform([0.5])


def test_nodes_is_an_int():
    logits = torch.zeros(2, dtype=torch.float64)
    assert G.concrete_total_mass(logits, 1.0, nodes=np.int64(50)) == G.concrete_total_mass(logits, 1.0, nodes=50)
    for bad in (50.0, 2.5, True, "50"):
        with pytest.raises(TypeError, match="^nodes"):
            G.concrete_total_mass(logits, 1.0, nodes=bad)
    with pytest.raises(ValueError, match="^nodes"):
        G.concrete_total_mass(logits, 1.0, nodes=0)


# -------------------------------------------------------------------------------- layout: contiguous outputs, dim

SAMPLERS = {
    "soft": lambda x, tau, **kw: G.gumbel_softmax(x, tau, **kw),
    "hard": lambda x, tau, **kw: G.gumbel_softmax(x, tau, hard=True, **kw),
    "exp": lambda x, tau, **kw: G.exp_gumbel_softmax(x, tau, **kw),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [4, 20])  # below and above 16, where the CPU softmax moves the category axis
@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_samples_are_contiguous(device, k, sampler, dtype):
    logits = torch.randn(8, 3, k, device=device).to(dtype)
    for dim in (-1, 0, 1):
        y = SAMPLERS[sampler](logits, 0.7, dim=dim)
        assert y.is_contiguous() and y.shape == logits.shape and y.dtype == dtype
        assert y.view(-1).shape == (8 * 3 * k,)
    tau = torch.tensor(0.7, device=device, requires_grad=True)
    assert SAMPLERS[sampler](logits, tau).is_contiguous()


@pytest.mark.parametrize("k", [4, 20])
def test_contiguous_samples_keep_their_values(k):
    """The contiguous copy changes the layout only: bit for bit softmax((x + g)/τ) for the same noise."""
    logits = torch.randn(50, k, generator=gen(40))
    g = G.gumbel_noise(logits, gen(41))
    z = (logits + g) / 0.3
    assert torch.equal(G.gumbel_softmax(logits, 0.3, generator=gen(41)), softmax_last(z))
    assert torch.equal(G.exp_gumbel_softmax(logits, 0.3, generator=gen(41)), softmax_last(z, log=True))
    one_hot = F.one_hot(z.argmax(-1), k).float()
    assert torch.equal(G.gumbel_softmax(logits, 0.3, hard=True, generator=gen(41)), one_hot)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_dim_is_the_transposed_last_axis_on_the_same_noise(device, sampler):
    draw = SAMPLERS[sampler]
    logits = torch.randn(6, 5, dtype=torch.float64, generator=gen(42)).to(device).requires_grad_()
    weights = torch.randn(6, 5, dtype=torch.float64, generator=gen(43)).to(device)
    last = draw(logits, 0.4, generator=gen(44, device))
    first = draw(logits.T, 0.4, generator=gen(44, device), dim=0)
    assert torch.equal(first, last.T)
    (grad_last,) = torch.autograd.grad((last * weights).sum(), logits)
    (grad_first,) = torch.autograd.grad((first * weights.T).sum(), logits)
    assert torch.equal(grad_first, grad_last)
    # a middle axis of a 3-D tensor, and dim given as the last axis's index
    logits3 = torch.randn(4, 7, 3, dtype=torch.float64, generator=gen(45)).to(device)
    middle = draw(logits3, 0.4, generator=gen(46, device), dim=1)
    moved = draw(logits3.movedim(1, -1), 0.4, generator=gen(46, device)).movedim(-1, 1)
    assert torch.equal(middle, moved)
    assert torch.equal(draw(logits3, 0.4, generator=gen(46, device), dim=2),
                       draw(logits3, 0.4, generator=gen(46, device)))
    if sampler == "hard":
        assert torch.equal(middle.sum(1), torch.ones(4, 3, dtype=torch.float64, device=device))


def test_dim_hard_samples_follow_softmax_along_that_axis():
    logits = torch.tensor([0.3, -0.4, 1.1, NEG_INF, 0.0])
    y = G.gumbel_softmax(logits[:, None].expand(5, 50_000), 1.5, hard=True, generator=gen(47), dim=0)
    assert chisquare_pvalue(y.argmax(0), torch.softmax(logits.double(), -1)) > 1e-3


def test_bad_dim():
    for bad in (1.0, True, None):
        with pytest.raises(TypeError, match="^dim"):
            G.gumbel_softmax(torch.zeros(2, 3), 1.0, dim=bad)
    for bad in (2, -3):
        with pytest.raises(ValueError, match=r"^dim must be in \[-2, 1\]"):
            G.exp_gumbel_softmax(torch.zeros(2, 3), 1.0, dim=bad)
    with pytest.raises(ValueError, match=r"^logits needs a non-empty category axis \(axis 0\)"):
        G.gumbel_softmax(torch.zeros(0, 3), 1.0, dim=0)
    with pytest.raises(ValueError, match="^logits needs a non-empty category axis"):
        G.gumbel_softmax(torch.tensor(1.0), 1.0, dim=0)


# -------------------------------------------------------------------------------- learnable temperature

def _torch_gumbel_softmax_on(g: torch.Tensor, monkeypatch, logits, tau, hard=False):
    """torch.nn.functional.gumbel_softmax with its noise -log(Exp(1)) replaced by g: it draws
    E = empty_like(logits).exponential_() and uses -log E, so E = exp(-g) gives g (to rounding)."""
    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "exponential_", lambda self, *args, **kwargs: self.copy_(torch.exp(-g)))
        return F.gumbel_softmax(logits, tau=tau, hard=hard)


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize(("dtype", "k", "tol"), [(torch.float64, 5, 1e-12), (torch.float64, 20, 1e-12),
                                                 (torch.float32, 10, 2e-5)])
def test_temperature_gradient_equals_torch_on_the_same_noise(monkeypatch, hard, dtype, k, tol):
    logits = torch.randn(64, k, dtype=dtype, generator=gen(50))
    weights = torch.randn(64, k, dtype=dtype, generator=gen(51))
    g = G.gumbel_noise(logits, gen(52))
    results = []
    for ours in (True, False):
        x = logits.clone().requires_grad_()
        tau = torch.tensor(0.6, dtype=dtype, requires_grad=True)
        y = G.gumbel_softmax(x, tau, hard=hard, generator=gen(52)) if ours else \
            _torch_gumbel_softmax_on(g, monkeypatch, x, tau, hard)
        grads = torch.autograd.grad((y * weights).sum(), (x, tau))
        results.append((y.detach(), *grads))
    (y_ours, dx_ours, dtau_ours), (y_torch, dx_torch, dtau_torch) = results
    torch.testing.assert_close(y_ours, y_torch, rtol=tol, atol=tol)
    torch.testing.assert_close(dx_ours, dx_torch, rtol=tol, atol=tol)
    torch.testing.assert_close(dtau_ours, dtau_torch, rtol=tol, atol=tol)
    assert dtau_ours.abs() > 1e-3  # a real gradient, not a zero that would agree trivially


def test_tensor_temperature_gives_the_float_sample():
    logits = torch.randn(30, 6, dtype=torch.float64, generator=gen(53))
    tau = torch.tensor(0.45, dtype=torch.float64, requires_grad=True)
    for hard in (False, True):
        torch.testing.assert_close(G.gumbel_softmax(logits, tau, hard=hard, generator=gen(54)).detach(),
                                   G.gumbel_softmax(logits, 0.45, hard=hard, generator=gen(54)), rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(G.exp_gumbel_softmax(logits, tau, generator=gen(54)).detach(),
                               G.exp_gumbel_softmax(logits, 0.45, generator=gen(54)), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_temperature_gradient_with_masked_logits_is_finite_and_ignores_the_mask(sampler):
    """A masked entry is -inf before and after the division by τ; its 0 · inf must not make τ's
    gradient NaN. The gradient equals the one computed on the unmasked categories alone."""
    logits = torch.randn(40, 5, dtype=torch.float64, generator=gen(55))
    logits[:, 3] = NEG_INF
    weights = torch.randn(40, 5, dtype=torch.float64, generator=gen(56))
    weights[:, 3] = 0.0  # the sampler's -inf log of a masked entry times 0 would be NaN itself
    tau = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    y = SAMPLERS[sampler](logits, tau, generator=gen(57))
    (grad,) = torch.autograd.grad((y * weights).sum() if sampler != "exp" else
                                  torch.where(weights != 0, y * weights, 0.0).sum(), tau)
    keep = [0, 1, 2, 4]
    z = (logits + G.gumbel_noise(logits, gen(57)))[:, keep] / tau
    reference = z.log_softmax(-1) if sampler == "exp" else z.softmax(-1)
    (expected,) = torch.autograd.grad((reference * weights[:, keep]).sum(), tau)
    assert torch.isfinite(grad)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_temperature_gradient_of_the_densities_equals_torch():
    logits = torch.randn(8, 4, dtype=torch.float64, generator=gen(58))
    log_y = G.exp_gumbel_softmax(logits, 0.5, generator=gen(59))
    for ours, theirs, point in ((G.exp_concrete_log_prob, ExpRelaxedCategorical, log_y),
                                (G.concrete_log_prob, RelaxedOneHotCategorical, log_y.exp())):
        grads = []
        for package in (True, False):
            tau = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
            value = ours(point, logits, tau) if package else theirs(tau, logits=logits).log_prob(point)
            grads.append(torch.autograd.grad(value.sum(), tau)[0])
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)
        assert grads[0].abs() > 1e-3


def test_a_learnable_temperature_learns():
    """Gradient descent on τ alone moves it where the objective wants it: here, for E[y_0] of a
    relaxed sample with the best category 0, towards smaller τ (sharper samples)."""
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0]]).expand(2000, 4)
    log_tau = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.SGD([log_tau], lr=0.5)
    generator = gen(60)
    for _ in range(20):
        optimizer.zero_grad()
        (-G.gumbel_softmax(logits, log_tau.exp(), generator=generator)[:, 0].mean()).backward()
        optimizer.step()
    assert log_tau.item() < -0.5


# -------------------------------------------------------------------------------- ExpConcrete (log space)

@pytest.mark.parametrize("tau", [0.1, 0.3, 1.0, 2.5])
def test_exp_concrete_log_prob_matches_torch(tau):
    logits = torch.randn(6, 5, dtype=torch.float64, generator=gen(61))
    dist = ExpRelaxedCategorical(torch.tensor(tau, dtype=torch.float64), logits=logits)
    torch.manual_seed(62)
    theirs = dist.rsample((3,))
    ours = G.exp_gumbel_softmax(logits.expand(3, 6, 5), tau, generator=gen(63))
    for point in (theirs, ours):
        value = G.exp_concrete_log_prob(point, logits, tau)
        assert value.shape == (3, 6)
        torch.testing.assert_close(value, dist.log_prob(point), rtol=1e-10, atol=1e-10)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-8, 8), min_size=2, max_size=8), st.floats(0.05, 5.0), st.integers(0, 2**31 - 1))
def test_property_exp_log_prob_matches_torch(row, tau, seed):
    logits = torch.tensor(row, dtype=torch.float64)
    log_y = G.exp_gumbel_softmax(logits, tau, generator=gen(seed))
    assert torch.isfinite(log_y).all() and abs(log_y.logsumexp(-1).item()) < 1e-13
    expected = ExpRelaxedCategorical(torch.tensor(tau, dtype=torch.float64), logits=logits).log_prob(log_y)
    assert G.exp_concrete_log_prob(log_y, logits, tau).item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-10)


def test_exp_sample_equals_torch_rsample_on_the_same_uniforms():
    """ExpRelaxedCategorical.rsample draws torch.rand of the sample's shape: with the same seed it
    sees the uniforms gumbel_noise sees, and the two log-samples agree to rounding."""
    logits = torch.randn(5, dtype=torch.float64, generator=gen(64))
    torch.manual_seed(65)
    theirs = ExpRelaxedCategorical(torch.tensor(0.4, dtype=torch.float64), logits=logits).rsample((2000,))
    ours = G.exp_gumbel_softmax(logits.expand(2000, 5), 0.4, generator=gen(65))
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-14), (torch.float32, 1e-6)])
@pytest.mark.parametrize("k", [4, 20])
def test_exp_sample_is_the_log_of_the_gumbel_softmax_sample(dtype, tol, k):
    logits = torch.randn(300, k, dtype=dtype, generator=gen(66))
    y = G.gumbel_softmax(logits, 0.5, generator=gen(67))
    log_y = G.exp_gumbel_softmax(logits, 0.5, generator=gen(67))
    torch.testing.assert_close(log_y.exp(), y, rtol=tol, atol=tol)
    assert torch.equal(log_y.argmax(-1), G.gumbel_max(logits, generator=gen(67)))  # the same noise


def test_exp_samples_follow_torch_exp_relaxed_categorical():
    logits = torch.tensor([0.5, -1.0, 1.5, 0.0])
    n = 20_000
    ours = G.exp_gumbel_softmax(logits.expand(n, 4), 0.5, generator=gen(68))
    assert chisquare_pvalue(ours.argmax(-1), torch.softmax(logits.double(), -1)) > 1e-3
    torch.manual_seed(69)  # an independent draw from torch's sampler
    theirs = ExpRelaxedCategorical(torch.tensor(0.5), logits=logits).rsample((n,))
    for k in range(4):
        assert stats.ks_2samp(ours[:, k].numpy(), theirs[:, k].numpy()).pvalue > 1e-3
    # the same test detects a different temperature
    other = ExpRelaxedCategorical(torch.tensor(0.6), logits=logits).rsample((n,))
    assert stats.ks_2samp(ours[:, 2].numpy(), other[:, 2].numpy()).pvalue < 1e-6


@pytest.mark.parametrize("tau", [0.1, 0.7, 3.0])
def test_log_density_of_log_y_is_density_of_y_plus_the_log_jacobian(tau):
    """log p(log y) = log p(y) + Σ_i log y_i, on draws with no exact 0 (masked categories left out)."""
    logits = torch.randn(500, 6, dtype=torch.float64, generator=gen(70))
    logits[::3, 2] = NEG_INF
    y = G.gumbel_softmax(logits, tau, generator=gen(71))
    keep = ~torch.isneginf(logits)
    rows = ((y > 0) | ~keep).all(-1)
    assert rows.sum() > 400
    log_y = torch.log(y[rows])
    jacobian = torch.where(keep[rows], log_y, 0.0).sum(-1)
    torch.testing.assert_close(G.exp_concrete_log_prob(log_y, logits[rows], tau),
                               G.concrete_log_prob(y[rows], logits[rows], tau) + jacobian, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tau", [0.2, 1.0, 2.0])
def test_exp_concrete_density_integrates_to_one_in_log_ratio_coordinates(tau):
    logits = torch.tensor([0.8, -0.3], dtype=torch.float64)

    def density(s: float) -> float:
        log_y = torch.log_softmax(torch.tensor([s, 0.0], dtype=torch.float64), -1)
        return math.exp(G.exp_concrete_log_prob(log_y, logits, tau).item())

    mass, _ = integrate.quad(density, -np.inf, np.inf, limit=200)
    assert mass == pytest.approx(1.0, abs=1e-8)


def test_float32_low_temperature_draws_are_scored_in_log_space():
    """In float32 at τ = 0.1 some coordinates of softmax((x + g)/τ) underflow to an exact 0, which
    the density of y refuses; the log-space draw keeps them finite and is scored."""
    logits = 2 * torch.randn(4000, 10, generator=gen(72))
    y = G.gumbel_softmax(logits, 0.1, generator=gen(73))
    assert (y == 0).any(-1).float().mean() > 0.02  # about 7% of the rows at this spread of logits
    with pytest.raises(ValueError, match="exact 0.*log space"):
        G.concrete_log_prob(y, logits, 0.1)
    log_y = G.exp_gumbel_softmax(logits, 0.1, generator=gen(73))
    assert torch.isfinite(log_y).all()
    value = G.exp_concrete_log_prob(log_y, logits, 0.1)
    assert value.dtype == torch.float32 and torch.isfinite(value).all()
    torch.testing.assert_close(value, ExpRelaxedCategorical(torch.tensor(0.1), logits=logits).log_prob(log_y),
                               rtol=1e-4, atol=1e-3)
    # the float32 point, renormalised in float64, scored against the float64 logits: the float32
    # arithmetic is accurate
    point = log_y.double() - log_y.double().logsumexp(-1, keepdim=True)
    torch.testing.assert_close(value.double(), G.exp_concrete_log_prob(point, logits.double(), 0.1),
                               rtol=1e-4, atol=1e-3)


def test_exp_concrete_log_prob_with_a_mask_equals_the_smaller_distribution():
    logits = torch.tensor([0.4, NEG_INF, -0.7, 1.2], dtype=torch.float64, requires_grad=True)
    log_y = G.exp_gumbel_softmax(logits.detach(), 0.6, generator=gen(74)).requires_grad_()
    assert torch.isneginf(log_y[1])
    value = G.exp_concrete_log_prob(log_y, logits, 0.6)
    smaller = ExpRelaxedCategorical(torch.tensor(0.6, dtype=torch.float64),
                                    logits=logits.detach()[[0, 2, 3]]).log_prob(log_y.detach()[[0, 2, 3]])
    assert value.item() == pytest.approx(smaller.item(), rel=1e-12)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1] == 0
    assert torch.isfinite(log_y.grad).all() and log_y.grad[1] == 0


@settings(max_examples=100, deadline=None)
@given(logit_rows, st.floats(0.05, 20.0), st.integers(0, 2**31 - 1))
def test_property_exp_samples_are_logs_of_simplex_points(row, tau, seed):
    logits = torch.tensor(row, dtype=torch.float64, requires_grad=True)
    temperature = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    log_y = G.exp_gumbel_softmax(logits, temperature, generator=gen(seed))
    masked = torch.isneginf(logits.detach())
    assert torch.isneginf(log_y[masked]).all() and torch.isfinite(log_y[~masked]).all()
    assert abs(log_y.logsumexp(-1).item()) < 1e-12
    value = G.exp_concrete_log_prob(log_y, logits, temperature)
    assert torch.isfinite(value)
    (torch.where(masked, 0.0, log_y * torch.arange(len(row))).sum() + value).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[masked] == 0).all()
    assert torch.isfinite(temperature.grad)


def test_exp_concrete_log_prob_promotes_dtypes_and_accepts_half():
    logits = torch.tensor([0.3, -0.4, 0.1])
    log_y = torch.log(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64))
    value = G.exp_concrete_log_prob(log_y, logits, 0.7)
    assert value.dtype == torch.float64 and value.item() == G.exp_concrete_log_prob(log_y, logits.double(), 0.7).item()
    half = G.exp_concrete_log_prob(log_y.half(), logits.half(), 0.7)
    assert half.dtype == torch.float16 and half.item() == pytest.approx(value.item(), abs=0.05)


def test_bad_log_samples():
    logits = torch.tensor([0.0, 0.0, NEG_INF])
    half = -math.log(2)
    for bad, match in (([half, half, -1.0], "masked"), ([0.0, NEG_INF, NEG_INF], "-inf"),
                       ([half, math.nan, NEG_INF], "finite"), ([half, math.inf, NEG_INF], "finite"),
                       ([0.0, 0.0, NEG_INF], "logsumexp 0"), ([0.5, -1.0, NEG_INF], "logsumexp 0")):
        with pytest.raises(ValueError, match=f"^log_sample.*{match}"):
            G.exp_concrete_log_prob(torch.tensor(bad), logits, 1.0)
    with pytest.raises(ValueError, match="^log_sample and logits need the same number of categories"):
        G.exp_concrete_log_prob(torch.full((2,), half), logits, 1.0)
    with pytest.raises(ValueError, match="^log_sample and logits must have broadcastable shapes"):
        G.exp_concrete_log_prob(torch.full((4, 3), -math.log(3)), torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match="^log_sample and logits must be on the same device"):
        G.exp_concrete_log_prob(torch.full((3,), -math.log(3), device="meta"), torch.zeros(3), 1.0)
    with pytest.raises(TypeError, match="^log_sample"):
        G.exp_concrete_log_prob([-math.log(3)] * 3, torch.zeros(3), 1.0)
    # logits passed by mistake for the log-sample are caught: they are not the log of a simplex point
    with pytest.raises(ValueError, match="logsumexp 0"):
        G.exp_concrete_log_prob(torch.tensor([1.0, 2.0, 0.5]), torch.zeros(3), 1.0)

"""gstutorial.reparam: closed-form objectives, exact per-sample estimators, unbiasedness, variances, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from torch.distributions import Independent, Normal

from gstutorial import elbo, reparam

# float64 for the exact comparisons, set and restored around this module (never at import time)
pytestmark = pytest.mark.usefixtures("float64_default")

OBJECTIVE_NAMES = sorted(reparam.OBJECTIVES)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- the test functions


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 1.0), (1.0, 0.5), (-0.7, 1.8)])
def test_objective_expectation_matches_quadrature(name, mu, sigma):
    objective = reparam.get_objective(name)

    def integrand(z: float) -> float:
        return objective.f(torch.tensor(z)).item() * stats.norm(mu, sigma).pdf(z)

    value = integrate.quad(integrand, -40.0, 40.0, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    assert objective.expectation(torch.tensor(mu), torch.tensor(sigma)).item() == pytest.approx(value, abs=1e-10)


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_objective_gradient_is_the_derivative_of_its_expectation(name):
    objective = reparam.get_objective(name)
    mu = torch.tensor(0.4, requires_grad=True)
    sigma = torch.tensor(1.3, requires_grad=True)
    grads = torch.autograd.grad(objective.expectation(mu, sigma), (mu, sigma))
    closed = objective.gradient(mu.detach(), sigma.detach())
    for a, b in zip(grads, closed, strict=True):
        assert a.item() == pytest.approx(b.item(), abs=1e-14)


# ---------------------------------------------------------------- the estimators, sample by sample


@settings(max_examples=100, deadline=None)
@given(st.floats(-3, 3), st.floats(0.05, 3), st.floats(-3, 3))
def test_normal_score_matches_autograd(mu, sigma, z):
    m = torch.tensor(mu, requires_grad=True)
    s = torch.tensor(sigma, requires_grad=True)
    grads = torch.autograd.grad(Normal(m, s).log_prob(torch.tensor(z)), (m, s))
    by_hand = reparam.normal_score(torch.tensor(z), torch.tensor(mu), torch.tensor(sigma))
    torch.testing.assert_close(by_hand, torch.stack(grads), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_score_function_per_sample_formula(name):
    f = reparam.get_objective(name).f
    mu, sigma = torch.tensor(0.3), torch.tensor(0.8)
    estimates = reparam.score_function_gradient(f, mu, sigma, 1000, generator(0), baseline=0.5)
    z = mu + sigma * torch.randn(1000, generator=generator(0))
    expected = (f(z) - 0.5)[:, None] * reparam.normal_score(z, mu, sigma)
    torch.testing.assert_close(estimates, expected, rtol=1e-12, atol=1e-12)


def test_pathwise_per_sample_formula_for_the_square():
    mu, sigma = torch.tensor(0.3), torch.tensor(0.8)
    estimates = reparam.pathwise_gradient(torch.square, mu, sigma, 1000, generator(1))
    eps = torch.randn(1000, generator=generator(1))
    z = mu + sigma * eps
    torch.testing.assert_close(estimates, torch.stack((2 * z, 2 * z * eps), -1), rtol=1e-14, atol=1e-14)


@settings(max_examples=50, deadline=None)
@given(st.floats(-3, 3), st.floats(0.05, 3), st.floats(-5, 5), st.floats(-5, 5))
def test_linear_functions(mu, sigma, a, c):
    # f(z) = a z + c: every pathwise sample is exactly (a, a * eps): d/dmu has zero variance
    def f(z):
        return a * z + c

    pathwise = reparam.pathwise_gradient(f, mu, sigma, 64, generator(2))
    assert torch.allclose(pathwise[:, 0], torch.full((64,), a), atol=1e-12)
    eps = torch.randn(64, generator=generator(2))
    assert torch.allclose(pathwise[:, 1], a * eps, atol=1e-12)


def test_constant_function_and_baseline():
    # E[f] does not depend on the parameters; the score estimate of a constant is c * score (noise with
    # mean zero) and a baseline equal to the constant makes every estimate exactly zero
    constant = reparam.score_function_gradient(lambda z: torch.full_like(z, 3.0), 0.0, 1.0, 100, generator(3),
                                               baseline=3.0)
    assert torch.equal(constant, torch.zeros(100, 2))
    pathwise = reparam.pathwise_gradient(lambda z: 0.0 * z + 3.0, 0.0, 1.0, 10, generator(3))
    assert torch.equal(pathwise, torch.zeros(10, 2))


# ---------------------------------------------------------------- unbiasedness and variance


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
@pytest.mark.parametrize("estimator", [reparam.score_function_gradient, reparam.pathwise_gradient])
def test_estimators_are_unbiased(name, estimator):
    objective = reparam.get_objective(name)
    mu, sigma, n = torch.tensor(0.5), torch.tensor(0.9), 400_000
    estimates = estimator(objective.f, mu, sigma, n, generator(4))
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(n)
    truth = torch.stack(objective.gradient(mu, sigma))
    assert ((mean - truth).abs() < 4 * se).all(), (mean, truth, se)
    assert (se < 0.05).all()


def test_per_sample_variances_for_the_square_match_closed_forms():
    # pathwise: 2(mu + sigma e) and 2(mu + sigma e) e have variances 4 sigma^2 and 4 mu^2 + 8 sigma^2;
    # score, d/dmu: z^2 (z - mu) / sigma^2 has variance mu^4 / sigma^2 + 14 mu^2 + 15 sigma^2
    mu, sigma, n = 1.0, 0.7, 1_000_000
    pathwise = reparam.pathwise_gradient(torch.square, mu, sigma, n, generator(5)).var(0)
    score = reparam.score_function_gradient(torch.square, mu, sigma, n, generator(6)).var(0)
    assert pathwise[0].item() == pytest.approx(4 * sigma**2, rel=0.01)
    assert pathwise[1].item() == pytest.approx(4 * mu**2 + 8 * sigma**2, rel=0.01)
    assert score[0].item() == pytest.approx(mu**4 / sigma**2 + 14 * mu**2 + 15 * sigma**2, rel=0.03)


def test_a_baseline_keeps_the_mean_and_cuts_the_variance():
    mu, sigma, n = torch.tensor(1.0), torch.tensor(0.7), 400_000
    plain = reparam.score_function_gradient(torch.square, mu, sigma, n, generator(7))
    centred = reparam.score_function_gradient(torch.square, mu, sigma, n, generator(7), baseline=1.49)
    truth = torch.tensor([2.0, 1.4])
    assert ((centred.mean(0) - truth).abs() < 4 * centred.std(0) / math.sqrt(n)).all()
    ratio = centred.var(0) / plain.var(0)
    assert ratio[0] < 0.6 and ratio[1] < 0.8  # about 0.55 and 0.67 here


def test_averaging_n_samples_divides_the_variance_by_n():
    per_sample = reparam.pathwise_gradient(torch.sin, 0.2, 1.1, 400_000, generator(8))
    averages = per_sample.reshape(10_000, 40, 2).mean(1)
    ratio = per_sample.var(0) / averages.var(0)
    assert torch.allclose(ratio, torch.full((2,), 40.0), rtol=0.05)


# ---------------------------------------------------------------- reparameterize


def test_reparameterize_is_mu_plus_sigma_eps():
    mu = torch.tensor([[0.5, -1.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0), math.log(0.01)]])
    z = reparam.reparameterize(mu, logvar, generator(9))
    eps = torch.randn(1, 3, generator=generator(9))
    torch.testing.assert_close(z, mu + torch.tensor([[1.0, 2.0, 0.1]]) * eps, rtol=1e-14, atol=1e-14)


def test_reparameterize_gradients():
    mu = torch.tensor([0.5, -1.0], requires_grad=True)
    logvar = torch.tensor([0.3, -0.8], requires_grad=True)
    z = reparam.reparameterize(mu, logvar, generator(10))
    grad_mu, grad_logvar = torch.autograd.grad(z.sum(), (mu, logvar))
    eps = torch.randn(2, generator=generator(10))
    assert torch.equal(grad_mu, torch.ones(2))
    torch.testing.assert_close(grad_logvar, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)


def test_reparameterize_distribution_and_broadcasting():
    mu, logvar = torch.tensor([1.0, -2.0]), torch.tensor([math.log(0.25), math.log(9.0)])
    z = reparam.reparameterize(mu.expand(200_000, 2), logvar, generator(11))
    assert z.shape == (200_000, 2)
    assert torch.allclose(z.mean(0), mu, atol=0.02)
    assert torch.allclose(z.std(0), torch.tensor([0.5, 3.0]), rtol=0.01)
    assert stats.kstest(((z[:, 1] + 2) / 3).numpy(), "norm").pvalue > 1e-3
    torch.manual_seed(12)
    first = reparam.reparameterize(mu, logvar)
    torch.manual_seed(12)
    assert torch.equal(first, reparam.reparameterize(mu, logvar))


# ---------------------------------------------------------------- the VAE objective of one observation


def test_gaussian_elbo_estimate_is_unbiased_for_the_value_and_the_gradient():
    model = elbo.LinearGaussianModel(torch.tensor([[1.5], [-0.8]]), torch.tensor([0.2, 0.1]), 0.6)
    x = torch.tensor([1.0, -0.5])
    mu = torch.tensor([0.3], requires_grad=True)
    logvar = torch.tensor([-1.0], requires_grad=True)
    exact = elbo.elbo(model, x, Independent(Normal(mu, torch.exp(0.5 * logvar)), 1))
    exact_grads = torch.autograd.grad(exact, (mu, logvar))

    def log_likelihood(z):
        return model.likelihood(z).log_prob(x)

    estimate = reparam.gaussian_elbo_estimate(log_likelihood, mu, logvar, 200_000, generator(17))
    grads = torch.autograd.grad(estimate, (mu, logvar))
    assert estimate.item() == pytest.approx(exact.item(), abs=0.01)
    for a, b in zip(grads, exact_grads, strict=True):
        assert a.item() == pytest.approx(b.item(), abs=0.02)


# ---------------------------------------------------------------- discrete latents


def test_threshold_bernoulli_has_no_gradient_path():
    p = torch.tensor(0.3, requires_grad=True)
    z = reparam.threshold_bernoulli(p, torch.rand(100_000, generator=generator(13)))
    assert not z.requires_grad
    assert z.mean().item() == pytest.approx(0.3, abs=0.005)
    assert set(z.unique().tolist()) == {0.0, 1.0}


def test_bernoulli_score_function_is_unbiased():
    def f(z):
        return (z - 0.45) ** 2

    estimates = reparam.bernoulli_score_function_gradient(f, 0.3, 400_000, generator(14))
    exact = f(torch.tensor(1.0)) - f(torch.tensor(0.0))
    assert abs(estimates.mean().item() - exact.item()) < 4 * estimates.std().item() / math.sqrt(400_000)
    # a draw z = 1 gives f(1) / p, a draw z = 0 gives -f(0) / (1 - p): only two values occur
    values = sorted(estimates.unique().tolist())
    assert values == pytest.approx([-(0.45**2) / 0.7, 0.55**2 / 0.3], abs=1e-14)


# ---------------------------------------------------------------- bad input


def test_get_objective_names_the_choices():
    with pytest.raises(ValueError, match=r"^name must be one of \('exp', 'sin', 'square'\), got 'cube'"):
        reparam.get_objective("cube")


def test_reparameterize_arguments():
    with pytest.raises(TypeError, match="^mu must be a torch.Tensor"):
        reparam.reparameterize([0.0], torch.zeros(1))
    with pytest.raises(TypeError, match="^mu must be a floating-point tensor"):
        reparam.reparameterize(torch.zeros(2, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="^logvar has NaN or infinite entries"):
        reparam.reparameterize(torch.zeros(2), torch.tensor([0.0, math.nan]))
    with pytest.raises(ValueError, match=r"^mu \(2,\) and logvar \(3,\) must have broadcastable shapes"):
        reparam.reparameterize(torch.zeros(2), torch.zeros(3))


ESTIMATORS = [reparam.score_function_gradient, reparam.pathwise_gradient]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gaussian_parameters_are_scalars_numbers_or_0d_tensors(estimator):
    reference = estimator(torch.sin, 0.3, 1.2, 20, generator(20))
    for mu, sigma in ((np.float64(0.3), np.float32(1.2)), (torch.tensor(0.3), 1.2)):
        torch.testing.assert_close(estimator(torch.sin, mu, sigma, 20, generator(20)), reference)
    # a number takes the dtype of a tensor beside it
    assert estimator(torch.sin, torch.tensor(0.3, dtype=torch.float32), 1.2, 20, generator(20)).dtype == torch.float32
    for sigma in (0.0, -1.0, torch.tensor(0.0)):
        with pytest.raises(ValueError, match="^sigma is a standard deviation and must be > 0"):
            estimator(torch.square, 0.0, sigma, 10)
    with pytest.raises(ValueError, match="^mu and sigma must be scalars"):
        estimator(torch.square, torch.zeros(2), 1.0, 10)
    with pytest.raises(ValueError, match="^mu must be finite"):
        estimator(torch.square, math.nan, 1.0, 10)
    for bad in (True, "0", [0.0]):
        with pytest.raises(TypeError, match="^mu must be a"):
            estimator(torch.square, bad, 1.0, 10)
        with pytest.raises(TypeError, match="^sigma must be a"):
            estimator(torch.square, 0.0, bad, 10)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_f_must_be_elementwise(estimator):
    # a mean inside f would scale every pathwise estimate by 1/n and weight every score-function sample
    # by the batch mean, silently: f(z) must have z's shape
    with pytest.raises(ValueError, match=r"^f must be elementwise: f\(z\) for z of shape \(10,\).*got \(\)"):
        estimator(lambda z: z.pow(2).mean(), 0.0, 1.0, 10)


def test_pathwise_needs_a_differentiable_f():
    with pytest.raises(ValueError, match="^f\\(z\\) does not depend on z"):
        reparam.pathwise_gradient(lambda z: torch.ones_like(z), 0.0, 1.0, 10)


def test_bernoulli_arguments():
    with pytest.raises(ValueError, match=r"^p holds probabilities and must lie in \[0, 1\]"):
        reparam.threshold_bernoulli(torch.tensor(1.2), torch.tensor(0.5))
    with pytest.raises(TypeError, match="^u must be a torch.Tensor"):
        reparam.threshold_bernoulli(torch.tensor(0.2), 0.5)
    for p in (1.0, 0, torch.tensor([0.5, 0.5])):
        with pytest.raises(ValueError, match="^p must be one probability strictly between 0 and 1"):
            reparam.bernoulli_score_function_gradient(torch.square, p, 10)
    with pytest.raises(TypeError, match="^p must be a real number"):
        reparam.bernoulli_score_function_gradient(torch.square, True, 10)
    reference = reparam.bernoulli_score_function_gradient(torch.square, 0.3, 10, generator(21))
    torch.testing.assert_close(reparam.bernoulli_score_function_gradient(torch.square, np.float64(0.3), 10,
                                                                         generator(21)), reference)
    with pytest.raises(ValueError, match="^f must be elementwise"):
        reparam.bernoulli_score_function_gradient(lambda z: z.sum(), 0.3, 10)


def _log_likelihood(z):
    return -0.5 * z.pow(2).sum(-1)


def test_gaussian_elbo_estimate_arguments():
    with pytest.raises(ValueError, match=r"^mu and logvar must both have shape \(L,\)"):
        reparam.gaussian_elbo_estimate(_log_likelihood, torch.zeros(1), torch.zeros(2), 10)
    with pytest.raises(TypeError, match="^logvar must be a torch.Tensor"):
        reparam.gaussian_elbo_estimate(_log_likelihood, torch.zeros(1), [0.0], 10)
    with pytest.raises(ValueError, match="^log_likelihood must return one value per sample"):
        reparam.gaussian_elbo_estimate(lambda z: z, torch.zeros(1), torch.zeros(1), 10)


# every function that takes num_samples, called with a fixed generator
SAMPLERS = {
    "score_function_gradient": lambda n: reparam.score_function_gradient(torch.sin, 0.3, 1.0, n, generator(22)),
    "pathwise_gradient": lambda n: reparam.pathwise_gradient(torch.sin, 0.3, 1.0, n, generator(22)),
    "bernoulli_score_function_gradient": lambda n: reparam.bernoulli_score_function_gradient(torch.square, 0.3, n,
                                                                                             generator(22)),
    "gaussian_elbo_estimate": lambda n: reparam.gaussian_elbo_estimate(_log_likelihood, torch.zeros(2),
                                                                       torch.zeros(2), n, generator(22)),
}


@pytest.mark.parametrize("call", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_num_samples_is_a_python_or_numpy_int(call):
    torch.testing.assert_close(call(np.int64(5)), call(5), rtol=0, atol=0)
    for bad in (5.0, np.float32(5), True, "5", None):
        with pytest.raises(TypeError, match="^num_samples must be an int"):
            call(bad)
    with pytest.raises(ValueError, match="^num_samples must be >= 1"):
        call(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_gpu_tensors_with_cpu_generator_numbers():
    cuda = torch.device("cuda")
    mu, logvar = torch.zeros(4, 3, device=cuda), torch.zeros(4, 3, device=cuda)
    z = reparam.reparameterize(mu, logvar, generator(15))
    assert z.device.type == "cuda"
    torch.testing.assert_close(z.cpu(), reparam.reparameterize(mu.cpu(), logvar.cpu(), generator(15)))
    for estimator in (reparam.pathwise_gradient, reparam.score_function_gradient):
        on_gpu = estimator(torch.sin, torch.tensor(0.3, device=cuda), torch.tensor(1.0, device=cuda), 50, generator(16))
        assert on_gpu.device.type == "cuda"
        on_cpu = estimator(torch.sin, torch.tensor(0.3), torch.tensor(1.0), 50, generator(16))
        torch.testing.assert_close(on_gpu.cpu(), on_cpu)
    assert reparam.bernoulli_score_function_gradient(torch.square, torch.tensor(0.4, device=cuda), 5).device.type == "cuda"

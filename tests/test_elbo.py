"""gstutorial.elbo: exact evidences and posteriors, the ELBO identity, the importance-weighted bound, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from torch.distributions import (
    Categorical,
    Independent,
    Laplace,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from gstutorial import elbo

# float64 for the exact comparisons, set and restored around this module (never at import time)
pytestmark = pytest.mark.usefixtures("float64_default")


def mixture() -> elbo.DiscreteLatentModel:
    return elbo.DiscreteLatentModel(torch.tensor([0.2, 0.5, 0.3]), torch.tensor([[-2.0, 0.0], [0.0, 1.0], [2.5, -1.0]]),
                                    torch.tensor([1.0, 0.5]))


def pca() -> elbo.LinearGaussianModel:
    weight = torch.tensor([[1.0, 0.5], [0.2, -1.0], [0.3, 0.3]])
    return elbo.LinearGaussianModel(weight, torch.tensor([0.1, 0.0, -0.2]), 0.5)


# ---------------------------------------------------------------- the discrete model


def test_discrete_evidence_and_posterior_by_hand():
    model = elbo.DiscreteLatentModel(torch.tensor([0.25, 0.75]), torch.tensor([[-1.0], [2.0]]), torch.tensor(0.8))
    x = torch.tensor([0.3])
    joint = np.array([0.25 * stats.norm(-1, 0.8).pdf(0.3), 0.75 * stats.norm(2, 0.8).pdf(0.3)])
    assert model.log_evidence(x).item() == pytest.approx(math.log(joint.sum()), abs=1e-13)
    np.testing.assert_allclose(model.posterior(x).probs.numpy(), joint / joint.sum(), atol=1e-13)


def test_discrete_tables_and_batches():
    model = mixture()
    x = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(0))
    table = model.log_joint_table(x)
    assert table.shape == (4, 5, 3)
    z = torch.tensor(2)
    assert torch.equal(model.log_joint(x, z.expand(4, 5)), table[..., 2])
    samples = torch.randint(0, 3, (7, 4, 5), generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(model.log_joint(x, samples).numpy(),
                                  table.expand(7, 4, 5, 3).gather(-1, samples[..., None])[..., 0].numpy())
    assert model.log_evidence(x).shape == (4, 5)
    torch.testing.assert_close(model.posterior(x).probs.sum(-1), torch.ones(4, 5))


def test_discrete_sampling_follows_the_joint():
    model = mixture()
    z, x = model.sample(200_000, generator=torch.Generator().manual_seed(2))
    frequencies = torch.bincount(z, minlength=3) / z.numel()
    assert torch.allclose(frequencies, model.prior, atol=0.005)
    for k in range(3):
        assert torch.allclose(x[z == k].mean(0), model.means[k], atol=0.02)
        assert torch.allclose(x[z == k].std(0), model.scales[k], atol=0.02)


# ---------------------------------------------------------------- the linear-Gaussian model


def test_linear_gaussian_scalar_case_by_hand():
    # z ~ N(0, 1), x | z ~ N(z, 1): p(x) = N(0, 2), p(z | x) = N(x / 2, 1 / 2)
    model = elbo.LinearGaussianModel(torch.tensor([[1.0]]), torch.tensor([0.0]), 1.0)
    x = torch.tensor([1.4])
    assert model.log_evidence(x).item() == pytest.approx(stats.norm(0, math.sqrt(2)).logpdf(1.4), abs=1e-14)
    posterior = model.posterior(x)
    assert posterior.mean.item() == pytest.approx(0.7, abs=1e-14)
    assert posterior.covariance_matrix.item() == pytest.approx(0.5, abs=1e-14)


def test_linear_gaussian_against_quadrature():
    model = elbo.LinearGaussianModel(torch.tensor([[0.8], [-1.5]]), torch.tensor([0.3, 0.1]), 0.7)
    x = torch.tensor([0.9, -1.2])

    def joint(z: float) -> float:
        return math.exp(model.log_joint(x, torch.tensor([z])).item())

    evidence = integrate.quad(joint, -np.inf, np.inf, epsabs=1e-14)[0]
    mean = integrate.quad(lambda z: z * joint(z), -np.inf, np.inf, epsabs=1e-14)[0] / evidence
    second = integrate.quad(lambda z: z * z * joint(z), -np.inf, np.inf, epsabs=1e-14)[0] / evidence
    assert model.log_evidence(x).item() == pytest.approx(math.log(evidence), abs=1e-9)
    posterior = model.posterior(x)
    assert posterior.mean.item() == pytest.approx(mean, abs=1e-9)
    assert posterior.covariance_matrix.item() == pytest.approx(second - mean**2, abs=1e-9)


def test_linear_gaussian_marginal_matches_scipy_and_bayes_rule():
    model = pca()
    x = torch.tensor([[0.5, 1.0, -0.3], [2.0, -1.0, 0.4]])
    cov = (model.weight @ model.weight.T + 0.25 * torch.eye(3)).numpy()
    expected = stats.multivariate_normal(model.bias.numpy(), cov).logpdf(x.numpy())
    np.testing.assert_allclose(model.log_evidence(x).numpy(), expected, atol=1e-12)
    # Bayes' rule: log p(z | x) = log p(x, z) - log p(x) at any z
    z = torch.tensor([[0.3, -0.2], [1.0, 2.0]])
    torch.testing.assert_close(model.posterior(x).log_prob(z), model.log_joint(x, z) - model.log_evidence(x))


def test_linear_gaussian_sampling_matches_the_marginal():
    model = pca()
    _, x = model.sample(200_000, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(x.mean(0), model.bias, atol=0.01)
    assert torch.allclose(torch.cov(x.T), model.marginal().covariance_matrix, atol=0.02)


# ---------------------------------------------------------------- the ELBO identity


def test_elbo_by_enumeration_equals_its_definition():
    model, x = mixture(), torch.tensor([0.4, 0.2])
    q = torch.tensor([0.1, 0.6, 0.3])
    by_definition = (q * (model.log_joint_table(x) - q.log())).sum()
    assert elbo.elbo(model, x, q).item() == pytest.approx(by_definition.item(), abs=1e-14)
    recon, kl_prior = elbo.elbo_terms(model, x, Categorical(probs=q))
    assert kl_prior.item() == pytest.approx((q * (q / model.prior).log()).sum().item(), abs=1e-14)
    assert (recon - kl_prior).item() == pytest.approx(by_definition.item(), abs=1e-14)


def test_linear_gaussian_elbo_closed_form_against_monte_carlo():
    model, x = pca(), torch.tensor([0.5, 1.0, -0.3])
    q_full = MultivariateNormal(torch.tensor([0.2, -0.4]), torch.tensor([[0.3, 0.1], [0.1, 0.2]]))
    q_diag = Independent(Normal(torch.tensor([0.1, 0.2]), torch.tensor([0.5, 0.4])), 1)
    torch.manual_seed(4)
    for q in (q_full, q_diag):
        exact = elbo.elbo(model, x, q).item()
        estimate, se = elbo.elbo_monte_carlo(model, x, q, 400_000)
        assert abs(estimate.item() - exact) < 4 * se.item() and se.item() < 0.005
        recon, _ = elbo.elbo_terms(model, x, q)
        z = q.sample((400_000,))
        log_lik = model.likelihood(z).log_prob(x)
        assert abs(log_lik.mean().item() - recon.item()) < 4 * log_lik.std().item() / math.sqrt(400_000)


def test_diagonal_q_kl_to_prior_uses_the_chapter_1_formula():
    model, x = pca(), torch.tensor([0.5, 1.0, -0.3])
    mean, std = torch.tensor([0.1, 0.2]), torch.tensor([0.5, 0.4])
    _, kl_diag = elbo.elbo_terms(model, x, Independent(Normal(mean, std), 1))
    _, kl_full = elbo.elbo_terms(model, x, MultivariateNormal(mean, torch.diag(std**2)))
    expected = -0.5 * (1 + torch.log(std**2) - mean**2 - std**2).sum()
    assert kl_diag.item() == pytest.approx(expected.item(), abs=1e-14)
    assert kl_full.item() == pytest.approx(expected.item(), abs=1e-13)
    assert elbo.elbo(model, x, Independent(Normal(mean, std), 1)).item() == pytest.approx(
        elbo.elbo(model, x, MultivariateNormal(mean, torch.diag(std**2))).item(), abs=1e-13)


def test_monte_carlo_elbo_works_for_a_non_gaussian_q():
    model, x = pca(), torch.tensor([0.5, 1.0, -0.3])
    q = Independent(Laplace(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.3])), 1)
    torch.manual_seed(5)
    estimate, se = elbo.elbo_monte_carlo(model, x, q, 200_000)
    evidence = model.log_evidence(x).item()
    assert estimate.item() < evidence - 10 * se.item()  # a Laplace q is never the posterior: a strict gap
    with pytest.raises(TypeError, match="^q must be Gaussian.*elbo_monte_carlo"):
        elbo.elbo(model, x, q)


probability = st.floats(0.02, 1.0)


@settings(max_examples=150, deadline=None)
@given(st.lists(probability, min_size=3, max_size=3), st.lists(probability, min_size=3, max_size=3),
       st.floats(-4, 4), st.floats(-4, 4))
def test_discrete_gap_is_the_kl_to_the_posterior(prior, q, x0, x1):
    model = elbo.DiscreteLatentModel(torch.tensor(prior) / sum(prior), mixture().means, mixture().scales)
    x, q = torch.tensor([x0, x1]), torch.tensor(q) / sum(q)
    evidence, bound = model.log_evidence(x).item(), elbo.elbo(model, x, q).item()
    gap = elbo.kl_to_posterior(model, x, q).item()
    assert bound <= evidence + 1e-12
    assert evidence - bound == pytest.approx(gap, abs=1e-10)
    posterior = model.posterior(x)
    assert elbo.elbo(model, x, posterior).item() == pytest.approx(evidence, abs=1e-10)
    assert abs(elbo.kl_to_posterior(model, x, posterior).item()) < 1e-10


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-2, 2), min_size=6, max_size=6), st.floats(0.1, 2.0),
       st.lists(st.floats(-2, 2), min_size=2, max_size=2), st.lists(st.floats(0.05, 2.0), min_size=2, max_size=2),
       st.floats(-0.9, 0.9))
def test_linear_gaussian_gap_is_the_kl_to_the_posterior(w, sigma, mean, std, rho):
    model = elbo.LinearGaussianModel(torch.tensor(w).reshape(3, 2), torch.zeros(3), sigma)
    x = torch.tensor([0.5, -1.0, 0.7])
    cov = torch.tensor([[std[0] ** 2, rho * std[0] * std[1]], [rho * std[0] * std[1], std[1] ** 2]])
    evidence = model.log_evidence(x).item()
    for q in (MultivariateNormal(torch.tensor(mean), cov), Independent(Normal(torch.tensor(mean), torch.tensor(std)), 1)):
        bound = elbo.elbo(model, x, q).item()
        assert bound <= evidence + 1e-9
        assert evidence - bound == pytest.approx(elbo.kl_to_posterior(model, x, q).item(), rel=1e-9, abs=1e-9)
    assert elbo.elbo(model, x, model.posterior(x)).item() == pytest.approx(evidence, abs=1e-9)


def test_kl_to_posterior_against_torch():
    model, x = pca(), torch.tensor([0.5, 1.0, -0.3])
    q = MultivariateNormal(torch.tensor([0.2, -0.4]), torch.tensor([[0.3, 0.1], [0.1, 0.2]]))
    expected = kl_divergence(q, model.posterior(x)).item()
    assert elbo.kl_to_posterior(model, x, q).item() == pytest.approx(expected, abs=1e-14)
    assert expected > 0.1


# ---------------------------------------------------------------- the importance-weighted bound


def test_iwae_exact_for_k_2_by_hand():
    model, x = mixture(), torch.tensor([0.4, 0.2])
    q = torch.tensor([0.1, 0.6, 0.3])
    log_w = (model.log_joint_table(x) - q.log()).numpy()
    expected = sum(q[a].item() * q[b].item() * np.log((np.exp(log_w[a]) + np.exp(log_w[b])) / 2)
                   for a, b in itertools.product(range(3), repeat=2))
    assert elbo.iwae_bound_exact(model, x, q, 2).item() == pytest.approx(expected, abs=1e-13)
    assert elbo.iwae_bound_exact(model, x, q, 1).item() == pytest.approx(elbo.elbo(model, x, q).item(), abs=1e-13)


@settings(max_examples=60, deadline=None)
@given(st.lists(probability, min_size=3, max_size=3), st.floats(-4, 4), st.floats(-4, 4))
def test_iwae_exact_is_non_decreasing_in_k_and_below_the_evidence(q, x0, x1):
    model, x, q = mixture(), torch.tensor([x0, x1]), torch.tensor(q) / sum(q)
    bounds = [elbo.iwae_bound_exact(model, x, q, k).item() for k in range(1, 7)]
    assert all(a <= b + 1e-10 for a, b in itertools.pairwise(bounds))
    assert bounds[-1] <= model.log_evidence(x).item() + 1e-10


def test_iwae_exact_handles_states_q_never_draws():
    model, x = mixture(), torch.tensor([0.4, 0.2])
    q = torch.tensor([0.0, 1.0, 0.0])
    log_w = model.log_joint(x, torch.tensor(1)).item()  # q always draws state 1
    for k in (1, 3):
        assert elbo.iwae_bound_exact(model, x, q, k).item() == pytest.approx(log_w, abs=1e-13)


def test_iwae_monte_carlo_matches_enumeration_and_tightens():
    model, x = mixture(), torch.tensor([0.4, 0.2])
    q = torch.tensor([0.3, 0.3, 0.4])
    torch.manual_seed(6)
    for k in (1, 4, 8):
        draws = elbo.iwae_bound(model, x, q, k, num_repeats=100_000)
        assert draws.shape == (100_000,)
        exact = elbo.iwae_bound_exact(model, x, q, k).item()
        assert abs(draws.mean().item() - exact) < 4 * draws.std().item() / math.sqrt(100_000)
    gaps = [model.log_evidence(x).item() - elbo.iwae_bound_exact(model, x, q, k).item() for k in (1, 10)]
    assert gaps[1] < gaps[0] / 4


def test_iwae_at_the_posterior_is_exact_for_every_draw():
    torch.manual_seed(7)
    for model, x in ((mixture(), torch.tensor([0.4, 0.2])), (pca(), torch.tensor([0.5, 1.0, -0.3]))):
        draws = elbo.iwae_bound(model, x, model.posterior(x), 5, num_repeats=50)
        torch.testing.assert_close(draws, model.log_evidence(x).expand(50))


def test_iwae_linear_gaussian_tightens_towards_the_evidence():
    model, x = pca(), torch.tensor([0.5, 1.0, -0.3])
    q = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)  # the prior as q: a poor proposal
    torch.manual_seed(8)
    draws = [elbo.iwae_bound(model, x, q, k, num_repeats=n) for k, n in ((1, 20_000), (10, 2000), (1000, 200))]
    means = [d.mean().item() for d in draws]
    evidence = model.log_evidence(x).item()
    assert means[0] < means[1] < means[2] < evidence
    assert abs(means[0] - elbo.elbo(model, x, q).item()) < 4 * draws[0].std().item() / math.sqrt(20_000)
    assert evidence - means[2] < 0.01


# ---------------------------------------------------------------- batches of observations


def test_batched_bounds():
    model = mixture()
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(9))
    q = torch.softmax(torch.randn(4, 3, generator=torch.Generator().manual_seed(10)), -1)
    assert elbo.elbo(model, x, q).shape == (4,)
    assert elbo.iwae_bound_exact(model, x, q, 3).shape == (4,)
    torch.manual_seed(11)
    assert elbo.iwae_bound(model, x, q, 3, num_repeats=6).shape == (6, 4)
    for i in range(4):
        assert elbo.iwae_bound_exact(model, x, q, 3)[i].item() == pytest.approx(
            elbo.iwae_bound_exact(model, x[i], q[i], 3).item(), abs=1e-12)


@pytest.mark.parametrize("build", [mixture, pca], ids=["discrete", "linear-gaussian"])
def test_one_q_for_a_batch_of_observations_is_expanded_not_paired(build):
    """q with batch shape () and x with batch B: every result has shape B, and each observation gets
    its own samples (not sample i paired with observation i and averaged into one number)."""
    model = build()
    x = torch.randn(5, model.dim, generator=torch.Generator().manual_seed(3))
    if isinstance(model, elbo.DiscreteLatentModel):
        one_q = Categorical(probs=torch.tensor([0.1, 0.6, 0.3]))
        per_x = Categorical(probs=torch.tensor([0.1, 0.6, 0.3]).expand(5, 3))
    else:
        one_q = Independent(Normal(torch.tensor([0.2, -0.1]), torch.tensor([0.8, 0.6])), 1)
        per_x = Independent(Normal(torch.tensor([0.2, -0.1]).expand(5, 2), torch.tensor([0.8, 0.6]).expand(5, 2)), 1)
    for function in (elbo.elbo, elbo.kl_to_posterior):
        assert torch.equal(function(model, x, one_q), function(model, x, per_x))
    assert [t.shape for t in elbo.elbo_terms(model, x, one_q)] == [(5,), (5,)]
    torch.manual_seed(4)
    mean, se = elbo.elbo_monte_carlo(model, x, one_q, 5)  # num_samples == B: still one estimate per x
    assert mean.shape == se.shape == (5,)
    torch.manual_seed(4)
    mean, se = elbo.elbo_monte_carlo(model, x, one_q, 20_000)
    z = (mean - elbo.elbo(model, x, per_x)) / se
    assert z.abs().max() < 4, z
    assert elbo.iwae_bound(model, x, one_q, 3, num_repeats=2).shape == (2, 5)
    with pytest.raises(ValueError, match=r"^x has batch shape \(5,\) and q has batch shape \(4,\)"):
        elbo.elbo(model, x, _batch_of_4(model))


def _batch_of_4(model):
    if isinstance(model, elbo.DiscreteLatentModel):
        return Categorical(probs=torch.full((4, 3), 1 / 3))
    return Independent(Normal(torch.zeros(4, 2), torch.ones(4, 2)), 1)


# ---------------------------------------------------------------- bad input


def test_models_accept_numbers_and_tensors_where_stated():
    weight, bias = torch.ones(3, 2), torch.zeros(3)
    reference = elbo.LinearGaussianModel(weight, bias, 0.5).noise_scale
    assert reference.dtype == weight.dtype and reference.item() == 0.5
    for noise_scale in (np.float32(0.5), np.float64(0.5), torch.tensor(0.5, dtype=torch.float32)):
        assert torch.equal(elbo.LinearGaussianModel(weight, bias, noise_scale).noise_scale, reference)
    assert elbo.LinearGaussianModel(weight, bias, np.int64(2)).noise_scale.item() == 2.0


@pytest.mark.parametrize(
    ("build", "error", "name"),
    [
        (lambda: elbo.DiscreteLatentModel(torch.tensor([0.5, 0.6]), torch.zeros(2, 1), torch.tensor(1.0)), ValueError, "prior"),
        (lambda: elbo.DiscreteLatentModel(torch.full((2, 2), 0.5), torch.zeros(2, 1), torch.tensor(1.0)), ValueError, "prior"),
        (lambda: elbo.DiscreteLatentModel([0.5, 0.5], torch.zeros(2, 1), torch.tensor(1.0)), TypeError, "prior"),
        (lambda: elbo.DiscreteLatentModel(torch.tensor([0.5, 0.5]), torch.zeros(3, 1), torch.tensor(1.0)), ValueError, "means"),
        (lambda: elbo.DiscreteLatentModel(torch.tensor([0.5, 0.5]), [[0.0], [1.0]], torch.tensor(1.0)), TypeError, "means"),
        (lambda: elbo.DiscreteLatentModel(torch.tensor([0.5, 0.5]), torch.zeros(2, 1, dtype=torch.long), torch.tensor(1.0)), TypeError, "means"),
        (lambda: elbo.DiscreteLatentModel(torch.tensor([0.5, 0.5]), torch.tensor([[math.nan], [0.0]]), torch.tensor(1.0)), ValueError, "means"),
        (lambda: elbo.DiscreteLatentModel(torch.tensor([0.5, 0.5]), torch.zeros(2, 2), torch.ones(3)), ValueError, "scales"),
        (lambda: elbo.DiscreteLatentModel(torch.tensor([0.5, 0.5]), torch.zeros(2, 1), torch.tensor(0.0)), ValueError, "scales"),
        (lambda: elbo.DiscreteLatentModel(torch.tensor([0.5, 0.5]), torch.zeros(2, 1), 1.0), TypeError, "scales"),
        (lambda: elbo.LinearGaussianModel(torch.ones(3), torch.zeros(3), 1.0), ValueError, "weight"),
        (lambda: elbo.LinearGaussianModel([[1.0]], torch.zeros(1), 1.0), TypeError, "weight"),
        (lambda: elbo.LinearGaussianModel(torch.ones(3, 2), torch.zeros(2), 1.0), ValueError, "bias"),
        (lambda: elbo.LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), -1.0), ValueError, "noise_scale"),
        (lambda: elbo.LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), 0), ValueError, "noise_scale"),
        (lambda: elbo.LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), math.inf), ValueError, "noise_scale"),
        (lambda: elbo.LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), torch.ones(3)), ValueError, "noise_scale"),
        (lambda: elbo.LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), torch.tensor(math.nan)), ValueError, "noise_scale"),
        (lambda: elbo.LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), True), TypeError, "noise_scale"),
        (lambda: elbo.LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), "0.5"), TypeError, "noise_scale"),
        (lambda: elbo.LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), [0.5]), TypeError, "noise_scale"),
    ],
)
def test_bad_models(build, error, name):
    with pytest.raises(error, match=rf"^{name}\b"):
        build()


def test_bad_observations_latents_and_q():
    model, lg = mixture(), pca()
    with pytest.raises(ValueError, match=r"^x must have shape \(\*batch, 2\)"):
        model.log_evidence(torch.zeros(3))
    with pytest.raises(ValueError, match="^x must have shape"):
        lg.posterior(torch.zeros(2))
    with pytest.raises(ValueError, match="^x has NaN or infinite entries"):
        lg.log_evidence(torch.tensor([0.0, math.inf, 0.0]))
    with pytest.raises(TypeError, match="^x must be a torch.Tensor"):
        lg.log_evidence([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="^q must sum to 1"):
        elbo.elbo(model, torch.zeros(2), torch.tensor([0.2, 0.2, 0.2]))
    with pytest.raises(ValueError, match="^q has 2 categories but the model has K = 3"):
        elbo.elbo(model, torch.zeros(2), torch.tensor([0.5, 0.5]))
    with pytest.raises(TypeError, match="^q must be a torch.distributions.Categorical"):
        elbo.kl_to_posterior(model, torch.zeros(2), Normal(0.0, 1.0))
    with pytest.raises(TypeError, match="^q must be a torch.distributions.Distribution"):
        elbo.elbo(lg, torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"^q must be a distribution over z in R\^2 .*Independent"):
        elbo.elbo(lg, torch.zeros(3), Normal(torch.zeros(2), torch.ones(2)))
    with pytest.raises(TypeError, match="^model must be a DiscreteLatentModel or a LinearGaussianModel"):
        elbo.elbo("model", torch.zeros(2), torch.tensor([0.5, 0.5]))
    with pytest.raises(TypeError, match="^model must be a DiscreteLatentModel.*use iwae_bound"):
        elbo.iwae_bound_exact(lg, torch.zeros(3), Independent(Normal(torch.zeros(2), torch.ones(2)), 1), 2)
    # latent values: integer states for the discrete model, vectors in R^L for the linear-Gaussian one
    with pytest.raises(TypeError, match="^z must be a tensor of integer state indices"):
        model.log_joint(torch.zeros(2), torch.tensor([0.0]))
    with pytest.raises(TypeError, match="^z must be a torch.Tensor"):
        model.log_joint(torch.zeros(2), [0])
    with pytest.raises(ValueError, match=r"^z must be a tensor of shape \(\.\.\., 2\)"):
        lg.log_joint(torch.zeros(3), torch.zeros(5, 3))
    with pytest.raises(TypeError, match="^z must be a torch.Tensor"):
        lg.log_joint(torch.zeros(3), [0.0, 0.0])


def _model_x_q():
    return mixture(), torch.tensor([0.4, 0.2]), torch.tensor([0.3, 0.3, 0.4])


def _seeded(call):
    def run(count):
        torch.manual_seed(0)
        return call(count)
    return run


# (argument, its minimum, a valid value, a call that takes it): every count in the module
COUNTS = [
    ("num_samples", 1, 3, lambda n: mixture().sample(n, generator=torch.Generator().manual_seed(0))),
    ("num_samples", 1, 3, lambda n: pca().sample(n, generator=torch.Generator().manual_seed(0))),
    ("num_samples", 1, 3, _seeded(lambda n: elbo.log_importance_weights(*_model_x_q(), n))),
    ("num_samples", 2, 3, _seeded(lambda n: elbo.elbo_monte_carlo(*_model_x_q(), n))),
    ("k", 1, 3, _seeded(lambda k: elbo.iwae_bound(*_model_x_q(), k, num_repeats=2))),
    ("num_repeats", 1, 3, _seeded(lambda n: elbo.iwae_bound(*_model_x_q(), 2, num_repeats=n))),
    ("k", 1, 3, lambda k: elbo.iwae_bound_exact(*_model_x_q(), k)),
    ("max_terms", 1, 100, lambda n: elbo.iwae_bound_exact(*_model_x_q(), 2, max_terms=n)),
]


@pytest.mark.parametrize(("name", "minimum", "good", "call"), COUNTS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(COUNTS)])
def test_counts_are_python_or_numpy_ints(name, minimum, good, call):
    torch.testing.assert_close(call(np.int64(good)), call(good), rtol=0, atol=0)
    for bad in (float(good), np.float64(good), True, str(good), None):
        with pytest.raises(TypeError, match=rf"^{name} must be an int"):
            call(bad)
    with pytest.raises(ValueError, match=rf"^{name} must be >= {minimum}"):
        call(minimum - 1)


def test_exact_iwae_refuses_too_many_draws_naming_k():
    model, x, q = _model_x_q()
    with pytest.raises(ValueError, match="^k = 20 gives K\\^k = 3\\^20 = 3486784401 draws, more than max_terms"):
        elbo.iwae_bound_exact(model, x, q, 20)
    assert torch.isfinite(elbo.iwae_bound_exact(model, x, q, 9, max_terms=3**9))  # at the limit it runs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_gpu_tensors():
    cuda = torch.device("cuda")
    model = elbo.DiscreteLatentModel(torch.tensor([0.2, 0.8], device=cuda), torch.tensor([[0.0], [1.0]], device=cuda),
                                     torch.tensor(1.0, device=cuda))
    x, q = torch.tensor([0.5], device=cuda), torch.tensor([0.5, 0.5], device=cuda)
    assert elbo.elbo(model, x, q).device.type == "cuda"
    assert elbo.iwae_bound_exact(model, x, q, 3).device.type == "cuda"
    assert elbo.iwae_bound(model, x, q, 3, num_repeats=4).device.type == "cuda"
    z, samples = model.sample(10, generator=torch.Generator().manual_seed(0))
    assert z.device.type == "cuda" and samples.device.type == "cuda"
    lg = elbo.LinearGaussianModel(torch.ones(3, 2, device=cuda), torch.zeros(3, device=cuda), 0.5)
    xg = torch.ones(3, device=cuda)
    assert elbo.kl_to_posterior(lg, xg, lg.prior_distribution()).device.type == "cuda"
    assert elbo.elbo(lg, xg, lg.posterior(xg)).item() == pytest.approx(lg.log_evidence(xg).item(), abs=1e-4)

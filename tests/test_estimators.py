"""gstutorial.estimators and gstutorial.estimator_lab: closed-form gradients, unbiasedness, shapes, errors."""

from __future__ import annotations

import itertools
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gstutorial import estimator_lab as lab
from gstutorial import estimators as E
from gstutorial.gumbel import gumbel_max, gumbel_noise

REPO = Path(__file__).resolve().parents[1]
PATHWISE = [name for name, est in E.ESTIMATORS.items() if est.kind == "pathwise"]
ONE_HOT_FORWARD = ["straight_through", "st_gumbel_softmax", "gumbel_rao", "reinmax"]
THETA = torch.tensor([0.7, -0.4, 0.1, 1.2, -1.0], dtype=torch.float64)
C = torch.tensor([0.3, -1.0, 2.0, 0.5, 1.5], dtype=torch.float64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def softmax_jacobian(p: torch.Tensor) -> torch.Tensor:
    """diag(p) - p p^T over the last axis, (..., K, K)."""
    return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)


def sample_and_grad(name: str, logits: torch.Tensor, c: torch.Tensor, seed: int, **kw):
    """Forward value of one sample and the gradient of <c, sample> with respect to the logits."""
    x = logits.clone().requires_grad_(True)
    z = E.get_estimator(name).sample(x, generator=gen(seed), **kw)
    (grad,) = torch.autograd.grad((z * c).sum(), x)
    return z.detach(), grad


# --------------------------------------------------------------------------------------------------
# Registry, shapes, dtypes
# --------------------------------------------------------------------------------------------------

def test_registry_names_and_references():
    bib = (REPO / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    for name, est in E.ESTIMATORS.items():
        assert est.name == name
        assert est.reference in keys, f"{name} cites {est.reference}, missing from references.bib"
        assert (est.sampler is None) == (est.kind == "score")
        assert est.unbiased == (est.kind == "score")
    with pytest.raises(ValueError, match="unknown estimator"):
        E.get_estimator("rebar")


def test_equations_of_softmax_jacobian_estimators_carry_the_1_over_tau_the_chapter_shows():
    # eq-lab-st, eq-lab-gs and eq-lab-gumbel-rao in book/09_estimator_lab.ipynb
    for name in ("straight_through", "st_gumbel_softmax", "gumbel_rao"):
        assert r"\tfrac1\tau" in E.ESTIMATORS[name].equation
    chapter = (REPO / "book" / "09_estimator_lab.ipynb").read_text(encoding="utf-8")
    for name in ("straight_through", "gumbel_rao"):
        assert E.ESTIMATORS[name].equation.replace("\\", "\\\\") in chapter


@pytest.mark.parametrize("name", PATHWISE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_shape_dtype_and_gradient(name, dtype):
    logits = torch.randn(2, 3, 5, generator=gen(0)).to(dtype).requires_grad_(True)
    z = E.get_estimator(name).sample(logits, temperature=1.5, k=3, generator=gen(1))
    assert z.shape == logits.shape and z.dtype == dtype and z.device == logits.device
    torch.testing.assert_close(z.detach().sum(-1), torch.ones(2, 3, dtype=dtype))
    (grad,) = torch.autograd.grad((z * torch.arange(5.0, dtype=dtype)).sum(), logits)
    assert grad.shape == logits.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # a softmax-parameterised gradient has no component along the all-ones direction
    torch.testing.assert_close(grad.sum(-1), torch.zeros(2, 3, dtype=dtype), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ONE_HOT_FORWARD)
def test_half_precision_follows_input(name):
    logits = torch.randn(4, 6, generator=gen(2)).half()
    z = E.get_estimator(name).sample(logits, temperature=1.0, k=2, generator=gen(3))
    assert z.dtype == torch.float16
    assert torch.equal(z, torch.nn.functional.one_hot(z.argmax(-1), 6).half())


@pytest.mark.parametrize("name", list(E.ESTIMATORS))
def test_surrogate_shapes_with_joint_variables(name):
    logits = torch.randn(7, 3, 4, generator=gen(4), dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 4, generator=gen(5), dtype=torch.float64)
    value = E.get_estimator(name).surrogate(logits, lambda z: (z * weights).sum((-2, -1)), temperature=1.0,
                                            num_samples=3, k=2, generator=gen(6))
    assert value.shape == (7,)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert grad.shape == (7, 3, 4) and torch.isfinite(grad).all()


# --------------------------------------------------------------------------------------------------
# Forward values are exactly one-hot and are Gumbel-Max samples
# --------------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-20.0, 20.0), min_size=2, max_size=8), st.integers(0, 2**31 - 1),
       st.sampled_from(ONE_HOT_FORWARD), st.sampled_from([1.0, 2.5]))
def test_forward_is_exactly_one_hot(values, seed, name, tau):
    logits = torch.tensor(values, dtype=torch.float32, requires_grad=True)
    z = E.get_estimator(name).sample(logits, temperature=tau, k=3, generator=gen(seed)).detach()
    assert ((z == 0) | (z == 1)).all() and z.sum().item() == 1.0


@pytest.mark.parametrize("name", ONE_HOT_FORWARD)
def test_forward_is_the_gumbel_max_sample_of_the_same_generator(name):
    logits = torch.randn(50, 6, generator=gen(7), dtype=torch.float64)
    z = E.get_estimator(name).sample(logits, temperature=1.0, k=4, generator=gen(8))
    assert torch.equal(z.detach().argmax(-1), gumbel_max(logits, gen(8)))


def test_one_hot_sample_frequencies_match_softmax():
    logits = torch.tensor([0.5, -1.0, 1.5, 0.0], dtype=torch.float64)
    counts = E.one_hot_sample(logits.expand(20000, 4), gen(9)).sum(0).numpy()
    p = logits.softmax(-1).numpy()
    assert stats.chisquare(counts, 20000 * p).pvalue > 1e-3


# --------------------------------------------------------------------------------------------------
# Closed-form gradients
# --------------------------------------------------------------------------------------------------

def test_straight_through_is_exact_for_linear_f():
    # E[<c, z>] = <c, softmax(theta)> has gradient J(pi) c; ST returns exactly that for every sample
    exact = softmax_jacobian(THETA.softmax(-1)) @ C
    for seed in range(5):
        _, grad = sample_and_grad("straight_through", THETA, C, seed, temperature=1.0)
        torch.testing.assert_close(grad, exact, rtol=1e-12, atol=1e-14)


def test_straight_through_temperature_scales_the_softmax():
    tau = 2.0
    _, grad = sample_and_grad("straight_through", THETA, C, 0, temperature=tau)
    torch.testing.assert_close(grad, softmax_jacobian((THETA / tau).softmax(-1)) @ C / tau, rtol=1e-12, atol=1e-14)


def test_gumbel_softmax_gradient_is_the_jacobian_at_the_relaxed_sample():
    tau = 0.7
    y, grad = sample_and_grad("gumbel_softmax", THETA, C, 11, temperature=tau)
    torch.testing.assert_close(grad, softmax_jacobian(y) @ C / tau, rtol=1e-10, atol=1e-12)


def test_st_gumbel_softmax_gradient_is_the_jacobian_at_the_relaxed_sample():
    tau = 0.7
    _, grad = sample_and_grad("st_gumbel_softmax", THETA, C, 12, temperature=tau)
    y = E.gumbel_softmax_sample(THETA, tau, gen(12))  # the same noise: the soft sample of the ST draw
    torch.testing.assert_close(grad, softmax_jacobian(y) @ C / tau, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tau", [0.3, 1.0, 1.7])
@pytest.mark.filterwarnings("ignore::gstutorial.estimators.LowTemperatureWarning")
def test_reinmax_gradient_formula(tau):
    # below tau = 1 too: the same formula, computed rather than refused
    for seed in range(4):
        d, grad = sample_and_grad("reinmax", THETA, C, seed, temperature=tau)
        pi0 = THETA.softmax(-1)
        pi1 = 0.5 * ((THETA / tau).softmax(-1) + d)
        expected = 2 * softmax_jacobian(pi1) @ C - 0.5 * softmax_jacobian(pi0) @ C
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-13)


def test_reinmax_binary_closed_form():
    # K = 2 at tau = 1 with linear f: E[ReinMax] equals the exact gradient, computed here by hand
    theta = torch.tensor([0.4, -0.9], dtype=torch.float64)
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    pi = theta.softmax(-1)
    mean = sum(pi[i] * (2 * softmax_jacobian(0.5 * (pi + torch.eye(2, dtype=torch.float64)[i])) @ c
                        - 0.5 * softmax_jacobian(pi) @ c) for i in range(2))
    exact = pi * (c - (pi * c).sum())
    torch.testing.assert_close(mean, exact, rtol=1e-12, atol=1e-14)


def test_reinforce_single_sample_values():
    # each estimate is f(D) (e_D - pi): one of K vectors, with D read off the only positive entry
    f_values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    logits = THETA.expand(200, 5).clone().requires_grad_(True)
    value = E.reinforce(logits, lambda z: (z * f_values).sum(-1), generator=gen(13))
    (grad,) = torch.autograd.grad(value.sum(), logits)
    d = grad.argmax(-1)
    expected = f_values[d].unsqueeze(-1) * (torch.nn.functional.one_hot(d, 5) - THETA.softmax(-1))
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(value.detach(), f_values[d])  # the surrogate's value is f(z)


def test_reinforce_joint_sums_the_scores_of_the_variables():
    theta = torch.randn(3, 4, generator=gen(14), dtype=torch.float64)
    logits = theta.expand(100, 3, 4).clone().requires_grad_(True)
    value = E.reinforce(logits, lambda z: 2.0 + z[..., 0].sum(-1), generator=gen(15))
    (grad,) = torch.autograd.grad(value.sum(), logits)
    d = grad.argmax(-1)  # f > 0: the sampled class is the only positive entry of each variable's score
    f = 2.0 + (d == 0).sum(-1).double()
    expected = f[:, None, None] * (torch.nn.functional.one_hot(d, 4) - theta.softmax(-1))
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)


def test_leave_one_out_baseline_removes_a_constant():
    logits = THETA.clone().requires_grad_(True)
    value = E.reinforce(logits, lambda z: torch.full(z.shape[:-1], 3.0, dtype=z.dtype), num_samples=4,
                        baseline="loo", generator=gen(16))
    (grad,) = torch.autograd.grad(value, logits)
    assert value.item() == 3.0 and torch.equal(grad, torch.zeros(5, dtype=torch.float64))
    plain = E.reinforce(logits, lambda z: torch.full(z.shape[:-1], 3.0, dtype=z.dtype), num_samples=4,
                        generator=gen(16))
    assert torch.autograd.grad(plain, logits)[0].abs().sum() > 0  # without a baseline, noise remains


def test_surrogate_passes_other_parameters_gradients_through():
    w = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    for name in ["reinforce", "st_gumbel_softmax"]:
        value = E.get_estimator(name).surrogate(THETA, lambda z, w=w: w * z[..., 2], num_samples=5,
                                                generator=gen(17))
        (grad_w,) = torch.autograd.grad(value, w)
        torch.testing.assert_close(grad_w, value.detach() / w.detach())


# --------------------------------------------------------------------------------------------------
# Gumbel-Rao and the conditional Gumbel construction
# --------------------------------------------------------------------------------------------------

def test_conditional_gumbel_respects_the_condition_and_the_law():
    theta = torch.tensor([0.5, -0.5, 1.0, 0.0], dtype=torch.float64)
    n = 20000
    index = gumbel_max(theta.expand(n, 4), gen(18))
    x = E.conditional_gumbel(theta.expand(n, 4), index, k=2, generator=gen(19))
    assert x.shape == (2, n, 4)
    assert torch.equal(x.argmax(-1), index.expand(2, n))
    # with D drawn by Gumbel-Max, (D, x) has the law of (argmax, theta + g): compare every coordinate
    free = theta + gumbel_noise(theta.expand(n, 4), gen(20))
    for i in range(4):
        assert stats.ks_2samp(x[0, :, i].numpy(), free[:, i].numpy()).pvalue > 1e-3
    # and the maximum is Gumbel(logsumexp(theta)) whatever D is
    top = x[1].max(-1).values.numpy()
    assert stats.kstest(top, stats.gumbel_r(loc=torch.logsumexp(theta, 0).item()).cdf).pvalue > 1e-3


def estimates(problem, name, replicates, seed, **kw):
    return lab.gradient_estimates(problem, name, replicates=replicates, generator=gen(seed), **kw)


def test_gumbel_rao_with_k_1_matches_st_gumbel_softmax_in_distribution():
    problem = lab.get_problem("sigmoid")
    a = estimates(problem, "gumbel_rao", 20000, 21, temperature=0.8, k=1)
    b = estimates(problem, "st_gumbel_softmax", 20000, 22, temperature=0.8)
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() / se).max() < 4.0
    torch.testing.assert_close(a.var(0).sum(), b.var(0).sum(), rtol=0.05, atol=0)


def test_gumbel_rao_variance_decreases_with_k_at_the_same_mean():
    problem = lab.get_problem("sigmoid")
    variances, means, standard_errors = [], [], []
    for k in (1, 4, 32):
        g = estimates(problem, "gumbel_rao", 4000, 23, temperature=0.5, k=k)
        variances.append(g.var(0).sum().item())
        means.append(g.mean(0))
        standard_errors.append(g.std(0) / math.sqrt(4000))
    assert variances[0] > 1.5 * variances[1] > 1.5 * variances[2] > 0
    # the same mean for every k: each coordinate's difference within 4 combined standard errors
    z = (means[0] - means[2]).abs() / (standard_errors[0] ** 2 + standard_errors[2] ** 2).sqrt()
    assert z.max() < 4.0, z.max()


# --------------------------------------------------------------------------------------------------
# Exact gradients and unbiasedness on the enumerable problems
# --------------------------------------------------------------------------------------------------

def test_exact_gradient_single_variable_closed_form():
    problem = lab.CategoricalProblem("one", THETA[None], C[None], lambda s: s)
    pi = THETA.softmax(-1)
    torch.testing.assert_close(problem.exact_value(), (pi * C).sum())
    torch.testing.assert_close(problem.exact_gradient()[0], pi * (C - (pi * C).sum()), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", ["linear", "quadratic", "sigmoid", "mlp"])
def test_exact_gradient_matches_finite_differences_in_every_coordinate(shape):
    problem = lab.get_problem(shape)
    assert problem.states().shape == (64, 3, 4)
    grad = problem.exact_gradient()
    h = 1e-6
    for n, k in itertools.product(range(3), range(4)):
        step = torch.zeros_like(problem.theta)
        step[n, k] = h
        fd = (problem.exact_value(problem.theta + step) - problem.exact_value(problem.theta - step)) / (2 * h)
        assert abs(fd.item() - grad[n, k].item()) < 1e-8, (shape, n, k)


@pytest.mark.parametrize("name", ["reinforce", "reinforce_loo"])
@pytest.mark.parametrize("shape", ["quadratic", "sigmoid", "mlp"])
def test_score_function_estimators_are_unbiased(name, shape):
    problem = lab.get_problem(shape)
    s = lab.gradient_stats(estimates(problem, name, 20000, 24, num_samples=4), problem.exact_gradient())
    assert s.max_abs_z < 3.0, s.summary()


def test_bias_check_has_power_against_biased_estimators():
    problem = lab.get_problem("sigmoid")
    for name in ["straight_through", "gumbel_softmax", "st_gumbel_softmax", "reinmax"]:
        s = lab.gradient_stats(estimates(problem, name, 20000, 25, num_samples=4), problem.exact_gradient())
        assert s.max_abs_z > 10.0, (name, s.summary())


def test_reinmax_is_unbiased_for_quadratic_f_but_straight_through_is_not():
    problem = lab.get_problem("quadratic")
    exact = problem.exact_gradient()
    reinmax = lab.gradient_stats(estimates(problem, "reinmax", 20000, 26, temperature=1.0), exact)
    st_plain = lab.gradient_stats(estimates(problem, "straight_through", 20000, 26, temperature=1.0), exact)
    assert reinmax.max_abs_z < 3.0, reinmax.summary()
    assert st_plain.max_abs_z > 10.0 and st_plain.relative_bias > 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_expectation_reinmax_unbiased_for_any_quadratic_straight_through_not(seed):
    # a random quadratic f(z) = (s - c)^2 of s = sum_n <v_n, z_n>, with random logits: summing the package's
    # estimates over all joint states, weighted by their probability, leaves no Monte Carlo error
    g = gen(seed)
    theta = torch.randn(2, 3, generator=g, dtype=torch.float64)
    values = torch.randn(2, 3, generator=g, dtype=torch.float64)
    center = torch.randn((), generator=g, dtype=torch.float64)
    problem = lab.CategoricalProblem("random-quadratic", theta, values, lambda s: (s - center) ** 2)
    exact = problem.exact_gradient()
    assert torch.allclose(lab.exact_expected_gradient(problem, "reinmax"), exact, rtol=0, atol=1e-12)
    assert (lab.exact_expected_gradient(problem, "straight_through") - exact).abs().max() > 1e-3
    # the enumeration agrees with Monte Carlo where both apply (the sigmoid: both estimators biased)
    sigmoid = lab.get_problem("sigmoid")
    draws = estimates(sigmoid, "reinmax", 20000, 30 + seed, temperature=1.0)
    z = (draws.mean(0) - lab.exact_expected_gradient(sigmoid, "reinmax")) / (draws.std(0) / math.sqrt(20000))
    assert z.abs().max() < 4.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_expectation_reinmax_unbiased_for_f_quadratic_in_each_variable_separately(seed):
    # f = q_0(z_0) q_1(z_1) q_2(z_2), each q_n a random quadratic of z_n: degree 6, not a quadratic, but
    # quadratic in each one-hot variable with the others fixed, which is what the trapezoid step needs
    g = gen(seed)
    theta = torch.randn(3, 3, generator=g, dtype=torch.float64)
    a, c = torch.randn(3, 3, 3, generator=g, dtype=torch.float64), torch.randn(3, 3, generator=g, dtype=torch.float64)

    def q(z, n):
        return torch.einsum("...i,ij,...j->...", z[..., n, :], a[n], z[..., n, :]) + z[..., n, :] @ c[n]

    problem = lab.CategoricalProblem("quadratic-in-each", theta, function=lambda z: q(z, 0) * q(z, 1) * q(z, 2))
    exact = problem.exact_gradient()
    assert torch.allclose(lab.exact_expected_gradient(problem, "reinmax"), exact, rtol=0, atol=1e-12)
    assert (lab.exact_expected_gradient(problem, "straight_through") - exact).abs().max() > 1e-3
    # cubic in one variable: the trapezoid step is no longer exact
    cubic = lab.CategoricalProblem("cubic", theta, function=lambda z: (z[..., 0, :] @ c[0]) ** 3 + z[..., 1, :] @ c[1])
    assert (lab.exact_expected_gradient(cubic, "reinmax") - cubic.exact_gradient()).abs().max() > 1e-3


@pytest.mark.parametrize("shape", ["sigmoid", "mlp"])
def test_reinmax_is_exact_on_the_multilinear_extension_and_its_exact_mean_below_tau_one_is_quiet(shape):
    problem = lab.get_problem(shape)
    exact = problem.exact_gradient()
    multilinear = lab.multilinear_extension(problem)
    assert (lab.exact_expected_gradient(problem, "reinmax") - exact).norm() > 0.1 * exact.norm()
    assert torch.allclose(lab.exact_expected_gradient(multilinear, "reinmax"), exact, rtol=0, atol=1e-14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the regime is asked for on purpose: no LowTemperatureWarning
        below = lab.exact_expected_gradient(problem, "reinmax", temperature=0.5)
    assert (below - exact).norm() > (lab.exact_expected_gradient(problem, "reinmax") - exact).norm()


def _random_multilinear(seed: int, num_vars: int = 3, num_categories: int = 3):
    """Random logits and a random f affine in each one-hot variable separately: a random table T,
    f(z) = sum_{i_1..i_N} T[i_1..i_N] prod_n z_{n, i_n}, written out for N = 3."""
    g = gen(seed)
    theta = torch.randn(num_vars, num_categories, generator=g, dtype=torch.float64)
    table = torch.randn((num_categories,) * num_vars, generator=g, dtype=torch.float64)
    return lab.CategoricalProblem(
        "random-multilinear", theta,
        function=lambda z: torch.einsum("abc,...a,...b,...c->...", table, z[..., 0, :], z[..., 1, :], z[..., 2, :]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_straight_through_at_tau_one_is_unbiased_for_any_multilinear_f(seed):
    # affine in each one-hot variable separately (not linear: products across variables), random logits
    problem = _random_multilinear(seed)
    exact = problem.exact_gradient()
    assert torch.allclose(lab.exact_expected_gradient(problem, "straight_through"), exact, rtol=0, atol=1e-14)
    # away from tau = 1 the softmax Jacobian is the wrong one: biased
    assert (lab.exact_expected_gradient(problem, "straight_through", temperature=2.0) - exact).abs().max() > 1e-3
    # a multilinear f is not linear: straight-through still varies from one sample to the next
    s = lab.gradient_stats(estimates(problem, "straight_through", 200, 50 + seed), exact)
    assert s.variance > 1e-3


@pytest.mark.parametrize("shape", ["quadratic", "sigmoid", "mlp"])
def test_multilinear_extension_keeps_the_objective_and_removes_straight_through_bias(shape):
    problem = lab.get_problem(shape)
    multilinear = lab.multilinear_extension(problem)
    states = problem.states()
    torch.testing.assert_close(multilinear.f(states), problem.f(states), rtol=0, atol=1e-13)
    torch.testing.assert_close(multilinear.exact_gradient(), problem.exact_gradient(), rtol=0, atol=1e-13)
    exact = problem.exact_gradient()
    # the bias lives in the extension off the one-hot states: large on the original, nil on the multilinear
    assert (lab.exact_expected_gradient(problem, "straight_through") - exact).norm() > 0.1 * exact.norm()
    assert torch.allclose(lab.exact_expected_gradient(multilinear, "straight_through"), exact, rtol=0, atol=1e-14)
    # between the states it is affine along each variable: the midpoint of two values of z_0
    z = states[[0, 16]]  # the same z_1, z_2; z_0 = e_0, then e_1
    assert torch.allclose(multilinear.f(z.mean(0)), multilinear.f(z).mean(), rtol=0, atol=1e-14)
    with pytest.raises(TypeError, match="^problem"):
        lab.multilinear_extension("mlp")


def test_the_mlp_problem_is_not_a_function_of_one_projection():
    # f = h(<v, z>) gives every straight-through estimate the same direction; the network does not
    for name, distinct in (("sigmoid", False), ("mlp", True)):
        problem = lab.get_problem(name)
        draws = estimates(problem, "straight_through", 500, 60)
        flat = draws.reshape(500, -1)
        cosines = torch.nn.functional.cosine_similarity(flat, flat[:1].expand_as(flat), dim=1).abs()
        assert (cosines.min() < 0.99) == distinct, (name, cosines.min())
    mlp = lab.make_mlp_problem()
    assert mlp.num_vars == 3 and mlp.num_categories == 4 and mlp.values is None
    assert torch.equal(mlp.f(mlp.states()), lab.get_problem("mlp").f(mlp.states()))  # fixed by the seed
    assert not torch.equal(lab.make_mlp_problem(seed=1).f(mlp.states()), mlp.f(mlp.states()))
    with pytest.raises(ValueError, match="^hidden"):
        lab.make_mlp_problem(hidden=0)


def test_exact_expectation_and_given_samples_are_checked():
    with pytest.raises(ValueError, match="depends only on the one-hot sample"):
        lab.exact_expected_gradient(lab.get_problem("linear"), "gumbel_softmax")
    logits = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^sample must be a one-hot tensor of the logits' shape \(2, 3\)"):
        E.reinmax_sample(logits, 1.0, sample=torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="^sample must be one-hot"):
        E.straight_through_sample(logits, 1.0, sample=torch.full((2, 3), 0.5, dtype=torch.float64))
    with pytest.raises(TypeError, match="^sample"):
        E.straight_through_sample(logits, 1.0, sample=[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    given = torch.eye(3, dtype=torch.float64)[[2, 0]]
    assert torch.equal(E.straight_through_sample(logits, 1.0, sample=given), given)


def test_straight_through_has_zero_variance_on_linear_f():
    problem = lab.get_problem("linear")
    s = lab.gradient_stats(estimates(problem, "straight_through", 50, 27), problem.exact_gradient())
    assert s.bias_norm < 1e-12 and s.variance < 1e-24 and s.cosine == pytest.approx(1.0)


def test_gumbel_softmax_bias_shrinks_and_variance_grows_as_tau_falls():
    problem = lab.get_problem("linear")
    exact = problem.exact_gradient()
    cold = lab.gradient_stats(estimates(problem, "gumbel_softmax", 20000, 28, temperature=0.2), exact)
    warm = lab.gradient_stats(estimates(problem, "gumbel_softmax", 20000, 28, temperature=1.0), exact)
    assert cold.bias_norm < 0.5 * warm.bias_norm and cold.variance > 2 * warm.variance


def test_stats_and_sweep():
    exact = torch.tensor([[1.0, -1.0]])
    g = torch.tensor([[[1.0, -1.0]], [[3.0, -3.0]]])
    s = lab.gradient_stats(g, exact)
    assert s.bias_norm == pytest.approx(math.sqrt(2)) and s.cosine == pytest.approx(1.0)
    assert s.variance == pytest.approx(4.0) and s.max_abs_z == pytest.approx(1.0)
    # mse is the mean squared error of the R estimates: (0 + 8) / 2 = 4 = bias² + variance (R-1)/R = 2 + 2
    assert s.mse == pytest.approx(4.0) and s.relative_bias == pytest.approx(1.0)
    # along the bias (1, -1)/sqrt 2 the estimates are sqrt 2 and 3 sqrt 2: sd 2, over sqrt(R) |exact| = 2
    assert s.relative_bias_se == pytest.approx(1.0)
    assert math.isnan(lab.gradient_stats(torch.stack([exact, exact]), exact).relative_bias_se)  # no bias
    # a zero exact gradient: relative bias is infinite when the mean is off, 0 when it is not
    assert lab.gradient_stats(g, torch.zeros(1, 2)).relative_bias == math.inf
    assert lab.gradient_stats(torch.zeros(3, 1, 2), torch.zeros(1, 2)).relative_bias == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ReinMax below tau = 1 is asked for: no warning from the sweep
        rows = lab.sweep(lab.get_problem("sigmoid"), ["reinforce_loo", "reinmax", "gumbel_rao"],
                         temperatures=(0.5, 1.0), sample_counts=(1, 2), k=2, replicates=50)
    keys = [(r["estimator"], r["temperature"], r["num_samples"]) for r in rows]
    assert ("reinforce_loo", keys[0][1], 2) == keys[0] and math.isnan(keys[0][1]) and len(keys) == 1 + 4 + 4
    assert sorted(r["temperature"] for r in rows if r["estimator"] == "reinmax") == [0.5, 0.5, 1.0, 1.0]
    again = lab.sweep(lab.get_problem("sigmoid"), ["gumbel_rao"], temperatures=(1.0,), sample_counts=(2,),
                      k=2, replicates=50)
    assert again[0] == next(r for r in rows if r["estimator"] == "gumbel_rao" and r["temperature"] == 1.0
                            and r["num_samples"] == 2)  # a row does not depend on the rest of the grid


# --------------------------------------------------------------------------------------------------
# Argument checks: estimators
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PATHWISE)
@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, math.inf])
def test_bad_temperature(name, tau):
    with pytest.raises(ValueError, match="^temperature"):
        E.get_estimator(name).sample(THETA, temperature=tau)


def test_reinmax_below_temperature_one_warns_naming_the_value_and_computes():
    with pytest.warns(E.LowTemperatureWarning, match=r"^ReinMax at temperature 0\.5 < 1"):
        E.reinmax_sample(THETA, 0.5)
    with pytest.warns(UserWarning, match="temperature 0.99 < 1.*recommend tau >= 1"):
        E.get_estimator("reinmax").surrogate(THETA, lambda z: z.sum(-1), temperature=0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none at tau >= 1
        E.reinmax_sample(THETA, 1.0)
    # the value: at a small temperature softmax(theta / tau) is nearly the argmax's one-hot, so for the
    # sample D = argmax the midpoint m is that one-hot too, J(m) = 0, and the estimate is -J(pi) c / 2
    d = torch.nn.functional.one_hot(THETA.argmax(), 5).double()
    x = THETA.clone().requires_grad_(True)
    with pytest.warns(E.LowTemperatureWarning):
        z = E.reinmax_sample(x, 0.01, sample=d)
    (grad,) = torch.autograd.grad((z * C).sum(), x)
    torch.testing.assert_close(grad, -0.5 * softmax_jacobian(THETA.softmax(-1)) @ C, rtol=1e-9, atol=1e-12)


def test_bad_problem_functions():
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="either as values and h"):
        lab.CategoricalProblem("bad", zeros)
    with pytest.raises(ValueError, match="either as values and h"):
        lab.CategoricalProblem("bad", zeros, zeros, lambda s: s, function=lambda z: z.sum((-2, -1)))
    with pytest.raises(TypeError, match="^function must be callable"):
        lab.CategoricalProblem("bad", zeros, function=3.0)


def test_bad_k_num_samples_and_baseline():
    with pytest.raises(ValueError, match="^k"):
        E.gumbel_rao_sample(THETA, 1.0, k=0)
    with pytest.raises(ValueError, match="^num_samples"):
        E.get_estimator("gumbel_softmax").surrogate(THETA, lambda z: z.sum(-1), num_samples=0)
    with pytest.raises(ValueError, match="^num_samples"):
        E.reinforce(THETA, lambda z: z.sum(-1), num_samples=0)
    with pytest.raises(ValueError, match="^num_samples.*leave-one-out"):
        E.reinforce(THETA, lambda z: z.sum(-1), num_samples=1, baseline="loo")
    with pytest.raises(ValueError, match="^baseline"):
        E.reinforce(THETA, lambda z: z.sum(-1), num_samples=2, baseline="mean")


@pytest.mark.parametrize("bad", [2.0, 2.5, True, "2"])
def test_counts_must_be_ints(bad):
    with pytest.raises(TypeError, match="^k"):
        E.gumbel_rao_sample(THETA, 1.0, k=bad)
    with pytest.raises(TypeError, match="^k"):
        E.conditional_gumbel(THETA, torch.tensor(0), k=bad)
    for name in ("reinforce", "straight_through"):
        with pytest.raises(TypeError, match="^num_samples"):
            E.get_estimator(name).surrogate(THETA, lambda z: z.sum(-1), num_samples=bad)


@pytest.mark.parametrize("name", ["reinforce_loo", "gumbel_rao"])
def test_counts_accept_numpy_integers(name):
    def run(num_samples, k):
        return E.get_estimator(name).surrogate(THETA, lambda z: (z * C).sum(-1), num_samples=num_samples, k=k,
                                               generator=gen(40))

    assert torch.equal(run(np.int64(3), np.int32(2)), run(3, 2))


def test_the_uniform_call_leaves_unused_arguments_unchecked():
    # temperature and k are accepted by every estimator; one that does not use them ignores them
    def f(z):
        return (z * C).sum(-1)

    for name in ("reinforce", "reinforce_loo"):
        value = E.get_estimator(name).surrogate(THETA, f, temperature=-1.0, num_samples=2, k=0, generator=gen(41))
        assert torch.equal(value, E.get_estimator(name).surrogate(THETA, f, num_samples=2, generator=gen(41)))
    for name in ("straight_through", "gumbel_softmax", "st_gumbel_softmax", "reinmax"):
        z = E.get_estimator(name).sample(THETA, temperature=1.0, k=2.5, generator=gen(42))
        assert torch.equal(z, E.get_estimator(name).sample(THETA, temperature=1.0, generator=gen(42)))
    with pytest.raises(TypeError, match="^k"):
        E.get_estimator("gumbel_rao").sample(THETA, k=2.5)


@pytest.mark.parametrize("name", list(E.ESTIMATORS))
def test_bad_logits(name):
    est = E.get_estimator(name)

    def f(z):
        return z.sum(-1)

    with pytest.raises(TypeError, match="^logits"):
        est.surrogate(torch.tensor([1, 2, 3]), f)
    with pytest.raises(ValueError, match="^logits needs a non-empty category axis"):
        est.surrogate(torch.tensor(1.0), f)
    with pytest.raises(ValueError, match="^logits contain -inf"):
        est.surrogate(torch.tensor([0.0, -math.inf, 1.0]), f)
    with pytest.raises(ValueError, match="^logits contain NaN"):
        est.surrogate(torch.tensor([0.0, math.nan, 1.0]), f)


def test_huge_finite_logits_are_accepted():
    # the sum of these finite logits overflows to inf; the check must still accept them
    big = torch.tensor([3e38, 3e38, 0.0])
    assert E.check_estimator_logits(big) is big


@pytest.mark.parametrize("name", ["reinforce", "gumbel_rao"])
def test_f_with_a_wrong_output(name):
    with pytest.raises(ValueError, match="^f must map samples"):
        E.get_estimator(name).surrogate(torch.zeros(2, 3), lambda z: z.sum(), num_samples=2)
    with pytest.raises(TypeError, match="^f's value"):
        E.get_estimator(name).surrogate(torch.zeros(2, 3), lambda z: 1.0, num_samples=2)


def test_score_estimators_have_no_sample_and_conditional_gumbel_checks_index():
    with pytest.raises(ValueError, match="surrogate"):
        E.get_estimator("reinforce").sample(THETA)
    with pytest.raises(ValueError, match="^index must have the batch shape"):
        E.conditional_gumbel(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="^index"):
        E.conditional_gumbel(torch.zeros(3, 4), torch.zeros(3))
    with pytest.raises(TypeError, match="^index"):
        E.conditional_gumbel(torch.zeros(3, 4), [0, 1, 2])


# --------------------------------------------------------------------------------------------------
# Argument checks: the lab
# --------------------------------------------------------------------------------------------------

def test_bad_problems():
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="same shape"):
        lab.CategoricalProblem("bad", zeros, torch.zeros(2, 4, dtype=torch.float64), lambda s: s)
    with pytest.raises(TypeError, match="^theta"):
        lab.CategoricalProblem("bad", torch.zeros(2, 3, dtype=torch.long), zeros, lambda s: s)
    with pytest.raises(ValueError, match="^values must have shape"):
        lab.CategoricalProblem("bad", zeros, torch.zeros(6, dtype=torch.float64), lambda s: s)
    with pytest.raises(ValueError, match="^values must be finite"):
        lab.CategoricalProblem("bad", zeros, torch.full((2, 3), math.nan, dtype=torch.float64), lambda s: s)
    with pytest.raises(ValueError, match="^shape"):
        lab.make_problem("cubic")
    with pytest.raises(ValueError, match="unknown problem"):
        lab.get_problem("cubic")


def test_make_problem_sizes():
    assert torch.equal(lab.make_problem("linear", np.int64(2), np.int32(5)).theta,
                       lab.make_problem("linear", 2, 5).theta)
    for name, bad in (("num_vars", 2.0), ("num_vars", True), ("num_categories", 4.0)):
        with pytest.raises(TypeError, match=f"^{name}"):
            lab.make_problem("linear", **{name: bad})
    for name, bad in (("num_vars", 0), ("num_vars", 9), ("num_categories", 1), ("num_categories", 17)):
        with pytest.raises(ValueError, match=f"^{name}"):
            lab.make_problem("linear", **{name: bad})


def test_gradient_estimates_arguments():
    problem = lab.get_problem("linear")
    assert torch.equal(lab.gradient_estimates(problem, "reinforce", replicates=np.int64(3), generator=gen(43)),
                       lab.gradient_estimates(problem, "reinforce", replicates=3, generator=gen(43)))
    with pytest.raises(ValueError, match="^replicates"):  # a variance needs two
        lab.gradient_estimates(problem, "reinforce", replicates=1)
    for bad in (3.0, True):
        with pytest.raises(TypeError, match="^replicates"):
            lab.gradient_estimates(problem, "reinforce", replicates=bad)
    with pytest.raises(TypeError, match="^estimator"):
        lab.gradient_estimates(problem, 3, replicates=3)
    with pytest.raises(TypeError, match="^num_samples"):
        lab.gradient_estimates(problem, "reinforce", num_samples=2.0, replicates=3)


def test_gradient_stats_and_sweep_arguments():
    with pytest.raises(ValueError, match="^estimates must have shape"):
        lab.gradient_stats(torch.zeros(5, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="^estimates must hold at least two"):
        lab.gradient_stats(torch.zeros(1, 3), torch.zeros(3))
    with pytest.raises(TypeError, match="^estimates"):
        lab.gradient_stats([[0.0], [1.0]], torch.zeros(1))
    problem = lab.get_problem("linear")
    for name, bad in (("k", 2.0), ("seed", "0"), ("seed", True)):
        with pytest.raises(TypeError, match=f"^{name}"):
            lab.sweep(problem, ["reinforce"], replicates=2, **{name: bad})


# --------------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(E.ESTIMATORS))
def test_every_estimator_runs_on_the_logits_device_and_agrees_with_the_cpu_in_the_mean(name):
    # the noise, the conditional Gumbel draws and the scores are created where the logits live
    problem = lab.get_problem("sigmoid")
    est = E.get_estimator(name)
    tau = 1.0
    num_samples = 2 if est.baseline == "loo" else 1
    replicates = 20000
    theta = problem.theta.to("cuda").expand(replicates, *problem.theta.shape).clone().requires_grad_(True)
    values = problem.values.to("cuda")

    def f(z):
        return problem.h((z * values).sum((-2, -1)))

    surrogate = est.surrogate(theta, f, temperature=tau, num_samples=num_samples, k=4,
                              generator=torch.Generator(device="cuda").manual_seed(0))
    (grad,) = torch.autograd.grad(surrogate.sum(), theta)
    assert surrogate.device.type == "cuda" and grad.device.type == "cuda" and torch.isfinite(grad).all()
    cpu = estimates(problem, name, replicates, 1, temperature=tau, num_samples=num_samples, k=4)
    gpu = grad.cpu()
    se = (cpu.var(0) / replicates + gpu.var(0) / replicates).sqrt().clamp_min(1e-12)
    assert ((cpu.mean(0) - gpu.mean(0)).abs() / se).max() < 5.0

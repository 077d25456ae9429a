"""gstutorial.straight_through: the detach identity, the worked example, the binary case, the toy problem."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gstutorial import gumbel as G
from gstutorial import straight_through as S


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


TARGET = torch.tensor([0.6, 0.4, 0.0], dtype=torch.float64)


def squared_distance(v):
    return ((v - TARGET) ** 2).sum(-1)


# -------------------------------------------------------------------------------- the detach identity

def test_value_of_hard_gradient_of_soft():
    x = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    soft = torch.sigmoid(x)
    hard = (x > 0).float()
    y = S.straight_through(soft, hard)
    assert torch.equal(y.detach(), hard)
    weights = torch.tensor([1.0, 2.0, 3.0])
    (grad_st,) = torch.autograd.grad((y * weights).sum(), x)
    (grad_soft,) = torch.autograd.grad((torch.sigmoid(x) * weights).sum(), x)
    torch.testing.assert_close(grad_st, grad_soft, rtol=0, atol=0)


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0]), st.sampled_from([torch.float32, torch.float64]))
def test_forward_value_is_exact_for_zero_one_targets(soft, hard, dtype):
    s, h = torch.tensor([soft], dtype=dtype), torch.tensor([hard], dtype=dtype)
    assert S.straight_through(s, h).item() == hard


def test_mixed_dtypes_are_promoted():
    # chapter 6 pairs a float32 soft with a float64 hard: kept, the value is the float64 hard exactly
    x = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    hard = (x > 0).double()
    y = S.straight_through(torch.sigmoid(x), hard)
    assert y.dtype == torch.float64 and torch.equal(y.detach(), hard)


def test_straight_through_bad_arguments():
    with pytest.raises(ValueError, match="^soft and hard must have the same shape"):
        S.straight_through(torch.zeros(3), torch.zeros(1))
    with pytest.raises(ValueError, match="^soft and hard must be on the same device"):
        S.straight_through(torch.zeros(3, device="meta"), torch.zeros(3))
    with pytest.raises(TypeError, match="^soft"):
        S.straight_through([0.0], torch.zeros(1))
    with pytest.raises(TypeError, match="^hard"):
        S.straight_through(torch.zeros(1), [0.0])

# -------------------------------------------------------------------------------- the worked example

def test_worked_example_without_skip():
    loss, grads = S.autograd_example(1.0, 2.0)
    assert loss == 432.0
    assert grads == {"a": 288.0, "b": 288.0, "c": 144.0, "d": 12.0, "f": 3.0}


def test_worked_example_with_skip():
    loss, grads = S.autograd_example(1.0, 2.0, skip=True)
    assert loss == 432.0
    assert grads == {"a": 24.0, "b": 24.0, "c": 12.0, "d": 12.0, "f": 3.0}


@settings(max_examples=50, deadline=None)
@given(st.floats(-5, 5), st.floats(-5, 5))
def test_worked_example_general_formulas(a, b):
    # loss = 12 c², c = 2(a + b): dloss/dc = 24 c; with the skip dd/dc = 1, so dloss/dc = 12
    c = 2 * (a + b)
    loss, grads = S.autograd_example(a, b)
    assert loss == pytest.approx(12 * c**2) and grads["c"] == pytest.approx(24 * c, abs=1e-9)
    assert grads["a"] == pytest.approx(48 * c, abs=1e-9)
    loss_skip, grads_skip = S.autograd_example(a, b, skip=True)
    assert loss_skip == pytest.approx(loss, rel=1e-12, abs=1e-12)
    assert grads_skip == {"a": 24.0, "b": 24.0, "c": 12.0, "d": 12.0, "f": 3.0}


def test_worked_example_arguments():
    assert S.autograd_example(np.float32(1.0), np.int64(2)) == S.autograd_example(1.0, 2.0)
    with pytest.raises(TypeError, match="^a"):
        S.autograd_example("1", 2.0)
    with pytest.raises(TypeError, match="^b"):
        S.autograd_example(1.0, torch.tensor(2.0))
    with pytest.raises(TypeError, match="^skip"):
        S.autograd_example(1.0, 2.0, skip=1)

# -------------------------------------------------------------------------------- the binary relaxation

def test_logistic_noise_is_the_difference_of_two_gumbels():
    n = 20_000
    noise = S.logistic_noise(torch.empty(n, dtype=torch.float64), gen(1))
    assert torch.isfinite(noise).all()
    assert stats.kstest(noise.numpy(), stats.logistic.cdf).pvalue > 1e-3
    g = G.gumbel_noise(torch.empty(n, 2, dtype=torch.float64), gen(2))
    assert stats.ks_2samp(noise.numpy(), (g[:, 0] - g[:, 1]).numpy()).pvalue > 1e-3
    assert stats.kstest(noise.numpy() * 1.1, stats.logistic.cdf).pvalue < 1e-6  # a test that can fail


@pytest.mark.parametrize("logit", [-1.3, 0.0, 0.8])
def test_binary_relaxation_matches_two_category_gumbel_softmax(logit):
    n = 20_000
    binary = S.binary_gumbel_softmax(torch.full((n,), logit, dtype=torch.float64), 0.6, generator=gen(3))
    two = G.gumbel_softmax(torch.tensor([logit, 0.0], dtype=torch.float64).expand(n, 2), 0.6, generator=gen(4))
    assert stats.ks_2samp(binary.numpy(), two[:, 0].numpy()).pvalue > 1e-3
    hard = S.binary_gumbel_softmax(torch.full((n,), logit, dtype=torch.float64), 0.6, hard=True, generator=gen(5))
    p = 1 / (1 + math.exp(-logit))
    assert stats.binomtest(int(hard.sum().item()), n, p).pvalue > 1e-3


def test_binary_hard_is_exact_and_gradient_is_soft():
    logit = torch.linspace(-3, 3, 101, dtype=torch.float64).requires_grad_()
    hard = S.binary_gumbel_softmax(logit, 0.5, hard=True, generator=gen(6))
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    (grad_hard,) = torch.autograd.grad(hard.sum(), logit)
    soft = S.binary_gumbel_softmax(logit, 0.5, hard=False, generator=gen(6))
    assert torch.equal(hard.detach(), (soft.detach() > 0.5).double())
    (grad_soft,) = torch.autograd.grad(soft.sum(), logit)
    torch.testing.assert_close(grad_hard, grad_soft, rtol=0, atol=0)


def test_binary_infinite_logits_are_certain_outcomes():
    logit = torch.tensor([math.inf, -math.inf], requires_grad=True)
    y = S.binary_gumbel_softmax(logit, 0.5, hard=True)
    assert y.tolist() == [1.0, 0.0]
    y.sum().backward()
    assert torch.isfinite(logit.grad).all()


def test_binary_bad_arguments():
    with pytest.raises(ValueError, match="^logit contains NaN"):
        S.binary_gumbel_softmax(torch.tensor([math.nan]), 1.0)
    with pytest.raises(ValueError, match="^temperature"):
        S.binary_gumbel_softmax(torch.tensor([0.0]), 0.0)
    with pytest.raises(TypeError, match="^logit"):
        S.binary_gumbel_softmax([0.0], 1.0)
    with pytest.raises(TypeError, match="^hard"):
        S.binary_gumbel_softmax(torch.tensor([0.0]), 1.0, hard=1)
    with pytest.raises(TypeError, match="^like"):
        S.logistic_noise(torch.zeros(2, dtype=torch.long))

# -------------------------------------------------------------------------------- the toy problem

def test_toy_problem_exact_gradient_converges_biased_estimators_do_not():
    exact = S.train_binary_toy("exact", steps=1000, lr=0.5)
    relaxed = S.train_binary_toy("relaxed", steps=1000, lr=0.5, generator=gen(7))
    st_ = S.train_binary_toy("straight-through", steps=1000, lr=0.5, generator=gen(8))
    assert exact[-1] < 0.03  # the optimum is P(z = 1) = 0
    assert relaxed[-200:].mean() > 0.25 and st_[-200:].mean() > 0.25  # stuck near the target 0.45


def test_toy_problem_arguments():
    same = S.train_binary_toy("relaxed", steps=np.int64(3), batch=np.int32(4), lr=np.float64(0.5), generator=gen(1))
    torch.testing.assert_close(same, S.train_binary_toy("relaxed", steps=3, batch=4, lr=0.5, generator=gen(1)),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="^estimator"):
        S.train_binary_toy("reinforce")
    for name, bad in (("steps", 3.0), ("steps", True), ("batch", 4.0), ("lr", "0.5"), ("init_logit", None)):
        with pytest.raises(TypeError, match=f"^{name}"):
            S.train_binary_toy("relaxed", **{name: bad})
    for name, bad in (("steps", 0), ("batch", 0), ("lr", 0.0), ("temperature", 0.0)):
        with pytest.raises(ValueError, match=f"^{name}"):
            S.train_binary_toy("relaxed", **{name: bad})
    # the exact gradient draws no samples: batch and temperature are not used, so not checked
    assert S.train_binary_toy("exact", steps=2, batch=0, temperature=0.0).shape == (2,)

# -------------------------------------------------------------------------------- expected objective and mean gradient

def test_expected_objective_and_st_bias():
    logits = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.6, 0.4, 0.0], dtype=torch.float64)

    def f(y):
        return ((y - target) ** 2).sum(-1)

    value = S.expected_objective(logits, f)
    p = torch.softmax(logits.detach(), -1)
    f_onehot = 1 - 2 * target + (target**2).sum()
    assert value.item() == pytest.approx((p * f_onehot).sum().item(), rel=1e-12)
    (exact,) = torch.autograd.grad(value, logits)
    torch.testing.assert_close(exact, p * (f_onehot - (p * f_onehot).sum()))  # softmax gradient
    mean, se = S.mean_gradient(logits, f, 1.0, hard=True, num_samples=100_000, generator=gen(9))
    assert mean.shape == (3,) and (se > 0).all() and se.max() < 0.01
    assert ((mean - exact).abs() / se).max() > 10  # ST is biased: far more than 10 standard errors


def test_mean_gradient_of_a_linear_objective_matches_autograd_of_the_mean():
    logits = torch.tensor([0.2, 0.9], dtype=torch.float64)
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    mean, _ = S.mean_gradient(logits, lambda y: y @ c, 0.7, hard=False, num_samples=5_000, generator=gen(10))
    rows = logits.expand(5_000, -1).clone().requires_grad_(True)
    (G.gumbel_softmax(rows, 0.7, generator=gen(10)) @ c).mean().backward()
    torch.testing.assert_close(mean, rows.grad.sum(0))
    assert mean.sum().abs() < 1e-12  # softmax gradients sum to zero over categories


@pytest.mark.parametrize("call", ["expected_objective", "mean_gradient"])
def test_objective_and_mean_gradient_check_logits(call):
    def run(logits):
        if call == "expected_objective":
            return S.expected_objective(logits, squared_distance)
        return S.mean_gradient(logits, squared_distance, 1.0, hard=True, num_samples=4, generator=gen(1))

    with pytest.raises(ValueError, match=r"^logits must have shape \(K,\).*once per row"):
        run(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="^logits"):
        run(torch.tensor([1, 0, 2]))
    for bad in (math.nan, -math.inf):
        with pytest.raises(ValueError, match="^logits has NaN or infinite entries"):
            run(torch.tensor([0.5, bad, 0.1], dtype=torch.float64))


def test_mean_gradient_num_samples():
    logits = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    mean, se = S.mean_gradient(logits, squared_distance, 1.0, True, np.int64(4), generator=gen(3))
    torch.testing.assert_close((mean, se), S.mean_gradient(logits, squared_distance, 1.0, True, 4, generator=gen(3)),
                               rtol=0, atol=0)
    for bad in (4.0, True, "4"):
        with pytest.raises(TypeError, match="^num_samples"):
            S.mean_gradient(logits, squared_distance, 1.0, True, bad)
    with pytest.raises(ValueError, match="^num_samples"):  # a standard error needs two samples
        S.mean_gradient(logits, squared_distance, 1.0, True, 1)
    with pytest.raises(TypeError, match="^hard"):
        S.mean_gradient(logits, squared_distance, 1.0, 1, 4)


def test_f_must_reduce_the_category_axis():
    logits = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)

    def unreduced(v):  # forgot .sum(-1)
        return (v - TARGET) ** 2

    with pytest.raises(ValueError, match=r"^f must map the \(K, K\) one-hot rows to \(K,\) values.*got shape \(3, 3\)"):
        S.expected_objective(logits, unreduced)
    with pytest.raises(ValueError, match=r"^f must map the \(n, K\) samples to \(n,\) values.*got shape \(5, 3\)"):
        S.mean_gradient(logits, unreduced, 1.0, hard=False, num_samples=5, generator=gen(2))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        S.mean_gradient(logits, lambda v: squared_distance(v).sum(), 1.0, hard=False, num_samples=5)
    with pytest.raises(TypeError, match="^f's value must be a torch.Tensor"):
        S.expected_objective(logits, lambda v: 1.0)

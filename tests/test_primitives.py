"""gstutorial.primitives: softmax over the category axis, the straight-through identity, Gumbel noise
from uniforms, and the half-precision upcast."""

from __future__ import annotations

import math

import pytest
import torch

from gstutorial.primitives import (
    cast_like,
    softmax_last,
    straight_through,
    uniform_to_gumbel_,
    upcast_half,
)

# --------------------------------------------------------------------------------------------------
# softmax_last
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 3), (100, 20, 10), (4, 5, 15), (6, 16), (3, 2, 40), (10,)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_last_matches_torch_values_and_gradients(shape, log):
    torch.manual_seed(0)
    x = (3 * torch.randn(shape, dtype=torch.float64)).requires_grad_(True)
    weights = torch.randn(shape, dtype=torch.float64)
    ours = softmax_last(x, log=log)
    reference = x.log_softmax(-1) if log else x.softmax(-1)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, reference, rtol=1e-14, atol=1e-15)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), x)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-12, atol=1e-14)


def test_softmax_last_in_float32_agrees_to_a_few_ulp():
    x = 4 * torch.randn(64, 20, 10, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(softmax_last(x), x.softmax(-1), rtol=4e-7, atol=1e-7)
    torch.testing.assert_close(softmax_last(x, log=True), x.log_softmax(-1), rtol=4e-7, atol=1e-6)


def test_softmax_last_keeps_masked_categories_at_zero():
    x = torch.tensor([[0.0, -float("inf"), 1.0], [2.0, 2.0, -float("inf")]])
    probs = softmax_last(x)
    assert probs[0, 1].item() == 0.0 and probs[1, 2].item() == 0.0
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    assert torch.isneginf(softmax_last(x, log=True)[0, 1])


# --------------------------------------------------------------------------------------------------
# straight_through
# --------------------------------------------------------------------------------------------------


def test_straight_through_has_the_hard_value_and_the_soft_gradient():
    soft = torch.softmax(torch.randn(50, 7, generator=torch.Generator().manual_seed(0)), -1).requires_grad_(True)
    hard = torch.nn.functional.one_hot(soft.argmax(-1), 7).to(soft.dtype)
    out = straight_through(soft, hard)
    assert torch.equal(out, hard)                       # exactly, not approximately
    weights = torch.randn(50, 7, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((out * weights).sum(), soft)
    assert torch.equal(grad, weights)                   # d out / d soft = identity


def test_straight_through_follows_type_promotion():
    soft = torch.full((2, 3), 1 / 3)
    hard = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    out = straight_through(soft, hard)
    assert out.dtype == torch.float64 and torch.equal(out, hard)


def test_straight_through_refuses_mismatched_arguments():
    soft = torch.zeros(2, 3)
    with pytest.raises(TypeError, match=r"^soft must be a torch.Tensor"):
        straight_through([0.0, 1.0], soft)
    with pytest.raises(TypeError, match=r"^hard must be a torch.Tensor"):
        straight_through(soft, 1.0)
    with pytest.raises(ValueError, match=r"^soft and hard must have the same shape, got \(2, 3\) and \(3,\)"):
        straight_through(soft, torch.zeros(3))          # would broadcast silently
    with pytest.raises(ValueError, match=r"^soft and hard must be on the same device"):
        straight_through(soft, torch.zeros(2, 3, device="meta"))


# --------------------------------------------------------------------------------------------------
# uniform_to_gumbel_
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_to_gumbel_is_minus_log_minus_log_in_place(dtype):
    u = torch.tensor([0.1, 0.5, 0.9, math.exp(-1)], dtype=dtype)
    expected = -torch.log(-torch.log(u))
    out = uniform_to_gumbel_(u)
    assert out is u                                     # in place
    torch.testing.assert_close(out, expected)
    assert out[3].item() == pytest.approx(0.0, abs=1e-6)   # -log(-log(1/e)) = 0


@pytest.mark.parametrize(("dtype", "low", "high"), [(torch.float32, -4.5, 16.6), (torch.float64, -6.6, 36.7)])
def test_uniform_to_gumbel_clamps_the_ends_to_finite_noise(dtype, low, high):
    g = uniform_to_gumbel_(torch.tensor([0.0, 1.0], dtype=dtype))
    assert torch.isfinite(g).all()
    assert g[0].item() == pytest.approx(low, abs=0.05) and g[1].item() == pytest.approx(high, abs=0.05)


# --------------------------------------------------------------------------------------------------
# upcast_half, cast_like
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_upcast_half_computes_half_precision_in_float32(dtype):
    x = torch.tensor([0.5, -2.0], dtype=dtype)
    up = upcast_half(x)
    assert up.dtype == torch.float32 and torch.equal(up, x.float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_upcast_half_leaves_other_tensors_alone(dtype):
    x = torch.tensor([0.5], dtype=dtype)
    assert upcast_half(x) is x


def test_cast_like_casts_only_when_the_dtypes_differ():
    result = torch.tensor([0.1, 0.7])
    assert cast_like(result, torch.zeros(1)) is result
    half = cast_like(result, torch.zeros(1, dtype=torch.float16))
    assert half.dtype == torch.float16 and torch.equal(half, result.half())
    # the round trip of the Gumbel samplers: upcast, compute, cast back
    x = torch.tensor([0.3], dtype=torch.bfloat16)
    assert cast_like(upcast_half(x) * 2, x).dtype == torch.bfloat16

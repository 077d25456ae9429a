import pytest
import torch

from gstutorial.utils import softmax_last


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


def test_softmax_last_keeps_masked_categories_at_zero():
    x = torch.tensor([[0.0, -float("inf"), 1.0], [2.0, 2.0, -float("inf")]])
    probs = softmax_last(x)
    assert probs[0, 1].item() == 0.0 and probs[1, 2].item() == 0.0
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    assert torch.isneginf(softmax_last(x, log=True)[0, 1])

r"""Chapter 3 — gradients of expectations: the score-function and the pathwise (reparameterization) estimator.

The target is :math:`\nabla_\theta\, \mathbb{E}_{z \sim \mathcal{N}(\mu, \sigma^2)}[f(z)]` with
:math:`\theta = (\mu, \sigma)`. Both estimators return **per-sample** gradient estimates of shape
``(num_samples, 2)`` (columns: :math:`\partial/\partial\mu`, :math:`\partial/\partial\sigma`), so that a
chapter can average them over any sample size and measure their bias and variance. The test functions
in :data:`OBJECTIVES` have closed-form expectations and gradients to compare against.

Randomness comes from an optional ``torch.Generator``; noise is drawn on the generator's device and
moved to the parameters' device, so a CPU generator gives the same numbers on CPU and GPU tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributions import Normal

from gstutorial import kl
from gstutorial.checks import (
    as_float_tensor,
    check_choice,
    check_float_tensor,
    check_int,
)

__all__ = [
    "Objective",
    "OBJECTIVES",
    "get_objective",
    "reparameterize",
    "gaussian_elbo_estimate",
    "normal_score",
    "score_function_gradient",
    "pathwise_gradient",
    "threshold_bernoulli",
    "bernoulli_score_function_gradient",
]

Function = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """A test function f with its Gaussian expectation and gradient in closed form.

    Attributes
    ----------
    name : str
    f : callable, Tensor -> Tensor (elementwise)
    expectation : callable, (mu, sigma) -> :math:`\\mathbb{E}_{\\mathcal{N}(\\mu, \\sigma^2)}[f(z)]`
    gradient : callable, (mu, sigma) -> (d/dmu, d/dsigma) of that expectation
    """

    name: str
    f: Function
    expectation: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    gradient: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _square_gradient(mu: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return 2 * mu, 2 * sigma


def _exp_expectation(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.exp(mu + sigma**2 / 2)  # the mean of a log-normal


def _exp_gradient(mu: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    value = _exp_expectation(mu, sigma)
    return value, sigma * value


def _sin_expectation(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.sin(mu) * torch.exp(-(sigma**2) / 2)  # imaginary part of E[e^{iz}]


def _sin_gradient(mu: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    damping = torch.exp(-(sigma**2) / 2)
    return torch.cos(mu) * damping, -sigma * torch.sin(mu) * damping


OBJECTIVES: dict[str, Objective] = {
    "square": Objective("square", torch.square, lambda mu, sigma: mu**2 + sigma**2, _square_gradient),
    "exp": Objective("exp", torch.exp, _exp_expectation, _exp_gradient),
    "sin": Objective("sin", torch.sin, _sin_expectation, _sin_gradient),
}
"""Test functions: ``square`` (f = z², E = μ² + σ²), ``exp`` (E = e^{μ+σ²/2}), ``sin`` (E = sin μ e^{−σ²/2})."""


def get_objective(name: str) -> Objective:
    """Look up a test function in :data:`OBJECTIVES` by name (``ValueError`` naming the choices otherwise)."""
    return OBJECTIVES[check_choice(name, "name", tuple(sorted(OBJECTIVES)))]


def _standard_normal(shape: torch.Size | tuple[int, ...], like: torch.Tensor,
                     generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    eps = torch.randn(shape, generator=generator, dtype=like.dtype, device=device)
    return eps.to(like.device)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                   ) -> torch.Tensor:
    r"""The VAE's Gaussian sample :math:`z = \mu + \sigma \varepsilon`, :math:`\sigma = e^{\frac12 \log\sigma^2}`,
    :math:`\varepsilon \sim \mathcal{N}(0, I)`.

    The randomness sits in :math:`\varepsilon`, which does not depend on the parameters, so
    gradients flow to ``mu`` and ``logvar`` through an ordinary differentiable expression.

    Parameters
    ----------
    mu, logvar : Tensor, broadcastable shapes (typically ``(batch, latent_dim)``)
        Mean and log-variance (an encoder's outputs; ``logvar`` is unconstrained).
    generator : torch.Generator, optional
        Source of the noise; by default PyTorch's global generator on ``mu``'s device.

    Returns
    -------
    Tensor, the broadcast shape of ``mu`` and ``logvar``
    """
    mu = check_float_tensor(mu, "mu")
    logvar = check_float_tensor(logvar, "logvar")
    try:
        shape = torch.broadcast_shapes(mu.shape, logvar.shape)
    except RuntimeError as error:
        raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must have broadcastable "
                         "shapes (normally the same shape)") from error
    std = torch.exp(0.5 * logvar)
    return mu + std * _standard_normal(shape, mu, generator)


def gaussian_elbo_estimate(log_likelihood: Function, mu: torch.Tensor, logvar: torch.Tensor, num_samples: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    r"""A differentiable Monte Carlo ELBO for :math:`q = \mathcal{N}(\mu, \mathrm{diag}\, e^{\log\sigma^2})` and prior :math:`\mathcal{N}(0, I)`.

    .. math:: \hat{\mathcal{L}} = \frac{1}{S}\sum_{s=1}^S \log p(x \mid z_s) - \mathrm{KL}(q \,\Vert\, \mathcal{N}(0, I)),
              \qquad z_s = \mu + \sigma \varepsilon_s,

    the VAE objective of one observation: the reconstruction term by :func:`reparameterize`, the KL in
    closed form (``gstutorial.kl.kl_normal_std``). Gradients reach ``mu`` and ``logvar``.

    Parameters
    ----------
    log_likelihood : callable
        Maps ``z`` of shape ``(num_samples, L)`` to :math:`\log p(x \mid z)` of shape ``(num_samples,)``.
    mu, logvar : Tensor, shape (L,)
    num_samples : int
    generator : torch.Generator, optional

    Returns
    -------
    Tensor, shape ()
    """
    mu = check_float_tensor(mu, "mu")
    logvar = check_float_tensor(logvar, "logvar")
    if mu.ndim != 1 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must both have shape (L,), got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    z = reparameterize(mu.expand(num_samples, -1), logvar, generator)
    reconstruction = log_likelihood(z)
    if reconstruction.shape != (num_samples,):
        raise ValueError(f"log_likelihood must return one value per sample, shape ({num_samples},), "
                         f"got {tuple(reconstruction.shape)}")
    return reconstruction.mean() - kl.kl_normal_std(mu, logvar)


def _check_gaussian_params(mu: object, sigma: object) -> tuple[torch.Tensor, torch.Tensor]:
    mu = as_float_tensor(mu, "mu")
    sigma = as_float_tensor(sigma, "sigma", like=mu)
    if mu.ndim != 0 or sigma.ndim != 0:
        raise ValueError(f"mu and sigma must be scalars (0-d tensors or numbers), got shapes "
                         f"{tuple(mu.shape)} and {tuple(sigma.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma is a standard deviation and must be > 0, got {sigma.item():.3g}")
    return mu.detach(), sigma.detach()


def normal_score(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r"""The score :math:`\nabla_{(\mu,\sigma)} \log \mathcal{N}(z; \mu, \sigma^2)` by hand.

    .. math:: \frac{\partial \log p}{\partial \mu} = \frac{z - \mu}{\sigma^2}, \qquad
              \frac{\partial \log p}{\partial \sigma} = \frac{(z - \mu)^2}{\sigma^3} - \frac{1}{\sigma}.

    Returns a tensor of shape ``(*z.shape, 2)``.
    """
    diff = z - mu
    return torch.stack((diff / sigma**2, diff**2 / sigma**3 - 1 / sigma), dim=-1)


def _values_per_sample(f: Function, z: torch.Tensor) -> torch.Tensor:
    """``f(z)``, checked to be elementwise: one value per sample, so that sample i's estimate uses only z_i."""
    values = f(z)
    if not isinstance(values, torch.Tensor) or values.shape != z.shape:
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"f must be elementwise: f(z) for z of shape {tuple(z.shape)} must have the same shape, "
                         f"got {got}; do not reduce over the samples (no .mean() or .sum() inside f)")
    return values


def _per_sample_setup(mu, sigma, num_samples: int, generator: torch.Generator | None):
    """Validate, draw ε, and make one copy of (μ, σ) per sample so that one backward pass gives
    per-sample gradients. Returns ``(mu, sigma, mus, sigmas, eps)``."""
    mu, sigma = _check_gaussian_params(mu, sigma)
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    eps = _standard_normal((num_samples,), mu, generator)
    mus = mu.expand(num_samples).clone().requires_grad_(True)
    sigmas = sigma.expand(num_samples).clone().requires_grad_(True)
    return mu, sigma, mus, sigmas, eps


def score_function_gradient(f: Function, mu: torch.Tensor | float, sigma: torch.Tensor | float,
                            num_samples: int, generator: torch.Generator | None = None,
                            baseline: float = 0.0) -> torch.Tensor:
    r"""Per-sample score-function (REINFORCE) estimates of :math:`\nabla_{(\mu,\sigma)} \mathbb{E}[f(z)]`.

    Each sample gives :math:`(f(z_i) - b)\, \nabla_\theta \log \mathcal{N}(z_i; \mu, \sigma^2)`, with the
    score computed by autograd through ``torch.distributions.Normal.log_prob`` (equal to
    :func:`normal_score`). It only needs *values* of ``f``. A constant ``baseline`` b leaves it unbiased
    because the score has mean zero.

    Parameters
    ----------
    f : callable, elementwise Tensor -> Tensor
    mu, sigma : scalars (0-d floating-point tensors or real numbers), sigma > 0
    num_samples : int (Python or NumPy), >= 1
    generator : torch.Generator, optional
    baseline : float

    Returns
    -------
    Tensor, shape (num_samples, 2)
        Columns: estimates of the derivative with respect to mu and to sigma.
    """
    mu, sigma, mus, sigmas, eps = _per_sample_setup(mu, sigma, num_samples, generator)
    z = (mu + sigma * eps).detach()  # the sample itself is not differentiated
    log_prob = Normal(mus, sigmas).log_prob(z)
    weights = (_values_per_sample(f, z) - baseline).detach()
    grad_mu, grad_sigma = torch.autograd.grad((weights * log_prob).sum(), (mus, sigmas))
    return torch.stack((grad_mu, grad_sigma), dim=-1)


def pathwise_gradient(f: Function, mu: torch.Tensor | float, sigma: torch.Tensor | float, num_samples: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Per-sample pathwise (reparameterization) estimates of :math:`\nabla_{(\mu,\sigma)} \mathbb{E}[f(z)]`.

    With :math:`z = \mu + \sigma\varepsilon` each sample gives
    :math:`f'(z_i)\, (\partial z/\partial\mu, \partial z/\partial\sigma) = f'(z_i)\,(1, \varepsilon_i)`,
    computed by autograd. ``f`` must be differentiable in torch.

    Returns
    -------
    Tensor, shape (num_samples, 2)
        Columns: estimates of the derivative with respect to mu and to sigma.
    """
    mu, sigma, mus, sigmas, eps = _per_sample_setup(mu, sigma, num_samples, generator)
    z = mus + sigmas * eps
    values = _values_per_sample(f, z)
    if not values.requires_grad:
        raise ValueError("f(z) does not depend on z through torch operations, so there is no path to "
                         "differentiate; write f with torch functions (or use score_function_gradient)")
    grad_mu, grad_sigma = torch.autograd.grad(values.sum(), (mus, sigmas), allow_unused=True)
    zeros = torch.zeros_like(mus)
    grad_mu = zeros if grad_mu is None else grad_mu
    grad_sigma = zeros if grad_sigma is None else grad_sigma
    return torch.stack((grad_mu, grad_sigma), dim=-1)


def threshold_bernoulli(p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    r"""A Bernoulli(p) sample written as a function of uniform noise: :math:`z = \mathbb{1}[u < p]`.

    This is the discrete analogue of :math:`z = \mu + \sigma\varepsilon`, but it is a step function of
    ``p``: its derivative is zero wherever it exists, so autograd cannot pass a gradient through it
    (the result does not require grad). Shapes broadcast.
    """
    p = check_float_tensor(p, "p")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("p holds probabilities and must lie in [0, 1]")
    u = check_float_tensor(u, "u")
    return (u < p).to(p.dtype)


def bernoulli_score_function_gradient(f: Function, p: torch.Tensor | float, num_samples: int,
                                      generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Per-sample score-function estimates of :math:`\frac{d}{dp}\mathbb{E}_{z \sim \mathrm{Bernoulli}(p)}[f(z)]`.

    Each sample gives :math:`f(z_i) \left(\frac{z_i}{p} - \frac{1 - z_i}{1 - p}\right)`; the exact
    derivative is :math:`f(1) - f(0)`. Requires :math:`0 < p < 1`.

    Returns
    -------
    Tensor, shape (num_samples,)
    """
    p = as_float_tensor(p, "p")
    if p.ndim != 0 or not 0 < p.item() < 1:
        raise ValueError(f"p must be one probability strictly between 0 and 1, got {p.tolist()}")
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    device = generator.device if generator is not None else p.device
    u = torch.rand(num_samples, generator=generator, dtype=p.dtype, device=device).to(p.device)
    z = threshold_bernoulli(p.detach(), u)
    score = z / p - (1 - z) / (1 - p)
    return (_values_per_sample(f, z) * score).detach()


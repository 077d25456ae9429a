"""Chapter 1 — KL divergence: discrete and Gaussian forms, checked against numerics.

Conventions: distributions over K categories are tensors whose **last axis** is the category axis
(any leading batch shape); Gaussian parameters broadcast and the KL of a diagonal Gaussian is summed
over the last axis. Results have the leading shape. Device and dtype follow the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy import integrate, optimize, stats

from gstutorial.checks import value_checks_enabled
from gstutorial.primitives import softmax_last

__all__ = [
    "check_probabilities",
    "cross_entropy",
    "entropy",
    "kl_categorical",
    "kl_categorical_uniform",
    "kl_normal",
    "kl_normal_std",
    "kl_monte_carlo",
    "kl_quad",
    "fit_gaussian",
]


def check_probabilities(p: torch.Tensor, name: str = "p", atol: float = 1e-6) -> torch.Tensor:
    """Validate a tensor of probability vectors (last axis): finite, non-negative, summing to one."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(p).__name__}")
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ValueError(f"{name} needs a non-empty category axis (last axis), got shape {tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError(f"{name} has non-finite entries; probabilities must be finite")
    if (p < 0).any():
        raise ValueError(f"{name} has negative entries; probabilities must be >= 0")
    total = p.sum(-1)
    if not torch.allclose(total, torch.ones_like(total), atol=atol, rtol=0):
        worst = (total - 1).abs().max().item()
        raise ValueError(f"{name} must sum to 1 over its last axis (off by up to {worst:.3g}); "
                         "normalize it, e.g. p / p.sum(-1, keepdim=True)")
    return p


def _xlogy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # x * log(y) with the convention 0 * log 0 = 0
    return torch.special.xlogy(x, y)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy H(p) = -Σ p log p in nats, over the last axis."""
    check_probabilities(p)
    return -_xlogy(p, p).sum(-1)


def cross_entropy(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Cross-entropy H(p, q) = -Σ p log q in nats (``inf`` where q = 0 < p)."""
    _check_pair(p, q)
    return -_xlogy(p, q).sum(-1)


def kl_categorical(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ p log(p / q) over the last axis, in nats.

    Terms with p = 0 contribute 0; a category with q = 0 < p makes the KL ``inf``.
    """
    _check_pair(p, q)
    return (_xlogy(p, p) - _xlogy(p, q)).sum(-1)


def _check_pair(p: torch.Tensor, q: torch.Tensor) -> None:
    """Two probability tensors over the same categories whose batch shapes broadcast."""
    check_probabilities(p, "p")
    check_probabilities(q, "q")
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(f"p and q need the same number of categories, got {p.shape[-1]} and {q.shape[-1]}")
    _broadcast_shape(("p", p), ("q", q))


def kl_categorical_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ Uniform(K)) = Σ q log q + log K for q = softmax(logits), over the last axis.

    This is the analytic KL term of the categorical VAE (chapter 7); it is computed from
    log-probabilities, so large logits do not overflow.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}; convert it, e.g. logits.float()")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits need a non-empty category axis (last axis), got shape {tuple(logits.shape)}")
    log_q = softmax_last(logits, log=True)
    q = log_q.exp()
    # a masked category adds 0 · log 0 = 0; the log is replaced (not the product) so that the
    # gradient is 0 there too instead of 0 · inf = NaN
    kl = (q * torch.where(q > 0, log_q, 0.0)).sum(-1) + math.log(logits.shape[-1])
    if value_checks_enabled() and torch.isnan(kl.sum()):  # one check on the small result
        if torch.isnan(logits).any() or torch.isposinf(logits).any():
            raise ValueError("logits contain NaN or +inf; logits must be finite (or -inf for masked categories)")
        raise ValueError("every category of some row is masked with -inf; each row needs at least one "
                         "finite logit")
    return kl


def _broadcast_shape(*named: tuple[str, torch.Tensor]) -> torch.Size:
    """The common broadcast shape of the named tensors, or a ValueError that names every shape."""
    try:
        return torch.broadcast_shapes(*(t.shape for _, t in named))
    except RuntimeError:
        shapes = ", ".join(f"{name} {tuple(t.shape)}" for name, t in named)
        raise ValueError(f"the shapes {shapes} do not broadcast against each other; give them the same "
                         "shape (or size 1 along an axis they share)") from None


def _check_finite(t: torch.Tensor, name: str) -> None:
    if value_checks_enabled() and not torch.isfinite(t).all():
        raise ValueError(f"{name} has NaN or infinite entries; {name} must be finite")


def _check_scale(scale: torch.Tensor, name: str) -> None:
    if not torch.isfinite(scale).all() or (scale <= 0).any():
        raise ValueError(f"{name} must be finite and > 0 (a standard deviation), got min {scale.min().item():.3g}")


def kl_normal(mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor,
              ) -> torch.Tensor:
    r"""KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) for diagonal Gaussians, summed over the last axis.

    Per dimension: log(σ_p/σ_q) + (σ_q² + (μ_q − μ_p)²) / (2σ_p²) − ½. The four arguments must
    broadcast against each other; the means must be finite and the standard deviations finite and > 0
    (``ValueError`` otherwise, naming the argument).
    """
    named = [(name, torch.as_tensor(t)) for name, t in
             (("mu_q", mu_q), ("sigma_q", sigma_q), ("mu_p", mu_p), ("sigma_p", sigma_p))]
    _broadcast_shape(*named)
    mu_q, sigma_q, mu_p, sigma_p = torch.broadcast_tensors(*(t for _, t in named))
    _check_finite(mu_q, "mu_q")
    _check_finite(mu_p, "mu_p")
    _check_scale(sigma_q, "sigma_q")
    _check_scale(sigma_p, "sigma_p")
    var_ratio = (sigma_q / sigma_p) ** 2
    per_dim = 0.5 * (var_ratio + ((mu_q - mu_p) / sigma_p) ** 2 - 1.0 - torch.log(var_ratio))
    return per_dim.sum(-1)


def kl_normal_std(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""The VAE special case KL(N(μ, σ²) ‖ N(0, 1)) = −½ Σ (1 + log σ² − μ² − σ²), over the last axis.

    ``mu`` and ``logvar`` (tensors or numbers) must broadcast against each other and be finite
    (``ValueError`` otherwise).
    """
    mu, logvar = torch.as_tensor(mu), torch.as_tensor(logvar)
    _broadcast_shape(("mu", mu), ("logvar", logvar))
    mu, logvar = torch.broadcast_tensors(mu, logvar)
    _check_finite(mu, "mu")
    _check_finite(logvar, "logvar")
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(-1)


def kl_monte_carlo(p: torch.distributions.Distribution, q: torch.distributions.Distribution,
                   num_samples: int, generator_seed: int | None = None) -> tuple[float, float]:
    """Monte Carlo estimate of KL(p ‖ q) = E_p[log p(x) − log q(x)] and its standard error.

    Parameters
    ----------
    p, q : ``torch.distributions`` objects with batch shape ``()`` (one distribution each; a
        multivariate event shape is fine). For independent entries, whose KLs add up, wrap a batched
        distribution with ``torch.distributions.Independent``; a batch shape raises ``ValueError``.
    num_samples : number of draws from ``p`` (>= 2).
    generator_seed : if given, the draws come from PyTorch's *global* RNG seeded with
        ``torch.manual_seed(generator_seed)``, so they are reproducible; the global RNG state (CPU,
        and CUDA once initialised) is put back afterwards, so the call does not disturb later draws.
        If ``None``, the global RNG is used and advanced as usual.

    Returns
    -------
    ``(estimate, standard_error)`` as Python floats, computed in float64.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 to give a standard error, got {num_samples}")
    for name, dist in (("p", p), ("q", q)):
        if not isinstance(dist, torch.distributions.Distribution):
            raise TypeError(f"{name} must be a torch.distributions.Distribution, got {type(dist).__name__}")
        if dist.batch_shape != ():
            raise ValueError(f"{name} has batch shape {tuple(dist.batch_shape)}, but kl_monte_carlo estimates the "
                             f"KL of one distribution (batch shape ()); for the KL summed over independent "
                             f"entries wrap it: torch.distributions.Independent({name}, {len(dist.batch_shape)})")
    if generator_seed is None:
        x = p.sample((num_samples,))
    else:
        # CUDA tensors need an initialised CUDA; seeding it lazily would leak the seed into its later start
        cuda = torch.cuda.is_initialized()
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if cuda else [], device_type="cuda"):
            if cuda:
                torch.manual_seed(generator_seed)
            else:
                torch.random.default_generator.manual_seed(generator_seed)
            x = p.sample((num_samples,))
    log_ratio = (p.log_prob(x) - q.log_prob(x)).double()
    return log_ratio.mean().item(), (log_ratio.std() / math.sqrt(num_samples)).item()


def kl_quad(log_p: Callable[[float], float], log_q: Callable[[float], float],
            lower: float = -np.inf, upper: float = np.inf) -> float:
    """KL(p ‖ q) = ∫ p(x) (log p(x) − log q(x)) dx by adaptive quadrature (``scipy.integrate.quad``).

    ``log_p`` and ``log_q`` are scalar log-densities on the real line.
    """
    def integrand(x: float) -> float:
        lp = log_p(x)
        return 0.0 if lp == -np.inf else math.exp(lp) * (lp - log_q(x))

    value, _ = integrate.quad(integrand, lower, upper, epsabs=1e-12, epsrel=1e-12, limit=200)
    return float(value)


def fit_gaussian(log_p: Callable[[np.ndarray], np.ndarray], direction: str,
                 init: tuple[float, float] = (0.0, 1.0), grid: np.ndarray | None = None,
                 ) -> tuple[float, float]:
    """Fit N(m, s²) to a 1-D density p by minimising a KL divergence; return ``(m, s)``.

    ``direction="forward"`` minimises KL(p ‖ q) (mass-covering: the optimum matches p's mean and
    variance); ``direction="reverse"`` minimises KL(q ‖ p) (mode-seeking: the optimum depends on
    ``init``). ``log_p`` is a vectorised log-density; the KL integral is evaluated by the trapezoid
    rule on ``grid`` (default: 12,001 points on [-15, 15]), which is very accurate for smooth,
    fast-decaying integrands like these.
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    if init[1] <= 0:
        raise ValueError(f"the initial standard deviation must be > 0, got {init[1]}")
    x = np.linspace(-15.0, 15.0, 12_001) if grid is None else np.asarray(grid, dtype=float)
    log_p_x = np.asarray(log_p(x), dtype=float)

    def kl_on_grid(log_a: np.ndarray, log_b: np.ndarray) -> float:
        a = np.exp(log_a)
        integrand = np.where(a > 0, a * (log_a - log_b), 0.0)
        return float(np.trapezoid(integrand, x))

    def objective(params: np.ndarray) -> float:
        log_q_x = stats.norm.logpdf(x, params[0], math.exp(params[1]))
        if direction == "forward":
            return kl_on_grid(log_p_x, log_q_x)
        return kl_on_grid(log_q_x, log_p_x)

    result = optimize.minimize(objective, x0=np.array([init[0], math.log(init[1])]), method="Nelder-Mead",
                               options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
    return float(result.x[0]), float(math.exp(result.x[1]))

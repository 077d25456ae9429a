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

from gstutorial.checks import (
    as_float_tensor,
    check_choice,
    check_int,
    check_real,
    check_tensor,
    value_checks_enabled,
)
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
    check_tensor(p, name, floating=False, category_axis=True)
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
    check_tensor(logits, "logits", category_axis=True)
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


def kl_normal(mu_q: torch.Tensor | float, sigma_q: torch.Tensor | float, mu_p: torch.Tensor | float,
              sigma_p: torch.Tensor | float) -> torch.Tensor:
    r"""KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) for diagonal Gaussians, summed over the last axis.

    Per dimension: log(σ_p/σ_q) + (σ_q² + (μ_q − μ_p)²) / (2σ_p²) − ½. The arguments are floating-point
    tensors or numbers that broadcast against each other; the means must be finite and the standard
    deviations finite and > 0 (``ValueError`` otherwise, naming the argument). Where σ_q/σ_p under- or
    overflows, its log is taken as log σ_q − log σ_p, so the result is finite wherever the true KL is
    and ``inf`` (never NaN) where the true KL overflows the dtype.
    """
    named = [(name, as_float_tensor(t, name)) for name, t in
             (("mu_q", mu_q), ("sigma_q", sigma_q), ("mu_p", mu_p), ("sigma_p", sigma_p))]
    _broadcast_shape(*named)
    mu_q, sigma_q, mu_p, sigma_p = (t for _, t in named)
    for name, sigma in (("sigma_q", sigma_q), ("sigma_p", sigma_p)):
        if not (torch.isfinite(sigma) & (sigma > 0)).all():
            raise ValueError(f"{name} must be finite and > 0 (a standard deviation), got min {sigma.min().item():.3g}")
    ratio = sigma_q / sigma_p  # correctly rounded; 0 or inf only where σ_q/σ_p under- or overflows
    finfo = torch.finfo(ratio.dtype)
    normal = (ratio >= finfo.tiny) & (ratio <= finfo.max)
    # log(σ_q/σ_p) from the ratio where it is a normal number (accurate), else as log σ_q − log σ_p (finite)
    log_ratio = torch.where(normal, torch.log(torch.where(normal, ratio, 1.0)),
                            torch.log(sigma_q) - torch.log(sigma_p))
    # ½(σ_q²/σ_p² − 1) as (r − 1)·½(r + 1): no cancellation near r = 1, −½ where r underflows, and
    # +inf only where the true value overflows (r² alone overflows a factor 2 earlier)
    half_ratio_term = (ratio - 1.0) * (0.5 * (ratio + 1.0))
    z = (mu_q - mu_p) / sigma_p
    return (half_ratio_term - log_ratio + z * (0.5 * z)).sum(-1)  # z·(½z) = ½z², rounded once


def kl_normal_std(mu: torch.Tensor | float, logvar: torch.Tensor | float) -> torch.Tensor:
    r"""The VAE special case KL(N(μ, σ²) ‖ N(0, 1)) = −½ Σ (1 + log σ² − μ² − σ²), over the last axis.

    ``mu`` and ``logvar`` (floating-point tensors or numbers) must broadcast against each other and be
    finite (``ValueError`` otherwise). The variance enters as ``exp(logvar)``, so the result is finite
    for any finite input whose terms do not overflow, and ``inf`` (never NaN) when ``exp(logvar)`` or
    ``mu²`` does.
    """
    mu, logvar = as_float_tensor(mu, "mu"), as_float_tensor(logvar, "logvar")
    _broadcast_shape(("mu", mu), ("logvar", logvar))
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(-1)


def kl_monte_carlo(p: torch.distributions.Distribution, q: torch.distributions.Distribution,
                   num_samples: int, generator_seed: int | None = None) -> tuple[float, float]:
    """Monte Carlo estimate of KL(p ‖ q) = E_p[log p(x) − log q(x)] and its standard error.

    Parameters
    ----------
    p, q : ``torch.distributions`` objects with batch shape ``()`` (one distribution each; a
        multivariate event shape is fine). For independent entries, whose KLs add up, wrap a batched
        distribution with ``torch.distributions.Independent``; a batch shape raises ``ValueError``.
    num_samples : number of draws from ``p``, an int >= 2 (Python or NumPy).
    generator_seed : if given (an int), the draws come from PyTorch's *global* RNG seeded with
        ``torch.manual_seed(generator_seed)``, so they are reproducible; the global RNG state (CPU,
        and CUDA once initialised) is put back afterwards, so the call does not disturb later draws.
        If ``None``, the global RNG is used and advanced as usual.

    Returns
    -------
    ``(estimate, standard_error)`` as Python floats, computed in float64.
    """
    num_samples = check_int(num_samples, "num_samples", minimum=2)  # two draws give a standard error
    if generator_seed is not None:
        generator_seed = check_int(generator_seed, "generator_seed")
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
    check_choice(direction, "direction", ("forward", "reverse"))
    init_mean = check_real(init[0], "init[0] (the initial mean)")
    init_sd = check_real(init[1], "init[1] (the initial standard deviation)", positive=True)
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

    result = optimize.minimize(objective, x0=np.array([init_mean, math.log(init_sd)]), method="Nelder-Mead",
                               options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
    return float(result.x[0]), float(math.exp(result.x[1]))

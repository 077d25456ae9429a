"""Chapters 4 and 5 — the Gumbel-Max trick and the Gumbel-Softmax (Concrete) relaxation.

Conventions: ``logits`` are unnormalised log-probabilities whose **last axis** is the category axis
(any leading batch shape); the Gumbel-Softmax samplers take another axis with ``dim``, like
``torch.nn.functional.gumbel_softmax``, and return contiguous tensors. A logit of ``-inf`` masks its
category: it is never sampled and produces no NaN in values or gradients. Samples have the device
of the logits; their dtype follows the logits too, except that half-precision logits
(``float16``/``bfloat16``) are computed in ``float32`` and the result cast back, because Gumbel noise
drawn in half precision has a visibly truncated tail.

Arguments follow :mod:`gstutorial.checks`: a wrong type raises ``TypeError`` (logits that are not a
floating-point tensor, a temperature that is not a number, a ``hard`` that is not a bool), a wrong
value ``ValueError`` (a temperature that is not a finite number > 0; NaN or ``+inf`` logits; a row
whose categories are all masked; an empty category axis). The temperature is a number or a
one-element tensor: one that requires grad is learnable in the samplers and the Concrete densities
(the gradient reaches it, as with ``torch.nn.functional.gumbel_softmax``); one that does not is read
as the number it holds, so that a float and a tensor give identical samples. The samplers check
their *result* with one fused reduction instead of scanning the logits first, and only diagnose the
input when that check fails; this keeps ``gumbel_softmax`` as fast as
``torch.nn.functional.gumbel_softmax`` (see ``benchmarks/bench_gumbel_softmax.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import integrate, special

from gstutorial.checks import (
    check_bool,
    check_int,
    check_real,
    check_temperature,
    check_tensor,
    value_checks_enabled,
)
from gstutorial.kl import check_probabilities
from gstutorial.primitives import (
    HALF_DTYPES,
    cast_like,
    softmax_last,
    straight_through,
    uniform_to_gumbel_,
    upcast_half,
)

__all__ = [
    "EULER_GAMMA",
    "categorical_inverse_cdf",
    "check_logits",
    "concrete_log_prob",
    "concrete_total_mass",
    "exp_concrete_log_prob",
    "exp_gumbel_softmax",
    "gumbel_cdf",
    "gumbel_from_uniform",
    "gumbel_log_pdf",
    "gumbel_max",
    "gumbel_max_probabilities",
    "gumbel_noise",
    "gumbel_pdf",
    "gumbel_softmax",
    "one_hot_sample",
]

EULER_GAMMA = 0.5772156649015329
"""The Euler–Mascheroni constant γ: the mean of the standard Gumbel distribution."""

_MAX_GRID_POINTS = 10**7  # concrete_total_mass: keeps its float64 work arrays to a few GB


# --------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------

def check_logits(logits: torch.Tensor) -> torch.Tensor:
    """Validate logits (full scan): floating point, non-empty last axis, no NaN or ``+inf``, and at
    least one category per row that is not masked with ``-inf``. Returns ``logits`` unchanged."""
    check_tensor(logits, "logits", category_axis=True)
    if torch.isnan(logits).any():
        raise ValueError("logits contain NaN; logits must be finite, or -inf to mask a category")
    if torch.isposinf(logits).any():
        raise ValueError("logits contain +inf; logits must be finite, or -inf to mask a category "
                         "(to force a category, mask all the others with -inf instead)")
    if logits.numel() and torch.isneginf(logits).all(-1).any():
        raise ValueError("every category of some row is masked with -inf; each row needs at least one "
                         "finite logit (leave the category you want unmasked)")
    return logits


def _diagnose(logits: torch.Tensor, tau: float | torch.Tensor | None = None) -> None:
    """Called when a sampler's result is not finite: raise the error that explains why."""
    check_logits(logits)
    fix = " or a larger temperature" if tau is not None else ""
    tau = None if tau is None else float(tau)
    raise ValueError(f"logits of magnitude up to {logits.abs().max().item():.3g} overflow in {logits.dtype}"
                     f"{'' if tau is None else f' at temperature {tau}'}; use float64{fix}")


def _temperature(temperature: object, like: torch.Tensor) -> float | torch.Tensor:
    """The checked temperature: a float, or a 0-d tensor that requires grad (on ``like``'s device or
    the CPU)."""
    tau = check_temperature(temperature, differentiable=True)
    if isinstance(tau, torch.Tensor) and isinstance(like, torch.Tensor) and tau.device not in (
            like.device, torch.device("cpu")):
        raise ValueError(f"temperature must be on the logits' device ({like.device}) or the CPU, got "
                         f"{tau.device}; move it, e.g. tau.to(logits.device)")
    return tau


def _category_last(logits: torch.Tensor, dim: int) -> tuple[torch.Tensor, int]:
    """``logits`` with its category axis ``dim`` moved last (a view; ``logits`` itself when ``dim`` is
    already the last axis), and ``dim`` as a non-negative index."""
    check_tensor(logits, "logits")
    dim = check_int(dim, "dim")
    if logits.ndim == 0:
        check_tensor(logits, "logits", category_axis=True)  # raises: no category axis
    if not -logits.ndim <= dim < logits.ndim:
        raise ValueError(f"dim must be in [{-logits.ndim}, {logits.ndim - 1}] for logits of shape "
                         f"{tuple(logits.shape)}, got {dim}")
    dim %= logits.ndim
    if dim == logits.ndim - 1:
        return check_tensor(logits, "logits", category_axis=True), dim
    if logits.shape[dim] == 0:
        raise ValueError(f"logits needs a non-empty category axis (axis {dim}), got shape {tuple(logits.shape)}")
    return logits.movedim(dim, -1), dim


def _restore(result: torch.Tensor, logits: torch.Tensor, dim: int) -> torch.Tensor:
    """A sampler's result, computed with the category axis last, put back at ``dim`` as a contiguous
    tensor of the logits' dtype (the values are not changed)."""
    if dim != logits.ndim - 1:
        result = result.movedim(-1, dim)
    return cast_like(result.contiguous(), logits)


def _perturbed(x: torch.Tensor, tau: float | torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``(x + g) / tau`` with fresh Gumbel noise ``g`` (category axis last).

    A float ``tau`` divides in place. A tensor ``tau`` (one that requires grad) divides out of place;
    the masked entries (``-inf``) are set to 0 before the division and back to ``-inf`` after it, so
    that the gradient with respect to ``tau`` is not NaN (``0 * inf``).
    """
    z = gumbel_noise(x, generator).add_(x)  # in place: no extra allocations
    if not isinstance(tau, torch.Tensor):
        return z.div_(tau)
    masked = torch.isneginf(z)
    return (z.masked_fill(masked, 0.0) / tau).masked_fill_(masked, -math.inf)


# --------------------------------------------------------------------------------------------------
# Chapter 4: categorical sampling, the Gumbel distribution, the Gumbel-Max trick
# --------------------------------------------------------------------------------------------------

def categorical_inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: the index k with ``cdf[k-1] <= u < cdf[k]``, where ``cdf`` is the
    cumulative sum of ``probs`` over the last axis.

    Parameters
    ----------
    probs : (..., K) probability vectors.
    u : (...) uniform numbers in [0, 1).

    Returns
    -------
    (...) LongTensor of category indices (0-based). A category of probability 0 is never chosen.
    """
    check_probabilities(probs, "probs")
    u = torch.as_tensor(u, dtype=probs.dtype, device=probs.device)
    if u.shape != probs.shape[:-1]:
        raise ValueError(f"u must have the batch shape of probs, {tuple(probs.shape[:-1])}, got {tuple(u.shape)}")
    if ((u < 0) | (u >= 1) | torch.isnan(u)).any():
        raise ValueError("u must lie in [0, 1); draw it with torch.rand")
    cdf = probs.cumsum(-1)
    cdf = cdf / cdf[..., -1:]  # the last entry is exactly 1, so u < 1 always finds a category
    return torch.searchsorted(cdf, u.unsqueeze(-1).contiguous(), right=True).squeeze(-1)


def gumbel_log_pdf(z):
    """Log-density of the standard Gumbel distribution, ``-z - exp(-z)`` (NumPy or torch input)."""
    lib = torch if isinstance(z, torch.Tensor) else np
    return -z - lib.exp(-z)


def gumbel_pdf(z):
    """Density of the standard Gumbel distribution, ``exp(-z - exp(-z))`` (NumPy or torch input)."""
    lib = torch if isinstance(z, torch.Tensor) else np
    return lib.exp(gumbel_log_pdf(z))


def gumbel_cdf(z):
    """Distribution function of the standard Gumbel distribution, ``exp(-exp(-z))``."""
    lib = torch if isinstance(z, torch.Tensor) else np
    return lib.exp(-lib.exp(-z))


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log U)`` from uniform numbers ``u`` (any shape, elementwise);
    finite for every ``u`` in [0, 1], including the endpoints (which are clamped, see :func:`gstutorial.primitives.uniform_to_gumbel_`).

    ``u`` with NaN or values outside [0, 1] raises ``ValueError`` (one reduction over ``u``, skipped
    when value checks are off, see :func:`gstutorial.checks.value_checks`).
    """
    check_tensor(u, "u")
    work = upcast_half(u).clone()
    if value_checks_enabled() and work.numel():
        low, high = (v.item() for v in torch.aminmax(work))  # NaN propagates into both
        if not (0.0 <= low and high <= 1.0):
            raise ValueError(f"u must lie in [0, 1] (uniform numbers, e.g. from torch.rand), got values in "
                             f"[{low:.3g}, {high:.3g}]; only the endpoints 0 and 1 themselves are clamped")
    return uniform_to_gumbel_(work).to(u.dtype)


def gumbel_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise with the shape (any, 0-d included), dtype and device of ``like``; never
    inf or NaN.

    ``generator`` (optional) must live on ``like``'s device. Half-precision noise is drawn in float32
    and cast.
    """
    check_tensor(like, "like")
    dtype = torch.float32 if like.dtype in HALF_DTYPES else like.dtype
    u = torch.rand(like.shape, generator=generator, dtype=dtype, device=like.device)
    return uniform_to_gumbel_(u).to(like.dtype)


def gumbel_max(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A categorical sample by the Gumbel-Max trick, ``argmax_k (logits_k + g_k)``.

    Parameters
    ----------
    logits : (..., K) floating point; ``-inf`` masks a category.
    generator : optional ``torch.Generator`` on the logits' device.

    Returns
    -------
    (...) LongTensor of indices, distributed as ``Categorical(softmax(logits))``.
    """
    check_tensor(logits, "logits", category_axis=True)
    x = upcast_half(logits).detach()
    z = gumbel_noise(x, generator).add_(x)
    best, index = z.max(-1)
    if value_checks_enabled() and not torch.isfinite(best).all():  # NaN, +inf or an all-masked row
        _diagnose(logits)
    return index


def one_hot_sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """An exact one-hot sample of ``Categorical(softmax(logits))`` by Gumbel-Max, without gradient.

    Returns a contiguous ``(..., K)`` tensor of zeros and ones with the dtype and device of ``logits``;
    a ``-inf`` logit masks its category. The same random numbers as :func:`gumbel_max`.
    """
    index = gumbel_max(logits, generator)
    return torch.zeros_like(logits, memory_format=torch.contiguous_format).scatter_(
        -1, index.unsqueeze(-1), 1.0).detach()


def gumbel_max_probabilities(logits: Sequence[float], epsrel: float = 1e-13) -> np.ndarray:
    """P(argmax_k(x_k + g_k) = k) for each k by numerical integration (``scipy.integrate.quad``) of

        P(k) = ∫ f(z - x_k) ∏_{j≠k} F(z - x_j) dz,

    with f, F the standard Gumbel pdf and cdf. The integrand is evaluated in log space, and the
    integral is split at the location of the maximum, log Σ_j exp(x_j), where its mass sits, so that
    large logits are integrated as accurately as small ones. Masked (``-inf``) logits get 0.
    ``epsrel`` (> 0) is the relative accuracy asked of each integral.
    """
    epsrel = check_real(epsrel, "epsrel", positive=True)
    x = np.asarray(logits, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"logits must be a non-empty 1-D sequence, got shape {x.shape}")
    if np.isnan(x).any() or np.isposinf(x).any() or np.isneginf(x).all():
        raise ValueError("logits must be finite or -inf, with at least one finite entry")
    finite = np.isfinite(x)
    center = float(np.logaddexp.reduce(x[finite]))

    def log_integrand(z: float, k: int) -> float:
        others = x[finite & (np.arange(x.size) != k)]  # the -inf logits have F = 1 and drop out
        if max(x[k], others.max(initial=-np.inf)) - z > 700.0:  # exp(-(z - x_j)) would overflow:
            return -math.inf                                    # F(z - x_j) = exp(-huge) = 0
        log_f = -(z - x[k]) - math.exp(-(z - x[k]))             # log f(z - x_k)
        log_big_f = -np.exp(-(z - others))                       # log F(z - x_j), j != k
        return log_f + float(log_big_f.sum())

    probabilities = np.zeros_like(x)
    for k in np.flatnonzero(finite):
        def integrand(z: float, k: int = k) -> float:
            return math.exp(log_integrand(z, k))
        left, _ = integrate.quad(integrand, -np.inf, center, epsabs=0.0, epsrel=epsrel, limit=500)
        right, _ = integrate.quad(integrand, center, np.inf, epsabs=0.0, epsrel=epsrel, limit=500)
        probabilities[k] = left + right
    return probabilities


# --------------------------------------------------------------------------------------------------
# Chapter 5: the Gumbel-Softmax (Concrete) distribution
# --------------------------------------------------------------------------------------------------

def gumbel_softmax(logits: torch.Tensor, temperature: float | torch.Tensor, hard: bool = False,
                   generator: torch.Generator | None = None, dim: int = -1) -> torch.Tensor:
    """A relaxed one-hot sample ``softmax((logits + g) / temperature)`` over the category axis ``dim``.

    Parameters
    ----------
    logits : floating point, with the K categories along ``dim``; ``-inf`` masks a category (its
        entry is exactly 0).
    temperature : finite float > 0, or a one-element tensor holding one. A tensor that requires grad
        is learnable: the sample is divided by it as a tensor, so the gradient reaches it (for the
        same noise, the gradient of ``torch.nn.functional.gumbel_softmax``). A tensor that does not
        require grad is read as a float, so it gives the float's sample bit for bit.
    hard : bool; if True, the straight-through version: the forward value is the exact one-hot vector of
        ``argmax(logits + g)`` (a Gumbel-Max sample, the same ``g``), the backward pass uses the
        gradient of the relaxed sample (:func:`gstutorial.primitives.straight_through`).
    generator : optional ``torch.Generator`` on the logits' device.
    dim : the category axis (default the last, as in ``torch.nn.functional.gumbel_softmax``). The
        noise is drawn with the category axis moved last, so ``gumbel_softmax(x, t, dim=d)`` equals
        ``gumbel_softmax(x.movedim(d, -1), t).movedim(-1, d)`` for the same generator state.

    Returns
    -------
    A contiguous tensor of the shape, dtype and device of ``logits``, differentiable with respect to
    them (and to a temperature that requires grad).
    """
    tau = _temperature(temperature, logits)
    check_tensor(logits, "logits")
    check_bool(hard, "hard")
    last, dim = _category_last(logits, dim)
    x = upcast_half(last)
    z = _perturbed(x, tau, generator)
    soft = softmax_last(z)
    if value_checks_enabled() and torch.isnan(soft.sum()):  # catches NaN/+inf logits, all-masked rows, overflow
        _diagnose(last, tau)
    if hard:
        soft = soft.contiguous()  # a view with the category axis moved on the CPU with K < 16
        one_hot = torch.zeros_like(soft).scatter_(-1, z.detach().argmax(-1, keepdim=True), 1.0)
        soft = straight_through(soft, one_hot)
    return _restore(soft, logits, dim)


def exp_gumbel_softmax(logits: torch.Tensor, temperature: float | torch.Tensor,
                       generator: torch.Generator | None = None, dim: int = -1) -> torch.Tensor:
    r"""The log of a Gumbel-Softmax sample, ``log_softmax((logits + g) / temperature)``: a draw of the
    ExpConcrete distribution (Maddison et al. 2017), whose exponential is Concrete distributed.

    With the same noise (the same ``generator`` state) ``exp_gumbel_softmax(...).exp()`` equals
    :func:`gumbel_softmax` to rounding. Computed in log space, a coordinate whose probability
    underflows keeps a finite log (about ``z_i - max_j z_j`` for ``z = (logits + g) / τ``) where
    :func:`gumbel_softmax` returns an exact 0, which :func:`concrete_log_prob` refuses: in float32 at
    τ = 0.1 with K = 10 and logits of standard deviation 2, about 7% of relaxed samples contain such
    a 0. Score these draws with :func:`exp_concrete_log_prob`.

    Parameters
    ----------
    logits, temperature, generator, dim : as in :func:`gumbel_softmax` (a masked category, logit
        ``-inf``, gets ``-inf``, the log of its exact 0).

    Returns
    -------
    A contiguous tensor of the shape, dtype and device of ``logits`` whose exponential sums to 1 along
    ``dim``; differentiable with respect to the logits and to a temperature that requires grad.
    """
    tau = _temperature(temperature, logits)
    check_tensor(logits, "logits")
    last, dim = _category_last(logits, dim)
    log_y = softmax_last(_perturbed(upcast_half(last), tau, generator), log=True)
    if value_checks_enabled() and torch.isnan(log_y.sum()):  # -inf (masks) sums to -inf, not NaN
        _diagnose(last, tau)
    return _restore(log_y, logits, dim)


def _check_pair(sample: torch.Tensor, logits: torch.Tensor, name: str) -> None:
    """The shared checks of a point and the logits it is scored against (not of the point's values)."""
    check_logits(logits)
    check_tensor(sample, name, category_axis=True)
    if sample.device != logits.device:
        raise ValueError(f"{name} and logits must be on the same device, got {name} on {sample.device} and "
                         f"logits on {logits.device}; move one, e.g. {name}.to(logits.device)")
    if sample.shape[-1] != logits.shape[-1]:
        raise ValueError(f"{name} and logits need the same number of categories, got "
                         f"{sample.shape[-1]} and {logits.shape[-1]}")
    try:
        torch.broadcast_shapes(sample.shape, logits.shape)
    except RuntimeError:
        raise ValueError(f"{name} and logits must have broadcastable shapes, got {tuple(sample.shape)} and "
                         f"{tuple(logits.shape)}; their batch axes (all but the last) must match or be 1") from None


def _log_temperature(tau: float | torch.Tensor, dtype: torch.dtype) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """``(tau, log tau)``: floats for a float, 0-d tensors of ``dtype`` for a learnable temperature."""
    if isinstance(tau, torch.Tensor):
        tau = tau.to(dtype)
        return tau, tau.log()
    return tau, math.log(tau)


def concrete_log_prob(sample: torch.Tensor, logits: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    r"""Log-density of the Concrete / Gumbel-Softmax distribution, computed in log space.

    For K unmasked categories with probabilities π = softmax(logits) and a point y of the open
    simplex (Jang et al. 2017; Maddison et al. 2017),

        log p(y) = log Γ(K) + (K−1) log τ − K log Σ_i π_i y_i^{−τ} + Σ_i (log π_i − (τ+1) log y_i).

    Masked categories (logit ``-inf``) must have ``y_i = 0`` and are left out (K counts the others),
    so the log-density of a ``gumbel_softmax`` sample drawn with a mask is finite. A sample with an
    exact 0 in an unmasked category (underflow at a low temperature) is refused: draw and score in
    log space instead (:func:`exp_gumbel_softmax`, :func:`exp_concrete_log_prob`).

    Parameters
    ----------
    sample : (..., K) points of the simplex (broadcastable against ``logits``, on its device).
    logits : (..., K) floating point.
    temperature : finite float > 0, or a one-element tensor (learnable if it requires grad).

    Returns
    -------
    The broadcast batch shape ``(...)``; the promoted dtype of the inputs (float64 if either is
    float64; half precision is computed in float32).
    """
    tau, y, x, keep, out_dtype, work_dtype = _density_inputs(sample, logits, temperature, "sample")
    if not torch.isfinite(y).all() or (y < 0).any():
        raise ValueError("sample must be finite and >= 0 (a point of the probability simplex)")
    if (y[~keep] != 0).any():
        raise ValueError("sample puts mass on a masked (-inf) category; such points are outside the support")
    if (y[keep] == 0).any():
        raise ValueError("sample has an exact 0 in an unmasked category (underflow at low temperature); "
                         "draw it in float64 or at a larger temperature, or in log space (exp_gumbel_softmax, "
                         "scored by exp_concrete_log_prob)")
    total = y.sum(-1)
    tol = 8 * y.shape[-1] * torch.finfo(sample.dtype).eps  # the sample's own rounding, not the working dtype's
    if ((total - 1).abs() > tol).any():
        raise ValueError(f"sample must sum to 1 over its last axis (off by up to {(total - 1).abs().max().item():.3g})")
    log_y = torch.log(torch.where(keep, y, torch.ones_like(y)))  # safe: no log 0 in the graph
    # the density of y is that of log y (ExpConcrete) less the log-Jacobian sum_i log y_i
    log_p = _exp_concrete_log_density(log_y, x, keep, tau, work_dtype) - log_y.sum(-1)
    return log_p.to(out_dtype)


def exp_concrete_log_prob(log_sample: torch.Tensor, logits: torch.Tensor,
                          temperature: float | torch.Tensor) -> torch.Tensor:
    r"""Log-density of the ExpConcrete distribution (Maddison et al. 2017), the law of the log
    ``v = log y`` of a Concrete sample y (:func:`exp_gumbel_softmax`), computed in log space.

    For K unmasked categories with probabilities π = softmax(logits),

        log p(v) = log Γ(K) + (K−1) log τ + Σ_i (log π_i − τ v_i) − K log Σ_i exp(log π_i − τ v_i),

    the density of ``torch.distributions.ExpRelaxedCategorical``. It is a density with respect to the
    log-ratio coordinates s_i = v_i − v_K (i < K), which fix a point of the simplex; since the
    Jacobian of s ↦ y is ∏_{i=1}^{K} y_i (all K coordinates),

        exp_concrete_log_prob(log y) = concrete_log_prob(y) + Σ_i log y_i

    wherever both are finite. Unlike :func:`concrete_log_prob` it scores a draw whose y underflowed
    to 0 in some coordinate: its log is still finite.

    Masked categories (logit ``-inf``) must have ``v_i = -inf`` and are left out (K counts the others).

    Parameters
    ----------
    log_sample : (..., K) logs of points of the simplex: finite except on the masked categories, with
        ``logsumexp(log_sample, -1) = 0`` to rounding (broadcastable against ``logits``, on its device).
    logits : (..., K) floating point.
    temperature : finite float > 0, or a one-element tensor (learnable if it requires grad).

    Returns
    -------
    The broadcast batch shape ``(...)``; the promoted dtype of the inputs (float64 if either is
    float64; half precision is computed in float32).
    """
    tau, v, x, keep, out_dtype, work_dtype = _density_inputs(log_sample, logits, temperature, "log_sample")
    if torch.isnan(v).any() or torch.isposinf(v).any():
        raise ValueError("log_sample must be finite, or -inf on a masked category (the log of a point of the simplex)")
    if torch.isfinite(v[~keep]).any():
        raise ValueError("log_sample puts mass on a masked (-inf) category (it must be -inf there); such points "
                         "are outside the support")
    if torch.isneginf(v[keep]).any():
        raise ValueError("log_sample is -inf (the log of 0) in an unmasked category; such points are outside the "
                         "support (exp_gumbel_softmax draws finite logs)")
    v = torch.where(keep, v, torch.zeros_like(v))  # safe: no -inf in the graph
    total = torch.where(keep, v, torch.full_like(v, -math.inf)).logsumexp(-1)
    # a log-sample computed as scores - logsumexp(scores) (ExpRelaxedCategorical.rsample) rounds in
    # proportion to the size of its entries
    tol = 8 * v.shape[-1] * torch.finfo(log_sample.dtype).eps * (1 + v.detach().abs().amax(-1))
    if (total.abs() > tol).any():
        raise ValueError(f"log_sample must have logsumexp 0 over its last axis (the log of a point of the simplex), "
                         f"off by up to {total.abs().max().item():.3g}")
    return _exp_concrete_log_density(v, x, keep, tau, work_dtype).to(out_dtype)


def _density_inputs(values: torch.Tensor, logits: torch.Tensor, temperature: object, name: str
                    ) -> tuple[float | torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype, torch.dtype]:
    """What both density functions do first: check the temperature and the (values, logits) pair, pick
    the output dtype (promoted; half precision computed in float32), broadcast both into the working
    dtype and mark the unmasked categories. Returns ``(tau, values, logits, keep, out_dtype, work_dtype)``."""
    tau = _temperature(temperature, logits)
    _check_pair(values, logits, name)
    out_dtype = torch.promote_types(values.dtype, logits.dtype)
    work_dtype = torch.float32 if out_dtype in HALF_DTYPES else out_dtype
    values, logits = torch.broadcast_tensors(values.to(work_dtype), logits.to(work_dtype))
    return tau, values, logits, ~torch.isneginf(logits), out_dtype, work_dtype


def _exp_concrete_log_density(v: torch.Tensor, x: torch.Tensor, keep: torch.Tensor, tau: float | torch.Tensor,
                              work_dtype: torch.dtype) -> torch.Tensor:
    """The ExpConcrete log-density of checked log-samples ``v`` (0 on masked categories) for logits ``x``:
    the one implementation behind :func:`exp_concrete_log_prob` and :func:`concrete_log_prob`."""
    tau, log_tau = _log_temperature(tau, work_dtype)
    num = keep.sum(-1).to(v.dtype)
    log_pi = torch.where(keep, torch.log_softmax(x, -1), torch.zeros_like(x))
    score = log_pi - tau * v
    lse = torch.where(keep, score, torch.full_like(score, -math.inf)).logsumexp(-1)
    body = torch.where(keep, score, torch.zeros_like(score)).sum(-1)
    return torch.lgamma(num) + (num - 1) * log_tau + body - num * lse


def concrete_total_mass(logits: torch.Tensor, temperature: float, nodes: int = 400) -> float:
    """∫ p(y) dy over the simplex for the Concrete density of :func:`concrete_log_prob` (should be 1).

    The integral is taken in log-ratio coordinates s_i = log(y_i / y_K), i < K, in which the
    integrand p(y(s)) · ∏_i y_i (the Jacobian of s ↦ y is ∏_{i=1}^{K} y_i) is smooth and decays like
    exp(−τ|s|), with a tensor-product Gauss–Legendre rule of ``nodes`` points per axis
    (``scipy.special.roots_legendre``) on the box |s_i| ≤ (max |x_i − x_K| + 40) / τ. All
    ``nodes**(K−1)`` points go through one batched call of :func:`concrete_log_prob`, so K is limited
    to 2 and 3 and ``nodes**(K−1)`` to 10**7 (``ValueError`` otherwise); ``nodes`` is an int >= 1
    (``TypeError`` for a float). Meant for float64 logits without masks.
    """
    tau = check_temperature(temperature)
    check_logits(logits)
    if logits.ndim != 1 or not 2 <= logits.numel() <= 3:
        raise ValueError(f"concrete_total_mass takes logits of shape (K,) with K = 2 or 3, got shape "
                         f"{tuple(logits.shape)}; its grid has nodes**(K-1) points, too many for K > 3")
    if torch.isneginf(logits).any():
        raise ValueError("concrete_total_mass takes unmasked logits; drop the -inf categories instead")
    k = logits.numel()
    nodes = check_int(nodes, "nodes", 1)
    if nodes ** (k - 1) > _MAX_GRID_POINTS:
        raise ValueError(f"nodes = {nodes} gives nodes**(K-1) = {nodes ** (k - 1):.3g} grid points for K = {k}, "
                         f"more than {_MAX_GRID_POINTS:.0e}; lower nodes (the default 400 is plenty)")
    x = logits.detach().double().cpu()
    half_width = ((x[:-1] - x[-1]).abs().max().item() + 40.0) / tau
    t, w = special.roots_legendre(nodes)
    t = torch.from_numpy(t * half_width)
    w = torch.from_numpy(w * half_width)
    grids = torch.meshgrid(*([t] * (k - 1)), indexing="ij")
    weights = torch.ones(()).double()
    for axis_weights in torch.meshgrid(*([w] * (k - 1)), indexing="ij"):
        weights = weights * axis_weights
    s = torch.stack([*grids, torch.zeros_like(grids[0])], -1).reshape(-1, k)
    log_y = torch.log_softmax(s, -1)
    inside = torch.isfinite(log_y).all(-1) & (log_y.exp() > 0).all(-1)  # drop underflowed far tails
    log_p = concrete_log_prob(log_y[inside].exp(), x, tau)
    return float((weights.reshape(-1)[inside] * torch.exp(log_p + log_y[inside].sum(-1))).sum())

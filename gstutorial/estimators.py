r"""Chapter 9 — gradient estimators for categorical variables, behind one interface.

The target is the gradient of :math:`L(\theta) = \mathbb{E}_{z \sim \mathrm{Cat}(\mathrm{softmax}\,\theta)}[f(z)]`
with respect to the logits :math:`\theta` (shape ``(..., K)``, category axis last), where ``z`` is a
one-hot vector. Two kinds of estimator exist:

* **pathwise** (straight-through and Gumbel estimators): a *sample* function returns a ``(..., K)``
  tensor whose backward pass produces the estimator's gradient; the caller feeds it to ``f`` and
  back-propagates as usual. Samplers: :func:`straight_through_sample`, :func:`gumbel_softmax_sample`,
  :func:`st_gumbel_softmax_sample`, :func:`gumbel_rao_sample`, :func:`reinmax_sample`.
* **score function** (REINFORCE): the gradient needs the *value* of ``f`` at the sample, so
  :func:`reinforce` returns a *surrogate* whose value is the Monte Carlo estimate of :math:`L` and whose
  gradient is the estimator.

:data:`ESTIMATORS` puts all of them behind one call,
``ESTIMATORS[name].surrogate(logits, f, temperature=..., num_samples=S, k=..., generator=...)``, which
returns a tensor whose gradient is the average of ``S`` single-sample estimates and whose value is the
mean of ``f`` over the ``S`` samples: an estimate of :math:`L` for every estimator whose forward pass is
the one-hot sample, but for ``"gumbel_softmax"`` an estimate of the relaxed objective
:math:`\mathbb{E}[f(y)]` (``f`` at the relaxed point ``y``), which differs from :math:`L` when ``f`` is
not linear. ``f`` maps samples of shape ``(S, *logits.shape)`` to values of shape
``(S, *batch)``, where ``batch`` is a prefix of ``logits.shape[:-1]``: trailing axes that ``f`` reduces
are independent categorical variables of one joint sample (their log-probabilities are summed).

All samplers reuse :mod:`gstutorial.gumbel` (Gumbel noise, Gumbel-Max, Gumbel-Softmax) and
:func:`gstutorial.straight_through.straight_through` (the detach identity); none is re-implemented.
Logits must be finite (no ``-inf`` masks); half precision is computed in float32 and cast back.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gstutorial.checks import (
    check_choice,
    check_int,
    check_temperature,
    check_tensor,
    value_checks_enabled,
)
from gstutorial.gumbel import check_logits, gumbel_max, gumbel_noise, gumbel_softmax
from gstutorial.gumbel import one_hot_sample as _one_hot
from gstutorial.primitives import cast_like, softmax_last, straight_through, upcast_half

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "LowTemperatureWarning",
    "check_estimator_logits",
    "conditional_gumbel",
    "get_estimator",
    "gumbel_rao_sample",
    "gumbel_softmax_sample",
    "one_hot_sample",
    "reinforce",
    "reinmax_sample",
    "st_gumbel_softmax_sample",
    "straight_through_sample",
]

Function = Callable[[torch.Tensor], torch.Tensor]


class LowTemperatureWarning(UserWarning):
    """An estimator used below the temperatures its authors recommend (ReinMax at τ < 1)."""


# --------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------

def check_estimator_logits(logits: torch.Tensor) -> torch.Tensor:
    """Validate logits for the estimators: a floating-point tensor with a non-empty last (category)
    axis and only finite entries. Returns ``logits`` unchanged."""
    check_tensor(logits, "logits", category_axis=True)  # type and shape: no pass over the data
    if not value_checks_enabled() or math.isfinite(float(logits.detach().sum())):  # NaN/±inf: sum not finite
        return logits
    check_logits(logits)  # explains NaN, +inf and all-masked rows
    if torch.isneginf(logits).any():
        raise ValueError("logits contain -inf; the gradient estimators need finite logits (a masked "
                         "category has no gradient) — use a large negative finite value such as -30 instead")
    return logits  # finite logits whose sum overflowed


# --------------------------------------------------------------------------------------------------
# Samplers (pathwise estimators)
# --------------------------------------------------------------------------------------------------

def one_hot_sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """An exact one-hot sample of ``Categorical(softmax(logits))`` (Gumbel-Max), no gradient: the
    package's one sampler, :func:`gstutorial.gumbel.one_hot_sample`, after the estimators' check
    that the logits are finite.

    Returns a ``(..., K)`` tensor of zeros and ones with the dtype and device of ``logits``.
    """
    return _one_hot(check_estimator_logits(logits), generator)


def _given_or_drawn(x: torch.Tensor, sample: torch.Tensor | None,
                    generator: torch.Generator | None) -> torch.Tensor:
    """The one-hot ``sample`` if one is given (checked), else a fresh draw from ``softmax(x)``."""
    if sample is None:
        return one_hot_sample(x, generator)
    if check_tensor(sample, "sample", floating=False).shape != x.shape:
        raise ValueError(f"sample must be a one-hot tensor of the logits' shape {tuple(x.shape)}, got "
                         f"{tuple(sample.shape)}")
    if not (((sample == 0) | (sample == 1)).all() and (sample.sum(-1) == 1).all()):
        raise ValueError("sample must be one-hot along the last axis (zeros and a single one)")
    return sample.to(dtype=x.dtype, device=x.device).detach()


def straight_through_sample(logits: torch.Tensor, temperature: float = 1.0,
                            generator: torch.Generator | None = None,
                            sample: torch.Tensor | None = None) -> torch.Tensor:
    r"""Straight-through (Bengio et al. 2013): forward a one-hot sample, backward the softmax.

    .. math:: D \sim \mathrm{Cat}(\mathrm{softmax}\,\theta), \qquad
              \hat g_{\mathrm{ST}} = \Big(\frac{\partial\, \mathrm{softmax}(\theta/\tau)}{\partial \theta}\Big)^{\!\top} \nabla f(D).

    The sample ``D`` is drawn from the untempered distribution; ``temperature`` only scales the softmax
    whose Jacobian replaces the (zero) derivative of the sampling step (τ = 1: the plain estimator).
    A given one-hot ``sample`` is used as ``D`` instead of a draw: the estimate is a function of ``D``
    alone, so weighting it by the probability of each ``D`` gives its exact expectation.

    Returns
    -------
    (..., K) tensor whose value is exactly one-hot and whose gradient is that of ``softmax(logits / τ)``.
    """
    tau = check_temperature(temperature)
    x = upcast_half(check_estimator_logits(logits))
    hard = _given_or_drawn(x, sample, generator)
    return cast_like(straight_through(softmax_last(x / tau), hard), logits)


def gumbel_softmax_sample(logits: torch.Tensor, temperature: float,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Gumbel-Softmax / Concrete (Jang et al. 2017; Maddison et al. 2017): the relaxed sample
    :math:`y = \mathrm{softmax}((\theta + g)/\tau)`, :math:`g` standard Gumbel, differentiated exactly.
    ``f`` is evaluated at the relaxed point ``y``, not at a one-hot vector. Wraps
    :func:`gstutorial.gumbel.gumbel_softmax`.
    """
    check_estimator_logits(logits)
    return gumbel_softmax(logits, temperature, hard=False, generator=generator)


def st_gumbel_softmax_sample(logits: torch.Tensor, temperature: float,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Straight-through Gumbel-Softmax (Jang et al. 2017): forward :math:`D = \mathrm{onehot}(\arg\max(\theta+g))`,
    backward the gradient of :math:`\mathrm{softmax}((\theta + g)/\tau)` for the *same* ``g``. Wraps
    :func:`gstutorial.gumbel.gumbel_softmax` with ``hard=True``."""
    check_estimator_logits(logits)
    return gumbel_softmax(logits, temperature, hard=True, generator=generator)


def conditional_gumbel(logits: torch.Tensor, index: torch.Tensor, k: int = 1,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    r"""``k`` draws of the perturbed logits :math:`\theta + g` conditioned on :math:`\arg\max(\theta + g) = D`.

    The truncated-Gumbel construction (Maddison et al. 2014; Paulus et al. 2021): the maximum
    :math:`M = \max_j(\theta_j + g_j)` is Gumbel with location :math:`\log \sum_j e^{\theta_j}` and
    independent of the argmax; given :math:`M`, each other coordinate is a Gumbel(:math:`\theta_i`)
    variable truncated to lie below :math:`M`:

    .. math:: M = \mathrm{logsumexp}(\theta) + g_D, \qquad
              x_i = -\log\big(e^{-(\theta_i + g_i)} + e^{-M}\big) \quad (i \neq D),

    with fresh standard Gumbel :math:`g`. Computed without gradient.

    Parameters
    ----------
    logits : (..., K) finite logits.
    index : (...) LongTensor, the conditioning category ``D``.
    k : number of conditional draws (>= 1).
    generator : optional ``torch.Generator`` on the logits' device.

    Returns
    -------
    (k, ..., K) tensor of perturbed logits ``x`` with ``argmax(x) = index`` (up to float ties).
    """
    check_estimator_logits(logits)
    k = check_int(k, "k", 1)
    if check_tensor(index, "index", floating=False).dtype != torch.long:
        raise TypeError(f"index must be a LongTensor of category indices, got {index.dtype}")
    if index.shape != logits.shape[:-1]:
        raise ValueError(f"index must have the batch shape of logits, {tuple(logits.shape[:-1])}, got "
                         f"{tuple(index.shape)}")
    with torch.no_grad():
        x = upcast_half(logits)
        g = gumbel_noise(x.expand(k, *x.shape), generator)
        where = index.unsqueeze(-1).expand(k, *index.shape, 1)
        top = torch.logsumexp(x, -1, keepdim=True) + g.gather(-1, where)  # (k, ..., 1)
        below = -torch.logaddexp(-(x + g), -top)
        return cast_like(below.scatter_(-1, where, top), logits)


def gumbel_rao_sample(logits: torch.Tensor, temperature: float, k: int = 10,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Gumbel-Rao (Paulus et al. 2021): ST-Gumbel-Softmax with its backward pass Rao-Blackwellised.

    .. math:: D = \mathrm{onehot}\big(\arg\max(\theta + g)\big), \qquad
              \hat g_{\mathrm{GR}} = \Big(\frac{\partial}{\partial\theta}\,\frac1k\sum_{j=1}^k
              \mathrm{softmax}\big((\theta + g^{(j)})/\tau\big)\Big)^{\!\top} \nabla f(D),
              \quad g^{(j)} \sim g \mid \arg\max(\theta + g) = D.

    The forward value is the one-hot ``D``; the backward pass averages the softmax Jacobian over ``k``
    conditional Gumbel draws (:func:`conditional_gumbel`). This is a Monte Carlo version of
    :math:`\mathbb{E}[\hat g_{\mathrm{ST\text{-}GS}} \mid D]`: the same mean as ST-Gumbel-Softmax and no
    more variance, for ``k`` extra softmaxes but a single evaluation of ``f``. ``k = 1`` has exactly
    the distribution of ST-Gumbel-Softmax.

    Returns
    -------
    (..., K) tensor, exactly one-hot forward.
    """
    tau = check_temperature(temperature)
    k = check_int(k, "k", 1)
    x = upcast_half(check_estimator_logits(logits))
    index = gumbel_max(x, generator)
    hard = torch.zeros_like(x, memory_format=torch.contiguous_format).scatter_(-1, index.unsqueeze(-1), 1.0)
    noise = conditional_gumbel(x, index, k, generator) - x.detach()  # g^(j), shape (k, ..., K)
    soft = softmax_last((x + noise) / tau).mean(0)
    return cast_like(straight_through(soft, hard), logits)


def reinmax_sample(logits: torch.Tensor, temperature: float = 1.0,
                   generator: torch.Generator | None = None, sample: torch.Tensor | None = None) -> torch.Tensor:
    r"""ReinMax (Liu et al. 2023): a second-order (Heun's method) correction of straight-through.

    With :math:`\pi_0 = \mathrm{softmax}(\theta)`, :math:`D \sim \mathrm{Cat}(\pi_0)` and
    :math:`\pi_1 = \tfrac12\big(\mathrm{softmax}(\theta/\tau) + D\big)`, the backward pass is

    .. math:: \hat g_{\mathrm{ReinMax}} = 2\, J(\pi_1)^{\top} \nabla f(D) - \tfrac12\, J(\pi_0)^{\top} \nabla f(D),
              \qquad J(\pi) = \mathrm{diag}(\pi) - \pi\pi^{\top},

    where :math:`J(\pi)` is the softmax Jacobian evaluated at :math:`\pi`. Straight-through approximates
    :math:`f(e_i) - f(e_j)` by the forward-Euler step :math:`\nabla f(e_j)^\top (e_i - e_j)`; ReinMax uses
    the trapezoid (Heun) step :math:`\tfrac12(\nabla f(e_i) + \nabla f(e_j))^\top (e_i - e_j)`, exact for
    quadratic ``f``. The differences run along one variable at a time, the others at their draws, so
    at τ = 1 the estimator is unbiased when ``f`` is quadratic in each one-hot variable separately
    (every quadratic and every multilinear ``f`` among them). The forward value is the one-hot ``D``.

    The authors recommend τ ≥ 1 (unlike Gumbel-Softmax, which prefers τ < 1), and their reference
    implementation refuses smaller values; the formula itself holds for any τ > 0, so a smaller
    temperature is computed and issues a :class:`LowTemperatureWarning` naming the value (chapter 9
    measures that regime). A given one-hot ``sample`` is used as ``D`` instead of a draw, as in
    :func:`straight_through_sample`.

    Returns
    -------
    (..., K) tensor, exactly one-hot forward.
    """
    tau = check_temperature(temperature)
    if tau < 1.0:
        warnings.warn(f"ReinMax at temperature {tau:g} < 1: its authors recommend tau >= 1 (Gumbel-Softmax "
                      "prefers tau < 1); the estimate is computed, but this regime is outside their advice",
                      LowTemperatureWarning, stacklevel=2)
    x = upcast_half(check_estimator_logits(logits))
    hard = _given_or_drawn(x, sample, generator)
    pi0 = softmax_last(x)
    log_pi1 = torch.logaddexp(softmax_last(x / tau, log=True), hard.log()) - math.log(2.0)  # log of (softmax(x/τ) + D)/2
    pi1 = softmax_last(straight_through(x, log_pi1))  # value π1, Jacobian J(π1) with respect to x
    return cast_like(straight_through(2.0 * pi1 - 0.5 * pi0, hard), logits)


# --------------------------------------------------------------------------------------------------
# Score function (REINFORCE)
# --------------------------------------------------------------------------------------------------

def _reduced_axes(values: object, variables_shape: torch.Size) -> tuple[int, ...]:
    """Check ``f``'s output against the samples' shape without the category axis, ``(S, *logits.shape[:-1])``,
    and return the trailing axes that ``f`` reduced (independent variables of one joint sample)."""
    check_tensor(values, "f's value", floating=False)
    if values.ndim < 1 or tuple(values.shape) != tuple(variables_shape[:values.ndim]):
        raise ValueError(f"f must map samples of shape (S, *logits.shape) to values of shape (S, *batch) "
                         f"with batch a prefix of logits.shape[:-1] = {tuple(variables_shape[1:])}; got "
                         f"values of shape {tuple(values.shape)}")
    return tuple(range(values.ndim, len(variables_shape)))


def reinforce(logits: torch.Tensor, f: Function, num_samples: int = 1, baseline: str | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    r"""REINFORCE / score-function surrogate (Williams 1992), optionally with a leave-one-out baseline.

    With :math:`S` samples :math:`z_s \sim q_\theta` the estimator is

    .. math:: \hat g = \frac1S \sum_{s=1}^S \big(f(z_s) - b_s\big)\, \nabla_\theta \log q_\theta(z_s),
              \qquad b_s = 0 \ \text{or} \ b_s = \frac{1}{S-1}\sum_{j \neq s} f(z_j) \ \text{(leave-one-out)}.

    Both are unbiased: :math:`b_s` does not depend on :math:`z_s`, and the score has mean zero
    (Kool et al. 2019 for the leave-one-out baseline). The returned surrogate
    :math:`\frac1S\sum_s f(z_s) + (f(z_s) - b_s)(\log q_\theta(z_s) - \bot\log q_\theta(z_s))`
    (:math:`\bot` = stop-gradient) has the *value* of the Monte Carlo estimate of :math:`L` and the
    *gradient* :math:`\hat g` with respect to the logits; gradients of ``f`` with respect to other
    parameters (a decoder) pass through unchanged.

    Parameters
    ----------
    logits : (..., K) finite logits.
    f : callable mapping one-hot samples ``(S, *logits.shape)`` to values ``(S, *batch)``; trailing axes
        of ``logits.shape[:-1]`` that ``f`` reduces are independent variables of one joint sample.
    num_samples : S >= 1 (>= 2 with the leave-one-out baseline).
    baseline : ``None`` or ``"loo"``.
    generator : optional ``torch.Generator`` on the logits' device.

    Returns
    -------
    (*batch) tensor.
    """
    x = upcast_half(check_estimator_logits(logits))
    num_samples = check_int(num_samples, "num_samples", 1)
    check_choice(baseline, "baseline", (None, "loo"))
    if baseline == "loo" and num_samples < 2:
        raise ValueError("num_samples must be >= 2 with the leave-one-out baseline (each sample's baseline is "
                         "the mean of the others)")
    expanded = x.expand(num_samples, *x.shape)
    index = gumbel_max(expanded, generator)
    z = torch.zeros_like(expanded, memory_format=torch.contiguous_format).scatter_(-1, index.unsqueeze(-1), 1.0)
    values = f(z.to(logits.dtype))
    log_q = softmax_last(expanded, log=True).gather(-1, index.unsqueeze(-1)).squeeze(-1)  # (S, *logits.shape[:-1])
    axes = _reduced_axes(values, log_q.shape)
    if axes:
        log_q = log_q.sum(axes)  # independent variables: the joint log-probability is the sum
    weight = values.detach()
    if baseline == "loo":
        weight = weight - (weight.sum(0, keepdim=True) - weight) / (num_samples - 1)
    surrogate = values + weight * (log_q - log_q.detach())
    return surrogate.mean(0)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

Sampler = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Estimator:
    """One gradient estimator behind the common interface.

    Attributes
    ----------
    name : registry key.
    label : display name.
    kind : ``"pathwise"`` (has a :attr:`sampler`) or ``"score"`` (surrogate only).
    sampler : for pathwise estimators, the function ``(logits, temperature[, k], generator=...)``
        behind :meth:`sample`; ``None`` for score-function estimators.
    baseline : for score-function estimators, ``None`` (plain REINFORCE) or ``"loo"`` (leave-one-out).
    unbiased : True if the estimator is unbiased for every ``f``.
    uses_temperature : whether ``temperature`` changes the estimator.
    min_temperature : smallest temperature its authors recommend (0: any τ > 0); below it the
        sampler warns (:class:`LowTemperatureWarning`) but still computes the estimate.
    uses_k : whether the number of conditional Gumbel draws ``k`` is used.
    reference : ``references.bib`` key.
    equation : the estimator in one line of LaTeX.
    """

    name: str
    label: str
    kind: str
    unbiased: bool
    uses_temperature: bool
    reference: str
    equation: str
    sampler: Sampler | None = field(default=None, repr=False)
    baseline: str | None = None
    min_temperature: float = 0.0
    uses_k: bool = False

    def sample(self, logits: torch.Tensor, temperature: float = 1.0, k: int = 1,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """A ``(..., K)`` sample whose backward pass is this estimator (pathwise estimators only).
        ``k`` is accepted for a uniform call; an estimator that does not use it ignores it unchecked."""
        if self.sampler is None:
            raise ValueError(f"{self.name} is a score-function estimator: it needs the values of f, so it "
                             "has no sample with a useful gradient; call .surrogate(logits, f, ...) instead")
        if self.uses_k:
            return self.sampler(logits, temperature, k=k, generator=generator)
        return self.sampler(logits, temperature, generator=generator)

    def surrogate(self, logits: torch.Tensor, f: Function, *, temperature: float = 1.0,
                  num_samples: int = 1, k: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """A tensor of shape ``(*batch)`` whose value is the mean of ``f`` over ``num_samples`` samples
        (an estimate of :math:`\\mathbb{E}[f(z)]`, or for ``"gumbel_softmax"`` of the relaxed
        :math:`\\mathbb{E}[f(y)]`) and whose gradient with respect to ``logits`` is this estimator,
        averaged over the samples. See the module docstring for the shape contract of ``f``.
        ``temperature`` and ``k`` are accepted for a uniform call; an estimator that does not use one
        (:attr:`uses_temperature`, :attr:`uses_k`) ignores it unchecked."""
        if self.kind == "score":
            return reinforce(logits, f, num_samples, self.baseline, generator)
        num_samples = check_int(num_samples, "num_samples", 1)
        check_estimator_logits(logits)
        z = self.sample(logits.expand(num_samples, *logits.shape), temperature, k, generator)
        values = f(z)
        _reduced_axes(values, z.shape[:-1])
        return values.mean(0)


ESTIMATORS: dict[str, Estimator] = {
    "reinforce": Estimator(
        "reinforce", "REINFORCE", "score", True, False, "williams1992simple",
        r"\frac1S\sum_s f(z_s)\,\nabla_\theta \log q_\theta(z_s)"),
    "reinforce_loo": Estimator(
        "reinforce_loo", "REINFORCE + LOO baseline", "score", True, False, "kool2019buy",
        r"\frac1S\sum_s \big(f(z_s) - \frac{1}{S-1}\sum_{j\ne s} f(z_j)\big)\nabla_\theta \log q_\theta(z_s)",
        baseline="loo"),
    "straight_through": Estimator(
        "straight_through", "Straight-through", "pathwise", False, True, "bengio2013estimating",
        r"\tfrac1\tau\, J\big(\mathrm{softmax}(\theta/\tau)\big)\, \nabla f(D)", straight_through_sample),
    "gumbel_softmax": Estimator(
        "gumbel_softmax", "Gumbel-Softmax", "pathwise", False, True, "jang2017categorical",
        r"\nabla_\theta f\big(\mathrm{softmax}((\theta + g)/\tau)\big)", gumbel_softmax_sample),
    "st_gumbel_softmax": Estimator(
        "st_gumbel_softmax", "ST-Gumbel-Softmax", "pathwise", False, True, "jang2017categorical",
        r"\tfrac1\tau J\big(\mathrm{softmax}((\theta+g)/\tau)\big)\, \nabla f(D)", st_gumbel_softmax_sample),
    "gumbel_rao": Estimator(
        "gumbel_rao", "Gumbel-Rao", "pathwise", False, True, "paulus2021raoblackwellizing",
        r"\frac1k\sum_{j=1}^k \tfrac1\tau J\big(\mathrm{softmax}((\theta+g^{(j)})/\tau)\big)\, \nabla f(D)",
        gumbel_rao_sample, uses_k=True),
    "reinmax": Estimator(
        "reinmax", "ReinMax", "pathwise", False, True, "liu2023bridging",
        r"\big(2J(\pi_1) - \tfrac12 J(\pi_0)\big)^\top \nabla f(D)", reinmax_sample, min_temperature=1.0),
}
"""All estimators by name, in the order the chapter presents them."""


def get_estimator(name: str) -> Estimator:
    """Look up an estimator in :data:`ESTIMATORS` by name."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {list(ESTIMATORS)}")
    return ESTIMATORS[name]

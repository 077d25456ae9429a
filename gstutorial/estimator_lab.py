r"""Chapter 9 — an exact-gradient lab for the estimators of :mod:`gstutorial.estimators`.

A :class:`CategoricalProblem` has ``N`` independent categorical variables with ``K`` classes each,
logits :math:`\theta \in \mathbb{R}^{N \times K}`, and an objective

.. math:: L(\theta) = \mathbb{E}_{z_n \sim \mathrm{Cat}(\mathrm{softmax}\,\theta_n)}\big[f(z_1, \dots, z_N)\big],

small enough (``K**N`` joint states) to compute :math:`L` and its gradient exactly by enumeration:
autograd through :math:`\sum_z p_\theta(z) f(z)`. Three of the chapter's problems are functions of
one projection, :math:`f(z) = h(\sum_n \langle v_n, z_n \rangle)` (:func:`make_problem`); the fourth,
:func:`make_mlp_problem`, is a small fixed random network of all the one-hot vectors, whose gradient
changes direction from one sample to the next. ``f`` is also defined on relaxed (non-one-hot) points,
which the Gumbel-Softmax estimator evaluates; :func:`multilinear_extension` replaces a problem's ``f``
off the one-hot points by the multilinear one with the same values on them (same :math:`L`, same
gradient).

:func:`gradient_estimates` draws ``replicates`` independent estimates of :math:`\nabla_\theta L` in
one batched call (one copy of :math:`\theta` per replicate, one backward pass);
:func:`gradient_stats` turns them into bias, variance and cosine similarity against the exact
gradient; :func:`sweep` loops over estimators, temperatures and sample counts.
"""

from __future__ import annotations

import itertools
import math
import string
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from gstutorial import estimators as E
from gstutorial.checks import check_choice, check_int, check_tensor
from gstutorial.estimators import ESTIMATORS, Estimator, get_estimator

__all__ = [
    "PROBLEMS",
    "CategoricalProblem",
    "GradientStats",
    "exact_expected_gradient",
    "get_problem",
    "gradient_estimates",
    "gradient_stats",
    "make_mlp_problem",
    "make_problem",
    "multilinear_extension",
    "sweep",
]


@dataclass(frozen=True)
class CategoricalProblem:
    """An enumerable objective over ``N`` independent categorical variables with ``K`` classes.

    ``f`` is given either as ``values`` and ``h`` (a function of one projection,
    :math:`f(z) = h(\\sum_n \\langle v_n, z_n\\rangle)`) or as ``function``, any map of the samples.

    Attributes
    ----------
    name : str
    theta : (N, K) floating-point logits at which gradients are measured (float64 in the book's
        problems; results follow this dtype).
    values : (N, K) floating point, the class values :math:`v_n`; ``None`` with ``function``.
    h : callable, elementwise, applied to :math:`s = \\sum_n \\langle v_n, z_n\\rangle`; ``None`` with
        ``function``.
    description : one line, for tables.
    function : callable mapping samples ``(..., N, K)`` (one-hot or relaxed) to values ``(...)``;
        ``None`` with ``values`` and ``h``.
    """

    name: str
    theta: torch.Tensor
    values: torch.Tensor | None = None
    h: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    description: str = ""
    function: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.function is None) == (self.values is None or self.h is None) or (
                self.function is not None and (self.values is not None or self.h is not None)):
            raise ValueError("give f either as values and h (f = h(sum_n <v_n, z_n>)) or as function, "
                             "not both")
        if self.function is not None and not callable(self.function):
            raise TypeError(f"function must be callable, got {type(self.function).__name__}")
        tensors = (("theta", self.theta),) if self.values is None else (("theta", self.theta), ("values", self.values))
        for label, t in tensors:
            if check_tensor(t, label).ndim != 2:
                raise ValueError(f"{label} must have shape (N, K), got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise ValueError(f"{label} must be finite")
        if self.values is not None and self.theta.shape != self.values.shape:
            raise ValueError(f"theta {tuple(self.theta.shape)} and values {tuple(self.values.shape)} "
                             "must have the same shape (N, K)")
        if self.num_categories ** self.num_vars > 1_000_000:
            raise ValueError("K**N > 10**6 joint states: too many to enumerate; use fewer variables")

    @property
    def num_vars(self) -> int:
        """N, the number of independent categorical variables."""
        return self.theta.shape[0]

    @property
    def num_categories(self) -> int:
        """K, the classes of each variable."""
        return self.theta.shape[1]

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """The objective at samples ``z`` of shape ``(..., N, K)`` (one-hot or relaxed): shape ``(...)``."""
        if z.shape[-2:] != self.theta.shape:
            raise ValueError(f"z must end in the problem's shape {tuple(self.theta.shape)}, got {tuple(z.shape)}")
        if self.function is not None:
            return self.function(z)
        return self.h((z * self.values.to(z.dtype)).sum((-2, -1)))

    def states(self) -> torch.Tensor:
        """All ``K**N`` joint one-hot states, shape ``(K**N, N, K)``, float64."""
        eye = torch.eye(self.num_categories, dtype=torch.float64)
        index = torch.tensor(list(itertools.product(range(self.num_categories), repeat=self.num_vars)))
        return eye[index]

    def exact_value(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`L(\\theta) = \\sum_z p_\\theta(z) f(z)` by enumeration (differentiable in ``theta``)."""
        theta = self.theta if theta is None else theta
        states = self.states().to(theta.dtype)
        log_p = (states * theta.log_softmax(-1)).sum((-2, -1))  # independent variables: sum over n
        return (log_p.exp() * self.f(states)).sum()

    def exact_gradient(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`\\nabla_\\theta L` by autograd through :meth:`exact_value`; shape ``(N, K)``."""
        theta = (self.theta if theta is None else theta).detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.exact_value(theta), theta)
        return grad


_THETA = [[1.0, 0.0, -0.5, -1.0], [0.5, -0.5, 0.2, 0.0], [-1.0, 0.3, 0.8, -0.2]]
_VALUES = [[0.0, 0.4, 0.8, 1.2], [0.9, 0.1, 0.5, 0.3], [0.2, 1.0, 0.0, 0.6]]
_CENTER = 1.5


def _linear(s: torch.Tensor) -> torch.Tensor:
    return s


def _quadratic(s: torch.Tensor) -> torch.Tensor:
    return (s - _CENTER) ** 2


def _sigmoid(s: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(6.0 * (s - _CENTER))


_SHAPES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "linear": (_linear, "f = s"),
    "quadratic": (_quadratic, "f = (s - 1.5)^2"),
    "sigmoid": (_sigmoid, "f = sigmoid(6 (s - 1.5))"),
}


def make_problem(shape: str = "sigmoid", num_vars: int = 3, num_categories: int = 4) -> CategoricalProblem:
    """One of the chapter's problems: :math:`f = h(s)`, :math:`s = \\sum_n \\langle v_n, z_n\\rangle`, with

    * ``"linear"``: :math:`h(s) = s` (straight-through at τ = 1 is exact and deterministic),
    * ``"quadratic"``: :math:`h(s) = (s - 1.5)^2` (ReinMax at τ = 1 is unbiased),
    * ``"sigmoid"``: :math:`h(s) = \\sigma(6(s - 1.5))` (a smooth threshold: every pathwise estimator is biased).

    Up to 3 variables and 4 classes use the fixed logits and values above; larger problems cycle them.
    ``num_vars`` is an int in [1, 8] and ``num_categories`` an int in [2, 16].
    """
    check_choice(shape, "shape", tuple(_SHAPES))
    num_vars, num_categories = check_int(num_vars, "num_vars", 1), check_int(num_categories, "num_categories", 2)
    for name, value, largest in (("num_vars", num_vars, 8), ("num_categories", num_categories, 16)):
        if value > largest:
            raise ValueError(f"{name} must be <= {largest} (the K**N joint states are enumerated), got {value}")
    rows = [[_THETA[n % 3][k % 4] + 0.1 * (k // 4) for k in range(num_categories)] for n in range(num_vars)]
    vals = [[_VALUES[n % 3][k % 4] for k in range(num_categories)] for n in range(num_vars)]
    h, text = _SHAPES[shape]
    return CategoricalProblem(f"{shape}-{num_vars}x{num_categories}", torch.tensor(rows, dtype=torch.float64),
                              torch.tensor(vals, dtype=torch.float64), h, text)


def _mlp(z: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """:math:`w_2^\\top \\tanh(W_1\\,\\mathrm{vec}(z) + b_1)` for samples ``z`` of shape ``(..., N, K)``."""
    hidden = torch.tanh(z.flatten(-2) @ w1.to(z.dtype).T + b1.to(z.dtype))
    return hidden @ w2.to(z.dtype)


def make_mlp_problem(hidden: int = 8, seed: int = 0, num_vars: int = 3, num_categories: int = 4) -> CategoricalProblem:
    """A problem that is not a function of one projection: a small fixed random network of the one-hots,

    .. math:: f(z) = w_2^\\top \\tanh\\big(W_1\\, \\mathrm{vec}(z_1, \\dots, z_N) + b_1\\big),

    with :math:`W_1` (``hidden`` × NK), :math:`b_1` and :math:`w_2` drawn once, from a CPU generator
    seeded with ``seed``, with standard normal entries (:math:`w_2` divided by :math:`\\sqrt{\\text{hidden}}`).
    Its gradient :math:`\\nabla f(D)` changes direction with the sample ``D``, as a decoder's does; the
    logits are those of :func:`make_problem` with the same ``num_vars`` and ``num_categories``.
    """
    hidden, seed = check_int(hidden, "hidden", 1), check_int(seed, "seed", 0)
    theta = make_problem("linear", num_vars, num_categories).theta
    g = torch.Generator().manual_seed(seed)
    inputs = theta.numel()
    w1 = torch.randn(hidden, inputs, generator=g, dtype=torch.float64)
    b1 = torch.randn(hidden, generator=g, dtype=torch.float64)
    w2 = torch.randn(hidden, generator=g, dtype=torch.float64) / math.sqrt(hidden)
    return CategoricalProblem(f"mlp-{theta.shape[0]}x{theta.shape[1]}", theta,
                              description=f"f = w2 . tanh(W1 z + b1), {hidden} units",
                              function=lambda z: _mlp(z, w1, b1, w2))


def _contract(table: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum_{i_1 \\dots i_N} T_{i_1 \\dots i_N} \\prod_n z_{n, i_n}` for ``z`` of shape ``(..., N, K)``."""
    letters = string.ascii_letters[:z.shape[-2]]  # N <= 19: K**N <= 10**6 with K >= 2
    spec = letters + "," + ",".join(f"...{c}" for c in letters) + "->..."
    return torch.einsum(spec, table, *z.unbind(-2))


def multilinear_extension(problem: CategoricalProblem) -> CategoricalProblem:
    r"""The problem with ``f`` replaced by its multilinear extension: the function affine in each
    :math:`z_n` separately that agrees with ``problem.f`` on every joint one-hot state,

    .. math:: \tilde f(z) = \sum_{i_1, \dots, i_N} f(e_{i_1}, \dots, e_{i_N}) \prod_{n=1}^N z_{n, i_n}.

    :math:`L` and its exact gradient are unchanged (they only see the one-hot states); the
    estimators that evaluate :math:`\nabla f` (straight-through, ReinMax, the Gumbel estimators) see a
    different function off those states. At τ = 1 straight-through is unbiased on the result.
    """
    if not isinstance(problem, CategoricalProblem):
        raise TypeError(f"problem must be a CategoricalProblem, got {type(problem).__name__}")
    n, k = problem.num_vars, problem.num_categories
    table = problem.f(problem.states().to(problem.theta.dtype)).detach().reshape((k,) * n)
    return CategoricalProblem(f"{problem.name}-multilinear", problem.theta,
                              description=f"multilinear extension of {problem.name}",
                              function=lambda z: _contract(table.to(z.dtype), z))


PROBLEMS: dict[str, CategoricalProblem] = {**{shape: make_problem(shape) for shape in _SHAPES},
                                           "mlp": make_mlp_problem()}
"""The chapter's four 3×4 problems (64 joint states): three functions of one projection, by shape
(``"linear"``, ``"quadratic"``, ``"sigmoid"``), and the random network ``"mlp"``."""


def get_problem(name: str) -> CategoricalProblem:
    """Look up a problem in :data:`PROBLEMS`."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; choose one of {sorted(PROBLEMS)}")
    return PROBLEMS[name]


def _as_estimator(estimator: str | Estimator) -> Estimator:
    if not isinstance(estimator, str | Estimator):
        raise TypeError(f"estimator must be a name in ESTIMATORS or an Estimator, got {type(estimator).__name__}")
    return get_estimator(estimator) if isinstance(estimator, str) else estimator


def gradient_estimates(problem: CategoricalProblem, estimator: str | Estimator, *, temperature: float = 1.0,
                       num_samples: int = 1, k: int = 1, replicates: int = 1000,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``replicates`` independent estimates of :math:`\\nabla_\\theta L`, each from ``num_samples``
    samples, drawn in one batched call. ``replicates`` is an int >= 2 (a variance needs two); the
    other arguments are those of :meth:`Estimator.surrogate`.

    Returns
    -------
    (replicates, N, K) tensor in ``problem.theta``'s dtype.
    """
    estimator = _as_estimator(estimator)
    replicates = check_int(replicates, "replicates", 2)
    theta = problem.theta.expand(replicates, *problem.theta.shape).clone().requires_grad_(True)
    surrogate = estimator.surrogate(theta, problem.f, temperature=temperature, num_samples=num_samples, k=k,
                                    generator=generator)
    if surrogate.shape != (replicates,):
        raise ValueError(f"problem.h must act elementwise: expected one surrogate value per replicate, got "
                         f"shape {tuple(surrogate.shape)}")
    (grad,) = torch.autograd.grad(surrogate.sum(), theta)
    return grad


_FUNCTIONS_OF_THE_SAMPLE = {"straight_through": E.straight_through_sample, "reinmax": E.reinmax_sample}


def exact_expected_gradient(problem: CategoricalProblem, estimator: str, *, temperature: float = 1.0) -> torch.Tensor:
    r"""The exact mean :math:`\mathbb{E}[\hat g]` of a single-sample straight-through or ReinMax estimate.

    Both estimates are functions of the one-hot sample ``D`` alone, so their mean is the sum over all
    ``K**N`` joint states of :math:`p_\theta(D)\, \hat g(D)`, with no Monte Carlo error.
    ReinMax below τ = 1 is computed without its
    :class:`~gstutorial.estimators.LowTemperatureWarning`, as in :func:`sweep`: asking for the exact
    mean at such a temperature asks for that regime on purpose.

    Returns
    -------
    (N, K) tensor in ``problem.theta``'s dtype, to compare with :meth:`CategoricalProblem.exact_gradient`.
    """
    if estimator not in _FUNCTIONS_OF_THE_SAMPLE:
        raise ValueError(f"exact_expected_gradient needs an estimate that depends only on the one-hot sample "
                         f"({', '.join(_FUNCTIONS_OF_THE_SAMPLE)}), got {estimator!r}; estimate the mean of the "
                         "others with gradient_estimates")
    states = problem.states().to(problem.theta.dtype)
    probability = (states * problem.theta.log_softmax(-1)).sum((-2, -1)).exp()  # p(D), independent variables
    theta = problem.theta.expand(states.shape[0], *problem.theta.shape).clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", E.LowTemperatureWarning)
        z = _FUNCTIONS_OF_THE_SAMPLE[estimator](theta, temperature, sample=states)
    (grad,) = torch.autograd.grad((probability * problem.f(z)).sum(), theta)  # row D: p(D) * g(D)
    return grad.sum(0)


@dataclass(frozen=True)
class GradientStats:
    """Summary of many gradient estimates against the exact gradient.

    Attributes
    ----------
    mean, bias, se : (N, K) tensors: mean estimate, mean − exact, standard error of the mean.
    bias_norm : ‖mean − exact‖.
    relative_bias : bias_norm / ‖exact‖ (``inf`` when the exact gradient is 0 and the mean is not).
    relative_bias_se : standard error of ``relative_bias``: to first order only the noise along the
        bias moves its norm, so the standard deviation of the estimates projected on the bias direction,
        over :math:`\\sqrt R\\,\\lVert \\text{exact}\\rVert` (``nan`` when the bias or the exact gradient is 0).
    max_abs_z : max over coordinates of |bias| / se (≤ 3 is "unbiased within 3 standard errors").
    variance : total variance of one estimate, the trace of its covariance, Σ_coords Var.
    mse : the mean of ‖estimate − exact‖² over the R estimates, which equals bias_norm² +
        variance·(R − 1)/R (``variance`` is the unbiased sample variance).
    cosine : mean cosine similarity between one estimate and the exact gradient.
    replicates : number of estimates.
    """

    mean: torch.Tensor
    bias: torch.Tensor
    se: torch.Tensor
    bias_norm: float
    relative_bias: float
    relative_bias_se: float
    max_abs_z: float
    variance: float
    mse: float
    cosine: float
    replicates: int

    def summary(self) -> dict[str, float]:
        """The scalar fields as a dict."""
        return {key: value for key, value in asdict(self).items() if not isinstance(value, torch.Tensor)}


def gradient_stats(estimates: torch.Tensor, exact: torch.Tensor) -> GradientStats:
    """Bias, variance and cosine similarity of ``estimates`` (R, ...) against ``exact`` (...), R >= 2."""
    check_tensor(estimates, "estimates", floating=False)
    if check_tensor(exact, "exact", floating=False).shape != estimates.shape[1:] or estimates.ndim < 2:
        raise ValueError(f"estimates must have shape (R, *exact.shape) = (R, {tuple(exact.shape)}), "
                         f"got {tuple(estimates.shape)}")
    r = estimates.shape[0]
    if r < 2:
        raise ValueError(f"estimates must hold at least two estimates (R >= 2), got R = {r}")
    est = estimates.double()
    exact = exact.double()
    mean = est.mean(0)
    var = est.var(0)  # per coordinate, unbiased
    se = (var / r).sqrt()
    bias = mean - exact
    z = torch.where(se > 0, bias.abs() / se.clamp_min(1e-300), torch.where(bias.abs() > 1e-12, math.inf, 0.0))
    flat = est.reshape(r, -1)
    cosine = torch.nn.functional.cosine_similarity(flat, exact.reshape(1, -1).expand_as(flat), dim=1, eps=1e-30)
    bias_norm = bias.norm().item()
    variance = var.sum().item()
    exact_norm = exact.norm().item()
    if exact_norm > 0:
        relative_bias = bias_norm / exact_norm
    else:  # a zero gradient: any bias is infinitely large relative to it
        relative_bias = 0.0 if bias_norm == 0 else math.inf
    relative_bias_se = math.nan
    if bias_norm > 0 and exact_norm > 0:
        along = flat @ (bias.reshape(-1) / bias_norm)  # each estimate projected on the bias direction
        relative_bias_se = along.std().item() / math.sqrt(r) / exact_norm
    return GradientStats(mean=mean, bias=bias, se=se, bias_norm=bias_norm,
                         relative_bias=relative_bias, relative_bias_se=relative_bias_se, max_abs_z=z.max().item(),
                         variance=variance, mse=bias_norm**2 + variance * (r - 1) / r,
                         cosine=cosine.mean().item(), replicates=r)


def sweep(problem: CategoricalProblem, estimators: Iterable[str] | None = None, *,
          temperatures: Sequence[float] = (1.0,), sample_counts: Sequence[int] = (1,), k: int = 10,
          replicates: int = 2000, seed: int = 0) -> list[dict[str, float | int | str]]:
    """Gradient statistics for every estimator × temperature × sample count.

    Temperatures an estimator does not use are measured once (reported with ``temperature = nan``);
    ReinMax is measured below τ = 1 too (the sweep asks for that regime on purpose, so its
    :class:`~gstutorial.estimators.LowTemperatureWarning` is not shown), and the leave-one-out
    baseline skips ``num_samples = 1``. Each configuration
    draws from its own generator, seeded from ``seed`` and the configuration's values (estimator name,
    temperature, sample count and ``k``, even for estimators that ignore ``k``), so a row does not
    depend on which other rows are requested.

    Returns
    -------
    list of dicts with ``estimator``, ``temperature``, ``num_samples``, ``k`` and the fields of
    :meth:`GradientStats.summary`.
    """
    names = list(ESTIMATORS) if estimators is None else list(estimators)
    k, seed = check_int(k, "k", 1), check_int(seed, "seed")
    exact = problem.exact_gradient()
    rows: list[dict[str, float | int | str]] = []
    for name in names:
        est = get_estimator(name)
        taus = list(temperatures) if est.uses_temperature else [math.nan]
        for tau, num_samples in itertools.product(taus, sample_counts):
            if est.baseline == "loo" and num_samples < 2:
                continue
            key = f"{name}|{tau}|{num_samples}|{k}"
            generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", E.LowTemperatureWarning)
                grads = gradient_estimates(problem, est, temperature=1.0 if math.isnan(tau) else tau,
                                           num_samples=num_samples, k=k, replicates=replicates,
                                           generator=generator)
            stats = gradient_stats(grads, exact)
            rows.append({"estimator": name, "temperature": tau, "num_samples": num_samples,
                         "k": k if est.uses_k else 0, **stats.summary()})
    return rows

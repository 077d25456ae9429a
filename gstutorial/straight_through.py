"""Chapter 6 — straight-through estimation.

The identity ``(hard - soft).detach() + soft`` has the *value* of ``hard`` and the *gradient* of
``soft``; it is written once, in :func:`gstutorial.primitives.straight_through` (re-exported here, the
chapter's subject), and ``gumbel.gumbel_softmax(hard=True)`` uses it. The module holds what chapter 6
demonstrates: the worked autograd example, the
binary (K = 2) relaxation with logistic noise, and a toy problem on which the relaxed and the hard
objective disagree. Tensors follow the package convention (category axis last; device and dtype
follow the inputs); arguments follow :mod:`gstutorial.checks` (``TypeError`` for a wrong type,
``ValueError`` for a wrong value).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from gstutorial.checks import (
    check_bool,
    check_choice,
    check_float_tensor,
    check_int,
    check_real,
    check_temperature,
    check_tensor,
)
from gstutorial.gumbel import gumbel_softmax
from gstutorial.primitives import HALF_DTYPES, straight_through

__all__ = [
    "autograd_example",
    "binary_gumbel_softmax",
    "binary_toy_objective",
    "expected_objective",
    "logistic_noise",
    "mean_gradient",
    "straight_through",
    "train_binary_toy",
]


def autograd_example(a: float = 1.0, b: float = 2.0, skip: bool = False) -> tuple[float, dict[str, float]]:
    """The chapter's worked example: c = 2(a + b), d = c², f = 4d, loss = 3f.

    With ``skip=True`` the square is replaced by ``straight_through(soft=c, hard=c²)``, i.e.
    ``d = (c² − c).detach() + c``: same value, but d's gradient with respect to c becomes 1 instead of 2c.

    Returns
    -------
    ``(loss, grads)`` with ``grads`` the gradient of the loss with respect to a, b, c, d and f.
    """
    ta = torch.tensor(check_real(a, "a"), dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(check_real(b, "b"), dtype=torch.float64, requires_grad=True)
    c = 2 * (ta + tb)
    d = straight_through(c, c**2) if check_bool(skip, "skip") else c**2
    f = 4 * d
    for t in (c, d, f):
        t.retain_grad()
    loss = 3 * f
    loss.backward()
    grads = {"a": ta.grad.item(), "b": tb.grad.item(), "c": c.grad.item(), "d": d.grad.item(), "f": f.grad.item()}
    return loss.item(), grads


def logistic_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard logistic noise ``log U − log(1 − U)`` with the shape, dtype and device of ``like``.

    It is the law of the difference g₁ − g₂ of two independent standard Gumbel variables. U is
    clamped into [tiny, 1 − eps/2] so the noise is always finite.
    """
    check_tensor(like, "like")
    dtype = torch.float32 if like.dtype in HALF_DTYPES else like.dtype
    info = torch.finfo(dtype)
    u = torch.rand(like.shape, generator=generator, dtype=dtype, device=like.device)
    u.clamp_(info.tiny, 1.0 - info.eps / 2)
    return (torch.log(u) - torch.log1p(-u)).to(like.dtype)


def binary_gumbel_softmax(logit: torch.Tensor, temperature: float, hard: bool = False,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """The K = 2 Gumbel-Softmax written with one logit: ``sigmoid((logit + L) / τ)``, L logistic.

    ``logit`` is log(p / (1 − p)) for P(z = 1) = p, any shape (no category axis); ``±inf`` are allowed
    (a certain outcome). The result is the relaxed value of z in (0, 1); with ``hard=True`` the
    forward value is the exact 0/1 sample ``1[logit + L > 0]`` and the gradient is the relaxed one.
    This is the first coordinate of ``gumbel_softmax([logit, 0], τ)``.
    """
    tau = check_temperature(temperature)
    check_tensor(logit, "logit")
    check_bool(hard, "hard")
    if torch.isnan(logit).any():
        raise ValueError("logit contains NaN; use a finite value, or ±inf for a certain outcome")
    z = logit + logistic_noise(logit, generator)
    soft = torch.sigmoid(z / tau)
    if hard:
        return straight_through(soft, (z.detach() > 0).to(soft.dtype))
    return soft


def binary_toy_objective(z: torch.Tensor, target: float = 0.45) -> torch.Tensor:
    """f(z) = (z − target)², the classic toy loss on a binary z ∈ {0, 1} (or its relaxation)."""
    return (z - target) ** 2


def train_binary_toy(estimator: str, steps: int = 2000, lr: float = 0.05, temperature: float = 0.5,
                     batch: int = 64, target: float = 0.45, init_logit: float = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Minimise E_{z ~ Bernoulli(sigmoid(θ))}[(z − target)²] over θ by SGD with one gradient estimator.

    ``estimator`` is ``"exact"`` (the true gradient σ'(θ) (f(1) − f(0))), ``"relaxed"`` (the gradient
    of the relaxed objective E[f(y)], y = binary Gumbel-Softmax) or ``"straight-through"`` (ST-Gumbel:
    f evaluated at the hard sample, relaxed gradient). Returns P(z = 1) = sigmoid(θ) after every step,
    a float64 tensor of shape ``(steps,)``. For target < 0.5 the optimum is P(z = 1) = 0.
    ``steps`` is an int >= 1 and ``lr`` a number > 0; ``temperature``, ``batch`` (an int >= 1) and
    ``generator`` are used (and checked) by the two sampling estimators only.
    """
    check_choice(estimator, "estimator", ("exact", "relaxed", "straight-through"))
    steps = check_int(steps, "steps", 1)
    lr = check_real(lr, "lr", positive=True)
    target = check_real(target, "target")
    if estimator != "exact":
        temperature = check_temperature(temperature)
        batch = check_int(batch, "batch", 1)
    theta = torch.tensor(check_real(init_logit, "init_logit"), dtype=torch.float64, requires_grad=True)
    history = torch.empty(steps, dtype=torch.float64)
    for step in range(steps):
        if estimator == "exact":
            p = torch.sigmoid(theta)
            loss = p * binary_toy_objective(torch.tensor(1.0), target) + (1 - p) * binary_toy_objective(
                torch.tensor(0.0), target)
        else:
            y = binary_gumbel_softmax(theta.expand(batch), temperature, hard=estimator == "straight-through",
                                      generator=generator)
            loss = binary_toy_objective(y, target).mean()
        (grad,) = torch.autograd.grad(loss, theta)
        with torch.no_grad():
            theta -= lr * grad
        history[step] = torch.sigmoid(theta.detach())
    return history


def _check_single_logits(logits: torch.Tensor) -> None:
    """The logits of one categorical variable: a finite floating-point tensor of shape (K,), K >= 1."""
    check_float_tensor(logits, "logits")
    if logits.ndim != 1 or logits.numel() == 0:
        raise ValueError(f"logits must have shape (K,) (one categorical variable with K >= 1 categories), got "
                         f"{tuple(logits.shape)}; for several variables, call once per row")


def _values(f: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor, what: str, want: str) -> torch.Tensor:
    """``f(points)`` after checking that it has one value per row of ``points``."""
    values = check_tensor(f(points), "f's value", floating=False)
    if values.shape != points.shape[:-1]:
        raise ValueError(f"f must map {what} to {want} values, one per row, got shape {tuple(values.shape)}; "
                         "reduce the category axis inside f, e.g. ((v - t) ** 2).sum(-1)")
    return values


def expected_objective(logits: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """E_{z ~ Categorical(softmax(logits))}[f(onehot(z))] by enumerating the K one-hot vectors.

    ``logits`` is a finite floating-point tensor of shape (K,); ``f`` maps (K, K) one-hot rows to (K,)
    values, one per row (``ValueError`` otherwise). The result is differentiable, so autograd gives the
    exact gradient the estimators try to approximate.
    """
    _check_single_logits(logits)
    k = logits.numel()
    eye = torch.eye(k, dtype=logits.dtype, device=logits.device)
    return (torch.softmax(logits, -1) * _values(f, eye, "the (K, K) one-hot rows", "(K,)")).sum()


def mean_gradient(logits: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor], temperature: float,
                  hard: bool, num_samples: int, generator: torch.Generator | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo mean and standard error of the Gumbel-Softmax (``hard=False``) or ST-Gumbel-Softmax
    (``hard=True``) gradient estimator of ∇ E[f(z)] with respect to ``logits`` (shape (K,)).

    ``logits`` is a finite floating-point tensor of shape (K,) and ``f`` maps (n, K) samples to (n,)
    values, one per sample (``ValueError`` otherwise). ``num_samples`` is an int >= 2 (a standard error
    needs two samples). One backward pass over ``num_samples`` samples gives all per-sample gradients,
    because sample i depends on the logits only through its own row.
    """
    num_samples = check_int(num_samples, "num_samples", 2)
    _check_single_logits(logits)
    rows = logits.detach().expand(num_samples, -1).clone().requires_grad_(True)
    y = gumbel_softmax(rows, temperature, hard=hard, generator=generator)
    _values(f, y, "the (n, K) samples", "(n,)").sum().backward()
    per_sample = rows.grad
    return per_sample.mean(0), per_sample.std(0) / math.sqrt(num_samples)

"""Argument validation shared by every module, and the switch for scans of tensor values.

One rule everywhere: a wrong *type* raises ``TypeError``, a wrong *value* raises ``ValueError``, and
the message starts with the argument's name. Integers may be Python or NumPy integers (``bool`` is
refused: ``True`` is not a count); real numbers may be Python or NumPy reals or one-element tensors
where stated.

Checks of types, shapes and arguments are cheap and always on. Scans of tensor *values* (NaN, ±inf,
non-binary pixels) read a number back to Python, which on a GPU waits for the device; they follow
:func:`value_checks`, which the training engine turns off for its steps (its batches are valid by
construction) — like ``torch.distributions.Distribution.set_default_validate_args(False)``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from numbers import Integral, Real

import torch

__all__ = [
    "as_float_tensor",
    "check_bool",
    "check_choice",
    "check_float_tensor",
    "check_int",
    "check_real",
    "check_temperature",
    "check_tensor",
    "value_checks",
    "value_checks_enabled",
]

# per thread (and per asyncio task): training in a background thread leaves other threads' checks on
_value_checks: contextvars.ContextVar[bool] = contextvars.ContextVar("gstutorial_value_checks", default=True)


def value_checks_enabled() -> bool:
    """Whether the package scans tensor values on each call (the default; see :func:`value_checks`)."""
    return _value_checks.get()


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Turn the package's scans of tensor *values* on or off inside a ``with`` block.

    By default the functions on the training path scan their inputs or result for NaN, ±inf or
    non-binary pixels and raise an error that explains the problem: the Gumbel samplers, the
    estimators' logit check, the VAE losses' pixel checks, the finiteness of the analytic KL terms'
    inputs, data binarization and :func:`check_float_tensor`. The training engine turns the scans off
    for its steps and checks the epoch's loss instead. Checks of types, shapes and arguments stay on,
    and so do the value checks of functions a chapter calls once (probability vectors, standard
    deviations, Concrete densities, the uniform numbers given to ``categorical_inverse_cdf``). The
    setting belongs to the calling thread.
    """
    token = _value_checks.set(bool(enabled))
    try:
        yield
    finally:
        _value_checks.reset(token)


def check_int(value: object, name: str, minimum: int | None = None) -> int:
    """``value`` as a Python int: ``TypeError`` unless it is an int (NumPy integers too, ``bool``
    not), ``ValueError`` if it is below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(value: object, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """``value`` as a finite Python float: ``TypeError`` unless it is a real number (NumPy reals too,
    ``bool`` not), ``ValueError`` if it is not finite, or not > 0 (``positive``) or >= 0
    (``nonnegative``)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonnegative and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_bool(value: object, name: str) -> bool:
    """``value`` itself if it is ``True`` or ``False`` (``TypeError`` otherwise: 0 and 1 are not flags)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_choice(value: object, name: str, choices: tuple) -> object:
    """``value`` itself if it is one of ``choices`` (``ValueError`` naming them otherwise)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_tensor(value: object, name: str, *, floating: bool = True, category_axis: bool = False) -> torch.Tensor:
    """``value`` itself if it is a tensor (``TypeError`` otherwise), floating point when ``floating``
    (``TypeError``), with a non-empty last axis when ``category_axis`` (``ValueError``). No pass over
    the data."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}; wrap it with torch.tensor(...)")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}; convert it, e.g. {name}.float()")
    if category_axis and (value.ndim == 0 or value.shape[-1] == 0):
        raise ValueError(f"{name} needs a non-empty category axis (the last axis), got shape {tuple(value.shape)}")
    return value


def check_float_tensor(value: object, name: str) -> torch.Tensor:
    """``value`` itself if it is a floating-point tensor with finite entries (finiteness is scanned
    only while :func:`value_checks` is on)."""
    check_tensor(value, name)
    if _value_checks.get() and not torch.isfinite(value).all():
        raise ValueError(f"{name} has NaN or infinite entries; every entry must be finite")
    return value


def as_float_tensor(value: object, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """A finite Python or NumPy real number as a 0-d tensor (``like``'s dtype and device, by default
    the default dtype), or a floating-point tensor as given (:func:`check_float_tensor`)."""
    if not isinstance(value, Real):  # bool is Real: check_real refuses it with a TypeError
        return check_float_tensor(value, name)
    return torch.tensor(check_real(value, name)) if like is None else like.new_tensor(check_real(value, name))


def check_temperature(temperature: object, name: str = "temperature", *,
                      differentiable: bool = False) -> float | torch.Tensor:
    """``temperature`` as a Python float after checking that it is a finite number > 0.

    A one-element tensor is read with ``.item()``. One that requires a gradient is refused, since
    reading it would cut the gradient silently (pass a float), unless ``differentiable`` is True: the
    callers that divide by a tensor temperature (the Gumbel-Softmax samplers and the Concrete
    log-densities of :mod:`gstutorial.gumbel`) get it back as a 0-d tensor, value checked, so that
    the gradient reaches it. A tensor that does not require a gradient is read as a float either way.
    """
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"{name} must be a single number, got a tensor of shape {tuple(temperature.shape)}")
        if temperature.requires_grad:
            if not differentiable:
                raise ValueError(f"{name} is a tensor that requires grad; this function takes the temperature as a "
                                 "number, so no gradient would reach it: pass float(tau) or tau.detach() (the "
                                 "samplers and densities of gstutorial.gumbel take a learnable temperature)")
            if not temperature.is_floating_point():
                raise TypeError(f"{name} must be a real floating-point tensor, got {temperature.dtype}")
            tau = temperature.item()
            if not (math.isfinite(tau) and tau > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {tau}; the relaxation is defined for "
                                 "tau > 0 only (parametrize a learnable temperature as tau = exp(log_tau) or "
                                 "softplus(...) to keep it positive)")
            return temperature.reshape(())
        temperature = temperature.item()
    tau = check_real(temperature, name) if not isinstance(temperature, Real) or isinstance(temperature, bool) \
        else float(temperature)
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {tau}; the relaxation is defined for "
                         "tau > 0 only (use gumbel_max for the tau -> 0 limit)")
    return tau

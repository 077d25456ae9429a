"""The small numerical pieces the chapter modules build on: Gumbel noise from uniform numbers, the
straight-through identity, a softmax over the category axis, and the half-precision upcast.

Nothing here validates its arguments: the public functions of the chapter modules do, then call
these. Tensors follow the package convention (category axis last; device and dtype from the inputs).
"""

from __future__ import annotations

import torch

__all__ = ["HALF_DTYPES", "cast_like", "softmax_last", "straight_through", "uniform_to_gumbel_", "upcast_half"]

#: Dtypes computed in float32 and cast back: Gumbel noise drawn in half precision has a visibly
#: truncated tail.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def upcast_half(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is half precision (``float16``/``bfloat16``), else ``x`` itself."""
    return x.float() if x.dtype in HALF_DTYPES else x


def cast_like(result: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``result`` cast to ``like``'s dtype (no copy when it already has it)."""
    return result if result.dtype == like.dtype else result.to(like.dtype)


def uniform_to_gumbel_(u: torch.Tensor) -> torch.Tensor:
    """In place: U -> -log(-log U), with U clamped into [tiny, 1 - eps/2] so the result is finite.

    ``U = 0`` would give ``-inf`` and ``U = 1`` would give ``+inf``. The clamp bounds the noise to
    about [-4.5, 16.6] in float32 and [-6.6, 36.7] in float64, a truncation of probability below
    1e-7 and about 1.1e-16 respectively (``torch.rand`` never returns 1 and returns 0 with
    probability 2**-24 = 6.0e-8 in float32 and 2**-53 = 1.1e-16 in float64).
    """
    info = torch.finfo(u.dtype)
    return u.clamp_(info.tiny, 1.0 - info.eps / 2).log_().neg_().log_().neg_()


def straight_through(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """Return a tensor whose value is ``hard`` and whose gradient is that of ``soft``.

    ``(hard - soft).detach() + soft``: the detached difference is a constant for autograd, so the
    backward pass sees only ``+ soft``. For ``hard`` in {0, 1} and ``soft`` in [0, 1] the forward value
    equals ``hard`` exactly in IEEE round-to-nearest arithmetic, not just approximately.

    ``soft`` and ``hard`` must have the same shape and device (``ValueError`` otherwise); different
    dtypes follow torch's type promotion (a float32 ``soft`` with a float64 ``hard`` gives float64).
    """
    if not isinstance(soft, torch.Tensor):
        raise TypeError(f"soft must be a torch.Tensor, got {type(soft).__name__}")
    if not isinstance(hard, torch.Tensor):
        raise TypeError(f"hard must be a torch.Tensor, got {type(hard).__name__}")
    if soft.shape != hard.shape:
        raise ValueError(f"soft and hard must have the same shape, got {tuple(soft.shape)} and "
                         f"{tuple(hard.shape)}; broadcasting here would silently change the result")
    if soft.device != hard.device:
        raise ValueError(f"soft and hard must be on the same device, got soft on {soft.device} and hard on "
                         f"{hard.device}; move one, e.g. hard.to(soft.device)")
    return (hard - soft).detach() + soft


def softmax_last(x: torch.Tensor, log: bool = False) -> torch.Tensor:
    """``x.softmax(-1)`` (or ``x.log_softmax(-1)`` with ``log=True``): the same values and gradient.

    PyTorch's CPU kernel vectorizes a softmax along its axis only when that axis has 16 or more
    entries; over the short category axis of these models (K = 10) it is 3-4x slower than the same
    softmax taken over the leading axis, where it vectorizes across the other entries. So on the CPU,
    with K < 16, the category axis is moved to the front first; the result is a view with the shape
    of ``x`` and agrees with ``x.softmax(-1)`` to rounding (a few ulp).
    """
    if x.device.type == "cpu" and x.ndim > 1 and x.shape[-1] < 16:
        y = x.movedim(-1, 0)
        return (y.log_softmax(0) if log else y.softmax(0)).movedim(0, -1)
    return x.log_softmax(-1) if log else x.softmax(-1)

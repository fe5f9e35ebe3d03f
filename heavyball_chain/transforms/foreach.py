"""Foreach arithmetic the transforms share, with a step's numbers as Python floats or 0-d tensors.

They are tensors when ``lr`` is a tensor or the optimizer is capturable (:attr:`Bucket.t
<heavyball_chain.core.Bucket.t>` is then a device tensor counting the steps). These helpers
compute with either and run the foreach ops with either without reading a tensor on the host: a
read synchronises with the GPU, and a number computed on the host is frozen into a captured CUDA
graph. A float passes as a kernel argument (torch's fastest overloads), a tensor as a list of 0-d
tensors (torch's per-tensor path, which broadcasts them on the device).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..core import Fresh

__all__ = ["is_one", "sqrt", "at_least", "at_most", "lerp_", "add_scaled_", "add_product_", "ema_sq_", "ema_sq_one_",
           "div_into_"]

Number = Any  # float | int | 0-d torch.Tensor


def is_one(x: Number) -> bool:
    """True only for the Python number 1 (a tensor is never known to be 1 without reading it)."""
    return not isinstance(x, torch.Tensor) and x == 1


def sqrt(x: Number) -> Number:
    return x.sqrt() if isinstance(x, torch.Tensor) else math.sqrt(x)


def at_least(x: Number, low: float) -> Number:
    """``max(x, low)``."""
    return x.clamp(min=low) if isinstance(x, torch.Tensor) else max(x, low)


def at_most(x: Number, high: float) -> Number:
    """``min(x, high)``."""
    return x.clamp(max=high) if isinstance(x, torch.Tensor) else min(x, high)


def _each(xs: list[torch.Tensor], c: torch.Tensor) -> list[torch.Tensor]:
    return [c] * len(xs)


def lerp_(xs: list[torch.Tensor], ys: list[torch.Tensor], w: Number) -> None:
    """``x = x + w (y - x)`` in place."""
    torch._foreach_lerp_(xs, ys, _each(xs, w) if isinstance(w, torch.Tensor) else w)


def add_scaled_(xs: list[torch.Tensor], ys: list[torch.Tensor], alpha: Number) -> None:
    """``x = x + alpha y`` in place (``alpha`` is a Python number in torch's ``add_``)."""
    if isinstance(alpha, torch.Tensor):
        torch._foreach_addcmul_(xs, ys, _each(xs, alpha))
    else:
        torch._foreach_add_(xs, ys, alpha=alpha)


def add_product_(xs: list[torch.Tensor], a: list[torch.Tensor], b: list[torch.Tensor], value: Number) -> None:
    """``x = x + value a b`` in place (``addcmul``; with a tensor ``value``, ``value a`` is formed
    first, the order in which ``addcmul`` rounds)."""
    if isinstance(value, torch.Tensor):
        torch._foreach_addcmul_(xs, torch._foreach_mul(a, value), b)
    else:
        torch._foreach_addcmul_(xs, a, b, value=value)


def ema_sq_(v: list[torch.Tensor], g: list[torch.Tensor], beta: Number) -> None:
    """``v = beta v + (1 - beta) g²`` in place."""
    torch._foreach_mul_(v, beta)
    add_product_(v, g, g, 1 - beta)


def ema_sq_one_(v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, one_minus_beta: torch.Tensor) -> None:
    """``ema_sq_`` on one tensor, for the compiled path (same operation order)."""
    v.mul_(beta).add_(one_minus_beta * g * g)


def div_into_(numerators: Sequence[torch.Tensor], denominators: Sequence[torch.Tensor]) -> Fresh:
    """``n / d`` written into the (temporary) denominators: one full-size temporary, not two."""
    for n, d in zip(numerators, denominators):
        torch.div(n, d, out=d)
    return Fresh(denominators)

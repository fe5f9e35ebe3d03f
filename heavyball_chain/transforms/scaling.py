"""Transforms that scale or shift updates: decoupled weight decay and the learning rate."""

from __future__ import annotations

import torch

from ..core import Fresh, Hyper, Transform, non_negative, non_negative_int

__all__ = ["add_decayed_weights", "scale_by_learning_rate", "warmed_up_lr", "lr_hyperparams"]


class add_decayed_weights(Transform):  # noqa: N801 - optax-style transform name
    """Decoupled weight decay (Loshchilov & Hutter 2019, arXiv 1711.05101): ``u = u + wd * p``.

    Followed by ``scale_by_learning_rate`` this is ``p = p (1 - lr wd) - lr u``: weights shrink.
    (HeavyBall 0.8.1 passes a negative step size to its decay and multiplies by ``1 + lr wd``.)
    Reads ``weight_decay``.
    """

    name = "add_decayed_weights"

    def __init__(self, weight_decay: float = 0.0):
        self.hyperparams = {"weight_decay": Hyper(weight_decay, non_negative)}

    def update(self, updates, bucket):
        wd = bucket.hp("weight_decay")
        if wd == 0:
            return updates
        if isinstance(updates, Fresh):
            torch._foreach_add_(updates, bucket.params_compute(), alpha=wd)
            return updates
        return Fresh(torch._foreach_add(updates, bucket.params_compute(), alpha=wd))

    def fuse(self, bucket):
        return (bucket.hp("weight_decay"),)

    def fused(self, u, p, state, s):
        return u + s[0] * p.to(u.dtype)


def lr_hyperparams(lr, warmup_steps) -> dict[str, Hyper]:
    """``lr`` (a number >= 0, a schedule or a one-element tensor) and ``warmup_steps``."""
    return {"lr": Hyper(lr, non_negative, tensor=True), "warmup_steps": Hyper(warmup_steps, non_negative_int)}


def warmed_up_lr(bucket):
    """``lr_t = lr * min(t / warmup_steps, 1)``; ``warmup_steps=0`` means no warmup. A tensor lr
    stays a tensor (no host synchronisation)."""
    lr = bucket.hp("lr")
    warmup = bucket.hp("warmup_steps")
    if warmup > 0 and bucket.step < warmup:  # a tensor in fp64, as Python computes with a float lr
        return (lr.to(torch.float64) if isinstance(lr, torch.Tensor) else lr) * (bucket.step / warmup)
    return lr


class scale_by_learning_rate(Transform):  # noqa: N801
    """``u = -lr_t u`` with linear warmup ``lr_t = lr * min(t / warmup_steps, 1)``.

    ``warmup_steps=0`` means no warmup (HeavyBall 0.8.1 divides by zero there). The sign makes
    the output an update to *add* to the parameters, as in optax. Reads ``lr`` (a number, a
    schedule, or a one-element tensor that the caller may change in place) and ``warmup_steps``.
    """

    name = "scale_by_learning_rate"

    def __init__(self, lr: float = 1e-3, warmup_steps: int = 0):
        self.hyperparams = lr_hyperparams(lr, warmup_steps)

    def update(self, updates, bucket):
        lr = warmed_up_lr(bucket)
        if isinstance(updates, Fresh):
            torch._foreach_mul_(updates, -lr)
            return updates
        return Fresh(torch._foreach_mul(updates, -lr))

    def fuse(self, bucket):
        return (-warmed_up_lr(bucket),)

    def fused(self, u, p, state, s):
        return u * s[0]

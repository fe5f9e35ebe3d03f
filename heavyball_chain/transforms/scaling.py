"""Transforms that scale or shift updates: decoupled weight decay and the learning rate."""

from __future__ import annotations

import torch

from ..core import LR, Fresh, Hyper, write_target, Transform, non_negative, non_negative_int, positive
from ..core import Count, Scalar
from typing import Any, Sequence
from ..core import Bucket

__all__ = ["add_decayed_weights", "decay_after_update", "scale_by_learning_rate", "warmed_up_lr", "lr_hyperparams"]


class add_decayed_weights(Transform):  # noqa: N801 - optax-style transform name
    """Decoupled weight decay (Loshchilov & Hutter 2019, arXiv 1711.05101): ``u = u + wd * p``.

    Followed by ``scale_by_learning_rate`` this is ``p = p (1 - lr wd) - lr u``: weights shrink.
    (HeavyBall 0.8.1 passes a negative step size to its decay and multiplies by ``1 + lr wd``.)
    Reads ``weight_decay``.

    With ``lr0`` (a number > 0, usually the constructor's lr) the decay is ``u = u + (wd / lr0) p``,
    so after ``-lr`` the weights shrink by ``wd * lr_t / lr0``: the schedule multiplier
    ``eta_t = lr_t / lr0`` of Loshchilov & Hutter's AdamW times ``wd``, independent of the base lr
    (lion-pytorch's ``decoupled_weight_decay=True``). ``lr0`` is a constant of the chain, not a
    hyperparameter: editing ``param_groups`` does not change it.

    Args:
        weight_decay: the decay ``wd``, >= 0 (0: the update passes unchanged). The default of
            the ``weight_decay`` hyperparameter.
        lr0: None (decay by ``wd``) or a number > 0 (decay by ``wd / lr0``).

    Examples:
        ``p = p (1 - lr wd) - lr g``, here with ``lr = 0.1`` and ``wd = 0.5``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> tx = hc.chain(T.add_decayed_weights(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1, weight_decay=0.5)
        >>> p.grad = torch.tensor([0.5, -3.0])
        >>> opt.step()
        >>> p.data                                  # 0.95 p - 0.1 g
        tensor([ 0.9000, -1.6000])
    """

    name = "add_decayed_weights"
    capturable = True

    def __init__(self, weight_decay: Scalar = 0.0, *, lr0: float | None = None) -> None:
        self.hyperparams = {"weight_decay": Hyper(weight_decay, non_negative)}
        if lr0 is not None and positive(lr0) is not None:
            raise ValueError(f"lr0: expected None or {positive(lr0)}, got {lr0!r}")
        self.lr0 = lr0

    def _decay(self, bucket: Bucket) -> float:
        wd = bucket.hp("weight_decay")
        return wd if self.lr0 is None else wd / self.lr0

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        wd = self._decay(bucket)
        if wd == 0:
            return updates
        out = write_target(updates)
        if out is None:
            return Fresh(torch._foreach_add(updates, bucket.params_compute(), alpha=wd))
        if out is updates:
            torch._foreach_add_(updates, bucket.params_compute(), alpha=wd)
        else:
            for o, u, p in zip(out, updates, bucket.params_compute()):
                torch.add(u, p, alpha=wd, out=o)
        return Fresh(out)

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return (self._decay(bucket),)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        return u + s[0] * p.to(u.dtype)

    def __repr__(self) -> str:
        return "add_decayed_weights(weight_decay)" if self.lr0 is None else "add_decayed_weights(weight_decay / lr0)"


def lr_hyperparams(lr: LR, warmup_steps: Count) -> dict[str, Hyper]:
    """``lr`` (a number >= 0, a schedule or a one-element tensor) and ``warmup_steps``."""
    return {"lr": Hyper(lr, non_negative, tensor=True), "warmup_steps": Hyper(warmup_steps, non_negative_int)}


def warmed_up_lr(bucket: Bucket) -> Any:
    """``lr_t = lr * min(t / warmup_steps, 1)``; ``warmup_steps=0`` means no warmup. A tensor lr
    stays a tensor (no host synchronisation), seen as 0-d (torch.optim also takes a ``(1,)`` lr);
    at a tensor step (capturable) the warmup factor is a device tensor too."""
    lr = bucket.hp("lr")
    if isinstance(lr, torch.Tensor) and lr.dim():
        lr = lr.reshape(())
    warmup = bucket.hp("warmup_steps")
    t = bucket.t
    if warmup > 0 and isinstance(t, torch.Tensor):  # capturable: min(t / warmup, 1) on the device
        return (lr.to(torch.float64) if isinstance(lr, torch.Tensor) else lr) * (t / warmup).clamp(max=1.0)
    if warmup > 0 and bucket.step < warmup:  # a tensor in fp64, as Python computes with a float lr
        return (lr.to(torch.float64) if isinstance(lr, torch.Tensor) else lr) * (bucket.step / warmup)
    return lr


class scale_by_learning_rate(Transform):  # noqa: N801
    """``u = -lr_t u`` with linear warmup ``lr_t = lr * min(t / warmup_steps, 1)``.

    ``warmup_steps=0`` means no warmup (HeavyBall 0.8.1 divides by zero there). The sign makes
    the output an update to *add* to the parameters, as in optax. Reads ``lr`` (a number, a
    schedule, or a one-element tensor that the caller may change in place) and ``warmup_steps``.

    Args:
        lr: the learning rate, >= 0: a number, a schedule ``f(t)`` or a one-element tensor. The
            default of the ``lr`` hyperparameter.
        warmup_steps: the length of the linear warmup, an integer >= 0 (0: none). The default
            of the ``warmup_steps`` hyperparameter.

    Examples:
        With ``warmup_steps=2`` the first step uses ``lr / 2``, the later ones ``lr``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0]))
        >>> tx = hc.chain(T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1, warmup_steps=2)
        >>> for _ in range(3):
        ...     p.grad = torch.ones(1); opt.step(); print(p.data)
        tensor([0.9500])
        tensor([0.8500])
        tensor([0.7500])
    """

    name = "scale_by_learning_rate"
    capturable = True

    def __init__(self, lr: LR = 1e-3, warmup_steps: Count = 0) -> None:
        self.hyperparams = lr_hyperparams(lr, warmup_steps)

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        lr = warmed_up_lr(bucket)
        out = write_target(updates)
        if out is None:
            return Fresh(torch._foreach_mul(updates, -lr))
        if out is updates:
            torch._foreach_mul_(updates, -lr)
        else:
            for o, u in zip(out, updates):
                torch.mul(u, -lr, out=o)
        return Fresh(out)

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return (-warmed_up_lr(bucket),)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        return u * s[0]


class decay_after_update(Transform):  # noqa: N801 - optax-style transform name
    """Decoupled weight decay of the *updated* weights, as the SOAP reference applies it
    (Vyas et al. 2024, arXiv 2409.11321; its ``p.add_(p, alpha=-lr * wd)`` after ``p.add_(u)``):

        u = u - lr wd (p + u),   so that   p + u = (p + u_in) (1 - lr wd)

    It goes after ``scale_by_learning_rate`` (``u_in`` is the step already scaled by ``-lr_t``)
    and before the apply transform. ``add_decayed_weights`` decays the weights of before the
    update, ``p (1 - lr wd) + u_in``; the two differ by ``lr wd u_in``, a second-order term.
    ``lr`` is the group's (no warmup), as the reference's decay uses. Reads ``lr`` and
    ``weight_decay``.

    Args:
        lr: the learning rate of the decay, >= 0: a number, a schedule ``f(t)`` or a one-element
            tensor. The default of the ``lr`` hyperparameter (shared with
            ``scale_by_learning_rate``).
        weight_decay: the decay ``wd``, >= 0 (0: the update passes unchanged). The default of
            the ``weight_decay`` hyperparameter.

    Examples:
        ``p = (p - lr g) (1 - lr wd)``, here with ``lr = 0.1`` and ``wd = 0.5``
        (``add_decayed_weights`` gives ``[0.9, -1.6]``):

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> tx = hc.chain(T.scale_by_learning_rate(), T.decay_after_update(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1, weight_decay=0.5)
        >>> p.grad = torch.tensor([0.5, -3.0])
        >>> opt.step()
        >>> p.data                                  # 0.95 [0.95, -1.7]
        tensor([ 0.9025, -1.6150])
    """

    name = "decay_after_update"
    capturable = True

    def __init__(self, lr: LR = 1e-3, weight_decay: Scalar = 0.0) -> None:
        self.hyperparams = {"lr": Hyper(lr, non_negative, tensor=True),
                            "weight_decay": Hyper(weight_decay, non_negative)}

    def _factor(self, bucket: Bucket) -> Any:
        lr = bucket.hp("lr")
        wd = bucket.hp("weight_decay")
        if isinstance(lr, torch.Tensor):  # stays on the device (no synchronisation); 0-d for the foreach ops
            lr = lr.reshape(()).to(torch.float64)
        return None if wd == 0 else -lr * wd

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        c = self._factor(bucket)
        if c is None:
            return updates
        decay = torch._foreach_add(bucket.params_compute(), updates)  # p + u
        torch._foreach_mul_(decay, c)
        if isinstance(updates, Fresh):
            torch._foreach_add_(updates, decay)
            return updates
        torch._foreach_add_(decay, updates)
        return Fresh(decay)

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        c = self._factor(bucket)
        return (0.0 if c is None else c,)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        return u + s[0] * (p.to(u.dtype) + u)

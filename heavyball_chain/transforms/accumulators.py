"""Accumulated second moments without bias correction: RMSprop's EMA and Adagrad's sum.

Unlike :mod:`.moments` (HeavyBall's debiased betas, a clamped denominator), these follow
torch.optim's RMSprop and Adagrad: the accumulator is used as it stands (RMSprop's EMA starts at
zero and is not bias-corrected, so its first steps are large) and eps is *added* to the root:
``u = g / (sqrt(v) + eps)``.
"""

from __future__ import annotations

import torch

from ..core import Fresh, Hyper, Scalar, Slot, Transform, compute_dtype, non_negative, zeros_state
from .gradient import closed_unit_interval
from typing import Any, Sequence
from ..core import Bucket

__all__ = ["scale_by_rmsprop", "scale_by_adagrad", "scale_by_inverse_time_decay"]


def _add_eps_div_into_(numerators: Sequence[torch.Tensor], roots: list[torch.Tensor] | tuple[torch.Tensor, ...],
                       eps: float) -> Fresh:
    """``n / (r + eps)`` written into the (temporary) roots."""
    torch._foreach_add_(roots, eps)
    for n, d in zip(numerators, roots):
        torch.div(n, d, out=d)
    return Fresh(roots)


class scale_by_rmsprop(Transform):  # noqa: N801 - optax-style transform name
    """RMSprop (Tieleman & Hinton 2012, Coursera "Neural Networks for Machine Learning", lecture
    6.5) as torch.optim.RMSprop computes it, with ``a = alpha``:

        v = a v + (1 - a) g²;   u = g / (sqrt(v) + eps)

    ``v`` starts at 0 and is not bias-corrected. With ``centered`` (Graves 2013, "Generating
    sequences with recurrent neural networks", arXiv 1308.0850, eq. 38-41) the root is of the
    variance estimate instead: ``ḡ = a ḡ + (1 - a) g``, ``u = g / (sqrt(v - ḡ²) + eps)``.
    RMSprop's momentum (``buf = momentum buf + u``, then ``p -= lr buf``) is ``trace`` after this
    transform. Reads ``alpha`` (in [0, 1]) and ``eps`` (>= 0). State: ``square_avg`` (and
    ``grad_avg`` when centered).

    Args:
        alpha: the EMA weight ``a`` of v (and of ``ḡ``), in [0, 1]; may be a schedule ``f(t)``.
            The default of the ``alpha`` hyperparameter.
        eps: added to the root (>= 0). The default of the ``eps`` hyperparameter.
        centered: divide by the root of the variance estimate ``v - ḡ²`` instead of ``v``.

    Examples:
        v starts at 0 without correction, so the first step is ``sign(g) / sqrt(1 - a)``, 10 lr
        at the default ``a = 0.99``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> tx = hc.chain(T.scale_by_rmsprop(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.01)
        >>> p.grad = torch.tensor([0.5, -3.0])
        >>> opt.step()
        >>> p.data
        tensor([ 0.9000, -1.9000])
    """

    name = "scale_by_rmsprop"

    def __init__(self, alpha: Scalar = 0.99, eps: Scalar = 1e-8, centered: bool = False) -> None:
        if not isinstance(centered, bool):
            raise TypeError(f"centered: expected True or False, got {centered!r}")
        self.hyperparams = {"alpha": Hyper(alpha, closed_unit_interval), "eps": Hyper(eps, non_negative)}
        self.centered = centered

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"square_avg": Slot(), "grad_avg": Slot()} if self.centered else {"square_avg": Slot()}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        alpha = bucket.hp("alpha")
        v = bucket.state("square_avg")
        torch._foreach_mul_(v, alpha)
        torch._foreach_addcmul_(v, updates, updates, value=1 - alpha)
        if self.centered:
            gbar = bucket.state("grad_avg")
            torch._foreach_lerp_(gbar, updates, 1 - alpha)
            root = torch._foreach_addcmul(v, gbar, gbar, value=-1)
            torch._foreach_sqrt_(root)
        else:
            root = torch._foreach_sqrt(v)
        return _add_eps_div_into_(updates, root, bucket.hp("eps"))

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        alpha = bucket.hp("alpha")
        return alpha, 1 - alpha, bucket.hp("eps")

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        v = state[0]
        v.mul_(s[0]).add_(s[1] * u * u)
        if self.centered:
            gbar = state[1]
            gbar.lerp_(u, s[1])
            return u / ((v - gbar * gbar).sqrt() + s[2])
        return u / (v.sqrt() + s[2])

    def __repr__(self) -> str:
        return f"scale_by_rmsprop(alpha, eps{', centered' if self.centered else ''})"


class scale_by_adagrad(Transform):  # noqa: N801
    """Adagrad (Duchi, Hazan & Singer 2011, "Adaptive subgradient methods for online learning and
    stochastic optimization", JMLR 12), diagonal form, as torch.optim.Adagrad computes it:

        Σ_0 = initial_accumulator_value;   Σ = Σ + g²;   u = g / (sqrt(Σ) + eps)

    Reads ``eps`` (>= 0) and ``initial_accumulator_value`` (>= 0, fixed: it is read once, when a
    parameter's accumulator is created at its first step). State: ``sum``.

    Args:
        eps: added to ``sqrt(Σ)`` (>= 0). The default of the ``eps`` hyperparameter.
        initial_accumulator_value: ``Σ_0`` (>= 0; a number, not a schedule). The default of the
            ``initial_accumulator_value`` hyperparameter.

    Examples:
        The accumulated sum shrinks the steps: step 1 moves by ``-lr sign(g1)``, step 2 by
        ``-lr g2 / sqrt(g1² + g2²) = -[4/5, 12/13]``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.scale_by_adagrad(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0)
        >>> p.grad = torch.tensor([3.0, 5.0]); opt.step(); p.data
        tensor([-1., -1.])
        >>> p.grad = torch.tensor([4.0, 12.0]); opt.step(); p.data
        tensor([-1.8000, -1.9231])
    """

    name = "scale_by_adagrad"

    def __init__(self, eps: Scalar = 1e-10, initial_accumulator_value: float = 0.0) -> None:
        self.hyperparams = {"eps": Hyper(eps, non_negative),
                            "initial_accumulator_value": Hyper(initial_accumulator_value, non_negative, fixed=True)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"sum": Slot(init=zeros_state)}  # init() fills it with initial_accumulator_value

    def init(self, bucket: Bucket) -> None:
        value = bucket.hp("initial_accumulator_value")
        bucket.init_state("sum", lambda p: torch.full_like(p, value, dtype=compute_dtype(p.dtype),
                                                           memory_format=torch.preserve_format))

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        total = bucket.state("sum")
        torch._foreach_addcmul_(total, updates, updates)
        return _add_eps_div_into_(updates, torch._foreach_sqrt(total), bucket.hp("eps"))


    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return (bucket.hp("eps"),)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        (total,) = state
        total.add_(u * u)
        return u / (total.sqrt() + s[0])


class scale_by_inverse_time_decay(Transform):  # noqa: N801
    """torch.optim.Adagrad's ``lr_decay``: ``u = u / (1 + (t - 1) lr_decay)`` at step ``t``, so
    that followed by ``scale_by_learning_rate`` the step size is ``lr / (1 + (t - 1) lr_decay)``
    (inverse-time decay; the step counts the updates that reached this transform). Reads
    ``lr_decay`` (>= 0; 0 is the identity).

    The ``1 / t`` step sizes of stochastic approximation (Robbins & Monro 1951, "A Stochastic
    Approximation Method"), in the "search-then-converge" form ``lr / (1 + t / τ)`` of Darken &
    Moody 1990 ("Note on Learning Rate Schedules for Stochastic Optimization", NIPS 3), with
    ``lr_decay = 1 / τ`` and the step counted from 0 (as torch does).

    Args:
        lr_decay: the decay rate (>= 0; 0, the default, leaves updates unchanged); may be a
            schedule ``f(t)``. The default of the ``lr_decay`` hyperparameter.

    Examples:
        With ``lr_decay = 1`` the steps are lr, lr/2, lr/3:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> tx = hc.chain(T.scale_by_inverse_time_decay(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, lr_decay=1.0)
        >>> for _ in range(3): p.grad = torch.ones(1); opt.step()
        >>> p.data  # -(1 + 1/2 + 1/3)
        tensor([-1.8333])
    """

    name = "scale_by_inverse_time_decay"

    def __init__(self, lr_decay: Scalar = 0.0) -> None:
        self.hyperparams = {"lr_decay": Hyper(lr_decay, non_negative)}

    def _factor(self, bucket: Bucket) -> float:
        return 1 / (1 + (bucket.step - 1) * bucket.hp("lr_decay"))

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        if bucket.hp("lr_decay") == 0:
            return updates
        factor = self._factor(bucket)
        if isinstance(updates, Fresh):
            torch._foreach_mul_(updates, factor)
            return updates
        return Fresh(torch._foreach_mul(updates, factor))

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return (self._factor(bucket),)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        return u * s[0]

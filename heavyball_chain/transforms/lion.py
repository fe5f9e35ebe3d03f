"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", arXiv 2302.06675)."""

from __future__ import annotations

import torch

from ..core import Elements, Fresh, Hyper, Scalar, Slot, Transform, finite
from typing import Any, Sequence
from ..core import Bucket

__all__ = ["scale_by_lion"]


def _closed_unit(v: Any) -> str | None:
    """A check: a number in [0, 1] (Lion's betas: b2 = 1 freezes the momentum at 0, which is
    signSGD; lion-pytorch accepts both ends)."""
    return None if finite(v) is None and 0 <= v <= 1 else "a number in [0, 1]"


lion_betas = Elements("a pair (beta1, beta2) of numbers in [0, 1]", _closed_unit, _closed_unit)


class scale_by_lion(Transform):  # noqa: N801 - optax-style transform name
    """Lion's update direction ("EvoLved Sign Momentum", Chen et al. 2023, arXiv 2302.06675,
    the paper's Algorithm 2):

        u = sign(b1 m + (1 - b1) g);   m = b2 m + (1 - b2) g

    The sign is taken of an interpolation between the momentum and the gradient with ``b1``,
    and the momentum is then tracked with the slower ``b2``: every coordinate moves by exactly
    the lr (or not at all where the interpolation is 0), so Lion's lr is typically 3-10x smaller
    than AdamW's and its weight decay larger. Follow it with weight decay, ``-lr`` and an apply
    transform. Complex parameters are seen as their real view (the sign of the real and
    imaginary parts; lion-pytorch's ``sgn`` would take the phase ``z / |z|``).

    Reads ``betas`` (each in [0, 1]). State: ``exp_avg`` (m, compute dtype).

    Args:
        betas: ``(b1, b2)``, each in [0, 1] (either may be a schedule ``f(t)``): ``b1`` the
            interpolation whose sign is taken, ``b2`` the EMA weight of the momentum (``b2 = 1``
            freezes m at 0: signSGD). The default of the ``betas`` hyperparameter.

    Examples:
        Every coordinate moves by exactly lr. At step 2, ``m = 0.5 g1`` and the sign is of
        ``0.25 g1 + 0.5 g2 = [0.5, -0.25]``: the first coordinate follows its momentum against
        the gradient:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.scale_by_lion(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1, betas=(0.5, 0.5))
        >>> p.grad = torch.tensor([4.0, 1.0]); opt.step(); p.data
        tensor([-0.1000, -0.1000])
        >>> p.grad = torch.tensor([-1.0, -1.0]); opt.step(); p.data
        tensor([-0.2000,  0.0000])
    """

    name = "scale_by_lion"

    def __init__(self, betas: Sequence[Scalar] = (0.9, 0.99)) -> None:
        self.hyperparams = {"betas": Hyper(tuple(betas), lion_betas)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"exp_avg": Slot()}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        b1, b2 = bucket.hp("betas")
        m = bucket.state("exp_avg")
        u = torch._foreach_mul(m, b1)
        torch._foreach_add_(u, updates, alpha=1 - b1)
        torch._foreach_sign_(u)
        torch._foreach_mul_(m, b2)
        torch._foreach_add_(m, updates, alpha=1 - b2)
        return Fresh(u)  # new tensors nobody else references


    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        b1, b2 = bucket.hp("betas")
        return b1, 1 - b1, b2, 1 - b2

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        (m,) = state
        out = (m * s[0] + s[1] * u).sign()
        m.mul_(s[2]).add_(s[3] * u)
        return out

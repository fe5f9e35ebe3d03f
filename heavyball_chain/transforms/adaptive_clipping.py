"""Adaptive gradient clipping (Brock et al. 2021, "High-Performance Large-Scale Image
Recognition Without Normalization", arXiv 2102.06171, sec. 4.1)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..core import Hyper, Scalar, Transform, non_negative, positive
from ..core import Bucket

__all__ = ["clip_by_adaptive_norm"]


class clip_by_adaptive_norm(Transform):  # noqa: N801 - optax-style transform name
    """Adaptive gradient clipping (AGC, Brock et al. 2021, arXiv 2102.06171): scale each
    tensor's update so that ``||u|| <= clip * max(||p||, minimum)``:

        u = u * min(clip * max(||p||, minimum) / max(||u||, eps), 1)

    Norms are per tensor (Frobenius), as HeavyBall does (the paper clips unit-wise, per row).
    ``gradient_clip_val = 0`` disables it. Reads ``gradient_clip_val``.

    Args:
        gradient_clip_val: ``clip``, the largest ratio ``||u|| / max(||p||, minimum)``, a finite
            number >= 0 (0 disables the clipping; or a schedule ``f(t)``). The default of the
            ``gradient_clip_val`` hyperparameter.
        minimum: the floor of ``||p||``, a finite number >= 0 (default 1e-3, HeavyBall's), so
            zero-initialised tensors can move; not a hyperparameter.
        eps: the floor of ``||u||``, a finite number > 0 (avoids dividing by zero), default 1e-8;
            not a hyperparameter.

    Examples:
        ``||p|| = 5`` allows ``||u|| <= 0.5``: a gradient of norm 10 is scaled to 0.5, one of
        norm 0.2 passes unchanged:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p, q = torch.nn.Parameter(torch.tensor([3.0, 4.0])), torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> tx = hc.chain(T.clip_by_adaptive_norm(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p, q], tx, lr=1.0, gradient_clip_val=0.1)
        >>> p.grad, q.grad = torch.tensor([0.0, 10.0]), torch.tensor([0.0, 0.2])
        >>> opt.step()
        >>> p.data, q.data
        (tensor([3.0000, 3.5000]), tensor([3.0000, 3.8000]))
    """

    name = "clip_by_adaptive_norm"

    def __init__(self, gradient_clip_val: Scalar = 0.1, minimum: float = 1e-3,
                 eps: float = 1e-8):
        self.hyperparams = {"gradient_clip_val": Hyper(gradient_clip_val, non_negative)}
        for name, value, check in (("minimum", minimum, non_negative), ("eps", eps, positive)):
            if check(value) is not None:  # fixed options, read in every step: refused here, not there
                raise ValueError(f"{name}: expected {check(value)}, got {value!r}")
        self.minimum, self.eps = minimum, eps

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        clip = bucket.hp("gradient_clip_val")
        if clip <= 0:
            return updates
        scale = bucket.norms(bucket.params_compute())
        torch._foreach_maximum_(scale, self.minimum)
        u_norm = bucket.norms(updates)
        torch._foreach_maximum_(u_norm, self.eps)
        torch._foreach_div_(scale, u_norm)
        torch._foreach_mul_(scale, clip)
        torch._foreach_clamp_max_(scale, 1.0)
        return torch._foreach_mul(updates, scale)

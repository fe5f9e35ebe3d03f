"""Adaptive gradient clipping (Brock et al. 2021, "High-Performance Large-Scale Image
Recognition Without Normalization", arXiv 2102.06171, sec. 4.1)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..core import Hyper, Transform, non_negative
from ..core import Bucket

__all__ = ["clip_by_adaptive_norm"]


class clip_by_adaptive_norm(Transform):  # noqa: N801 - optax-style transform name
    """Scale each tensor's update so that ``||u|| <= clip * max(||p||, 1e-3)``:

        u = u * min(clip * max(||p||, 1e-3) / max(||u||, eps), 1)

    Norms are per tensor (Frobenius), as HeavyBall does (the paper clips unit-wise, per row).
    ``gradient_clip_val <= 0`` disables it. Reads ``gradient_clip_val``.
    """

    name = "clip_by_adaptive_norm"

    def __init__(self, gradient_clip_val: float = 0.1, minimum: float = 1e-3, eps: float = 1e-8):
        self.hyperparams = {"gradient_clip_val": Hyper(gradient_clip_val, non_negative)}
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

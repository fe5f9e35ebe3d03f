"""AdEMAMix: Adam with a second, slow EMA of the gradient mixed into the numerator.

Pagliardini, Ablin & Grangier 2024, "The AdEMAMix Optimizer: Better, Faster, Older",
arXiv 2409.03137 (ICLR 2025). A single EMA cannot give a high weight to the last gradients and a
non-negligible weight to gradients thousands of steps old; AdEMAMix keeps Adam's fast EMA ``m1``
(``beta1``) and adds a slow one ``m2`` (``beta3`` close to 1, *not* bias-corrected) with weight
``alpha``. A slow EMA is harmful early in training, so ``alpha`` and ``beta3`` may be warmed up
over the first steps (the paper's schedulers, :func:`ademamix_alpha` and :func:`ademamix_beta3`).
"""

from __future__ import annotations

import math

import torch

from ..core import Count, Elements, Hyper, Scalar, Slot, Transform, non_negative, non_negative_int, unit_interval
from .foreach import div_into_, ema_sq_, ema_sq_one_
from typing import Any, Sequence
from ..core import Bucket

__all__ = ["scale_by_ademamix", "ademamix_alpha", "ademamix_beta3"]


def _warmup_check(v: Any) -> str | None:
    return None if v is None or non_negative_int(v) is None else "None (no warmup) or an integer >= 0"


betas_triple = Elements("a triple (beta1, beta2, beta3) of numbers in [0, 1)", unit_interval, unit_interval,
                        unit_interval)


def ademamix_alpha(step: int, alpha: float, warmup: int | None) -> float:
    """The paper's linear scheduler: ``alpha_t = alpha * min(t / T_alpha, 1)``; ``warmup`` None or
    0 means ``alpha_t = alpha``."""
    if not warmup or step >= warmup:
        return alpha
    return alpha * (step / warmup)


def _half_life(beta: float) -> float:
    """``ln(0.5) / ln(beta)``: the number of steps after which an EMA of decay ``beta`` has halved
    a gradient's weight (0 for ``beta = 0``)."""
    return 0.0 if beta == 0 else math.log(0.5) / math.log(beta)


def ademamix_beta3(step: int, beta1: float, beta3: float, warmup: int | None) -> float:
    """The paper's ``beta3`` scheduler: the half-life of the slow EMA grows linearly from that of
    ``beta1`` to that of ``beta3`` over ``T_beta3 = warmup`` steps,

        h(b) = ln(0.5) / ln(b),   h_t = (1 - t/T) h(beta1) + (t/T) h(beta3),   beta3_t = min(0.5^(1/h_t), beta3)

    i.e. ``beta3_t = min(exp(ln(beta1) ln(beta3) / ((1 - t/T) ln(beta3) + (t/T) ln(beta1))), beta3)``.
    ``warmup`` None or 0 means ``beta3_t = beta3``. This is the paper's formula (and
    pytorch_optimizer's). The official code evaluates ``ln(b + 1e-8)`` (to allow ``beta1 = 0``),
    which changes ``h(0.9999)`` by 1e-4 relative: in a 50-step test with ``beta3_warmup=45`` the
    parameters then differ by up to 1.2e-5 relative, and by 4e-7 without that 1e-8.
    ``beta1 = 0`` has ``h = 0``. With ``beta1 > beta3`` the ``min`` holds ``beta3_t`` at ``beta3``
    (the official code has no ``min``).
    """
    if not warmup or step >= warmup:
        return beta3
    a = step / warmup
    h = (1 - a) * _half_life(beta1) + a * _half_life(beta3)
    return min(0.0 if h == 0 else 0.5 ** (1 / h), beta3)


class scale_by_ademamix(Transform):  # noqa: N801 - optax-style transform name
    """AdEMAMix's update direction (Pagliardini, Ablin & Grangier 2024, arXiv 2409.03137, Alg. 1):

        m1 = lerp(m1, g, 1 - beta1);   m2 = lerp(m2, g, 1 - beta3_t);   v = beta2 v + (1 - beta2) g²
        u = (m1 / (1 - beta1^t) + alpha_t m2) / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    with ``alpha_t = ademamix_alpha(t, alpha, alpha_warmup)`` and ``beta3_t = ademamix_beta3(t,
    beta1, beta3, beta3_warmup)``. The slow EMA is not bias-corrected (the paper's choice: with
    a warmed-up beta3 its bias is small, and without warmup alpha m2 starts small). eps is added
    outside the square root, as in the official code. Follow it with ``add_decayed_weights`` and
    ``scale_by_learning_rate`` for the paper's ``p = p - lr (u + wd p)``.

    Reads ``betas`` (a triple), ``alpha``, ``beta3_warmup``, ``alpha_warmup``, ``eps``. State:
    ``exp_avg`` (m1), ``exp_avg_slow`` (m2), ``exp_avg_sq`` (v), in the compute dtype.

    Args:
        betas: ``(beta1, beta2, beta3)``, the EMA weights of m1, v and m2, each in [0, 1); any
            may be a schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        alpha: the weight of the slow EMA (>= 0; 0 is Adam). The default of the ``alpha``
            hyperparameter.
        beta3_warmup: ``T_beta3``, the steps over which beta3's half-life grows from beta1's
            (None or an integer >= 0; None or 0: no warmup). The default of the
            ``beta3_warmup`` hyperparameter.
        alpha_warmup: ``T_alpha``, the steps of alpha's linear warmup (None or an integer >= 0;
            None or 0: no warmup). The default of the ``alpha_warmup`` hyperparameter.
        eps: added to the corrected ``sqrt(v)`` (>= 0). The default of the ``eps`` hyperparameter.

    Examples:
        At t = 1 Adam's part is ``sign(g)`` and the slow EMA adds ``alpha (1 - beta3) sign(g)``:
        with ``alpha = 2`` and ``beta3 = 0.5`` the first step is ``-2 lr sign(g)``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> tx = hc.chain(T.scale_by_ademamix(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1, betas=(0.9, 0.999, 0.5), alpha=2.0)
        >>> p.grad = torch.tensor([0.5, -3.0])
        >>> opt.step()
        >>> p.data
        tensor([ 0.8000, -1.8000])
    """

    name = "scale_by_ademamix"

    def __init__(self, betas: Sequence[Scalar] = (0.9, 0.999, 0.9999), alpha: Scalar = 2.0,
                 beta3_warmup: Count | None = None, alpha_warmup: Count | None = None, eps: Scalar = 1e-8) -> None:
        self.hyperparams = {
            "betas": Hyper(tuple(betas), betas_triple),
            "alpha": Hyper(alpha, non_negative),
            "beta3_warmup": Hyper(beta3_warmup, _warmup_check),
            "alpha_warmup": Hyper(alpha_warmup, _warmup_check),
            "eps": Hyper(eps, non_negative),
        }

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"exp_avg": Slot(), "exp_avg_slow": Slot(), "exp_avg_sq": Slot()}

    def _scalars(self, bucket: Bucket) -> tuple[Any, ...]:
        """(1 - beta1, 1 - beta3_t, beta2, 1 - beta2, sqrt(1 - beta2^t), eps, 1 - beta1^t, alpha_t)."""
        b1, b2, b3 = bucket.hp("betas")
        t = bucket.step
        alpha = ademamix_alpha(t, bucket.hp("alpha"), bucket.hp("alpha_warmup"))
        b3 = ademamix_beta3(t, b1, b3, bucket.hp("beta3_warmup"))
        return 1 - b1, 1 - b3, b2, 1 - b2, math.sqrt(1 - b2**t), bucket.hp("eps"), 1 - b1**t, alpha

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        w1, w3, b2, w2, sqrt_bc2, eps, bc1, alpha = self._scalars(bucket)
        m1, m2, v = bucket.state("exp_avg"), bucket.state("exp_avg_slow"), bucket.state("exp_avg_sq")
        torch._foreach_lerp_(m1, updates, w1)
        torch._foreach_lerp_(m2, updates, w3)
        ema_sq_(v, updates, b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, sqrt_bc2)
        torch._foreach_add_(denom, eps)
        num = torch._foreach_div(m1, bc1)
        torch._foreach_add_(num, m2, alpha=alpha)
        return div_into_(num, denom)


    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return self._scalars(bucket)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        m1, m2, v = state
        m1.lerp_(u, s[0])
        m2.lerp_(u, s[1])
        ema_sq_one_(v, u, s[2], s[3])
        return (m1 / s[6] + s[7] * m2) / (v.sqrt() / s[4] + s[5])

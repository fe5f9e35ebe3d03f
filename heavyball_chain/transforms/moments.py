"""Adam-family moment transforms in HeavyBall's debiased-beta ("inplace EMA") form.

With ``b̂(b, t) = 1 - (1 - b) / (1 - b^t)`` the EMA ``m_t = b̂ m_{t-1} + (1 - b̂) g_t`` (from
``m_0 = 0``) equals Adam's bias-corrected ``m_t / (1 - b^t)`` exactly, with no extra division
later; ``b̂(b, 1) = 0``, so the first step copies its input. The denominator clamps rather than
adds eps: ``denom = max(sqrt(v), eps)``.
"""

from __future__ import annotations

import torch

from ..core import Fresh, Hyper, Slot, Transform, betas_pair, positive
from .schedules import step_power

__all__ = ["beta_debias", "scale_by_adam", "scale_by_laprop", "scale_by_adopt", "scale_by_rms"]


def beta_debias(beta: float, step: int) -> float:
    """``b̂(b, t) = 1 - (1 - b) / (1 - b^t)``: the EMA weight that makes an EMA bias-free."""
    return 1 - (1 - beta) / (1 - beta**step)


def _ema_sq_(v: list[torch.Tensor], g: list[torch.Tensor], beta: float) -> None:
    """``v = beta v + (1 - beta) g²`` in place."""
    torch._foreach_mul_(v, beta)
    torch._foreach_addcmul_(v, g, g, value=1 - beta)


def _ema_sq_one_(v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, one_minus_beta: torch.Tensor) -> None:
    """``_ema_sq_`` on one tensor, for the compiled path (same operation order)."""
    v.mul_(beta).add_(one_minus_beta * g * g)


def _denominator(v: list[torch.Tensor], eps: float) -> list[torch.Tensor]:
    """``max(sqrt(v), eps)`` as new tensors."""
    denom = torch._foreach_sqrt(v)
    torch._foreach_maximum_(denom, eps)
    return denom


def _div_into_(numerators: list[torch.Tensor], denominators: list[torch.Tensor]) -> Fresh:
    """``n / d`` written into the (temporary) denominators: one full-size temporary, not two."""
    for n, d in zip(numerators, denominators):
        torch.div(n, d, out=d)
    return Fresh(denominators)


def _moment_hyperparams(betas, eps) -> dict[str, Hyper]:
    return {"betas": Hyper(tuple(betas), betas_pair), "eps": Hyper(eps, positive)}


_MOMENTS = {"exp_avg": Slot(), "exp_avg_sq": Slot()}


class scale_by_adam(Transform):  # noqa: N801 - optax-style transform name
    """Adam (Kingma & Ba 2015, arXiv 1412.6980) with debiased betas:

        m = lerp(m, g, 1 - b̂1(t));  v = b̂2(t) v + (1 - b̂2(t)) g²;  u = m / max(sqrt(v), eps)

    Reads ``betas`` and ``eps`` from the param group. State: ``exp_avg``, ``exp_avg_sq`` (fp32).
    """

    name = "scale_by_adam"

    def __init__(self, betas=(0.9, 0.99), eps: float = 1e-8):
        self.hyperparams = _moment_hyperparams(betas, eps)

    def slots(self, bucket):
        return _MOMENTS

    def update(self, updates, bucket):
        b1, b2 = bucket.hp("betas")
        m, v = bucket.state("exp_avg"), bucket.state("exp_avg_sq")
        torch._foreach_lerp_(m, updates, 1 - beta_debias(b1, bucket.step))
        _ema_sq_(v, updates, beta_debias(b2, bucket.step))
        return _div_into_(m, _denominator(v, bucket.hp("eps")))

    fused_state = ("exp_avg", "exp_avg_sq")

    def fuse(self, bucket):
        b1, b2 = (beta_debias(b, bucket.step) for b in bucket.hp("betas"))
        return 1 - b1, b2, 1 - b2, bucket.hp("eps")

    def fused(self, u, p, state, s):
        m, v = state
        m.lerp_(u, s[0])
        _ema_sq_one_(v, u, s[1], s[2])
        return m / torch.maximum(v.sqrt(), s[3])


class scale_by_laprop(Transform):  # noqa: N801
    """LaProp (Ziyin et al. 2020, arXiv 2002.04839): normalise first, then take momentum:

        v = b̂2(t) v + (1 - b̂2(t)) g²;  m = b̂1(t) m + (1 - b̂1(t)) g / max(sqrt(v), eps);  u = m

    Reads ``betas`` and ``eps``. State: ``exp_avg``, ``exp_avg_sq`` (fp32).
    """

    name = "scale_by_laprop"

    def __init__(self, betas=(0.9, 0.99), eps: float = 1e-8):
        self.hyperparams = _moment_hyperparams(betas, eps)

    def slots(self, bucket):
        return _MOMENTS

    def update(self, updates, bucket):
        b1, b2 = bucket.hp("betas")
        m, v = bucket.state("exp_avg"), bucket.state("exp_avg_sq")
        _ema_sq_(v, updates, beta_debias(b2, bucket.step))
        denom = _denominator(v, bucket.hp("eps"))
        b1 = beta_debias(b1, bucket.step)
        torch._foreach_mul_(m, b1)
        torch._foreach_addcdiv_(m, updates, denom, value=1 - b1)
        torch._foreach_copy_(denom, m)  # u = m in the spent temporary: the next transform may overwrite it
        return Fresh(denom)

    fused_state = ("exp_avg", "exp_avg_sq")

    def fuse(self, bucket):
        b1, b2 = (beta_debias(b, bucket.step) for b in bucket.hp("betas"))
        return b2, 1 - b2, b1, 1 - b1, bucket.hp("eps")

    def fused(self, u, p, state, s):
        m, v = state
        _ema_sq_one_(v, u, s[0], s[1])
        m.mul_(s[2]).add_(s[3] * (u / torch.maximum(v.sqrt(), s[4])))
        return m


def _clip_value(v) -> str | None:
    ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)
    return None if ok else "None (no clipping), a number > 0 or a schedule (a function of the step)"


class scale_by_adopt(Transform):  # noqa: N801
    """ADOPT (Taniguchi et al. 2024, arXiv 2411.02853) in HeavyBall 0.8.1's timing, one step late,
    with the clipping of the paper's current version (its Algorithm 2).

    The gradient is normalised by the *previous* second moment, so v never sees the gradient it
    divides, and clipped: ``n = clip(g / max(sqrt(v_prev), eps), ±c_k)`` with ``c_k = clip(k)``
    at the k-th momentum update (k = t - 1; default ``k^0.25``, the paper's schedule). At t = 1
    only ``v = g²``; at t = 2 ``m = n``; from t = 3 the output is the previous ``m`` and then

        m = b̂1(t-1) m + (1 - b̂1(t-1)) n

    At every t, v is updated last: ``v = b̂2(t) v + (1 - b̂2(t)) g²``. Steps 1 and 2 return
    ``None`` (no parameter update, no weight decay). Without clipping (``clip=None``, HeavyBall
    0.8.1's ADOPT) a coordinate whose first gradient is exactly 0 (an unseen embedding row, a dead
    ReLU) is divided by eps at its next non-zero gradient. Reads ``betas``, ``eps``, ``clip``.
    """

    name = "scale_by_adopt"

    def __init__(self, betas=(0.9, 0.99), eps: float = 1e-8, clip=step_power(0.25)):
        self.hyperparams = {**_moment_hyperparams(betas, eps), "clip": Hyper(clip, _clip_value)}

    def slots(self, bucket):
        return _MOMENTS

    def _clip(self, bucket):
        """This step's clip bound (for the (t-1)-th momentum update), or None."""
        return bucket.hp("clip", step=bucket.step - 1)

    def update(self, updates, bucket):
        b1, b2 = bucket.hp("betas")
        t = bucket.step
        m, v = bucket.state("exp_avg"), bucket.state("exp_avg_sq")
        out = None
        if t > 1:
            b1 = beta_debias(b1, t - 1)
            # the new m in the denominator's buffer (the old m is this step's output): one temporary
            new_m = _div_into_(updates, _denominator(v, bucket.hp("eps")))
            clip = self._clip(bucket)
            if clip is not None:
                torch._foreach_clamp_min_(new_m, -clip)
                torch._foreach_clamp_max_(new_m, clip)
            torch._foreach_mul_(new_m, 1 - b1)
            torch._foreach_add_(new_m, m, alpha=b1)
            bucket.set_state("exp_avg", new_m)
            out = m if t > 2 else None
        _ema_sq_(v, updates, beta_debias(b2, t))
        return Fresh(out) if out is not None else None  # the replaced m is referenced by nobody

    fused_state = ("exp_avg", "exp_avg_sq")

    def fuse(self, bucket):
        t = bucket.step
        if t <= 2:  # steps 1 and 2 produce no update: eager
            return None
        b1, b2 = bucket.hp("betas")
        b1, b2 = beta_debias(b1, t - 1), beta_debias(b2, t)
        clip = self._clip(bucket)
        return b1, 1 - b1, bucket.hp("eps"), b2, 1 - b2, float("inf") if clip is None else clip

    def fused(self, u, p, state, s):
        m, v = state
        out = m.clone()
        normed = (u / torch.maximum(v.sqrt(), s[2])).clamp(min=-s[5], max=s[5])
        m.mul_(s[0]).add_(s[1] * normed)
        _ema_sq_one_(v, u, s[3], s[4])
        return out


class scale_by_rms(Transform):  # noqa: N801
    """RMSProp-style normalisation (Tieleman & Hinton 2012) with a debiased second moment:

        v = b̂2(t) v + (1 - b̂2(t)) g²;  u = g / max(sqrt(v), eps)

    The preconditioner of schedule-free AdamW (it takes no momentum; schedule_free averages).
    Reads ``betas`` (only beta2) and ``eps``. State: ``exp_avg_sq`` (fp32).
    """

    name = "scale_by_rms"

    def __init__(self, betas=(0.9, 0.99), eps: float = 1e-8):
        self.hyperparams = _moment_hyperparams(betas, eps)

    def slots(self, bucket):
        return {"exp_avg_sq": Slot()}

    def update(self, updates, bucket):
        v = bucket.state("exp_avg_sq")
        _ema_sq_(v, updates, beta_debias(bucket.hp("betas")[1], bucket.step))
        return _div_into_(updates, _denominator(v, bucket.hp("eps")))

    fused_state = ("exp_avg_sq",)

    def fuse(self, bucket):
        b2 = beta_debias(bucket.hp("betas")[1], bucket.step)
        return b2, 1 - b2, bucket.hp("eps")

    def fused(self, u, p, state, s):
        (v,) = state
        _ema_sq_one_(v, u, s[0], s[1])
        return u / torch.maximum(v.sqrt(), s[2])

"""ForeachSFAdamW and PaLMForeachSFAdamW: schedule-free AdamW, HeavyBall 0.8.1's signatures.

Both are ``scale_by_rms -> add_decayed_weights -> schedule_free``; the PaLM variant's second beta
is the schedule ``palm_beta2()`` (reading ``beta2_scale``) instead of a number.
"""

from __future__ import annotations

from ..core import named_chain
from ..optimizer import ChainOptimizer
from ..transforms import add_decayed_weights, scale_by_rms, schedule_free
from ..transforms.schedules import palm_betas

__all__ = ["ForeachSFAdamW", "PaLMForeachSFAdamW"]


def sf_adamw_chain():
    """g / max(sqrt(v), eps) + wd * y, then the schedule-free y/z step (writes the params)."""
    return named_chain(
        ("rms", scale_by_rms()),
        ("decay", add_decayed_weights()),
        ("schedule_free", schedule_free()),
    )


def _check_foreach(foreach) -> None:
    if foreach is not True and foreach is not None:
        raise ValueError(f"foreach: only the foreach implementation exists, got foreach={foreach!r}")


class ForeachSFAdamW(ChainOptimizer):
    """Schedule-free AdamW (Defazio et al. 2024, arXiv 2405.15682).

    ``r`` takes effect (``c_t ∝ t^r lr_t^weight_lr_power``; 0.8.1 ignores it). Call
    ``optimizer.eval()`` before evaluating or saving and ``optimizer.train()`` before training.
    ``foreach`` is accepted for HeavyBall's signature; every path is foreach.
    """

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, warmup_steps=0,
                 r=0.0, weight_lr_power=2.0, foreach=True, compile=False):
        _check_foreach(foreach)
        super().__init__(params, sf_adamw_chain(), compile=compile, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)


class PaLMForeachSFAdamW(ChainOptimizer):
    """Schedule-free AdamW with PaLM's ``beta2_t = 1 - t^-beta2_scale``; ``beta`` is beta1
    (``betas[0]``, if given, overrides it, as in HeavyBall 0.8.1; ``betas[1]`` must be None:
    beta2 is the schedule). The group holds ``betas = (beta, palm_beta2())``."""

    def __init__(self, params, lr=0.0025, beta=0.9, betas=(None, None), eps=1e-8, weight_decay=0.0,
                 warmup_steps=0, r=0.0, weight_lr_power=2.0, beta2_scale=0.8, compile=False):
        super().__init__(params, sf_adamw_chain(), compile=compile, lr=lr, betas=palm_betas(beta, betas), eps=eps,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                         weight_lr_power=weight_lr_power, beta2_scale=beta2_scale)

"""Schedule-free AdamW: ForeachSFAdamW and PaLMForeachSFAdamW (HeavyBall 0.8.1's signatures) and
AdamWScheduleFree (a drop-in for ``schedulefree.AdamWScheduleFree`` 1.4.1).

All are ``rms -> add_decayed_weights -> schedule_free``. The PaLM variant's second beta is the
schedule ``palm_beta2()`` (reading ``beta2_scale``) instead of a number; AdamWScheduleFree uses
the schedulefree package's conventions: the bias-corrected ``sqrt(v / (1 - b2^t)) + eps`` and
averaging weights from the largest lr so far.
"""

from __future__ import annotations

import torch

from ..core import named_chain
from ..optimizer import ChainOptimizer
from ..transforms import add_decayed_weights, scale_by_rms, schedule_free
from ..transforms.schedules import palm_betas
from .torch_flags import torch_flags

__all__ = ["ForeachSFAdamW", "PaLMForeachSFAdamW", "AdamWScheduleFree"]


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
                 r=0.0, weight_lr_power=2.0, foreach=True, compile=False, *, capturable=False):
        _check_foreach(foreach)
        super().__init__(params, sf_adamw_chain(), compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)


class PaLMForeachSFAdamW(ChainOptimizer):
    """Schedule-free AdamW with PaLM's ``beta2_t = 1 - t^-beta2_scale``; ``beta`` is beta1
    (``betas[0]``, if given, overrides it, as in HeavyBall 0.8.1; ``betas[1]`` must be None:
    beta2 is the schedule). The group holds ``betas = (beta, palm_beta2())``."""

    def __init__(self, params, lr=0.0025, beta=0.9, betas=(None, None), eps=1e-8, weight_decay=0.0,
                 warmup_steps=0, r=0.0, weight_lr_power=2.0, beta2_scale=0.8, compile=False, *, capturable=False):
        super().__init__(params, sf_adamw_chain(), compile=compile, capturable=capturable, lr=lr,
                         betas=palm_betas(beta, betas), eps=eps,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                         weight_lr_power=weight_lr_power, beta2_scale=beta2_scale)


class AdamWScheduleFree(ChainOptimizer):
    """Schedule-free AdamW (Defazio et al. 2024, "The Road Less Scheduled", arXiv 2405.15682) as
    ``schedulefree.AdamWScheduleFree`` 1.4.1 computes it. With ``t`` the step, ``lr_t = lr *
    min(t / warmup_steps, 1)`` and ``c_t = w_t / sum_k w_k``, ``w_t = t^r max_{k<=t}(lr_k)^weight_lr_power``:

        v = b2 v + (1 - b2) g²;   u = g / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * y
        y = lerp(y, z, c_t) + lr_t (b1 (1 - c_t) - 1) u;   z = z - lr_t u

    Call ``optimizer.eval()`` before evaluating or saving the model (the parameters become the
    average x) and ``optimizer.train()`` before training again; ``step()`` in eval mode raises.
    Differences from the reference: the optimizer starts in train mode (the reference starts in
    eval mode and refuses ``step()`` until ``train()``; before the first step x = y, so the mode
    changes no number), and ``t``, the weight sum and ``lr_max`` are kept per parameter in
    ``optimizer.state`` (the reference keeps them per param group and counts every ``step()``
    call, also for parameters without a gradient). ``foreach`` is validated and otherwise
    ignored (every path is foreach; ``compile=True`` fuses).
    """

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup_steps=0,
                 r=0.0, weight_lr_power=2.0, foreach=hasattr(torch, "_foreach_mul_"), *, compile=False,
                 capturable=False):
        torch_flags("AdamWScheduleFree", foreach=foreach)
        tx = named_chain(
            ("rms", scale_by_rms((0.9, 0.999), debias="divide_root", eps_mode="add")),
            ("decay", add_decayed_weights()),
            ("schedule_free", schedule_free(betas=(0.9, 0.999), weight_lr="max")),
        )
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)

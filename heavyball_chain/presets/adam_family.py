"""ForeachAdamW, ForeachLaProp, ForeachADOPT: HeavyBall 0.8.1's names, arguments and defaults.

Each is one moment transform followed by the same three steps; only the first line differs.
``cautious=True`` (keyword-only, not in HeavyBall 0.8.1) puts ``cautious()`` right after the
moments (Liang et al. 2024, "Cautious Optimizers", arXiv 2411.16085): components of the update
whose sign disagrees with the gradient are dropped, the rest rescaled, before weight decay and lr.
"""

from __future__ import annotations

from ..core import Transform, named_chain
from ..optimizer import ChainOptimizer
from ..transforms import (
    add_decayed_weights,
    cautious as cautious_mask,
    scale_by_adam,
    scale_by_adopt,
    scale_by_laprop,
    scale_by_learning_rate,
    stochastic_round_apply,
)
from ..transforms.schedules import step_power

__all__ = ["ForeachAdamW", "ForeachLaProp", "ForeachADOPT", "decoupled"]


def decoupled(moments: Transform, cautious: bool = False):
    """``moments`` -> [``cautious()``] -> decoupled weight decay -> -lr (with warmup) -> add to
    params (bf16-safe)."""
    if not isinstance(cautious, bool):
        raise TypeError(f"cautious: expected True or False, got {cautious!r}")
    return named_chain(
        ("moments", moments),
        *([("cautious", cautious_mask())] if cautious else []),
        ("decay", add_decayed_weights()),
        ("lr", scale_by_learning_rate()),
        ("apply", stochastic_round_apply()),
    )


class ForeachAdamW(ChainOptimizer):
    """AdamW: ``p = p (1 - lr wd) - lr m / max(sqrt(v), eps)`` with debiased betas.

    eps clamps the denominator (torch.optim.AdamW adds it: ``m̂ / (sqrt(v̂) + eps)``).
    """

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, warmup_steps=0,
                 compile=False, *, cautious=False, capturable=False):
        super().__init__(params, decoupled(scale_by_adam(), cautious), compile=compile, capturable=capturable,
                         lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps)


class ForeachLaProp(ChainOptimizer):
    """LaProp: momentum of the normalised gradient, ``p = p (1 - lr wd) - lr m``."""

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, warmup_steps=0,
                 compile=False, *, cautious=False, capturable=False):
        super().__init__(params, decoupled(scale_by_laprop(), cautious), compile=compile, capturable=capturable,
                         lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps)


class ForeachADOPT(ChainOptimizer):
    """ADOPT as HeavyBall 0.8.1 runs it (the update at step t is the momentum of step t-1), with
    the paper's clipping of the normalised gradient to ``±clip(k)`` at the k-th momentum update:
    ``clip`` is a number, a schedule (default ``step_power(0.25)``, i.e. ``k^0.25``) or ``None``
    (no clipping: HeavyBall 0.8.1, which divides by eps where a first gradient was exactly 0)."""

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, warmup_steps=0,
                 clip=step_power(0.25), compile=False, *, cautious=False, capturable=False):
        super().__init__(params, decoupled(scale_by_adopt(), cautious), compile=compile, capturable=capturable,
                         lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps, clip=clip)

"""ADOPT as its authors publish it (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with
Any β2 with the Optimal Rate", arXiv 2411.02853, Algorithm 2 of the current version; official
code ``iShohei220/adopt``, package ``torch-adopt``): the same class name, constructor signature
and defaults as the official ``adopt.ADOPT``.

    t = 1:  v = g²                                  (no parameter update)
    t > 1:  n = clip(g / max(sqrt(v), eps), ±clip_lambda(t - 1))
            m = b1 m + (1 - b1) n;   p = p - lr m;   v = b2 v + (1 - b2) g²

Unlike :class:`.adam_family.ForeachADOPT` (HeavyBall's one-step-late timing and debiased betas),
the new momentum is applied at once and the EMAs are raw (``m`` from 0):
``scale_by_adopt(debias="none", delay=False)``. ``weight_decay`` is added to the gradient
(``decouple=False``, also at step 1, so v starts at ``(g + wd p)²``) or, with ``decouple=True``,
shrinks the weights ``p (1 - lr wd)`` from step 2 on (the official code skips it at step 1).

``clip_lambda`` is a function of the number of momentum updates so far (1 at step 2), as in the
official code, or ``None`` (no clipping: the paper's first version). It is stored in the param
groups as ``clip`` (the name ``scale_by_adopt`` reads), so it may differ per group. The default
``step_power(0.25)`` is the official ``lambda step: step**0.25``.

``pytorch_optimizer.ADOPT`` differs from the official code in two ways: it calls
``clip_lambda(t)`` with the optimizer's step (``2^0.25`` at the first momentum update, where the
official code has ``1^0.25``) and, with ``weight_decouple=True``, decays the weights at step 1
too. Its ``clip_lambda=lambda t: (t - 1)**0.25`` and coupled (or no) weight decay give these
numbers.
"""

from __future__ import annotations

from ..optimizer import ChainOptimizer
from ..transforms.moments import scale_by_adopt
from ..transforms.schedules import step_power
from .torch_adam import adam_chain
from .torch_flags import torch_flags

__all__ = ["ADOPT"]


class ADOPT(ChainOptimizer):
    """ADOPT (Taniguchi et al. 2024, arXiv 2411.02853) with the official signature; see the module
    docstring. ``cautious=True`` (keyword-only) masks the momentum where it disagrees with the
    gradient (Liang et al. 2024, arXiv 2411.16085), before weight decay and the lr."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, clip_lambda=step_power(0.25),
                 weight_decay=0.0, decouple=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, compile=False, cautious=False):
        flags = torch_flags("ADOPT", foreach=foreach, fused=fused, capturable=capturable,
                            differentiable=differentiable, maximize=maximize)
        if not isinstance(decouple, bool):
            raise TypeError(f"decouple: expected True or False, got {decouple!r}")
        if not (clip_lambda is None or callable(clip_lambda) or isinstance(clip_lambda, (int, float))
                and not isinstance(clip_lambda, bool) and 0 < clip_lambda < float("inf")):
            raise ValueError(f"clip_lambda: expected None (no clipping), a function of the step or a number > 0, "
                             f"got {clip_lambda!r}")
        moments = scale_by_adopt(delay=False, debias="none")
        tx = adam_chain("ADOPT", flags, moments, decoupled=decouple, cautious=cautious)
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         clip=clip_lambda,
                         weight_decay=weight_decay)

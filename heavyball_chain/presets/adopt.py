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

from typing import Any, Iterable, Sequence

import torch

from ..optimizer import ChainOptimizer
from ..core import LR, Scalar
from ..transforms.moments import scale_by_adopt
from ..transforms.schedules import step_power
from .torch_adam import adam_chain
from .torch_flags import torch_flags

__all__ = ["ADOPT"]


class ADOPT(ChainOptimizer):
    """ADOPT (Taniguchi et al. 2024, arXiv 2411.02853) with the official signature; see the module
    docstring. ``cautious=True`` (keyword-only) masks the momentum where it disagrees with the
    gradient (Liang et al. 2024, arXiv 2411.16085), before weight decay and the lr.

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do); ``p = p - lr m``. The default of the ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``, the EMA decays of m and v, each in [0, 1); an element may be a
            schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        eps: the floor of the root, ``g / max(sqrt(v), eps)``; > 0. The default of the ``eps``
            hyperparameter.
        clip_lambda: the bound of the normalised gradient at the k-th momentum update: a function
            of k (default ``step_power(0.25)``, ``k^0.25``), a number > 0, or None (no clipping).
            The default of the ``clip`` hyperparameter.
        weight_decay: >= 0; coupled, ``g + wd p`` (from step 1), or with ``decouple``
            decoupled, ``p (1 - lr wd)`` (from step 2). The default of the ``weight_decay``
            hyperparameter.
        decouple: decay the weights decoupled (AdamW-style) instead of adding ``wd p`` to the
            gradient. Shapes the chain (not a group value).
        foreach: torch's kernel choice (True, False or None): accepted with any value, the numbers
            are the same.
        maximize: ascend: the gradient is negated first.
        capturable: a step a CUDA graph can capture: every changing number is computed on the
            device (docs/performance.md, "CUDA graphs").
        differentiable: autograd through the step: not offered, ``True`` is refused.
        fused: torch's kernel choice, as ``foreach``.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.
        cautious: the cautious mask (Liang et al. 2024) right after the momentum: components whose
            sign disagrees with the gradient are dropped, the rest rescaled. Not in the official
            code; refused with ``maximize=True``.

    Examples:
        Step 1 only sets ``v = g²``. With a constant gradient, step 2 normalises ``g`` to
        ``g / |g| = sign(g)`` (within the clip, ``1^0.25``), so ``m = (1 - b1) sign(g)`` and
        ``p = p0 - lr (1 - b1) sign(g)``:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> opt = hc.ADOPT([p], lr=0.1)
        >>> for _ in range(2):
        ...     p.grad = torch.tensor([0.5, -1.0, 2.0])
        ...     opt.step()
        >>> p.data
        tensor([ 0.9900, -1.9900,  2.9900])
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-3,
                 betas: Sequence[Scalar] = (0.9, 0.9999), eps: Scalar = 1e-6,
                 clip_lambda: Scalar | None = step_power(0.25), weight_decay: Scalar = 0.0,
                 decouple: bool = False, *, foreach: bool | None = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False, fused: bool | None = None,
                 compile: bool = False, cautious: bool = False) -> None:
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

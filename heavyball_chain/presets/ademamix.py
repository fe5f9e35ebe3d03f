"""AdEMAMix with the signature of the official implementation (github.com/apple/ml-ademamix,
``pytorch/ademamix.py``): Pagliardini, Ablin & Grangier 2024, arXiv 2409.03137."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from ..core import LR, Chain, Count, Scalar, named_chain
from ..optimizer import ChainOptimizer
from ..transforms.ademamix import scale_by_ademamix
from ..transforms.apply import stochastic_round_apply
from ..transforms.gradient import cautious as cautious_mask
from ..transforms.scaling import add_decayed_weights, scale_by_learning_rate

__all__ = ["AdEMAMix", "ademamix_chain"]


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def ademamix_chain(cautious: bool = False) -> Chain:
    """``scale_by_ademamix`` [-> ``cautious``] -> decoupled weight decay -> -lr -> add to params."""
    return named_chain(
        ("moments", scale_by_ademamix()),
        *([("cautious", cautious_mask())] if _flag("cautious", cautious) else []),
        ("decay", add_decayed_weights()),
        ("lr", scale_by_learning_rate()),
        ("apply", stochastic_round_apply()),
    )


class AdEMAMix(ChainOptimizer):
    """AdEMAMix: ``p = p - lr ((m1/(1-b1^t) + alpha_t m2) / (sqrt(v/(1-b2^t)) + eps) + wd p)``.

    Same positional arguments, names and defaults as the official ``AdEMAMix``: ``betas`` is
    ``(beta1, beta2, beta3)``, ``alpha`` weighs the slow EMA m2 (decay beta3); ``alpha_warmup``
    and ``beta3_warmup`` (None: no warmup) ramp alpha linearly from 0 and beta3 from beta1 (its
    half-life linearly) over that many steps; ``weight_decay`` is decoupled (AdamW's, scaled by
    lr). All are param-group values. Keyword-only: ``cautious=True`` masks the update where its
    sign disagrees with the gradient (Liang et al. 2024, arXiv 2411.16085; applied to the whole
    AdEMAMix direction, before weight decay), ``compile`` as for every preset.

    ``pytorch_optimizer.AdEMAMix`` differs in its defaults (alpha=5, coupled weight decay unless
    ``weight_decouple=True``) and uses one ``t_alpha_beta3`` for both warmups.

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do); it also scales the weight decay. The default of the ``lr``
            hyperparameter.
        betas: ``(beta1, beta2, beta3)``, each in [0, 1): the EMA decays of the fast EMA m1, of v
            and of the slow EMA m2; an element may be a schedule ``f(t)``. The default of the
            ``betas`` hyperparameter.
        alpha: the weight of the slow EMA m2, >= 0. The default of the ``alpha`` hyperparameter.
        beta3_warmup: the number of steps over which beta3 warms up from beta1 (its half-life
            linearly), an integer >= 0, or None (no warmup). The default of the ``beta3_warmup``
            hyperparameter.
        alpha_warmup: the number of steps over which alpha ramps linearly from 0, an integer >= 0,
            or None (no warmup). The default of the ``alpha_warmup`` hyperparameter.
        eps: added to the corrected root, ``sqrt(v) / sqrt(1 - b2^t) + eps``; >= 0. The default of
            the ``eps`` hyperparameter.
        weight_decay: decoupled decay of the weights, ``p (1 - lr wd)``; >= 0. The default of the
            ``weight_decay`` hyperparameter.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.
        cautious: the cautious mask (Liang et al. 2024) on the whole AdEMAMix direction:
            components whose sign disagrees with the gradient are dropped, the rest rescaled. Not
            in the official code.

    Examples:
        At the first step ``m1 / (1 - b1) = g`` and ``v / (1 - b2) = g²``, while the slow EMA is
        ``m2 = (1 - b3) g``, uncorrected: with ``b3 = 0.9`` and ``alpha = 2`` the step is
        ``-lr (1 + 2 * 0.1) sign(g)``:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> opt = hc.AdEMAMix([p], lr=0.1, betas=(0.9, 0.999, 0.9), alpha=2.0)
        >>> p.grad = torch.tensor([0.5, -1.0, 2.0])
        >>> opt.step()
        >>> p.data
        tensor([ 0.8800, -1.8800,  2.8800])
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-3,
                 betas: Sequence[Scalar] = (0.9, 0.999, 0.9999), alpha: Scalar = 2.0,
                 beta3_warmup: Count | None = None, alpha_warmup: Count | None = None, eps: Scalar = 1e-8,
                 weight_decay: Scalar = 0, *, compile: bool = False, cautious: bool = False) -> None:
        super().__init__(params, ademamix_chain(cautious), compile=compile, lr=lr, betas=betas, alpha=alpha,
                         beta3_warmup=beta3_warmup, alpha_warmup=alpha_warmup, eps=eps,
                         weight_decay=weight_decay)

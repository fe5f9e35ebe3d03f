"""AdEMAMix with the signature of the official implementation (github.com/apple/ml-ademamix,
``pytorch/ademamix.py``): Pagliardini, Ablin & Grangier 2024, arXiv 2409.03137."""

from __future__ import annotations

from ..core import named_chain
from ..optimizer import ChainOptimizer
from ..transforms.ademamix import scale_by_ademamix
from ..transforms.apply import stochastic_round_apply
from ..transforms.gradient import cautious as cautious_mask
from ..transforms.scaling import add_decayed_weights, scale_by_learning_rate

__all__ = ["AdEMAMix", "ademamix_chain"]


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def ademamix_chain(cautious: bool = False):
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
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=2.0, beta3_warmup=None,
                 alpha_warmup=None, eps=1e-8, weight_decay=0, *, compile=False, cautious=False):
        super().__init__(params, ademamix_chain(cautious), compile=compile, lr=lr, betas=betas, alpha=alpha,
                         beta3_warmup=beta3_warmup, alpha_warmup=alpha_warmup, eps=eps,
                         weight_decay=weight_decay)

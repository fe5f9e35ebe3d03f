"""Adam, AdamW, NAdam, RAdam and Adamax: torch.optim's names, arguments and defaults (torch
2.13), each a short chain that matches torch.optim to rounding.

    [maximize: -g] -> [coupled decay: g + wd p] -> moments -> [cautious] -> [decoupled decay: u + wd p]
        -> -lr -> add to params

The moments are torch's form: raw EMAs divided by their bias corrections, eps added to the root
(``scale_by_adam(debias="divide", eps_mode="add")``; NAdam, RAdam and Adamax in
:mod:`..transforms.adam_variants`). Hyperparameters live in the param groups under torch's names
(``lr``, ``betas``, ``eps``, ``weight_decay``, ``momentum_decay``), plus ``warmup_steps`` (0:
none) from ``scale_by_learning_rate``; ``lr`` may be a one-element tensor. ``amsgrad`` and
``decoupled_weight_decay`` shape the chain, so they are constructor arguments only (torch also
copies them into each group). torch's implementation flags go through
:func:`.torch_flags.torch_flags`.

``cautious=True`` (keyword-only, not in torch) masks the moment transform's output where its
sign disagrees with the gradient (Liang et al. 2024, arXiv 2411.16085; ``transforms.cautious``),
before weight decay and the learning rate. The mask compares with ``p.grad`` (the loss gradient,
without the coupled decay term), so it is refused together with ``maximize=True``, which
negates the gradient the moments see.

Differences from torch.optim, all deliberate: ``betas`` and ``weight_decay`` may not be
tensors; ``differentiable=True`` is refused, and ``capturable=True`` by NAdam, RAdam and Adamax
(their corrections are computed on the host; see ``torch_flags``); bf16/fp16
parameters are updated in fp32 and written back with stochastic rounding; the state is keyed by
the chain (``moments/exp_avg``, ...), so torch.optim's state dicts do not load into these.
"""

from __future__ import annotations

from ..core import Transform, boolean, named_chain
from ..optimizer import ChainOptimizer
from ..transforms.adam_variants import scale_by_adamax, scale_by_nadam, scale_by_radam
from ..transforms.apply import stochastic_round_apply
from ..transforms.gradient import cautious as cautious_mask
from ..transforms.moments import scale_by_adam
from ..transforms.scaling import add_decayed_weights, scale_by_learning_rate
from .torch_flags import torch_flags

__all__ = ["Adam", "AdamW", "NAdam", "RAdam", "Adamax", "adam_chain"]


def _flag(name: str, value) -> bool:
    if boolean(value) is not None:
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def adam_chain(optimizer: str, flags: list[Transform], moments: Transform, *, decoupled: bool, cautious: bool):
    """The chain of every Adam-family preset: ``flags`` (from ``torch_flags``), weight decay
    coupled (``g + wd p`` first, as torch's L2 penalty) or decoupled (``u + wd p`` after the
    moments: ``p (1 - lr wd)``, Loshchilov & Hutter 2019), ``moments``, ``cautious()`` right after
    the moments when asked, then ``-lr`` and the (bf16-safe) apply."""
    _flag("decoupled_weight_decay", decoupled)
    if _flag("cautious", cautious) and flags:
        raise ValueError(f"{optimizer}: cautious=True with maximize=True is not supported (the cautious mask "
                         f"compares the update with p.grad, which maximize negates)")
    decay = [("decay", add_decayed_weights())]
    return named_chain(
        *(("maximize", f) for f in flags),
        *([] if decoupled else decay),
        ("moments", moments),
        *([("cautious", cautious_mask())] if cautious else []),
        *(decay if decoupled else []),
        ("lr", scale_by_learning_rate()),
        ("apply", stochastic_round_apply()),
    )


def _adam(amsgrad):
    return scale_by_adam(debias="divide", eps_mode="add", amsgrad=_flag("amsgrad", amsgrad))


class Adam(ChainOptimizer):
    """Adam (Kingma & Ba 2015, arXiv 1412.6980) as torch.optim.Adam:

        g = g + wd p  (decoupled_weight_decay: p = p (1 - lr wd) instead)
        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g²   (amsgrad: v_max = max(v_max, v), used for v)
        p = p - lr m / (1 - b1^t) / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, compile=False, cautious=False):
        flags = torch_flags(type(self).__name__, foreach=foreach, fused=fused, capturable=capturable,
                            differentiable=differentiable, maximize=maximize)
        tx = adam_chain(type(self).__name__, flags, _adam(amsgrad),
                        decoupled=decoupled_weight_decay, cautious=cautious)
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101) as torch.optim.AdamW: Adam with
    decoupled weight decay, ``p = p (1 - lr wd) - lr m̂ / (sqrt(v̂) + eps)``; default ``wd = 0.01``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 compile=False, cautious=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, compile=compile, cautious=cautious)


class NAdam(ChainOptimizer):
    """NAdam (Dozat 2016) as torch.optim.NAdam (see ``scale_by_nadam``): Adam with Nesterov
    momentum on the schedule ``mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))``;
    ``decoupled_weight_decay`` gives NAdamW's ``p (1 - lr wd)``."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, compile=False, cautious=False):
        flags = torch_flags("NAdam", foreach=foreach, capturable=capturable, differentiable=differentiable,
                            maximize=maximize)
        tx = adam_chain("NAdam", flags, scale_by_nadam(),
                        decoupled=decoupled_weight_decay, cautious=cautious)
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay,
                         momentum_decay=momentum_decay)


class RAdam(ChainOptimizer):
    """RAdam (Liu et al. 2020, arXiv 1908.03265) as torch.optim.RAdam (see ``scale_by_radam``):
    the adaptive step is rectified once ``rho_t > 5``, before that it is SGD with momentum;
    ``decoupled_weight_decay`` gives RAdamW's ``p (1 - lr wd)``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                 *, foreach=None, maximize=False, capturable=False, differentiable=False, compile=False,
                 cautious=False):
        flags = torch_flags("RAdam", foreach=foreach, capturable=capturable, differentiable=differentiable,
                            maximize=maximize)
        tx = adam_chain("RAdam", flags, scale_by_radam(), decoupled=decoupled_weight_decay,
                        cautious=cautious)
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay)


class Adamax(ChainOptimizer):
    """Adamax (Kingma & Ba 2015, sec. 7.1) as torch.optim.Adamax (see ``scale_by_adamax``):
    ``p = p - lr m / ((1 - b1^t) max(b2 w, |g| + eps))``, with coupled weight decay."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False, compile=False, cautious=False):
        flags = torch_flags("Adamax", foreach=foreach, capturable=capturable, differentiable=differentiable,
                            maximize=maximize)
        tx = adam_chain("Adamax", flags, scale_by_adamax(), decoupled=False, cautious=cautious)
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay)

"""SGD, RMSprop and Adagrad: torch.optim's names, arguments and defaults (torch 2.13), each a short
chain with coupled weight decay (``g + wd p``, added before everything else, as torch does).

Hyperparameters live in the param groups under torch's names (``lr``, ``momentum``,
``dampening``, ``alpha``, ``eps``, ``weight_decay``, ``lr_decay``, ``initial_accumulator_value``),
plus ``warmup_steps`` (0: none) from ``scale_by_learning_rate``. ``nesterov`` and ``centered``
shape the chain, so they are constructor arguments only. torch's implementation flags are
handled by :func:`.torch_flags.torch_flags` (``maximize`` negates the gradient first).

Differences from torch.optim, all deliberate: ``momentum`` must be in [0, 1) and ``dampening``
and ``alpha`` in [0, 1] (torch accepts any ``momentum >= 0``, any dampening, any ``alpha >= 0``);
bf16/fp16 parameters are updated in fp32 and written back with stochastic rounding (torch
computes in the parameter's dtype); ``weight_decay`` may not be a tensor.
"""

from __future__ import annotations

from ..core import named_chain
from ..optimizer import ChainOptimizer
from ..transforms.accumulators import scale_by_adagrad, scale_by_inverse_time_decay, scale_by_rmsprop
from ..transforms.apply import stochastic_round_apply
from ..transforms.gradient import trace
from ..transforms.scaling import add_decayed_weights, scale_by_learning_rate
from .torch_flags import torch_flags

__all__ = ["SGD", "RMSprop", "Adagrad"]


def _coupled(flags, *body):
    """maximize (optional) -> ``g + wd p`` -> ``body`` -> ``-lr`` -> add to params (bf16-safe)."""
    return named_chain(
        *(("maximize", f) for f in flags),
        ("decay", add_decayed_weights()),
        *body,
        ("lr", scale_by_learning_rate()),
        ("apply", stochastic_round_apply()),
    )


def _flag(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


class SGD(ChainOptimizer):
    """Stochastic gradient descent with momentum (Polyak 1964; Nesterov's form as in Sutskever et
    al. 2013), as torch.optim.SGD:

        g = g + wd p;   m_1 = g,  m_t = momentum m_{t-1} + (1 - dampening) g;   p = p - lr m

    (Nesterov: ``p = p - lr (g + momentum m)``). With ``momentum=0`` (the default) no buffer is kept
    and dampening does nothing. ``nesterov`` requires ``momentum > 0`` and ``dampening == 0``.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None, compile=False):
        flags = torch_flags("SGD", foreach=foreach, fused=fused, differentiable=differentiable, maximize=maximize)
        numbers = all(isinstance(v, (int, float)) for v in (momentum, dampening))  # else checked as hyperparameters
        if _flag("nesterov", nesterov) and numbers and (momentum <= 0 or dampening != 0):
            raise ValueError(f"nesterov: Nesterov momentum requires momentum > 0 and dampening == 0, got "
                             f"momentum={momentum!r}, dampening={dampening!r}")
        tx = _coupled(flags, ("momentum", trace(momentum=0.0, nesterov=nesterov)))
        super().__init__(params, tx, compile=compile, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay)


class RMSprop(ChainOptimizer):
    """RMSprop (Tieleman & Hinton 2012, lecture 6.5), centered as in Graves 2013 (arXiv
    1308.0850), as torch.optim.RMSprop:

        g = g + wd p;   v = alpha v + (1 - alpha) g²;   d = sqrt(v) + eps   (centered: sqrt(v - ḡ²) + eps)
        p = p - lr g / d;   with momentum: buf = momentum buf + g / d,  p = p - lr buf

    ``v`` (``square_avg``) starts at 0 and is not bias-corrected; eps is added to the root.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False, *, compile=False):
        flags = torch_flags("RMSprop", foreach=foreach, capturable=capturable, differentiable=differentiable,
                            maximize=maximize)
        tx = _coupled(flags, ("rmsprop", scale_by_rmsprop(centered=_flag("centered", centered))),
                      ("momentum", trace(momentum=0.0)))
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum)


class Adagrad(ChainOptimizer):
    """Adagrad (Duchi, Hazan & Singer 2011, JMLR 12), as torch.optim.Adagrad:

        g = g + wd p;   Σ = Σ + g² (from initial_accumulator_value);   p = p - lr_t g / (sqrt(Σ) + eps)

    with ``lr_t = lr / (1 + (t - 1) lr_decay)`` at the parameter's step ``t``. torch creates the
    accumulator in the constructor; here it is created at a parameter's first step, from the
    group's ``initial_accumulator_value`` (which therefore cannot be a schedule).
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None, compile=False):
        flags = torch_flags("Adagrad", foreach=foreach, fused=fused, differentiable=differentiable,
                            maximize=maximize)
        tx = _coupled(flags, ("adagrad", scale_by_adagrad()), ("lr_decay", scale_by_inverse_time_decay()))
        super().__init__(params, tx, compile=compile, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps)

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

from typing import Any, Iterable

import torch

from ..core import LR, Chain, Scalar, Transform, named_chain
from ..optimizer import ChainOptimizer
from ..transforms.accumulators import scale_by_adagrad, scale_by_inverse_time_decay, scale_by_rmsprop
from ..transforms.apply import stochastic_round_apply
from ..transforms.gradient import trace
from ..transforms.scaling import add_decayed_weights, scale_by_learning_rate
from .torch_flags import torch_flags

__all__ = ["SGD", "RMSprop", "Adagrad"]


def _coupled(flags: list[Transform], *body: tuple[str, Transform]) -> Chain:
    """maximize (optional) -> ``g + wd p`` -> ``body`` -> ``-lr`` -> add to params (bf16-safe)."""
    return named_chain(
        *(("maximize", f) for f in flags),
        ("decay", add_decayed_weights()),
        *body,
        ("lr", scale_by_learning_rate()),
        ("apply", stochastic_round_apply()),
    )


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


class SGD(ChainOptimizer):
    """Stochastic gradient descent with momentum (Polyak 1964; Nesterov's form as in Sutskever et
    al. 2013), as torch.optim.SGD:

        g = g + wd p;   m_1 = g,  m_t = momentum m_{t-1} + (1 - dampening) g;   p = p - lr m

    (Nesterov: ``p = p - lr (g + momentum m)``). With ``momentum=0`` (the default) no buffer is kept
    and dampening does nothing. ``nesterov`` requires ``momentum > 0`` and ``dampening == 0``.

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do); ``p = p - lr m``. The default of the ``lr`` hyperparameter.
        momentum: heavy-ball momentum ``m = momentum m + (1 - dampening) g``, in [0, 1); 0 keeps
            no buffer (plain SGD). The default of the ``momentum`` hyperparameter.
        dampening: torch's dampening of the momentum, in [0, 1]. The default of the ``dampening``
            hyperparameter.
        weight_decay: coupled decay, >= 0: ``wd p`` is added to the gradient first. The default of
            the ``weight_decay`` hyperparameter.
        nesterov: Nesterov momentum: the update is ``g + momentum m``; needs ``momentum > 0`` and
            ``dampening == 0``. Shapes the chain (not a group value).
        maximize: ascend: the gradient is negated first.
        foreach: torch's kernel choice (True, False or None): accepted with any value, the numbers
            are the same.
        differentiable: autograd through the step: not offered, ``True`` is refused.
        fused: torch's kernel choice, as ``foreach``.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.

    Examples:
        A constant gradient ``g``: the buffer is ``g``, then ``1.9 g``, so after two steps
        ``p = p0 - lr (1 + 1.9) g``, as torch.optim.SGD computes it:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> q = torch.nn.Parameter(p.detach().clone())
        >>> ours, ref = hc.SGD([p], lr=0.1, momentum=0.9), torch.optim.SGD([q], lr=0.1, momentum=0.9)
        >>> for _ in range(2):
        ...     p.grad, q.grad = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, -1.0, 2.0])
        ...     ours.step(); ref.step()
        >>> p.data
        tensor([ 0.8550, -1.7100,  2.4200])
        >>> torch.allclose(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-3,
                 momentum: Scalar = 0, dampening: Scalar = 0,
                 weight_decay: Scalar = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, differentiable: bool = False,
                 fused: bool | None = None, compile: bool = False) -> None:
        flags = torch_flags("SGD", foreach=foreach, fused=fused, differentiable=differentiable, maximize=maximize)
        # momentum and dampening are checked here when they are numbers, else as hyperparameters
        if (_flag("nesterov", nesterov) and isinstance(momentum, (int, float)) and isinstance(dampening, (int, float))
                and (momentum <= 0 or dampening != 0)):
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

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do). The default of the ``lr`` hyperparameter.
        alpha: the EMA decay of the squared gradient, in [0, 1]. The default of the ``alpha``
            hyperparameter.
        eps: added to the root, ``sqrt(v) + eps``; >= 0. The default of the ``eps`` hyperparameter.
        weight_decay: coupled decay, >= 0: ``wd p`` is added to the gradient first. The default of
            the ``weight_decay`` hyperparameter.
        momentum: momentum of the normalised update, ``buf = momentum buf + g / d``, in [0, 1); 0
            keeps no buffer. The default of the ``momentum`` hyperparameter.
        centered: divide by the centred second moment ``sqrt(v - ḡ²) + eps`` (``ḡ`` the EMA of g,
            decay ``alpha``). Shapes the chain (not a group value).
        capturable: a step a CUDA graph can capture: refused (``True``), this chain decides on
            the host.
        foreach: torch's kernel choice (True, False or None): accepted with any value, the numbers
            are the same.
        maximize: ascend: the gradient is negated first.
        differentiable: autograd through the step: not offered, ``True`` is refused.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.

    Examples:
        A constant gradient ``g``: ``v`` is ``0.01 g²``, then ``0.0199 g²`` (``alpha=0.99``), so two
        steps move ``p`` by ``-lr (1/sqrt(0.01) + 1/sqrt(0.0199)) sign(g)``, as torch.optim.RMSprop
        does:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> q = torch.nn.Parameter(p.detach().clone())
        >>> ours, ref = hc.RMSprop([p], lr=0.01), torch.optim.RMSprop([q], lr=0.01)
        >>> for _ in range(2):
        ...     p.grad, q.grad = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, -1.0, 2.0])
        ...     ours.step(); ref.step()
        >>> p.data
        tensor([ 0.8291, -1.8291,  2.8291])
        >>> torch.allclose(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-2,
                 alpha: Scalar = 0.99, eps: Scalar = 1e-8,
                 weight_decay: Scalar = 0, momentum: Scalar = 0,
                 centered: bool = False, capturable: bool = False, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False, *, compile: bool = False) -> None:
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

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do). The default of the ``lr`` hyperparameter.
        lr_decay: ``lr_t = lr / (1 + (t - 1) lr_decay)``, >= 0 (0: a constant lr). The default of
            the ``lr_decay`` hyperparameter.
        weight_decay: coupled decay, >= 0: ``wd p`` is added to the gradient first. The default of
            the ``weight_decay`` hyperparameter.
        initial_accumulator_value: the sum of squares' starting value, >= 0, fixed (not a
            schedule). The default of the ``initial_accumulator_value`` hyperparameter.
        eps: added to the root, ``sqrt(Σ) + eps``; >= 0. The default of the ``eps`` hyperparameter.
        foreach: torch's kernel choice (True, False or None): accepted with any value, the numbers
            are the same.
        maximize: ascend: the gradient is negated first.
        differentiable: autograd through the step: not offered, ``True`` is refused.
        fused: torch's kernel choice, as ``foreach``.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.

    Examples:
        A constant gradient ``g``: ``Σ`` is ``g²``, then ``2 g²``, so two steps move
        ``p`` by ``-lr (1 + 1/sqrt(2)) sign(g)``, as torch.optim.Adagrad does:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> q = torch.nn.Parameter(p.detach().clone())
        >>> ours, ref = hc.Adagrad([p], lr=0.1), torch.optim.Adagrad([q], lr=0.1)
        >>> for _ in range(2):
        ...     p.grad, q.grad = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, -1.0, 2.0])
        ...     ours.step(); ref.step()
        >>> p.data
        tensor([ 0.8293, -1.8293,  2.8293])
        >>> torch.allclose(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-2,
                 lr_decay: Scalar = 0, weight_decay: Scalar = 0,
                 initial_accumulator_value: float = 0, eps: Scalar = 1e-10,
                 foreach: bool | None = None, *, maximize: bool = False, differentiable: bool = False,
                 fused: bool | None = None, compile: bool = False) -> None:
        flags = torch_flags("Adagrad", foreach=foreach, fused=fused, differentiable=differentiable,
                            maximize=maximize)
        tx = _coupled(flags, ("adagrad", scale_by_adagrad()), ("lr_decay", scale_by_inverse_time_decay()))
        super().__init__(params, tx, compile=compile, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps)

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

from typing import Any, Iterable, Sequence

import torch

from ..core import LR, Chain, Scalar, Transform, boolean, named_chain
from ..optimizer import ChainOptimizer
from ..transforms.adam_variants import scale_by_adamax, scale_by_nadam, scale_by_radam
from ..transforms.apply import stochastic_round_apply
from ..transforms.gradient import cautious as cautious_mask
from ..transforms.moments import scale_by_adam
from ..transforms.scaling import add_decayed_weights, scale_by_learning_rate
from .torch_flags import torch_flags

__all__ = ["Adam", "AdamW", "NAdam", "RAdam", "Adamax", "adam_chain"]


def _flag(name: str, value: Any) -> bool:
    if boolean(value) is not None:
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def adam_chain(optimizer: str, flags: list[Transform], moments: Transform, *, decoupled: bool,
               cautious: bool) -> Chain:
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


def _adam(amsgrad: bool) -> scale_by_adam:
    return scale_by_adam(debias="divide", eps_mode="add", amsgrad=_flag("amsgrad", amsgrad))


class Adam(ChainOptimizer):
    """Adam (Kingma & Ba 2015, arXiv 1412.6980) as torch.optim.Adam:

        g = g + wd p  (decoupled_weight_decay: p = p (1 - lr wd) instead)
        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g²   (amsgrad: v_max = max(v_max, v), used for v)
        p = p - lr m / (1 - b1^t) / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do). The default of the ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``, the EMA decays of m and v, each in [0, 1); an element may be a
            schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        eps: added to the root, ``sqrt(v̂) + eps``; >= 0. The default of the ``eps`` hyperparameter.
        weight_decay: >= 0; coupled, ``g + wd p`` before the moments, or with
            ``decoupled_weight_decay`` decoupled, ``p (1 - lr wd)``. The default of the
            ``weight_decay`` hyperparameter.
        amsgrad: divide by the running maximum of v (Reddi et al. 2018). Shapes the chain (not a
            group value).
        foreach: torch's kernel choice (True, False or None): accepted with any value, the numbers
            are the same.
        maximize: ascend: the gradient is negated first.
        capturable: a step a CUDA graph can capture: every changing number is computed on the
            device (docs/performance.md, "CUDA graphs"); the same numbers as the default step.
        differentiable: autograd through the step: not offered, ``True`` is refused.
        fused: torch's kernel choice, as ``foreach``.
        decoupled_weight_decay: decay the weights decoupled, ``p (1 - lr wd)`` (AdamW-style),
            instead of adding ``wd p`` to the gradient. Shapes the chain (not a group value).
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.
        cautious: the cautious mask (Liang et al. 2024) right after the moments: components whose
            sign disagrees with the gradient are dropped, the rest rescaled. Not in torch; refused
            with ``maximize=True``.

    Examples:
        A constant gradient ``g`` gives ``m̂ = g`` and ``v̂ = g²`` at every step, so each step is
        ``-lr sign(g)`` (up to eps), as torch.optim.Adam computes it:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> q = torch.nn.Parameter(p.detach().clone())
        >>> ours, ref = hc.Adam([p], lr=0.1), torch.optim.Adam([q], lr=0.1)
        >>> for _ in range(2):
        ...     p.grad, q.grad = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, -1.0, 2.0])
        ...     ours.step(); ref.step()
        >>> p.data
        tensor([ 0.8000, -1.8000,  2.8000])
        >>> torch.allclose(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-3,
                 betas: Sequence[Scalar] = (0.9, 0.999), eps: Scalar = 1e-8,
                 weight_decay: Scalar = 0, amsgrad: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, decoupled_weight_decay: bool = False, compile: bool = False,
                 cautious: bool = False) -> None:
        flags = torch_flags(type(self).__name__, foreach=foreach, fused=fused, capturable=capturable,
                            differentiable=differentiable, maximize=maximize)
        tx = adam_chain(type(self).__name__, flags, _adam(amsgrad),
                        decoupled=decoupled_weight_decay, cautious=cautious)
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101) as torch.optim.AdamW: Adam with
    decoupled weight decay, ``p = p (1 - lr wd) - lr m̂ / (sqrt(v̂) + eps)``; default ``wd = 0.01``.

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do). The default of the ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``, the EMA decays of m and v, each in [0, 1); an element may be a
            schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        eps: added to the root, ``sqrt(v̂) + eps``; >= 0. The default of the ``eps`` hyperparameter.
        weight_decay: decoupled decay of the weights, ``p (1 - lr wd)``; >= 0. The default of the
            ``weight_decay`` hyperparameter.
        amsgrad: divide by the running maximum of v (Reddi et al. 2018). Shapes the chain (not a
            group value).
        maximize: ascend: the gradient is negated first.
        foreach: torch's kernel choice (True, False or None): accepted with any value, the numbers
            are the same.
        capturable: a step a CUDA graph can capture: every changing number is computed on the
            device (docs/performance.md, "CUDA graphs"); the same numbers as the default step.
        differentiable: autograd through the step: not offered, ``True`` is refused.
        fused: torch's kernel choice, as ``foreach``.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.
        cautious: the cautious mask (Liang et al. 2024) right after the moments: components whose
            sign disagrees with the gradient are dropped, the rest rescaled. Not in torch; refused
            with ``maximize=True``.

    Examples:
        A constant gradient ``g``: each step is ``p = p (1 - lr wd) - lr sign(g)`` (Adam's step is
        ``-lr sign(g)`` when ``m̂ = g`` and ``v̂ = g²``), as torch.optim.AdamW computes it:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> q = torch.nn.Parameter(p.detach().clone())
        >>> ours, ref = hc.AdamW([p], lr=0.1, weight_decay=0.5), torch.optim.AdamW([q], lr=0.1, weight_decay=0.5)
        >>> for _ in range(2):
        ...     p.grad, q.grad = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, -1.0, 2.0])
        ...     ours.step(); ref.step()
        >>> p.data
        tensor([ 0.7075, -1.6100,  2.5125])
        >>> torch.allclose(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-3,
                 betas: Sequence[Scalar] = (0.9, 0.999), eps: Scalar = 1e-8,
                 weight_decay: Scalar = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, compile: bool = False, cautious: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, compile=compile, cautious=cautious)


class NAdam(ChainOptimizer):
    """NAdam (Dozat 2016) as torch.optim.NAdam (see ``scale_by_nadam``): Adam with Nesterov
    momentum on the schedule ``mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))``;
    ``decoupled_weight_decay`` gives NAdamW's ``p (1 - lr wd)``.

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do). The default of the ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``, the EMA decays of m and v, each in [0, 1); an element may be a
            schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        eps: added to the root, ``sqrt(v̂) + eps``; >= 0. The default of the ``eps`` hyperparameter.
        weight_decay: >= 0; coupled, ``g + wd p`` before the moments, or with
            ``decoupled_weight_decay`` decoupled, ``p (1 - lr wd)``. The default of the
            ``weight_decay`` hyperparameter.
        momentum_decay: ``psi`` of NAdam's momentum schedule ``mu_t = b1 (1 - 0.5 0.96^(t psi))``;
            >= 0. The default of the ``momentum_decay`` hyperparameter.
        decoupled_weight_decay: decay the weights decoupled, ``p (1 - lr wd)`` (AdamW-style),
            instead of adding ``wd p`` to the gradient. Shapes the chain (not a group value).
        foreach: torch's kernel choice (True, False or None): accepted with any value, the numbers
            are the same.
        maximize: ascend: the gradient is negated first.
        capturable: a step a CUDA graph can capture: refused (``True``), this chain computes its
            corrections on the host.
        differentiable: autograd through the step: not offered, ``True`` is refused.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.
        cautious: the cautious mask (Liang et al. 2024) right after the moments: components whose
            sign disagrees with the gradient are dropped, the rest rescaled. Not in torch; refused
            with ``maximize=True``.

    Examples:
        Two steps match torch.optim.NAdam:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> q = torch.nn.Parameter(p.detach().clone())
        >>> ours, ref = hc.NAdam([p], lr=0.1), torch.optim.NAdam([q], lr=0.1)
        >>> for _ in range(2):
        ...     p.grad, q.grad = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, -1.0, 2.0])
        ...     ours.step(); ref.step()
        >>> torch.allclose(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 2e-3,
                 betas: Sequence[Scalar] = (0.9, 0.999), eps: Scalar = 1e-8,
                 weight_decay: Scalar = 0, momentum_decay: Scalar = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False, compile: bool = False,
                 cautious: bool = False) -> None:
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
    ``decoupled_weight_decay`` gives RAdamW's ``p (1 - lr wd)``.

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do). The default of the ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``, the EMA decays of m and v, each in [0, 1); an element may be a
            schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        eps: added to the root, ``sqrt(v̂) + eps`` (in the rectified steps); >= 0. The default of
            the ``eps`` hyperparameter.
        weight_decay: >= 0; coupled, ``g + wd p`` before the moments, or with
            ``decoupled_weight_decay`` decoupled, ``p (1 - lr wd)``. The default of the
            ``weight_decay`` hyperparameter.
        decoupled_weight_decay: decay the weights decoupled, ``p (1 - lr wd)`` (AdamW-style),
            instead of adding ``wd p`` to the gradient. Shapes the chain (not a group value).
        foreach: torch's kernel choice (True, False or None): accepted with any value, the numbers
            are the same.
        maximize: ascend: the gradient is negated first.
        capturable: a step a CUDA graph can capture: refused (``True``), this chain computes its
            corrections on the host.
        differentiable: autograd through the step: not offered, ``True`` is refused.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.
        cautious: the cautious mask (Liang et al. 2024) right after the moments: components whose
            sign disagrees with the gradient are dropped, the rest rescaled. Not in torch; refused
            with ``maximize=True``.

    Examples:
        While ``rho_t <= 5`` (the first steps at ``beta2=0.999``) the step is SGD with the
        bias-corrected momentum ``m̂``, which is ``g`` for a constant gradient: ``p = p0 - 2 lr g``
        after two steps, as torch.optim.RAdam computes it:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> q = torch.nn.Parameter(p.detach().clone())
        >>> ours, ref = hc.RAdam([p], lr=0.1), torch.optim.RAdam([q], lr=0.1)
        >>> for _ in range(2):
        ...     p.grad, q.grad = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, -1.0, 2.0])
        ...     ours.step(); ref.step()
        >>> p.data
        tensor([ 0.9000, -1.8000,  2.6000])
        >>> torch.allclose(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-3,
                 betas: Sequence[Scalar] = (0.9, 0.999), eps: Scalar = 1e-8,
                 weight_decay: Scalar = 0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, compile: bool = False, cautious: bool = False) -> None:
        flags = torch_flags("RAdam", foreach=foreach, capturable=capturable, differentiable=differentiable,
                            maximize=maximize)
        tx = adam_chain("RAdam", flags, scale_by_radam(), decoupled=decoupled_weight_decay,
                        cautious=cautious)
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay)


class Adamax(ChainOptimizer):
    """Adamax (Kingma & Ba 2015, sec. 7.1) as torch.optim.Adamax (see ``scale_by_adamax``):
    ``p = p - lr m / ((1 - b1^t) max(b2 w, |g| + eps))``, with coupled weight decay.

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do). The default of the ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``: the EMA decay of m and the decay of the infinity norm ``w``,
            each in [0, 1); an element may be a schedule ``f(t)``. The default of the ``betas``
            hyperparameter.
        eps: added to ``|g|`` inside the max, ``max(b2 w, |g| + eps)``; >= 0. The default of the
            ``eps`` hyperparameter.
        weight_decay: coupled decay, >= 0: ``wd p`` is added to the gradient first. The default of
            the ``weight_decay`` hyperparameter.
        foreach: torch's kernel choice (True, False or None): accepted with any value, the numbers
            are the same.
        maximize: ascend: the gradient is negated first.
        differentiable: autograd through the step: not offered, ``True`` is refused.
        capturable: a step a CUDA graph can capture: refused (``True``), this chain computes its
            corrections on the host.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.
        cautious: the cautious mask (Liang et al. 2024) right after the moments: components whose
            sign disagrees with the gradient are dropped, the rest rescaled. Not in torch; refused
            with ``maximize=True``.

    Examples:
        A constant gradient ``g`` gives ``m / (1 - b1^t) = g`` and ``w = |g| + eps``, so each
        step is ``-lr sign(g)`` (up to eps), as torch.optim.Adamax computes it:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> q = torch.nn.Parameter(p.detach().clone())
        >>> ours, ref = hc.Adamax([p], lr=0.1), torch.optim.Adamax([q], lr=0.1)
        >>> for _ in range(2):
        ...     p.grad, q.grad = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, -1.0, 2.0])
        ...     ours.step(); ref.step()
        >>> p.data
        tensor([ 0.8000, -1.8000,  2.8000])
        >>> torch.allclose(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 2e-3,
                 betas: Sequence[Scalar] = (0.9, 0.999), eps: Scalar = 1e-8,
                 weight_decay: Scalar = 0, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False, compile: bool = False,
                 cautious: bool = False) -> None:
        flags = torch_flags("Adamax", foreach=foreach, capturable=capturable, differentiable=differentiable,
                            maximize=maximize)
        tx = adam_chain("Adamax", flags, scale_by_adamax(), decoupled=False, cautious=cautious)
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay)

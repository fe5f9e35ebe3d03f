"""Adafactor and Muon: torch.optim's names, arguments and defaults (torch 2.13), each a short chain.

    Adafactor:  [maximize] -> scale_by_factored_rms -> clip_by_block_rms -> scale_by_relative_step
                -> decayed_apply                  p = p (1 - lr wd) - α_t Û
    Muon:       ema_momentum -> orthogonalize_via_newton_schulz -> decayed_apply(muon_lr_ratio)
                                                  p = p (1 - lr wd) - lr r(shape) NS(B)

Hyperparameters live in the param groups under torch's names (Adafactor: ``lr``, ``beta2_decay``,
``eps`` = (eps1, eps2), ``d``, ``weight_decay``; Muon: ``lr``, ``weight_decay``, ``momentum``,
``nesterov``, ``ns_coefficients``, ``eps``, ``ns_steps``, ``adjust_lr_fn``), so LR schedulers and
per-group settings work as with torch. Muon runs torch's operations one for one (see
``transforms/muon.py``: its bf16 Newton–Schulz turns last-bit differences into percents), so a
run equals torch.optim.Muon's bit for bit on fp32 parameters.

Differences from torch.optim, all deliberate: Muon's ``momentum`` must be in [0, 1) (torch
accepts any value >= 0), ``ns_steps`` must be in [0, 100) at construction (torch refuses 100 or
more only at the first step) and ``adjust_lr_fn`` must stay one of torch's choices when a group
is edited (torch silently uses a ratio of 1 for other values); Muon refuses non-2-D parameters in
``add_param_group`` too (torch only at construction); bf16/fp16 parameters are updated in fp32 and
written back with stochastic rounding (torch computes in the parameter's dtype); a tensor ``lr``
on an accelerator is used as a tensor, without torch's host synchronisation.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from ..core import LR, Chain, Count, Flag, Scalar, as_tuple, named_chain
from ..optimizer import ChainOptimizer
from ..transforms.adafactor import clip_by_block_rms, scale_by_factored_rms, scale_by_relative_step
from ..transforms.muon import (NS_COEFFICIENTS, decayed_apply, ema_momentum, muon_lr_ratio,
                               orthogonalize_via_newton_schulz)
from .torch_flags import torch_flags

__all__ = ["Adafactor", "Muon", "adafactor_chain", "muon_chain", "check_matrices"]


def adafactor_chain(maximize: bool = False, *, lr: LR = 1e-2,
                    beta2_decay: Scalar = -0.8, eps: Sequence[Scalar | None] = (None, 1e-3),
                    d: Scalar = 1.0, weight_decay: Scalar = 0.0) -> Chain:
    """Adafactor's chain (the module docstring); the keyword values are its declared defaults."""
    flags = torch_flags("Adafactor", maximize=maximize)
    return named_chain(
        *(("maximize", f) for f in flags),
        ("factored_rms", scale_by_factored_rms(beta2_decay, eps)),
        ("clip", clip_by_block_rms(d)),
        ("relative_step", scale_by_relative_step(lr, eps)),
        ("apply", decayed_apply(lr, weight_decay)),
    )


def muon_chain(*, lr: LR = 1e-3, weight_decay: Scalar = 0.1,
               momentum: Scalar = 0.95, nesterov: Flag = True,
               ns_coefficients: Sequence[Scalar] = NS_COEFFICIENTS, eps: Scalar = 1e-7,
               ns_steps: Count = 5) -> Chain:
    """Muon's chain (the module docstring); the keyword values are its declared defaults."""
    return named_chain(
        ("momentum", ema_momentum(momentum, nesterov)),
        ("orthogonalize", orthogonalize_via_newton_schulz(ns_coefficients, eps, ns_steps)),
        ("apply", decayed_apply(lr, weight_decay, lr_ratio=muon_lr_ratio())),
    )


class Adafactor(ChainOptimizer):
    """Adafactor (Shazeer & Stern 2018, arXiv 1804.04235) as torch.optim.Adafactor: factored
    second moment for tensors of two or more dimensions, update clipping at RMS ``d``, a step
    relative to each parameter's RMS capped by ``lr``, and decoupled weight decay ``lr * wd``.
    ``eps = (eps1, eps2)``: eps1 floors the variance estimate (None: the parameter dtype's machine
    epsilon), eps2 the parameter RMS of the relative step.

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: the cap of the relative step, ``α_t = max(eps2, RMS(p)) min(lr, 1 / sqrt(t))``: a
            number >= 0, a schedule ``f(t)`` or a one-element tensor changed in place (schedulers
            do); it also scales the weight decay. The default of the ``lr`` hyperparameter.
        beta2_decay: the exponent ``c`` of ``beta2_t = 1 - t^c``, <= 0. The default of the
            ``beta2_decay`` hyperparameter.
        eps: the pair ``(eps1, eps2)``: eps1 (None for the parameter dtype's machine epsilon, or a
            number >= 0) floors the variance estimate, eps2 (>= 0) the parameter RMS of the
            relative step. The default of the ``eps`` hyperparameter.
        d: the block-RMS clipping threshold, ``U / max(1, RMS(U) / d)``; >= 1. The default of the
            ``d`` hyperparameter.
        weight_decay: decoupled decay of the weights, ``p (1 - lr wd)``; >= 0. The default of the
            ``weight_decay`` hyperparameter.
        foreach: torch's kernel choice (True, False or None): accepted with any value, the numbers
            are the same.
        maximize: ascend: the gradient is negated first.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.

    Examples:
        At t = 1 (``beta2_1 = 0``) a rank-1 ``G²`` is estimated exactly, so ``U = sign(G)`` and
        the step is ``-lr RMS(p) sign(G)``: 0.2 here (RMS(p) = 2), as torch.optim.Adafactor
        computes it:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([[2.0, -2.0], [2.0, 2.0]]))
        >>> q = torch.nn.Parameter(p.detach().clone())
        >>> ours, ref = hc.Adafactor([p], lr=0.1), torch.optim.Adafactor([q], lr=0.1)
        >>> p.grad = q.grad = torch.tensor([[1.0, -2.0], [-3.0, 6.0]])  # the outer product of [1, -3] and [1, -2]
        >>> ours.step(); ref.step()
        >>> p.data
        tensor([[ 1.8000, -1.8000],
                [ 2.2000,  1.8000]])
        >>> torch.allclose(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-2,
                 beta2_decay: Scalar = -0.8, eps: Sequence[Scalar | None] = (None, 1e-3),
                 d: Scalar = 1.0, weight_decay: Scalar = 0.0, *, foreach: bool | None = None,
                 maximize: bool = False, compile: bool = False) -> None:
        torch_flags("Adafactor", foreach=foreach, maximize=maximize)  # validate before building
        super().__init__(params, adafactor_chain(maximize), compile=compile, lr=lr, beta2_decay=beta2_decay,
                         eps=as_tuple(eps), d=d, weight_decay=weight_decay)


def check_matrices(params_with_names: Iterable[tuple[str | None, torch.Tensor]], who: str,
                   context: str = "") -> None:
    """Raise ``ValueError`` naming the first parameter that is not a 2-D matrix."""
    for i, (name, p) in enumerate(params_with_names):
        if p.dim() != 2:
            what = f"{name!r}" if name else f"at position {i}"
            raise ValueError(f"{who}: parameter {what} has shape {tuple(p.shape)}{context}; Muon only supports 2-D "
                             f"parameters (optimise biases, norms, embeddings and other non-2-D parameters with "
                             f"AdamW, e.g. with MuonWithAdamW)")


class Muon(ChainOptimizer):
    """Muon (Jordan et al. 2024) as torch.optim.Muon: EMA momentum (Nesterov by default),
    Newton–Schulz orthogonalisation in bf16 with coefficients ``ns_coefficients`` and ``ns_steps``
    steps, a learning rate scaled by the matrix shape (``adjust_lr_fn``: None/``"original"``
    ``sqrt(max(1, A/B))``, ``"match_rms_adamw"`` ``0.2 sqrt(max(A, B))``, Liu et al. 2025, arXiv
    2502.16982) and decoupled weight decay ``lr * wd``. 2-D parameters only (as torch).

        B = lerp(B, g, 1 - momentum);   p = p (1 - lr wd) - lr r(shape) NS(lerp(g, B, momentum))

    (without Nesterov: ``NS(B)``).

    Args:
        params: the parameters to optimise, 2-D only (anything else is refused, naming it): an
            iterable of tensors or of param-group dicts, as for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do); it also scales the weight decay. The default of the ``lr``
            hyperparameter.
        weight_decay: decoupled decay of the weights, ``p (1 - lr wd)``; >= 0. The default of the
            ``weight_decay`` hyperparameter.
        momentum: the EMA decay of the momentum buffer ``B``, in [0, 1). The default of the
            ``momentum`` hyperparameter.
        nesterov: orthogonalise ``lerp(g, B, momentum)`` (True) or ``B`` itself (False). The
            default of the ``nesterov`` hyperparameter.
        ns_coefficients: ``(a, b, c)``, three finite numbers: the Newton–Schulz quintic's
            coefficients. The default of the ``ns_coefficients`` hyperparameter.
        eps: the floor of the Frobenius norm the update is divided by before Newton–Schulz, >= 0.
            The default of the ``eps`` hyperparameter.
        ns_steps: the number of Newton–Schulz iterations, an integer in [0, 100). The default of
            the ``ns_steps`` hyperparameter.
        adjust_lr_fn: the lr ratio ``r`` for an ``A x B`` matrix: None or ``"original"``
            ``sqrt(max(1, A/B))``, ``"match_rms_adamw"`` ``0.2 sqrt(max(A, B))``; fixed (not a
            schedule). The default of the ``adjust_lr_fn`` hyperparameter.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.

    Examples:
        Two steps equal torch.optim.Muon's bit for bit:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        >>> q = torch.nn.Parameter(p.detach().clone())
        >>> ours, ref = hc.Muon([p], lr=0.02), torch.optim.Muon([q], lr=0.02)
        >>> for g in (torch.tensor([[0.5, -1.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.5], [-1.0, 2.0]])):
        ...     p.grad, q.grad = g.clone(), g.clone()
        ...     ours.step(); ref.step()
        >>> torch.equal(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-3,
                 weight_decay: Scalar = 0.1, momentum: Scalar = 0.95, nesterov: Flag = True,
                 ns_coefficients: Sequence[Scalar] = NS_COEFFICIENTS, eps: Scalar = 1e-7, ns_steps: Count = 5,
                 adjust_lr_fn: str | None = None, *, compile: bool = False) -> None:
        super().__init__(params, muon_chain(), compile=compile, lr=lr, weight_decay=weight_decay,
                         momentum=momentum, nesterov=nesterov, ns_coefficients=as_tuple(ns_coefficients), eps=eps,
                         ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group, dict):
            params = param_group.get("params")
            params = [params] if hasattr(params, "dim") else list(params or [])
            param_group = {**param_group, "params": params}
            named = [p if isinstance(p, tuple) else (None, p) for p in params]
            check_matrices([(n, p) for n, p in named if hasattr(p, "dim")], "Muon")
        super().add_param_group(param_group)

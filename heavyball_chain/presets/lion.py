"""Lion: a drop-in for ``lion_pytorch.Lion`` 0.2.5 (same name, arguments and defaults).

``scale_by_lion -> weight decay -> -lr -> apply``: lion-pytorch multiplies the weights by
``1 - lr wd`` before the sign step, which is the decoupled decay ``u + wd p`` followed by ``-lr``.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from ..core import LR, Scalar, named_chain, positive
from ..optimizer import ChainOptimizer
from ..transforms.apply import stochastic_round_apply
from ..transforms.lion import scale_by_lion
from ..transforms.scaling import add_decayed_weights, scale_by_learning_rate

__all__ = ["Lion"]


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def _initial_lr(lr: LR) -> float | None:
    """The constructor's lr as a float (lion-pytorch asserts ``lr > 0``); ``None`` for a schedule."""
    value: float | torch.Tensor
    if isinstance(lr, torch.Tensor) and lr.numel() == 1 and lr.dtype.is_floating_point:
        value = lr.item()  # at construction, once
    elif callable(lr) and not isinstance(lr, torch.Tensor):
        return None
    else:
        value = lr
    if isinstance(value, torch.Tensor) or positive(value) is not None:
        raise ValueError(f"lr: expected a number > 0 (or a one-element floating-point tensor holding one), got {lr!r}")
    return float(value)


class Lion(ChainOptimizer):
    """Lion (Chen et al. 2023, arXiv 2302.06675) as ``lion_pytorch.Lion`` 0.2.5 computes it:

        p = p (1 - lr wd') - lr sign(b1 m + (1 - b1) g);   m = b2 m + (1 - b2) g

    with ``wd' = weight_decay``, or, with ``decoupled_weight_decay=True``, ``wd' = weight_decay /
    lr0`` where ``lr0`` is the ``lr`` given to the constructor (so the shrink per step is
    ``weight_decay * lr_t / lr0``: it follows a scheduler's multiplier, not the base lr).

    ``use_triton`` chooses lion-pytorch's Triton kernel, which computes the same update; it is
    accepted (True or False) and changes nothing here: ``compile=True`` is this library's fused
    kernel (inductor emits Triton on GPUs). ``lr`` may also be a one-element tensor or a schedule
    (not with ``decoupled_weight_decay``, which needs ``lr0``). Param groups hold ``lr``, ``betas``,
    ``weight_decay`` (and ``warmup_steps`` = 0, which ``scale_by_learning_rate`` reads).

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number > 0 (lion-pytorch asserts it), a one-element tensor holding
            one, or a schedule ``f(t)`` (not with ``decoupled_weight_decay``). The default of the
            ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``, each in [0, 1]: beta1 interpolates the signed direction
            ``sign(b1 m + (1 - b1) g)``, beta2 is the EMA decay of ``m``; an element may be a
            schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        weight_decay: decoupled decay of the weights, ``p (1 - lr wd')`` before the sign step;
            >= 0. The default of the ``weight_decay`` hyperparameter.
        use_triton: lion-pytorch's kernel choice (True or False): accepted, the numbers are the
            same.
        decoupled_weight_decay: divide ``weight_decay`` by the constructor's ``lr``
            (``wd' = weight_decay / lr0``), so the shrink per step is ``weight_decay lr_t / lr0``.
            Shapes the chain (not a group value).
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.

    Examples:
        From ``m = 0`` the first direction is ``sign((1 - b1) g) = sign(g)``, so one step is
        ``p = p (1 - lr wd) - lr sign(g)``:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> opt = hc.Lion([p], lr=0.1, weight_decay=1.0)
        >>> p.grad = torch.tensor([0.5, -1.0, 2.0])
        >>> opt.step()
        >>> p.data
        tensor([ 0.8000, -1.7000,  2.6000])
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 1e-4,
                 betas: Sequence[Scalar] = (0.9, 0.99), weight_decay: Scalar = 0.0,
                 use_triton: bool = False, decoupled_weight_decay: bool = False, *, compile: bool = False) -> None:
        _check_flag("use_triton", use_triton)
        decoupled = _check_flag("decoupled_weight_decay", decoupled_weight_decay)
        lr0 = _initial_lr(lr)
        if decoupled and lr0 is None:
            raise ValueError("lr: decoupled_weight_decay=True divides weight_decay by the initial lr; give lr as a "
                             f"number > 0, not the schedule {lr!r}")
        tx = named_chain(
            ("lion", scale_by_lion()),
            ("decay", add_decayed_weights(lr0=lr0 if decoupled else None)),
            ("lr", scale_by_learning_rate()),
            ("apply", stochastic_round_apply()),
        )
        super().__init__(params, tx, compile=compile, lr=lr, betas=betas, weight_decay=weight_decay)
        self.decoupled_wd = decoupled  # lion-pytorch's attribute names
        self._init_lr = lr0

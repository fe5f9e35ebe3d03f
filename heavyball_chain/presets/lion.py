"""Lion: a drop-in for ``lion_pytorch.Lion`` 0.2.5 (same name, arguments and defaults).

``scale_by_lion -> weight decay -> -lr -> apply``: lion-pytorch multiplies the weights by
``1 - lr wd`` before the sign step, which is the decoupled decay ``u + wd p`` followed by ``-lr``.
"""

from __future__ import annotations

import torch

from ..core import named_chain, positive
from ..optimizer import ChainOptimizer
from ..transforms.apply import stochastic_round_apply
from ..transforms.lion import scale_by_lion
from ..transforms.scaling import add_decayed_weights, scale_by_learning_rate

__all__ = ["Lion"]


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def _initial_lr(lr) -> float | None:
    """The constructor's lr as a float (lion-pytorch asserts ``lr > 0``); ``None`` for a schedule."""
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
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, use_triton=False,
                 decoupled_weight_decay=False, *, compile=False):
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

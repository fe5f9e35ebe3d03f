"""The optimizers ``bench`` can run: every preset, and torch.optim baselines.

``Muon`` (torch's: 2-D parameters only) is not among them: a task's model has vectors too, and
``MuonWithAdamW`` is Muon for a whole model (hidden matrices by Muon, the rest by AdamW); its
AdamW learning rate moves with ``--lr``/``--tune`` in proportion to its default (3e-4 : 0.02)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from .. import presets
from ..optimizer import ChainOptimizer

__all__ = ["OPTIMIZERS", "default_lr", "make_optimizer", "supports_compile"]

BASELINES: dict[str, tuple[Callable, float]] = {
    "torch.AdamW": (lambda params, lr: torch.optim.AdamW(params, lr=lr), 1e-3),
    "torch.SGD": (lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9), 1e-2),
}
OPTIMIZERS: list[str] = [n for n in presets.__all__ if n != "Muon"] + list(BASELINES)
_TAKES_MODEL = ("MuonWithAdamW",)


def default_lr(name: str) -> float:
    """The optimizer's own default learning rate (HeavyBall's for presets, torch's for baselines)."""
    if name in BASELINES:
        return BASELINES[name][1]
    return inspect.signature(getattr(presets, name)).parameters["lr"].default


def supports_compile(name: str) -> bool:
    return name not in BASELINES and "compile" in inspect.signature(getattr(presets, name)).parameters


def make_optimizer(name: str, model: torch.nn.Module, lr: float, compile: bool = False) -> torch.optim.Optimizer:
    """``name`` over the trainable parameters of ``model`` at ``lr``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name in BASELINES:
        return BASELINES[name][0](params, lr)
    cls = getattr(presets, name)
    kwargs = {"lr": lr}
    if compile and supports_compile(name):
        kwargs["compile"] = True
    if name in _TAKES_MODEL:
        sig = inspect.signature(cls).parameters
        kwargs["adamw_lr"] = sig["adamw_lr"].default * lr / sig["lr"].default
        return cls(model, **kwargs)
    return cls(params, **kwargs)


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of the tensors in the optimizer state, also inside lists and dicts (other libraries
    keep some there)."""
    def size(v: Any) -> int:
        if isinstance(v, torch.Tensor):
            return v.numel() * v.element_size()
        if isinstance(v, dict):
            return sum(size(x) for x in v.values())
        if isinstance(v, (list, tuple)):
            return sum(size(x) for x in v)
        return 0

    return sum(size(s) for s in opt.state.values())


def set_eval(opt: torch.optim.Optimizer, evaluating: bool) -> None:
    """Schedule-free optimizers evaluate at the averaged weights."""
    if isinstance(opt, ChainOptimizer):
        opt.train(not evaluating)

"""Muon for a whole model: Muon for the hidden matrices, AdamW for everything else, in one optimizer.

Muon (Jordan et al. 2024) is meant for the 2-D weights of hidden layers; embeddings, the output
head, biases, norms and other non-matrix parameters are trained with AdamW (Jordan et al.; Liu et
al. 2025, arXiv 2502.16982). :class:`MuonWithAdamW` is that recipe as one ``ChainOptimizer``: a
``partition`` whose ``"muon"`` branch is torch.optim.Muon's chain and whose ``"adamw"`` branch is
torch.optim.AdamW's, each bit for bit (``transforms/muon.py`` says why bit for bit matters).

The two kinds of parameters are in two param groups, each with its own ``lr`` and
``weight_decay`` (group 0: Muon; group 1: AdamW; each group has ``use_muon``), so an LR
scheduler scales both, and group values can be edited as with any torch optimizer.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, cast

import torch

from ..core import LR, Count, Flag, Scalar, as_tuple, named_chain
from ..optimizer import ChainOptimizer
from ..transforms.muon import NS_COEFFICIENTS, decayed_apply, torch_adam_step
from ..transforms.wrappers import partition
from .torch_matrix import check_matrices, muon_chain

__all__ = ["MuonWithAdamW", "is_hidden_matrix", "HEAD_NAMES"]

# A Linear whose name (its last component) is one of these is the output head: AdamW.
HEAD_NAMES = frozenset({"lm_head", "head", "output", "classifier"})


def _head_and_embedding_weights(model: torch.nn.Module) -> set[int]:
    """ids of the weights of embeddings and of output heads (named heads; a Linear tied to an
    embedding shares the embedding's parameter and is covered by it)."""
    out = set()
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
            out.add(id(module.weight))
        elif isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in HEAD_NAMES:
            out.add(id(module.weight))
    return out


def is_hidden_matrix(model: torch.nn.Module) -> Callable[[str, torch.Tensor], bool]:
    """The default routing of :class:`MuonWithAdamW`: ``f(name, param)`` is True (Muon) for a 2-D
    parameter that is not the weight of an ``nn.Embedding``/``nn.EmbeddingBag`` (a head tied to an
    embedding shares that weight, so it is AdamW's too) nor of an ``nn.Linear`` whose name ends in
    one of :data:`HEAD_NAMES` (``lm_head``, ``head``, ``output``, ``classifier``). Everything else —
    biases, norms, embeddings, heads, convolution kernels and other non-2-D tensors — is AdamW's.
    An output layer with another name is a hidden matrix to this rule: route it with ``muon_filter``."""
    excluded = _head_and_embedding_weights(model)
    return lambda name, p: p.dim() == 2 and id(p) not in excluded


class MuonWithAdamW(ChainOptimizer):
    """Muon (Jordan et al. 2024) for a model's hidden matrices and AdamW (Loshchilov & Hutter 2019,
    arXiv 1711.05101) for its other parameters, in one optimizer (Liu et al. 2025, arXiv 2502.16982).

    The Muon arguments are torch.optim.Muon's (defaults: those of torch's own example,
    ``Muon(lr=0.02, momentum=0.95)`` with torch's ``weight_decay=0.1``); the ``adamw_*`` ones are
    torch.optim.AdamW's (defaults: torch's, with ``lr=3e-4``). ``muon_filter(name, param) -> bool``
    overrides the routing (:func:`is_hidden_matrix`): True sends a parameter to Muon, which takes
    only 2-D parameters (anything else is refused, naming it). Parameters with
    ``requires_grad=False`` are left out, as they would be from ``model.parameters()`` training.

    Param groups: 0 is Muon's (``lr``, ``weight_decay``, ``momentum``, ``nesterov``,
    ``ns_coefficients``, ``eps``, ``ns_steps``, ``adjust_lr_fn``), 1 is AdamW's (``lr``, ``betas``,
    ``eps``, ``weight_decay``); every group holds every name, and each branch reads its own. A group
    added later must say where it goes: ``add_param_group({"params": ..., "use_muon": True})``;
    an AdamW one (``use_muon=False``) gets the ``adamw_*`` values for what it does not set.

    Args:
        model: the ``torch.nn.Module`` to optimise (its modules and parameter names decide the
            routing); parameters with ``requires_grad=False`` are left out.
        lr: Muon's learning rate (group 0's ``lr``), a number >= 0, a schedule ``f(t)`` or a
            one-element tensor changed in place (schedulers do); it also scales Muon's weight
            decay.
        weight_decay: Muon's decoupled decay of the weights, ``p (1 - lr wd)``; >= 0 (group 0's
            ``weight_decay``).
        momentum: the EMA decay of Muon's momentum buffer, in [0, 1). The default of the
            ``momentum`` hyperparameter.
        nesterov: Muon orthogonalises ``lerp(g, B, momentum)`` (True) or the buffer ``B`` (False).
            The default of the ``nesterov`` hyperparameter.
        ns_coefficients: ``(a, b, c)``, three finite numbers: the Newton–Schulz quintic's
            coefficients. The default of the ``ns_coefficients`` hyperparameter.
        eps: the floor of the Frobenius norm Muon divides by before Newton–Schulz, >= 0 (group
            0's ``eps``).
        ns_steps: the number of Newton–Schulz iterations, an integer in [0, 100). The default of
            the ``ns_steps`` hyperparameter.
        adjust_lr_fn: Muon's lr ratio for an ``A x B`` matrix: None or ``"original"``
            ``sqrt(max(1, A/B))``, ``"match_rms_adamw"`` ``0.2 sqrt(max(A, B))``; fixed (not a
            schedule). The default of the ``adjust_lr_fn`` hyperparameter.
        adamw_lr: the AdamW group's learning rate (group 1's ``lr``), as ``lr``.
        adamw_betas: the AdamW group's ``(beta1, beta2)``, each in [0, 1) (group 1's ``betas``).
        adamw_eps: the AdamW group's eps, added to the root ``sqrt(v̂) + eps``; >= 0 (group 1's
            ``eps``).
        adamw_weight_decay: the AdamW group's decoupled decay, ``p (1 - lr wd)``; >= 0 (group
            1's ``weight_decay``).
        muon_filter: ``f(name, param) -> bool``, True for the parameters Muon takes (2-D only; a
            parameter of another shape routed to Muon is refused). None: :func:`is_hidden_matrix`.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.

    Examples:
        A ``Linear``'s weight is a hidden matrix (Muon), its bias goes to AdamW, whose first
        step is ``-adamw_lr sign(g)``:

        >>> import torch, heavyball_chain as hc
        >>> model = torch.nn.Linear(2, 2)
        >>> opt = hc.MuonWithAdamW(model, adamw_lr=0.1, adamw_weight_decay=0.0)
        >>> [g["param_names"] for g in opt.param_groups]
        [['weight'], ['bias']]
        >>> b0 = model.bias.detach().clone()
        >>> model(torch.ones(1, 2)).sum().backward()  # the bias's gradient is [1, 1]
        >>> opt.step()
        >>> torch.allclose(model.bias, b0 - 0.1)
        True
    """

    def __init__(self, model: torch.nn.Module, lr: LR = 0.02,
                 weight_decay: Scalar = 0.1, momentum: Scalar = 0.95, nesterov: Flag = True,
                 ns_coefficients: Sequence[Scalar] = NS_COEFFICIENTS, eps: Scalar = 1e-7, ns_steps: Count = 5,
                 adjust_lr_fn: str | None = None, *, adamw_lr: LR = 3e-4,
                 adamw_betas: Sequence[Scalar] = (0.9, 0.999), adamw_eps: Scalar = 1e-8,
                 adamw_weight_decay: Scalar = 0.01,
                 muon_filter: Callable[[str, torch.Tensor], bool] | None = None, compile: bool = False) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module (its parameter names decide the routing), "
                            f"got {type(model).__name__}")
        if muon_filter is not None and not callable(muon_filter):
            raise TypeError(f"muon_filter: expected a callable (name, param) -> bool, got {type(muon_filter).__name__}")
        route = is_hidden_matrix(model) if muon_filter is None else muon_filter
        muon: list[tuple[str, torch.Tensor]] = []
        adamw: list[tuple[str, torch.Tensor]] = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            choice = route(name, p)
            if not isinstance(choice, bool):
                raise TypeError(f"muon_filter: must return True (Muon) or False (AdamW), returned {choice!r} "
                                f"for {name!r}")
            (muon if choice else adamw).append((name, p))
        if muon_filter is not None:
            check_matrices(muon, "MuonWithAdamW", " and muon_filter routed it to Muon")
        labels: list[str] = []  # per position in the optimizer: the partition's labeler
        # Groups added later with use_muon=False get these (not the Muon values the optimizer's
        # defaults hold); public, so that copies and pickles of the optimizer keep them.
        self.adamw_defaults = {"lr": adamw_lr, "betas": as_tuple(adamw_betas), "eps": adamw_eps,
                               "weight_decay": adamw_weight_decay}
        branches = {
            "muon": muon_chain(lr=lr, weight_decay=weight_decay, eps=eps),
            "adamw": named_chain(("adam", torch_adam_step(lr, eps=eps)), ("apply", decayed_apply(lr, weight_decay))),
        }
        groups = [{"params": muon, "use_muon": True},
                  {"params": adamw, "use_muon": False, "lr": adamw_lr, "betas": as_tuple(adamw_betas), "eps": adamw_eps,
                   "weight_decay": adamw_weight_decay}]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError("model: has no parameter that requires grad")
        super().__init__(groups, partition(branches, labels), compile=compile, lr=lr,
                         weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                         ns_coefficients=as_tuple(ns_coefficients), eps=eps, ns_steps=ns_steps,
                         adjust_lr_fn=adjust_lr_fn, betas=as_tuple(adamw_betas))

    @property
    def _labels(self) -> list[str]:
        """The partition's labels, one per position: read from the transform, so that a copy or
        an unpickled optimizer extends its own chain's list."""
        labels = cast(partition, self.transform).labeler
        assert isinstance(labels, list)
        return labels

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; it must say ``use_muon``. An AdamW group (``use_muon=False``) gets the
        ``adamw_*`` values for the ``lr``, ``betas``, ``eps`` and ``weight_decay`` it does not
        set; a Muon group the optimizer's defaults (the Muon arguments)."""
        use_muon = param_group.get("use_muon") if isinstance(param_group, dict) else None
        if not isinstance(use_muon, bool):
            raise ValueError("param_group: needs 'use_muon': True (Muon: 2-D matrices) or False (AdamW), "
                             f"got {use_muon!r}")
        params = param_group.get("params")
        params = [params] if isinstance(params, torch.Tensor) else list(params or [])
        param_group = {**param_group, "params": params}
        if not use_muon:  # (the constructor's AdamW group sets all four)
            param_group = {**self.adamw_defaults, **param_group}
        if use_muon:
            named = [p if isinstance(p, tuple) else (None, p) for p in params]
            check_matrices([(n, p) for n, p in named if isinstance(p, torch.Tensor)], "MuonWithAdamW",
                           " in a group with use_muon=True")
        super().add_param_group(param_group)
        self._labels.extend(["muon" if use_muon else "adamw"] * len(params))

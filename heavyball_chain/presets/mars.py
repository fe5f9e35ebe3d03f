"""MARS (its AdamW instance) with the signature of the official implementation
(github.com/AGI-Arena/MARS, ``MARS/optimizers/mars.py``): Yuan et al. 2024, arXiv 2411.10438."""

from __future__ import annotations

from typing import Any, Iterable, Sequence, cast

import torch

from ..core import LR, Hyper, Scalar, Transform, betas_pair, has_schedule, named_chain, non_negative
from ..optimizer import ChainOptimizer
from ..transforms.apply import stochastic_round_apply
from ..transforms.gradient import cautious as cautious_mask
from ..transforms.mars import mars_correction
from ..transforms.wrappers import renamed
from ..transforms.moments import scale_by_adam
from ..transforms.scaling import add_decayed_weights, scale_by_learning_rate
from ..transforms.wrappers import partition, scale

__all__ = ["MARS", "mars_chain"]

_MARS_TYPES = ("mars-adamw", "mars-lion", "mars-shampoo")


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def _is_matrix(p: torch.Tensor) -> str:
    """The official code's split: MARS for 2-D parameters, AdamW for the others. A complex
    parameter is its real view here (as everywhere in the library: a complex parameter is updated
    exactly as ``view_as_real`` of it would be), so a complex matrix, 3-D as real, takes AdamW."""
    return "mars" if p.ndim == 2 else "adamw"


def _adam(betas: tuple[float, float], amsgrad: bool) -> scale_by_adam:
    """torch.optim.Adam's form, the official code's: ``m / ((sqrt(v) / sqrt(1 - b2^t) + eps) (1 - b1^t))``."""
    return scale_by_adam(betas, debias="divide", eps_mode="add", amsgrad=amsgrad)


def mars_chain(amsgrad: bool = False, cautious: bool = False, optimize_1d: bool = False,
               lr_1d_factor: float = 1.0) -> Transform:
    """MARS-AdamW: ``mars_correction`` -> Adam (torch.optim's form) [-> ``cautious``] -> decoupled
    weight decay -> -lr -> add to params. Unless ``optimize_1d``, parameters that are not 2-D
    take plain AdamW instead, with the group's ``betas_1d`` and ``weight_decay_1d`` and the
    learning rate ``lr * lr_1d_factor`` (a ``partition`` of the two chains)."""
    mask = [("cautious", cautious_mask())] if _flag("cautious", cautious) else []
    _flag("amsgrad", amsgrad)
    mars = named_chain(
        ("correction", mars_correction()),
        ("moments", _adam((0.95, 0.99), amsgrad)),
        *mask,
        ("decay", add_decayed_weights()),
        ("lr", scale_by_learning_rate()),
        ("apply", stochastic_round_apply()),
    )
    if _flag("optimize_1d", optimize_1d):
        return mars
    adamw = named_chain(
        ("moments", renamed(_adam((0.9, 0.95), amsgrad), betas="betas_1d")),
        *mask,
        ("decay", renamed(add_decayed_weights(0.1), weight_decay="weight_decay_1d")),
        ("lr", scale_by_learning_rate()),
        *([("lr_1d", scale(lr_1d_factor))] if lr_1d_factor != 1 else []),
        ("apply", stochastic_round_apply()),
    )
    return partition({"mars": mars, "adamw": adamw}, _is_matrix)


class MARS(ChainOptimizer):
    """MARS-AdamW, approximate form: AdamW on ``c = g + gamma b1/(1-b1) (g - g_prev)``, clipped to
    norm 1 per tensor.

    Same positional arguments, names and defaults as the official ``MARS``. As there,
    ``optimize_1d=False`` (the default) updates only 2-D parameters by MARS and every other
    parameter (biases, norms, *and* conv kernels: the official test is ``ndim == 2``) by plain
    AdamW with ``betas_1d``, ``weight_decay_1d`` and learning rate ``lr * lr_1d / lr_init``
    (``lr_init`` the constructor's ``lr``: a scheduler scales both rates);
    ``optimize_1d=True`` updates all by MARS with ``weight_decay``. Weight decay is decoupled
    (``p = p - lr (u + wd p)``). ``amsgrad`` divides by the running maximum of v.
    Param-group values: ``lr``, ``betas``, ``eps``, ``weight_decay``, ``gamma`` and, unless
    ``optimize_1d``, ``betas_1d`` and ``weight_decay_1d``. Only ``mars_type="mars-adamw"`` and
    ``is_approx=True`` are offered (``mars-lion``, ``mars-shampoo`` and the exact form, which
    needs a second backward pass per step, are refused). Keyword-only: ``cautious=True`` masks
    the Adam direction where its sign disagrees with the gradient (Liang et al. 2024, arXiv
    2411.16085), ``compile`` as for every preset.

    ``pytorch_optimizer.MARS(mars_type="adamw")`` differs in three places: it sends every
    parameter with ``ndim >= 2`` (conv kernels too) to MARS, adds eps to ``sqrt(v + 1e-15)``
    before the bias correction (``(sqrt(v) + eps) / sqrt(1 - b2^t)``), and copies the gradient
    where the official code keeps a reference to ``p.grad``.

    Args:
        params: the parameters to optimise: an iterable of tensors or of param-group dicts, as
            for torch.optim.
        lr: learning rate, a number >= 0, a schedule ``f(t)`` or a one-element tensor changed in
            place (schedulers do); with ``optimize_1d=False`` a number > 0 or a tensor, not a
            schedule (the other parameters' rate is ``lr * lr_1d / lr``). The default of the
            ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``, the EMA decays of MARS's Adam, each in [0, 1); beta1 also
            scales the correction. The default of the ``betas`` hyperparameter.
        eps: added to the root, ``sqrt(v) / sqrt(1 - b2^t) + eps`` (both kinds of parameters);
            >= 0. The default of the ``eps`` hyperparameter.
        weight_decay: decoupled decay of the MARS parameters (all of them with ``optimize_1d``),
            ``p - lr (u + wd p)``; >= 0. The default of the ``weight_decay`` hyperparameter.
        amsgrad: divide by the running maximum of v (Reddi et al. 2018), for both kinds of
            parameters. Shapes the chain (not a group value).
        gamma: the scale of MARS's variance-reduction term ``gamma b1 / (1 - b1) (g_t - g_{t-1})``;
            >= 0. The default of the ``gamma`` hyperparameter.
        is_approx: only ``True`` (the exact form, a second backward pass per step, is refused).
        mars_type: only ``"mars-adamw"`` (``"mars-lion"`` and ``"mars-shampoo"`` are refused).
        optimize_1d: MARS for every parameter (False: only 2-D ones; the rest get AdamW with the
            ``_1d`` values, which are then ignored).
        lr_1d: the non-2-D parameters' learning rate, >= 0, applied as ``lr * lr_1d / lr_init``
            (fixed at construction, so a scheduler scales both rates).
        betas_1d: the non-2-D parameters' ``(beta1, beta2)``, each in [0, 1). The default of the
            ``betas_1d`` hyperparameter.
        weight_decay_1d: the non-2-D parameters' decoupled weight decay, >= 0. The default of the
            ``weight_decay_1d`` hyperparameter.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16
            tensors.
        cautious: the cautious mask (Liang et al. 2024) on the Adam direction: components whose
            sign disagrees with the gradient are dropped, the rest rescaled. Not in the official
            code.

    Examples:
        On a matrix, MARS is torch.optim.Adam run on the corrected gradient
        ``c = g + gamma b1 / (1 - b1) (g - g_prev)`` (``g_prev = 0`` at first), clipped to norm 1:

        >>> import torch, heavyball_chain as hc
        >>> p, q = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2, 2))
        >>> ours, ref = hc.MARS([p], lr=0.1), torch.optim.Adam([q], lr=0.1, betas=(0.95, 0.99))
        >>> g_prev = torch.zeros(2, 2)
        >>> for g in (torch.tensor([[1.0, -2.0], [3.0, 0.5]]), torch.tensor([[0.5, 1.0], [-1.0, 2.0]])):
        ...     c = g + 0.025 * 0.95 / 0.05 * (g - g_prev)
        ...     p.grad, q.grad, g_prev = g, c / c.norm().clamp(min=1), g
        ...     ours.step(); ref.step()
        >>> torch.allclose(p, q)
        True
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                 lr: LR = 3e-3,
                 betas: Sequence[Scalar] = (0.95, 0.99), eps: Scalar = 1e-8,
                 weight_decay: Scalar = 0., amsgrad: bool = False, gamma: Scalar = 0.025,
                 is_approx: bool = True, mars_type: str = "mars-adamw", optimize_1d: bool = False,
                 lr_1d: float = 3e-3, betas_1d: Sequence[Scalar] = (0.9, 0.95),
                 weight_decay_1d: Scalar = 0.1, *, compile: bool = False, cautious: bool = False) -> None:
        if mars_type not in _MARS_TYPES:
            raise ValueError(f"mars_type: expected one of {list(_MARS_TYPES)}, got {mars_type!r}")
        if mars_type != "mars-adamw":
            raise ValueError(f"mars_type: only 'mars-adamw' is supported, got {mars_type!r}")
        if not _flag("is_approx", is_approx):
            raise ValueError("is_approx: only the approximate form (is_approx=True) is supported; the exact form "
                             "needs a second backward pass per step")
        _flag("optimize_1d", optimize_1d)
        hyper: dict[str, Any] = {}
        if not optimize_1d:
            Hyper(lr, non_negative, tensor=True).validate("lr", lr)
            Hyper(lr_1d, non_negative).validate("lr_1d", lr_1d)
            Hyper(betas_1d, betas_pair).validate("betas_1d", betas_1d)
            if has_schedule(lr):
                raise ValueError("lr: expected a number or a one-element tensor when optimize_1d=False (the "
                                 "learning rate of the other parameters is lr * lr_1d / lr), got a schedule; "
                                 "use an LR scheduler")
            lr0 = float(cast("float | torch.Tensor", lr))  # not a schedule: refused above
            if lr0 == 0:
                raise ValueError("lr: expected a number > 0 when optimize_1d=False (the learning rate of the "
                                 "other parameters is lr * lr_1d / lr), got 0")
            hyper = dict(betas_1d=betas_1d, weight_decay_1d=weight_decay_1d)
            factor = lr_1d / lr0
        else:
            factor = 1.0
        super().__init__(params, mars_chain(amsgrad, cautious, optimize_1d, factor), compile=compile, lr=lr,
                         betas=betas, eps=eps, weight_decay=weight_decay, gamma=gamma, **hyper)

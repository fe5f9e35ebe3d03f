"""ForeachAdamW, ForeachLaProp, ForeachADOPT: HeavyBall 0.8.1's names, arguments and defaults.

Each is one moment transform followed by the same three steps; only the first line differs.
``cautious=True`` (keyword-only, not in HeavyBall 0.8.1) puts ``cautious()`` right after the
moments (Liang et al. 2024, "Cautious Optimizers", arXiv 2411.16085): components of the update
whose sign disagrees with the gradient are dropped, the rest rescaled, before weight decay and lr.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..core import LR, Chain, Count, Scalar, Transform, named_chain
from ..optimizer import ChainOptimizer
from ..transforms import (
    add_decayed_weights,
    cautious as cautious_mask,
    scale_by_adam,
    scale_by_adopt,
    scale_by_laprop,
    scale_by_learning_rate,
    stochastic_round_apply,
)
from ..transforms.schedules import step_power

__all__ = ["ForeachAdamW", "ForeachLaProp", "ForeachADOPT", "decoupled"]


def decoupled(moments: Transform, cautious: bool = False) -> Chain:
    """``moments`` -> [``cautious()``] -> decoupled weight decay -> -lr (with warmup) -> add to
    params (bf16-safe)."""
    if not isinstance(cautious, bool):
        raise TypeError(f"cautious: expected True or False, got {cautious!r}")
    return named_chain(
        ("moments", moments),
        *([("cautious", cautious_mask())] if cautious else []),
        ("decay", add_decayed_weights()),
        ("lr", scale_by_learning_rate()),
        ("apply", stochastic_round_apply()),
    )


class ForeachAdamW(ChainOptimizer):
    """AdamW: ``p = p (1 - lr wd) - lr m / max(sqrt(v), eps)`` with debiased betas.

    AdamW is Loshchilov & Hutter 2019 ("Decoupled Weight Decay Regularization", arXiv 1711.05101).
    eps clamps the denominator (torch.optim.AdamW adds it: ``m̂ / (sqrt(v̂) + eps)``).

    Args:
        params: parameters or param-group dicts, as for any torch optimizer.
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); ``u = -lr_t u``. The default of the ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``, the EMA decays of m and v, each in [0, 1) (debiased, so the first
            step has ``m̂ = g``, ``v̂ = g²``); an element may be a schedule (``palm_beta2()``). The
            default of the ``betas`` hyperparameter.
        eps: the denominator's floor, ``max(sqrt(v̂), eps)``, a number > 0. The default of the
            ``eps`` hyperparameter.
        weight_decay: decay of the weights, decoupled: ``p (1 - lr wd)``, a number >= 0 (0: none).
            The default of the ``weight_decay`` hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none. The default of the ``warmup_steps`` hyperparameter.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding).
        cautious: keyword-only; put the cautious mask (Liang et al. 2024) right after the moments:
            components whose sign disagrees with the gradient are dropped, the rest rescaled (True
            or False).
        capturable: keyword-only; a step a CUDA graph can capture, every changing number computed on
            the device (docs/performance.md, "CUDA graphs"; True or False).

    Examples:
        The first step has ``m̂ / sqrt(v̂) = sign(g)``, so each weight moves by
        ``-lr (sign(g) + wd p)``: ``1 - 0.1 (1 + 0.5)`` and ``-2 - 0.1 (-1 - 1)``.

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = hc.ForeachAdamW([p], lr=0.1, weight_decay=0.5)
        >>> p.grad = torch.tensor([0.5, -3.0])
        >>> opt.step()
        >>> p.data
        tensor([ 0.8500, -1.8000])
    """

    def __init__(self, params: Iterable[Any], lr: LR = 0.0025, betas: tuple[Scalar, Scalar] = (0.9, 0.99),
                 eps: Scalar = 1e-8, weight_decay: Scalar = 0.0, warmup_steps: Count = 0, compile: bool = False, *,
                 cautious: bool = False, capturable: bool = False) -> None:
        super().__init__(params, decoupled(scale_by_adam(), cautious), compile=compile, capturable=capturable,
                         lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps)


class ForeachLaProp(ChainOptimizer):
    """LaProp (Ziyin et al. 2020, arXiv 2002.04839): momentum of the normalised gradient,
    ``m = b̂1 m + (1 - b̂1) g / max(sqrt(v), eps)``, ``p = p (1 - lr wd) - lr m``.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer.
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); ``u = -lr_t u``. The default of the ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``, the EMA decays of the momentum m of the normalised gradient and
            of v, each in [0, 1) (debiased); an element may be a schedule (``palm_beta2()``). The
            default of the ``betas`` hyperparameter.
        eps: the floor of the normaliser, ``g / max(sqrt(v̂), eps)``, a number > 0. The default of
            the ``eps`` hyperparameter.
        weight_decay: decay of the weights, decoupled: ``p (1 - lr wd)``, a number >= 0 (0: none).
            The default of the ``weight_decay`` hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none. The default of the ``warmup_steps`` hyperparameter.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding).
        cautious: keyword-only; put the cautious mask (Liang et al. 2024) right after the moments:
            components whose sign disagrees with the gradient are dropped, the rest rescaled (True
            or False).
        capturable: keyword-only; a step a CUDA graph can capture, every changing number computed on
            the device (docs/performance.md, "CUDA graphs"; True or False).

    Examples:
        Under a constant gradient ``v̂ = g²``, so the normalised gradient and its momentum are
        ``sign(g)``: every step moves each weight by ``lr`` against it.

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = hc.ForeachLaProp([p], lr=0.1)
        >>> for _ in range(2):
        ...     p.grad = torch.tensor([0.5, -3.0])
        ...     opt.step()
        >>> p.data
        tensor([ 0.8000, -1.8000])
    """

    def __init__(self, params: Iterable[Any], lr: LR = 0.0025, betas: tuple[Scalar, Scalar] = (0.9, 0.99),
                 eps: Scalar = 1e-8, weight_decay: Scalar = 0.0, warmup_steps: Count = 0, compile: bool = False, *,
                 cautious: bool = False, capturable: bool = False) -> None:
        super().__init__(params, decoupled(scale_by_laprop(), cautious), compile=compile, capturable=capturable,
                         lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps)


class ForeachADOPT(ChainOptimizer):
    """ADOPT as HeavyBall 0.8.1 runs it (the update at step t is the momentum of step t-1), with
    the paper's clipping of the normalised gradient to ``±clip(k)`` at the k-th momentum update:
    ``clip`` is a number, a schedule (default ``step_power(0.25)``, i.e. ``k^0.25``) or ``None``
    (no clipping: HeavyBall 0.8.1, which divides by eps where a first gradient was exactly 0).
    ADOPT is Taniguchi et al. 2024 ("ADOPT: Modified Adam Can Converge with Any beta2 with the
    Optimal Rate", arXiv 2411.02853; ``transforms.scale_by_adopt``).

    Args:
        params: parameters or param-group dicts, as for any torch optimizer.
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); ``u = -lr_t u``. The default of the ``lr`` hyperparameter.
        betas: ``(beta1, beta2)``, the EMA decays of the momentum of the normalised gradient and of
            v, each in [0, 1) (debiased); an element may be a schedule (``palm_beta2()``). The
            default of the ``betas`` hyperparameter.
        eps: the floor of the previous second moment's root, ``g / max(sqrt(v_prev), eps)``, a
            number > 0. The default of the ``eps`` hyperparameter.
        weight_decay: decay of the weights, decoupled: ``p (1 - lr wd)``, a number >= 0 (0: none).
            The default of the ``weight_decay`` hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none. The default of the ``warmup_steps`` hyperparameter.
        clip: the bound of ADOPT's normalised gradient at the k-th momentum update: a number > 0, a
            schedule (default ``step_power(0.25)``, ``k^0.25``) or ``None`` (no clipping, HeavyBall
            0.8.1). The default of the ``clip`` hyperparameter.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding).
        cautious: keyword-only; put the cautious mask (Liang et al. 2024) right after the moments:
            components whose sign disagrees with the gradient are dropped, the rest rescaled (True
            or False).
        capturable: keyword-only; a step a CUDA graph can capture, every changing number computed on
            the device (docs/performance.md, "CUDA graphs"; True or False).

    Examples:
        Step 1 only sets ``v = g1²``; step 2 sets ``m = clip(g2 / |g1|, ±1)`` (the bound
        ``k^0.25`` at k = 1) and step 3 applies it; the first two steps change nothing:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = hc.ForeachADOPT([p], lr=0.1)
        >>> for g in ([1.0, 1.0], [0.5, -3.0], [0.5, -3.0]):
        ...     p.grad = torch.tensor(g)
        ...     opt.step()
        ...     print(p.data)
        tensor([ 1., -2.])
        tensor([ 1., -2.])
        tensor([ 0.9500, -1.9000])
    """

    def __init__(self, params: Iterable[Any], lr: LR = 0.0025, betas: tuple[Scalar, Scalar] = (0.9, 0.99),
                 eps: Scalar = 1e-8, weight_decay: Scalar = 0.0, warmup_steps: Count = 0,
                 clip: Scalar | None = step_power(0.25), compile: bool = False, *, cautious: bool = False,
                 capturable: bool = False) -> None:
        super().__init__(params, decoupled(scale_by_adopt(), cautious), compile=compile, capturable=capturable,
                         lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps, clip=clip)

"""Schedule-free AdamW: ForeachSFAdamW and PaLMForeachSFAdamW (HeavyBall 0.8.1's signatures) and
AdamWScheduleFree (a drop-in for ``schedulefree.AdamWScheduleFree`` 1.4.1).

All are ``rms -> add_decayed_weights -> schedule_free``. The PaLM variant's second beta is the
schedule ``palm_beta2()`` (reading ``beta2_scale``) instead of a number; AdamWScheduleFree uses
the schedulefree package's conventions: the bias-corrected ``sqrt(v / (1 - b2^t)) + eps`` and
averaging weights from the largest lr so far.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from ..core import LR, Chain, Count, Scalar, named_chain
from ..optimizer import ChainOptimizer
from ..transforms import add_decayed_weights, scale_by_rms, schedule_free
from ..transforms.schedules import palm_betas
from .torch_flags import torch_flags

__all__ = ["ForeachSFAdamW", "PaLMForeachSFAdamW", "AdamWScheduleFree"]


def sf_adamw_chain() -> Chain:
    """g / max(sqrt(v), eps) + wd * y, then the schedule-free y/z step (writes the params)."""
    return named_chain(
        ("rms", scale_by_rms()),
        ("decay", add_decayed_weights()),
        ("schedule_free", schedule_free()),
    )


def _check_foreach(foreach: bool | None) -> None:
    if foreach is not True and foreach is not None:
        raise ValueError(f"foreach: only the foreach implementation exists, got foreach={foreach!r}")


class ForeachSFAdamW(ChainOptimizer):
    """Schedule-free AdamW (Defazio et al. 2024, arXiv 2405.15682).

    ``r`` takes effect (``c_t ∝ t^r lr_t^weight_lr_power``; 0.8.1 ignores it). Call
    ``optimizer.eval()`` before evaluating or saving and ``optimizer.train()`` before training.
    ``foreach`` is accepted for HeavyBall's signature; every path is foreach.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer.
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); the step of z is ``lr_t u``. The default of the ``lr``
            hyperparameter.
        betas: ``(beta1, beta2)``, each in [0, 1): beta1 interpolates
            ``y = (1 - beta1) z + beta1 x``, beta2 is the (debiased) EMA decay of v; an element may
            be a schedule (``palm_beta2()``). The default of the ``betas`` hyperparameter.
        eps: the denominator's floor, ``g / max(sqrt(v̂), eps)``, a number > 0. The default of the
            ``eps`` hyperparameter.
        weight_decay: decay of the weights, ``u + wd y`` (y: the point where the gradient is taken),
            a number >= 0 (0: none). The default of the ``weight_decay`` hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none. The default of the ``warmup_steps`` hyperparameter.
        r: the weight ``t^r`` of iterate t in the average x (Defazio et al. 2024), a finite number
            (0: uniform). The default of the ``r`` hyperparameter.
        weight_lr_power: the weight ``lr_t^weight_lr_power`` of iterate t in x, a number >= 0. The
            default of the ``weight_lr_power`` hyperparameter.
        foreach: torch's kernel choice, kept for HeavyBall's signature: True or None (every path is
            foreach; anything else is a ``ValueError``).
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding).
        capturable: keyword-only; a step a CUDA graph can capture, every changing number computed on
            the device (docs/performance.md, "CUDA graphs"; True or False).

    Examples:
        Under a constant gradient ``u = sign(g)`` and ``z_t = p_0 - t lr sign(g)``. The
        parameters hold y; ``eval()`` sets them to x, here the mean of z_1 and z_2 (r = 0 and a
        constant lr weigh them equally), and ``train()`` back to y:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = hc.ForeachSFAdamW([p], lr=0.1)
        >>> for _ in range(2):
        ...     p.grad = torch.tensor([0.5, -3.0])
        ...     opt.step()
        >>> _ = opt.eval(); p.data
        tensor([ 0.8500, -1.8500])
        >>> _ = opt.train(); p.data
        tensor([ 0.8450, -1.8450])
    """

    def __init__(self, params: Iterable[Any], lr: LR = 0.0025, betas: tuple[Scalar, Scalar] = (0.9, 0.99),
                 eps: Scalar = 1e-8, weight_decay: Scalar = 0.0, warmup_steps: Count = 0, r: Scalar = 0.0,
                 weight_lr_power: Scalar = 2.0, foreach: bool | None = True, compile: bool = False, *,
                 capturable: bool = False) -> None:
        _check_foreach(foreach)
        super().__init__(params, sf_adamw_chain(), compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)


class PaLMForeachSFAdamW(ChainOptimizer):
    """Schedule-free AdamW (Defazio et al. 2024, arXiv 2405.15682) with PaLM's
    ``beta2_t = 1 - t^-beta2_scale`` (Chowdhery et al. 2022, arXiv 2204.02311); ``beta`` is beta1
    (``betas[0]``, if given, overrides it, as in HeavyBall 0.8.1; ``betas[1]`` must be None:
    beta2 is the schedule). The group holds ``betas = (beta, palm_beta2())``. Call
    ``optimizer.eval()`` before evaluating or saving and ``optimizer.train()`` before training.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer.
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); the step of z is ``lr_t u``. The default of the ``lr``
            hyperparameter.
        beta: beta1, in [0, 1): ``y = (1 - beta1) z + beta1 x``; beta2 follows
            ``1 - t^-beta2_scale``. Stored as ``betas[0]`` in the group.
        betas: ``(beta1 or None, None)``: ``betas[0]``, if given, overrides ``beta`` (as in
            HeavyBall 0.8.1); ``betas[1]`` must be None (anything else is a ``ValueError``). The
            group's ``betas`` hyperparameter becomes ``(beta1, palm_beta2())``.
        eps: the denominator's floor, ``g / max(sqrt(v̂), eps)``, a number > 0. The default of the
            ``eps`` hyperparameter.
        weight_decay: decay of the weights, ``u + wd y`` (y: the point where the gradient is taken),
            a number >= 0 (0: none). The default of the ``weight_decay`` hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none. The default of the ``warmup_steps`` hyperparameter.
        r: the weight ``t^r`` of iterate t in the average x (Defazio et al. 2024), a finite number
            (0: uniform). The default of the ``r`` hyperparameter.
        weight_lr_power: the weight ``lr_t^weight_lr_power`` of iterate t in x, a number >= 0. The
            default of the ``weight_lr_power`` hyperparameter.
        beta2_scale: the exponent of PaLM's ``beta2_t = 1 - t^-beta2_scale``, a number >= 0. The
            default of the ``beta2_scale`` hyperparameter (which ``palm_beta2()`` reads).
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding).
        capturable: keyword-only; a step a CUDA graph can capture, every changing number computed on
            the device (docs/performance.md, "CUDA graphs"; True or False).

    Examples:
        Under a constant gradient v̂ = g² whatever beta2, so the steps are ForeachSFAdamW's:
        ``eval()`` gives x, the mean of ``z_1, z_2 = p_0 - lr sign(g), p_0 - 2 lr sign(g)``.

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = hc.PaLMForeachSFAdamW([p], lr=0.1)
        >>> opt.param_groups[0]["betas"]
        (0.9, palm_beta2(scale=None))
        >>> for _ in range(2):
        ...     p.grad = torch.tensor([0.5, -3.0])
        ...     opt.step()
        >>> _ = opt.eval(); p.data
        tensor([ 0.8500, -1.8500])
    """

    def __init__(self, params: Iterable[Any], lr: LR = 0.0025, beta: Scalar = 0.9,
                 betas: tuple[Scalar | None, None] = (None, None), eps: Scalar = 1e-8, weight_decay: Scalar = 0.0,
                 warmup_steps: Count = 0, r: Scalar = 0.0, weight_lr_power: Scalar = 2.0, beta2_scale: float = 0.8,
                 compile: bool = False, *, capturable: bool = False) -> None:
        super().__init__(params, sf_adamw_chain(), compile=compile, capturable=capturable, lr=lr,
                         betas=palm_betas(beta, betas), eps=eps,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                         weight_lr_power=weight_lr_power, beta2_scale=beta2_scale)


class AdamWScheduleFree(ChainOptimizer):
    """Schedule-free AdamW (Defazio et al. 2024, "The Road Less Scheduled", arXiv 2405.15682) as
    ``schedulefree.AdamWScheduleFree`` 1.4.1 computes it. With ``t`` the step, ``lr_t = lr *
    min(t / warmup_steps, 1)`` and ``c_t = w_t / sum_k w_k``, ``w_t = t^r max_{k<=t}(lr_k)^weight_lr_power``:

        v = b2 v + (1 - b2) g²;   u = g / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * y
        y = lerp(y, z, c_t) + lr_t (b1 (1 - c_t) - 1) u;   z = z - lr_t u

    Call ``optimizer.eval()`` before evaluating or saving the model (the parameters become the
    average x) and ``optimizer.train()`` before training again; ``step()`` in eval mode raises.
    Differences from the reference: the optimizer starts in train mode (the reference starts in
    eval mode and refuses ``step()`` until ``train()``; before the first step x = y, so the mode
    changes no number), and ``t``, the weight sum and ``lr_max`` are kept per parameter in
    ``optimizer.state`` (the reference keeps them per param group and counts every ``step()``
    call, also for parameters without a gradient). ``foreach`` is validated and otherwise
    ignored (every path is foreach; ``compile=True`` fuses).

    Args:
        params: parameters or param-group dicts, as for any torch optimizer.
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); the step of z is ``lr_t u``. The default of the ``lr``
            hyperparameter.
        betas: ``(b1, b2)``, each in [0, 1): b1 interpolates ``y = (1 - b1) z + b1 x``, b2 is the
            raw EMA decay of v (bias-corrected by ``1 - b2^t``); an element may be a schedule. The
            default of the ``betas`` hyperparameter.
        eps: added to the denominator, ``sqrt(v / (1 - b2^t)) + eps``, a number >= 0. The default of
            the ``eps`` hyperparameter.
        weight_decay: decay of the weights, ``u + wd y`` (y: the point where the gradient is taken),
            a number >= 0 (0: none). The default of the ``weight_decay`` hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none. The default of the ``warmup_steps`` hyperparameter.
        r: the weight ``t^r`` of iterate t in the average x (Defazio et al. 2024), a finite number
            (0: uniform). The default of the ``r`` hyperparameter.
        weight_lr_power: the weight ``(max_{k<=t} lr_k)^weight_lr_power`` of iterate t in x (the
            largest lr so far), a number >= 0. The default of the ``weight_lr_power``
            hyperparameter.
        foreach: torch's kernel choice: True, False or None, accepted and otherwise ignored (the
            numbers are the same; every path is foreach).
        compile: keyword-only; run the elementwise part of the step as one ``torch.compile``d graph
            per 16 tensors (True or False; same numbers up to fp32 rounding).
        capturable: keyword-only; a step a CUDA graph can capture, every changing number computed on
            the device (docs/performance.md, "CUDA graphs"; True or False).

    Examples:
        Step 1 has ``c_1 = 1``: ``y = z = p - lr g / (|g| + eps)``, about ``p - lr sign(g)``, and
        x = y. Step 2, at ``c_2 = 1/2``, moves y by ``-0.55 lr sign(g)`` and z by
        ``-lr sign(g)``; x, the mean of z_1 and z_2, is what ``eval()`` puts in the parameters:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = hc.AdamWScheduleFree([p], lr=0.1)
        >>> for _ in range(2):
        ...     p.grad = torch.tensor([0.5, -3.0])
        ...     opt.step()
        >>> p.data
        tensor([ 0.8450, -1.8450])
        >>> _ = opt.eval(); p.data
        tensor([ 0.8500, -1.8500])
    """

    def __init__(self, params: Iterable[Any], lr: LR = 0.0025, betas: tuple[Scalar, Scalar] = (0.9, 0.999),
                 eps: Scalar = 1e-8, weight_decay: Scalar = 0, warmup_steps: Count = 0, r: Scalar = 0.0,
                 weight_lr_power: Scalar = 2.0, foreach: bool | None = hasattr(torch, "_foreach_mul_"), *,
                 compile: bool = False, capturable: bool = False) -> None:
        torch_flags("AdamWScheduleFree", foreach=foreach)
        tx = named_chain(
            ("rms", scale_by_rms((0.9, 0.999), debias="divide_root", eps_mode="add")),
            ("decay", add_decayed_weights()),
            ("schedule_free", schedule_free(betas=(0.9, 0.999), weight_lr="max")),
        )
        super().__init__(params, tx, compile=compile, capturable=capturable, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)

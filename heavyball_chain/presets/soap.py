"""The SOAP presets, HeavyBall 0.8.1's names, arguments and defaults.

All six are one chain, ``soap_chain``, differing only in what they compose into it: the second
beta (a number, or PaLM's schedule ``palm_beta2()``), the eigenbasis refresh (``every(n)`` or the
random ``precond_schedule()``), and, for the schedule-free ones, adaptive clipping in front and
``schedule_free`` (with no first moment) in place of the learning rate and apply steps.

    ForeachSOAP                       betas=(b1, b2)           every(precondition_frequency)
    PaLMForeachSOAP                   (beta, palm_beta2())     every(precondition_frequency)
    PrecondScheduleForeachSOAP        (b1, b2)                 precond_schedule()
    PrecondSchedulePaLMForeachSOAP    (beta, palm_beta2())     precond_schedule()
    SFPaLMForeachSOAP                 (beta, palm_beta2())     every(...)          schedule-free
    PrecondScheduleSFPaLMForeachSOAP  (beta, palm_beta2())     precond_schedule()  schedule-free

``SOAP`` is the drop-in for the authors' reference (github.com/nikhilvyas/SOAP): the same
transform with the reference's conventions (``reference_chain``).
"""

from __future__ import annotations

from typing import Any, Iterable

from ..core import LR, Chain, Count, Flag, Scalar, Schedule, as_tuple, named_chain
from ..optimizer import ChainOptimizer
from ..transforms import (
    add_decayed_weights,
    clip_by_adaptive_norm,
    scale_by_learning_rate,
    schedule_free,
    stochastic_round_apply,
)
from ..transforms.schedules import every, palm_betas, precond_schedule
from ..transforms.scaling import decay_after_update
from ..transforms.soap import soap_precondition

__all__ = [
    "ForeachSOAP",
    "PaLMForeachSOAP",
    "PalmForEachSoap",
    "PrecondScheduleForeachSOAP",
    "PrecondSchedulePaLMForeachSOAP",
    "PrecondScheduleSFPaLMForeachSOAP",
    "PrecondScheduleSFPaLMSOAP",
    "SFPaLMForeachSOAP",
    "SOAP",
    "reference_chain",
    "soap_chain",
]


def soap_chain(betas: tuple[Any, Any], refresh: Schedule, schedule_free_: bool = False,
               refresh_factors: str = "all") -> Chain:
    """SOAP -> decoupled weight decay -> -lr (warmup) -> apply; or, schedule-free:
    AGC -> SOAP without first moment -> weight decay at y -> schedule_free.

    The presets pass every argument as a param-group value this chain declares, so ChainOptimizer
    validates it (tuples element by element; a ValueError naming the argument). The exceptions are
    checked by the presets: ``beta`` becomes ``betas[0]``, and ``precondition_frequency`` must keep
    its default where the random schedule decides (``_no_frequency``)."""
    if not schedule_free_:
        return named_chain(
            ("soap", soap_precondition(refresh, betas=betas, refresh_factors=refresh_factors)),
            ("decay", add_decayed_weights()),
            ("lr", scale_by_learning_rate()),
            ("apply", stochastic_round_apply()),
        )
    return named_chain(
        ("clip", clip_by_adaptive_norm()),
        ("soap", soap_precondition(refresh, betas=betas, first_moment=False, refresh_factors=refresh_factors)),
        ("decay", add_decayed_weights()),
        ("schedule_free", schedule_free(betas=betas)),
    )


def _no_frequency(precondition_frequency: int) -> None:
    if precondition_frequency != 2:
        raise ValueError(
            "precondition_frequency: has no effect with the preconditioner schedule (precond_scheduler); "
            "use the preset without PrecondSchedule for a fixed interval"
        )


class _SOAP(ChainOptimizer):
    def _build(self, params: Iterable[Any], refresh: Schedule, sf: bool = False, refresh_factors: str = "all",
               **hp: Any) -> None:
        for name in ("betas", "precond_scheduler"):  # lists become tuples; other types are left to the checks
            if name in hp:
                hp[name] = as_tuple(hp[name])
        super().__init__(params, soap_chain(hp["betas"], refresh, sf, refresh_factors), **hp)


class ForeachSOAP(_SOAP):
    """SOAP (Vyas et al. 2024, arXiv 2409.11321) refreshing the eigenbasis every
    ``precondition_frequency`` steps. ``shampoo_beta=None``: the factors follow the debiased beta2
    (what HeavyBall 0.8.1 does with any value); a number takes effect.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer (real floating-point
            tensors; complex ones are refused).
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); ``u = -lr_t u``. The default of the ``lr`` hyperparameter.
        betas: ``(b1, b2)``, the EMA decays of m and v (both kept in the eigenbasis), debiased,
            each in [0, 1); an element may be a schedule (``palm_beta2()``). The default of the
            ``betas`` hyperparameter.
        shampoo_beta: the EMA decay of SOAP's factors ``GG_i``: None (or a negative number) follows
            the debiased beta2 (what HeavyBall 0.8.1 does with any value); a number s in [0, 1)
            takes effect, ``GG = lerp(GG, G Gᵀ, 1 - s)``. The default of the ``shampoo_beta``
            hyperparameter.
        eps: the denominator's floor, ``max(sqrt(v), eps)``, a number > 0. The default of the
            ``eps`` hyperparameter.
        weight_decay: decay of the weights, decoupled: ``p (1 - lr wd)``, a number >= 0 (0: none).
            The default of the ``weight_decay`` hyperparameter.
        precondition_frequency: refresh the eigenbasis every this many steps, an integer >= 1. The
            default of the ``precondition_frequency`` hyperparameter.
        max_precond_dim: dimensions larger than this are not preconditioned (identity basis), an
            integer >= 1; fixed (not a schedule). The default of the ``max_precond_dim``
            hyperparameter.
        merge_dims: merge adjacent dimensions, dimension 0 kept apart, while their product stays <
            max_precond_dim (conv kernels become matrices: ``[128, 64, 3, 3] -> [128, 576]``); True
            or False, fixed. The default of the ``merge_dims`` hyperparameter.
        precondition_1d: precondition vectors too (a ``d x d`` factor per bias) if
            ``d <= max_precond_dim``; True or False, fixed. The default of the ``precondition_1d``
            hyperparameter.
        normalize_grads: divide each update by its RMS (the SOAP reference's option); True or False.
            The default of the ``normalize_grads`` hyperparameter.
        data_format: only ``"channels_first"`` (HeavyBall's other value is refused with a
            ``ValueError`` rather than ignored: a torch conv weight is ``[out, in, kh, kw]``
            whatever its memory format). The default of the ``data_format`` hyperparameter.
        correct_bias: debias the EMAs (False: the raw betas, as the reference's
            ``correct_bias=False``); True or False. The default of the ``correct_bias``
            hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none (HeavyBall's default 1: the full lr from the first update). The default of the
            ``warmup_steps`` hyperparameter.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding; SOAP's matrix work is unchanged).
        refresh_factors: keyword-only; ``"all"`` (HeavyBall's math) or ``"one"``: one factor's basis
            per refresh, in turn (half the refresh work; docs/performance.md).

    Examples:
        Step 1 only builds the factors ``g1 g1ᵀ``, ``g1ᵀ g1`` and their eigenbases ``Q_L``, ``Q_R``;
        step 2 is Adam's first step (``m̂ / sqrt(v̂) = sign``) in that basis,
        ``u = Q_L sign(Q_Lᵀ g2 Q_R) Q_Rᵀ`` (with p = 0 the weight decay adds nothing):

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.zeros(2, 2))
        >>> opt = hc.ForeachSOAP([p], lr=0.1)
        >>> g1, g2 = torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([[1.0, -2.0], [0.5, 1.0]])
        >>> for g in (g1, g2):
        ...     p.grad = g
        ...     opt.step()
        >>> QL, QR = torch.linalg.eigh(g1 @ g1.T).eigenvectors, torch.linalg.eigh(g1.T @ g1).eigenvectors
        >>> torch.allclose(p, -0.1 * QL @ torch.sign(QL.T @ g2 @ QR) @ QR.T, atol=1e-6)
        True
    """

    def __init__(self, params: Iterable[Any], lr: LR = 3e-3, betas: tuple[Scalar, Scalar] = (0.9, 0.95),
                 shampoo_beta: Scalar | None = None, eps: Scalar = 1e-8, weight_decay: Scalar = 0.01,
                 precondition_frequency: Count = 2, max_precond_dim: int = 2048, merge_dims: bool = True,
                 precondition_1d: bool = False, normalize_grads: Flag = False, data_format: str = "channels_first",
                 correct_bias: Flag = True, warmup_steps: Count = 1, compile: bool = False, *,
                 refresh_factors: str = "all") -> None:
        self._build(params, every(), compile=compile, refresh_factors=refresh_factors,
                    lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps,
                    weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                    max_precond_dim=max_precond_dim, merge_dims=merge_dims, precondition_1d=precondition_1d,
                    normalize_grads=normalize_grads, data_format=data_format, correct_bias=correct_bias,
                    warmup_steps=warmup_steps)


class PaLMForeachSOAP(_SOAP):
    """SOAP (Vyas et al. 2024, arXiv 2409.11321) with PaLM's ``beta2_t = 1 - t^-beta2_scale``
    (Chowdhery et al. 2022, arXiv 2204.02311), refreshing every ``precondition_frequency``.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer (real floating-point
            tensors; complex ones are refused).
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); ``u = -lr_t u``. The default of the ``lr`` hyperparameter.
        beta: beta1, the EMA decay of m, in [0, 1); beta2 follows ``1 - t^-beta2_scale``. Stored as
            ``betas[0]`` in the group.
        betas: ``(beta1 or None, None)``: ``betas[0]``, if given, overrides ``beta`` (as in
            HeavyBall 0.8.1); ``betas[1]`` must be None (anything else is a ``ValueError``). The
            group's ``betas`` hyperparameter becomes ``(beta1, palm_beta2())``.
        shampoo_beta: the EMA decay of SOAP's factors ``GG_i``: None (or a negative number) follows
            the debiased beta2 (what HeavyBall 0.8.1 does with any value); a number s in [0, 1)
            takes effect, ``GG = lerp(GG, G Gᵀ, 1 - s)``. The default of the ``shampoo_beta``
            hyperparameter.
        eps: the denominator's floor, ``max(sqrt(v), eps)``, a number > 0. The default of the
            ``eps`` hyperparameter.
        weight_decay: decay of the weights, decoupled: ``p (1 - lr wd)``, a number >= 0 (0: none).
            The default of the ``weight_decay`` hyperparameter.
        precondition_frequency: refresh the eigenbasis every this many steps, an integer >= 1. The
            default of the ``precondition_frequency`` hyperparameter.
        max_precond_dim: dimensions larger than this are not preconditioned (identity basis), an
            integer >= 1; fixed (not a schedule). The default of the ``max_precond_dim``
            hyperparameter.
        merge_dims: merge adjacent dimensions, dimension 0 kept apart, while their product stays <
            max_precond_dim (conv kernels become matrices: ``[128, 64, 3, 3] -> [128, 576]``); True
            or False, fixed. The default of the ``merge_dims`` hyperparameter.
        precondition_1d: precondition vectors too (a ``d x d`` factor per bias) if
            ``d <= max_precond_dim``; True or False, fixed. The default of the ``precondition_1d``
            hyperparameter.
        normalize_grads: divide each update by its RMS (the SOAP reference's option); True or False.
            The default of the ``normalize_grads`` hyperparameter.
        data_format: only ``"channels_first"`` (HeavyBall's other value is refused with a
            ``ValueError`` rather than ignored: a torch conv weight is ``[out, in, kh, kw]``
            whatever its memory format). The default of the ``data_format`` hyperparameter.
        correct_bias: debias the EMAs (False: the raw betas, as the reference's
            ``correct_bias=False``); True or False. The default of the ``correct_bias``
            hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none (HeavyBall's default 1: the full lr from the first update). The default of the
            ``warmup_steps`` hyperparameter.
        beta2_scale: the exponent of PaLM's ``beta2_t = 1 - t^-beta2_scale``, a number >= 0. The
            default of the ``beta2_scale`` hyperparameter (which ``palm_beta2()`` reads).
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding; SOAP's matrix work is unchanged).
        refresh_factors: keyword-only; ``"all"`` (HeavyBall's math) or ``"one"``: one factor's basis
            per refresh, in turn (half the refresh work; docs/performance.md).

    Examples:
        The group's beta2 is the schedule ``1 - t^-0.8``. Step 1 only builds the factors and
        their eigenbases; step 2 is Adam's first step in that basis, ±1 per coordinate of an
        orthonormal basis, so it moves the 2x2 weight by ``lr sqrt(4)`` in Frobenius norm:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.zeros(2, 2))
        >>> opt = hc.PaLMForeachSOAP([p], lr=0.1)
        >>> b1, b2 = opt.param_groups[0]["betas"]
        >>> b1, [round(b2.at(t, opt.param_groups[0]), 4) for t in (1, 2, 10)]
        (0.9, [0.0, 0.4257, 0.8415])
        >>> for g in ([[2.0, 1.0], [0.0, 1.0]], [[1.0, -2.0], [0.5, 1.0]]):
        ...     p.grad = torch.tensor(g)
        ...     opt.step()
        >>> p.shape, bool(p.isfinite().all()), round(torch.linalg.norm(p).item(), 4)
        (torch.Size([2, 2]), True, 0.2)
    """

    def __init__(self, params: Iterable[Any], lr: LR = 3e-3, beta: Scalar = 0.9,
                 betas: tuple[Scalar | None, None] = (None, None), shampoo_beta: Scalar | None = None,
                 eps: Scalar = 1e-8, weight_decay: Scalar = 0.01, precondition_frequency: Count = 2,
                 max_precond_dim: int = 2048, merge_dims: bool = True, precondition_1d: bool = False,
                 normalize_grads: Flag = False, data_format: str = "channels_first", correct_bias: Flag = True,
                 warmup_steps: Count = 1, beta2_scale: float = 0.8, compile: bool = False, *,
                 refresh_factors: str = "all") -> None:
        group_betas = palm_betas(beta, betas)
        self._build(params, every(), compile=compile, refresh_factors=refresh_factors,
                    lr=lr, betas=group_betas, shampoo_beta=shampoo_beta, eps=eps,
                    weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                    max_precond_dim=max_precond_dim, merge_dims=merge_dims, precondition_1d=precondition_1d,
                    normalize_grads=normalize_grads, data_format=data_format, correct_bias=correct_bias,
                    warmup_steps=warmup_steps, beta2_scale=beta2_scale)


PalmForEachSoap = PaLMForeachSOAP


class PrecondScheduleForeachSOAP(_SOAP):
    """SOAP (Vyas et al. 2024, arXiv 2409.11321) refreshing with probability
    ``1 / (1 + log10(t^offset)^scale)`` (``precond_scheduler``): HeavyBall's preconditioner
    schedule, after PSGD's (Li 2015, arXiv 1512.04202).

    Args:
        params: parameters or param-group dicts, as for any torch optimizer (real floating-point
            tensors; complex ones are refused).
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); ``u = -lr_t u``. The default of the ``lr`` hyperparameter.
        betas: ``(b1, b2)``, the EMA decays of m and v (both kept in the eigenbasis), debiased,
            each in [0, 1); an element may be a schedule (``palm_beta2()``). The default of the
            ``betas`` hyperparameter.
        shampoo_beta: the EMA decay of SOAP's factors ``GG_i``: None (or a negative number) follows
            the debiased beta2 (what HeavyBall 0.8.1 does with any value); a number s in [0, 1)
            takes effect, ``GG = lerp(GG, G Gᵀ, 1 - s)``. The default of the ``shampoo_beta``
            hyperparameter.
        eps: the denominator's floor, ``max(sqrt(v), eps)``, a number > 0. The default of the
            ``eps`` hyperparameter.
        weight_decay: decay of the weights, decoupled: ``p (1 - lr wd)``, a number >= 0 (0: none).
            The default of the ``weight_decay`` hyperparameter.
        precondition_frequency: only the default 2 is accepted (a ``ValueError`` otherwise): the
            random schedule (``precond_scheduler``) decides the refreshes.
        max_precond_dim: dimensions larger than this are not preconditioned (identity basis), an
            integer >= 1; fixed (not a schedule). The default of the ``max_precond_dim``
            hyperparameter.
        merge_dims: merge adjacent dimensions, dimension 0 kept apart, while their product stays <
            max_precond_dim (conv kernels become matrices: ``[128, 64, 3, 3] -> [128, 576]``); True
            or False, fixed. The default of the ``merge_dims`` hyperparameter.
        precondition_1d: precondition vectors too (a ``d x d`` factor per bias) if
            ``d <= max_precond_dim``; True or False, fixed. The default of the ``precondition_1d``
            hyperparameter.
        normalize_grads: divide each update by its RMS (the SOAP reference's option); True or False.
            The default of the ``normalize_grads`` hyperparameter.
        data_format: only ``"channels_first"`` (HeavyBall's other value is refused with a
            ``ValueError`` rather than ignored: a torch conv weight is ``[out, in, kh, kw]``
            whatever its memory format). The default of the ``data_format`` hyperparameter.
        correct_bias: debias the EMAs (False: the raw betas, as the reference's
            ``correct_bias=False``); True or False. The default of the ``correct_bias``
            hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none (HeavyBall's default 1: the full lr from the first update). The default of the
            ``warmup_steps`` hyperparameter.
        precond_scheduler: ``(offset, scale)``, two finite numbers > 0: refresh with probability
            ``1 / (1 + log10(t^offset)^scale)``, drawn from a fixed seed. The default of the
            ``precond_scheduler`` hyperparameter.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding; SOAP's matrix work is unchanged).
        refresh_factors: keyword-only; ``"all"`` (HeavyBall's math) or ``"one"``: one factor's basis
            per refresh, in turn (half the refresh work; docs/performance.md).

    Examples:
        At the default ``(1/3, 9)`` a refresh is nearly certain early, even odds at step 1000
        (``log10(1000^(1/3)) = 1``) and rare after a million steps. Step 1 only builds the
        factors and their eigenbases; step 2 is Adam's first step in that basis, ±1 per
        coordinate of an orthonormal basis, so it moves the 2x2 weight by ``lr sqrt(4)`` in
        Frobenius norm:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain.transforms.schedules import precond_schedule
        >>> [round(precond_schedule.probability(t, 1 / 3, 9), 4) for t in (10, 1000, 10**6)]
        [0.9999, 0.5, 0.0019]
        >>> p = torch.nn.Parameter(torch.zeros(2, 2))
        >>> opt = hc.PrecondScheduleForeachSOAP([p], lr=0.1)
        >>> for g in ([[2.0, 1.0], [0.0, 1.0]], [[1.0, -2.0], [0.5, 1.0]]):
        ...     p.grad = torch.tensor(g)
        ...     opt.step()
        >>> bool(p.isfinite().all()), round(torch.linalg.norm(p).item(), 4)
        (True, 0.2)
    """

    def __init__(self, params: Iterable[Any], lr: LR = 3e-3, betas: tuple[Scalar, Scalar] = (0.9, 0.95),
                 shampoo_beta: Scalar | None = None, eps: Scalar = 1e-8, weight_decay: Scalar = 0.01,
                 precondition_frequency: int = 2, max_precond_dim: int = 2048, merge_dims: bool = True,
                 precondition_1d: bool = False, normalize_grads: Flag = False, data_format: str = "channels_first",
                 correct_bias: Flag = True, warmup_steps: Count = 1,
                 precond_scheduler: tuple[Scalar, Scalar] = (1 / 3, 9), compile: bool = False, *,
                 refresh_factors: str = "all") -> None:
        _no_frequency(precondition_frequency)
        self._build(params, precond_schedule(), compile=compile, refresh_factors=refresh_factors,
                    lr=lr, betas=betas, shampoo_beta=shampoo_beta,
                    eps=eps, weight_decay=weight_decay, max_precond_dim=max_precond_dim, merge_dims=merge_dims,
                    precondition_1d=precondition_1d, normalize_grads=normalize_grads, data_format=data_format,
                    correct_bias=correct_bias, warmup_steps=warmup_steps, precond_scheduler=precond_scheduler)


class PrecondSchedulePaLMForeachSOAP(_SOAP):
    """HeavyBall's recommended optimizer: SOAP (Vyas et al. 2024, arXiv 2409.11321) with PaLM's
    beta2 (Chowdhery et al. 2022) and the preconditioner schedule (``PrecondScheduleForeachSOAP``).

    Args:
        params: parameters or param-group dicts, as for any torch optimizer (real floating-point
            tensors; complex ones are refused).
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); ``u = -lr_t u``. The default of the ``lr`` hyperparameter.
        beta: beta1, the EMA decay of m, in [0, 1); beta2 follows ``1 - t^-beta2_scale``. Stored as
            ``betas[0]`` in the group.
        shampoo_beta: the EMA decay of SOAP's factors ``GG_i``: None (or a negative number) follows
            the debiased beta2 (what HeavyBall 0.8.1 does with any value); a number s in [0, 1)
            takes effect, ``GG = lerp(GG, G Gᵀ, 1 - s)``. The default of the ``shampoo_beta``
            hyperparameter.
        eps: the denominator's floor, ``max(sqrt(v), eps)``, a number > 0. The default of the
            ``eps`` hyperparameter.
        weight_decay: decay of the weights, decoupled: ``p (1 - lr wd)``, a number >= 0 (0: none).
            The default of the ``weight_decay`` hyperparameter.
        precondition_frequency: only the default 2 is accepted (a ``ValueError`` otherwise): the
            random schedule (``precond_scheduler``) decides the refreshes.
        max_precond_dim: dimensions larger than this are not preconditioned (identity basis), an
            integer >= 1; fixed (not a schedule). The default of the ``max_precond_dim``
            hyperparameter.
        merge_dims: merge adjacent dimensions, dimension 0 kept apart, while their product stays <
            max_precond_dim (conv kernels become matrices: ``[128, 64, 3, 3] -> [128, 576]``); True
            or False, fixed. The default of the ``merge_dims`` hyperparameter.
        precondition_1d: precondition vectors too (a ``d x d`` factor per bias) if
            ``d <= max_precond_dim``; True or False, fixed. The default of the ``precondition_1d``
            hyperparameter.
        normalize_grads: divide each update by its RMS (the SOAP reference's option); True or False.
            The default of the ``normalize_grads`` hyperparameter.
        data_format: only ``"channels_first"`` (HeavyBall's other value is refused with a
            ``ValueError`` rather than ignored: a torch conv weight is ``[out, in, kh, kw]``
            whatever its memory format). The default of the ``data_format`` hyperparameter.
        correct_bias: debias the EMAs (False: the raw betas, as the reference's
            ``correct_bias=False``); True or False. The default of the ``correct_bias``
            hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none (HeavyBall's default 1: the full lr from the first update). The default of the
            ``warmup_steps`` hyperparameter.
        precond_scheduler: ``(offset, scale)``, two finite numbers > 0: refresh with probability
            ``1 / (1 + log10(t^offset)^scale)``, drawn from a fixed seed. The default of the
            ``precond_scheduler`` hyperparameter.
        betas: ``(beta1 or None, None)``: ``betas[0]``, if given, overrides ``beta`` (as in
            HeavyBall 0.8.1); ``betas[1]`` must be None (anything else is a ``ValueError``). The
            group's ``betas`` hyperparameter becomes ``(beta1, palm_beta2())``.
        beta2_scale: the exponent of PaLM's ``beta2_t = 1 - t^-beta2_scale``, a number >= 0. The
            default of the ``beta2_scale`` hyperparameter (which ``palm_beta2()`` reads).
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding; SOAP's matrix work is unchanged).
        refresh_factors: keyword-only; ``"all"`` (HeavyBall's math) or ``"one"``: one factor's basis
            per refresh, in turn (half the refresh work; docs/performance.md).

    Examples:
        The group holds both schedules' settings. Step 1 only builds the factors and their
        eigenbases; step 2 is Adam's first step in that basis, ±1 per coordinate of an
        orthonormal basis, so it moves the 2x2 weight by ``lr sqrt(4)`` in Frobenius norm:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.zeros(2, 2))
        >>> opt = hc.PrecondSchedulePaLMForeachSOAP([p], lr=0.1)
        >>> group = opt.param_groups[0]; group["betas"], group["beta2_scale"], group["precond_scheduler"]
        ((0.9, palm_beta2(scale=None)), 0.8, (0.3333333333333333, 9))
        >>> for g in ([[2.0, 1.0], [0.0, 1.0]], [[1.0, -2.0], [0.5, 1.0]]):
        ...     p.grad = torch.tensor(g)
        ...     opt.step()
        >>> bool(p.isfinite().all()), round(torch.linalg.norm(p).item(), 4)
        (True, 0.2)
    """

    def __init__(self, params: Iterable[Any], lr: LR = 3e-3, beta: Scalar = 0.9, shampoo_beta: Scalar | None = None,
                 eps: Scalar = 1e-8, weight_decay: Scalar = 0.01, precondition_frequency: int = 2,
                 max_precond_dim: int = 2048, merge_dims: bool = True, precondition_1d: bool = False,
                 normalize_grads: Flag = False, data_format: str = "channels_first", correct_bias: Flag = True,
                 warmup_steps: Count = 1, precond_scheduler: tuple[Scalar, Scalar] = (1 / 3, 9),
                 betas: tuple[Scalar | None, None] = (None, None), beta2_scale: float = 0.8,
                 compile: bool = False, *, refresh_factors: str = "all") -> None:
        _no_frequency(precondition_frequency)
        group_betas = palm_betas(beta, betas)
        self._build(params, precond_schedule(), compile=compile, refresh_factors=refresh_factors,
                    lr=lr, betas=group_betas, shampoo_beta=shampoo_beta,
                    eps=eps, weight_decay=weight_decay, max_precond_dim=max_precond_dim, merge_dims=merge_dims,
                    precondition_1d=precondition_1d, normalize_grads=normalize_grads, data_format=data_format,
                    correct_bias=correct_bias, warmup_steps=warmup_steps, precond_scheduler=precond_scheduler,
                    beta2_scale=beta2_scale)


class SFPaLMForeachSOAP(_SOAP):
    """Schedule-free SOAP (no first moment; adaptive gradient clipping first), PaLM beta2,
    refreshing every ``precondition_frequency``. Call ``eval()``/``train()`` as for ForeachSFAdamW.
    SOAP is Vyas et al. 2024 (arXiv 2409.11321), schedule-free Defazio et al. 2024 (arXiv
    2405.15682), PaLM's beta2 Chowdhery et al. 2022.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer (real floating-point
            tensors; complex ones are refused).
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); the step of z is ``lr_t u``. The default of the ``lr``
            hyperparameter.
        beta: beta1, in [0, 1): the schedule-free interpolation ``y = (1 - beta1) z + beta1 x``
            (there is no m); beta2 follows ``1 - t^-beta2_scale``. Stored as ``betas[0]`` in the
            group.
        beta2_scale: the exponent of PaLM's ``beta2_t = 1 - t^-beta2_scale``, a number >= 0. The
            default of the ``beta2_scale`` hyperparameter (which ``palm_beta2()`` reads).
        eps: the denominator's floor, ``max(sqrt(v), eps)``, a number > 0. The default of the
            ``eps`` hyperparameter.
        weight_decay: decay of the weights, ``u + wd y`` (y: the point where the gradient is taken),
            a number >= 0 (0: none). The default of the ``weight_decay`` hyperparameter.
        precondition_frequency: refresh the eigenbasis every this many steps, an integer >= 1. The
            default of the ``precondition_frequency`` hyperparameter.
        max_precond_dim: dimensions larger than this are not preconditioned (identity basis), an
            integer >= 1; fixed (not a schedule). The default of the ``max_precond_dim``
            hyperparameter.
        merge_dims: merge adjacent dimensions, dimension 0 kept apart, while their product stays <
            max_precond_dim (conv kernels become matrices: ``[128, 64, 3, 3] -> [128, 576]``); True
            or False, fixed. The default of the ``merge_dims`` hyperparameter.
        precondition_1d: precondition vectors too (a ``d x d`` factor per bias) if
            ``d <= max_precond_dim``; True or False, fixed. The default of the ``precondition_1d``
            hyperparameter.
        normalize_grads: divide each update by its RMS (the SOAP reference's option); True or False.
            The default of the ``normalize_grads`` hyperparameter.
        data_format: only ``"channels_first"`` (HeavyBall's other value is refused with a
            ``ValueError`` rather than ignored: a torch conv weight is ``[out, in, kh, kw]``
            whatever its memory format). The default of the ``data_format`` hyperparameter.
        correct_bias: debias the EMAs (False: the raw betas, as the reference's
            ``correct_bias=False``); True or False. The default of the ``correct_bias``
            hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none (HeavyBall's default 1: the full lr from the first update). The default of the
            ``warmup_steps`` hyperparameter.
        r: the weight ``t^r`` of iterate t in the average x (Defazio et al. 2024), a finite number
            (0: uniform). The default of the ``r`` hyperparameter.
        weight_lr_power: the weight ``lr_t^weight_lr_power`` of iterate t in x, a number >= 0. The
            default of the ``weight_lr_power`` hyperparameter.
        gradient_clip_val: adaptive gradient clipping (Brock et al. 2021) first: each tensor's
            gradient norm is clipped to ``gradient_clip_val * max(||p||, 1e-3)``; a number >= 0, 0
            disables it. The default of the ``gradient_clip_val`` hyperparameter.
        betas: ``(beta1 or None, None)``: ``betas[0]``, if given, overrides ``beta`` (as in
            HeavyBall 0.8.1); ``betas[1]`` must be None (anything else is a ``ValueError``). The
            group's ``betas`` hyperparameter becomes ``(beta1, palm_beta2())``.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding; SOAP's matrix work is unchanged).
        refresh_factors: keyword-only; ``"all"`` (HeavyBall's math) or ``"one"``: one factor's basis
            per refresh, in turn (half the refresh work; docs/performance.md).

    Examples:
        Step 1 only builds the factors. The parameters then hold y; ``eval()`` sets them to the
        average x (which differs from y once there are two updates) and ``train()`` back to y:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.ones(2, 2))
        >>> opt = hc.SFPaLMForeachSOAP([p], lr=0.1)
        >>> for g in ([[2.0, 1.0], [0.0, 1.0]], [[1.0, -2.0], [0.5, 1.0]], [[1.0, 1.0], [0.0, 2.0]]):
        ...     p.grad = torch.tensor(g)
        ...     opt.step()
        >>> y = p.detach().clone(); _ = opt.eval()
        >>> torch.allclose(p, y), bool(p.isfinite().all())
        (False, True)
        >>> _ = opt.train(); torch.allclose(p, y)
        True
    """

    def __init__(self, params: Iterable[Any], lr: LR = 3e-3, beta: Scalar = 0.9, beta2_scale: float = 0.8,
                 eps: Scalar = 1e-8, weight_decay: Scalar = 0.01, precondition_frequency: Count = 2,
                 max_precond_dim: int = 2048, merge_dims: bool = True, precondition_1d: bool = False,
                 normalize_grads: Flag = False, data_format: str = "channels_first", correct_bias: Flag = True,
                 warmup_steps: Count = 1, r: Scalar = 0.0, weight_lr_power: Scalar = 2.0,
                 gradient_clip_val: Scalar = 0.1, betas: tuple[Scalar | None, None] = (None, None),
                 compile: bool = False, *, refresh_factors: str = "all") -> None:
        group_betas = palm_betas(beta, betas)
        self._build(params, every(), compile=compile, refresh_factors=refresh_factors,
                    sf=True, lr=lr, betas=group_betas, eps=eps,
                    weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                    max_precond_dim=max_precond_dim, merge_dims=merge_dims, precondition_1d=precondition_1d,
                    normalize_grads=normalize_grads, data_format=data_format, correct_bias=correct_bias,
                    warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                    gradient_clip_val=gradient_clip_val, beta2_scale=beta2_scale)


class PrecondScheduleSFPaLMForeachSOAP(_SOAP):
    """Schedule-free SOAP with PaLM's beta2 and the preconditioner schedule
    (exported by HeavyBall 0.8.1 as ``PrecondScheduleSFPaLMSOAP``; both names work). SOAP is Vyas
    et al. 2024 (arXiv 2409.11321), schedule-free Defazio et al. 2024 (arXiv 2405.15682), PaLM's
    beta2 Chowdhery et al. 2022. Call ``eval()``/``train()`` as for ForeachSFAdamW.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer (real floating-point
            tensors; complex ones are refused).
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); the step of z is ``lr_t u``. The default of the ``lr``
            hyperparameter.
        beta: beta1, in [0, 1): the schedule-free interpolation ``y = (1 - beta1) z + beta1 x``
            (there is no m); beta2 follows ``1 - t^-beta2_scale``. Stored as ``betas[0]`` in the
            group.
        beta2_scale: the exponent of PaLM's ``beta2_t = 1 - t^-beta2_scale``, a number >= 0. The
            default of the ``beta2_scale`` hyperparameter (which ``palm_beta2()`` reads).
        eps: the denominator's floor, ``max(sqrt(v), eps)``, a number > 0. The default of the
            ``eps`` hyperparameter.
        weight_decay: decay of the weights, ``u + wd y`` (y: the point where the gradient is taken),
            a number >= 0 (0: none). The default of the ``weight_decay`` hyperparameter.
        precondition_frequency: only the default 2 is accepted (a ``ValueError`` otherwise): the
            random schedule (``precond_scheduler``) decides the refreshes.
        max_precond_dim: dimensions larger than this are not preconditioned (identity basis), an
            integer >= 1; fixed (not a schedule). The default of the ``max_precond_dim``
            hyperparameter.
        merge_dims: merge adjacent dimensions, dimension 0 kept apart, while their product stays <
            max_precond_dim (conv kernels become matrices: ``[128, 64, 3, 3] -> [128, 576]``); True
            or False, fixed. The default of the ``merge_dims`` hyperparameter.
        precondition_1d: precondition vectors too (a ``d x d`` factor per bias) if
            ``d <= max_precond_dim``; True or False, fixed. The default of the ``precondition_1d``
            hyperparameter.
        normalize_grads: divide each update by its RMS (the SOAP reference's option); True or False.
            The default of the ``normalize_grads`` hyperparameter.
        data_format: only ``"channels_first"`` (HeavyBall's other value is refused with a
            ``ValueError`` rather than ignored: a torch conv weight is ``[out, in, kh, kw]``
            whatever its memory format). The default of the ``data_format`` hyperparameter.
        correct_bias: debias the EMAs (False: the raw betas, as the reference's
            ``correct_bias=False``); True or False. The default of the ``correct_bias``
            hyperparameter.
        warmup_steps: linear lr warmup ``lr min(t / warmup_steps, 1)``, an integer >= 0; 0 means
            none (HeavyBall's default 1: the full lr from the first update). The default of the
            ``warmup_steps`` hyperparameter.
        r: the weight ``t^r`` of iterate t in the average x (Defazio et al. 2024), a finite number
            (0: uniform). The default of the ``r`` hyperparameter.
        weight_lr_power: the weight ``lr_t^weight_lr_power`` of iterate t in x, a number >= 0. The
            default of the ``weight_lr_power`` hyperparameter.
        gradient_clip_val: adaptive gradient clipping (Brock et al. 2021) first: each tensor's
            gradient norm is clipped to ``gradient_clip_val * max(||p||, 1e-3)``; a number >= 0, 0
            disables it. The default of the ``gradient_clip_val`` hyperparameter.
        precond_scheduler: ``(offset, scale)``, two finite numbers > 0: refresh with probability
            ``1 / (1 + log10(t^offset)^scale)``, drawn from a fixed seed. The default of the
            ``precond_scheduler`` hyperparameter.
        betas: ``(beta1 or None, None)``: ``betas[0]``, if given, overrides ``beta`` (as in
            HeavyBall 0.8.1); ``betas[1]`` must be None (anything else is a ``ValueError``). The
            group's ``betas`` hyperparameter becomes ``(beta1, palm_beta2())``.
        compile: run the elementwise part of the step as one ``torch.compile``d graph per 16 tensors
            (True or False; same numbers up to fp32 rounding; SOAP's matrix work is unchanged).
        refresh_factors: keyword-only; ``"all"`` (HeavyBall's math) or ``"one"``: one factor's basis
            per refresh, in turn (half the refresh work; docs/performance.md).

    Examples:
        Step 1 only builds the factors. The parameters then hold y; ``eval()`` sets them to the
        average x (which differs from y once there are two updates) and ``train()`` back to y:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.ones(2, 2))
        >>> opt = hc.PrecondScheduleSFPaLMSOAP([p], lr=0.1)  # HeavyBall 0.8.1's name
        >>> for g in ([[2.0, 1.0], [0.0, 1.0]], [[1.0, -2.0], [0.5, 1.0]], [[1.0, 1.0], [0.0, 2.0]]):
        ...     p.grad = torch.tensor(g)
        ...     opt.step()
        >>> y = p.detach().clone(); _ = opt.eval()
        >>> torch.allclose(p, y), bool(p.isfinite().all())
        (False, True)
        >>> _ = opt.train(); torch.allclose(p, y)
        True
    """

    def __init__(self, params: Iterable[Any], lr: LR = 3e-3, beta: Scalar = 0.9, beta2_scale: float = 0.8,
                 eps: Scalar = 1e-8, weight_decay: Scalar = 0.01, precondition_frequency: int = 2,
                 max_precond_dim: int = 2048, merge_dims: bool = True, precondition_1d: bool = False,
                 normalize_grads: Flag = False, data_format: str = "channels_first", correct_bias: Flag = True,
                 warmup_steps: Count = 1, r: Scalar = 0.0, weight_lr_power: Scalar = 2.0,
                 gradient_clip_val: Scalar = 0.1, precond_scheduler: tuple[Scalar, Scalar] = (1 / 3, 9),
                 betas: tuple[Scalar | None, None] = (None, None), compile: bool = False, *,
                 refresh_factors: str = "all") -> None:
        _no_frequency(precondition_frequency)
        group_betas = palm_betas(beta, betas)
        self._build(params, precond_schedule(), compile=compile, refresh_factors=refresh_factors,
                    sf=True, lr=lr, betas=group_betas, eps=eps,
                    weight_decay=weight_decay, max_precond_dim=max_precond_dim, merge_dims=merge_dims,
                    precondition_1d=precondition_1d, normalize_grads=normalize_grads, data_format=data_format,
                    correct_bias=correct_bias, warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                    gradient_clip_val=gradient_clip_val, precond_scheduler=precond_scheduler,
                    beta2_scale=beta2_scale)


PrecondScheduleSFPaLMSOAP = PrecondScheduleSFPaLMForeachSOAP


# --------------------------------------------------------------------------- the SOAP reference


def reference_chain(betas: tuple[Scalar, Scalar] = (0.95, 0.95)) -> Chain:
    """The SOAP reference's step: SOAP with its conventions (factors from zero, additive eps, Adam's
    step-size bias correction, merging from the front) -> -lr -> decay of the updated weights ->
    apply. Its first step per parameter only initialises the factors (no update, no decay)."""
    return named_chain(
        ("soap", soap_precondition(every(), betas=betas, init="ema", eps_mode="add",
                                   bias_correction="step_size", merge="leading")),
        ("lr", scale_by_learning_rate()),
        ("decay", decay_after_update()),
        ("apply", stochastic_round_apply()),
    )


class SOAP(ChainOptimizer):
    """SOAP as its authors' reference implements it (Vyas et al. 2024, "SOAP: Improving and
    Stabilizing Shampoo using Adam", arXiv 2409.11321; github.com/nikhilvyas/SOAP ``soap.py``):
    same arguments and defaults, plus keyword-only ``compile``. Per parameter and step t (the
    first step only builds ``GG_i = (1 - β_s) G_(i) G_(i)^T`` and ``Q_i = eigh(GG_i)``):

        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) rot(g)²       (rot: x ×_i Q_i^T)
        u = rot⁻¹(rot(m) / (sqrt(v) + eps))    (/ its RMS with normalize_grads)
        p = (p - lr sqrt(1 - b2^t) / (1 - b1^t) u) (1 - lr weight_decay)   (no factor without correct_bias)
        GG_i = lerp(GG_i, G_(i) G_(i)^T, 1 - β_s);  every precondition_frequency steps: Q_i by
        one power iteration + QR, v re-ordered by the estimated eigenvalues

    ``shampoo_beta`` < 0 means β_s = b2. ``merge_dims`` merges dimensions from the front while the
    product stays <= ``max_precond_dim``; dimensions above it get no factor. ``data_format``
    ``'channels_last'`` reads merged 4-D weights as ``[out, kh, kw, in]``.

    The reference fixes ``shampoo_beta`` and ``precondition_frequency`` per parameter at its first
    step; here they are read from the param group at every step (the same unless a group is edited).

    Args:
        params: parameters or param-group dicts, as for any torch optimizer (real floating-point
            tensors; complex ones are refused).
        lr: learning rate: a number >= 0, a schedule ``f(t)``, or a one-element tensor changed in
            place (schedulers do); ``u = -lr_t u``. The default of the ``lr`` hyperparameter.
        betas: ``(b1, b2)``, the raw EMA decays of m and v, each in [0, 1) (with ``correct_bias``
            Adam's step size ``sqrt(1 - b2^t) / (1 - b1^t)`` corrects them); an element may be a
            schedule. The default of the ``betas`` hyperparameter.
        shampoo_beta: β_s, the EMA decay of the factors ``GG_i``: a number in [0, 1), or a negative
            number (the reference's -1) or None for β_s = b2. The default of the ``shampoo_beta``
            hyperparameter.
        eps: added to the denominator, ``sqrt(v) + eps``, a number > 0. The default of the ``eps``
            hyperparameter.
        weight_decay: decay of the updated weights, ``p = (p - lr u)(1 - lr wd)``, a number >= 0
            (0: none). The default of the ``weight_decay`` hyperparameter.
        precondition_frequency: refresh the eigenbases (one power iteration + QR) every this many
            steps, an integer >= 1. The default of the ``precondition_frequency`` hyperparameter.
        max_precond_dim: dimensions larger than this get no factor (identity basis); an integer
            >= 1, fixed (not a schedule). The default of the ``max_precond_dim`` hyperparameter.
        merge_dims: merge dimensions from the front, dimension 0 included, while the product stays
            <= max_precond_dim (``[3, 4] -> [12]``); True or False, fixed. The default of the
            ``merge_dims`` hyperparameter.
        precondition_1d: precondition vectors too (a ``d x d`` factor) if ``d <= max_precond_dim``;
            True or False, fixed. The default of the ``precondition_1d`` hyperparameter.
        normalize_grads: divide each update by its RMS, as the reference does; True or False. The
            default of the ``normalize_grads`` hyperparameter.
        data_format: ``"channels_first"`` or ``"channels_last"`` (merged 4-D weights read as
            ``[out, kh, kw, in]``); fixed. The default of the ``data_format`` hyperparameter.
        correct_bias: apply Adam's step-size factor ``sqrt(1 - b2^t) / (1 - b1^t)`` (False: none,
            the raw moments); True or False. The default of the ``correct_bias`` hyperparameter.
        compile: keyword-only; run the elementwise part of the step as one ``torch.compile``d graph
            per 16 tensors (True or False; same numbers up to fp32 rounding; the matrix work is
            unchanged).

    Examples:
        Step 1 only builds the factors, ``(1 - β_s) g1 g1ᵀ`` and ``(1 - β_s) g1ᵀ g1``, and their
        eigenbases ``Q_L``, ``Q_R``. At step 2 the step size cancels the raw betas
        (``m = (1 - b1) g2``, ``v = (1 - b2) rot(g2)²``), so ``u = Q_L sign(Q_Lᵀ g2 Q_R) Q_Rᵀ``,
        and ``p = (0 - lr u)(1 - lr wd)``:

        >>> import torch, heavyball_chain as hc
        >>> p = torch.nn.Parameter(torch.zeros(2, 2))
        >>> opt = hc.SOAP([p], lr=0.1, weight_decay=0.01)
        >>> g1, g2 = torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([[1.0, -2.0], [0.5, 1.0]])
        >>> for g in (g1, g2):
        ...     p.grad = g
        ...     opt.step()
        >>> QL, QR = torch.linalg.eigh(g1 @ g1.T).eigenvectors, torch.linalg.eigh(g1.T @ g1).eigenvectors
        >>> torch.allclose(p, -0.1 * (1 - 0.1 * 0.01) * QL @ torch.sign(QL.T @ g2 @ QR) @ QR.T, atol=1e-6)
        True
    """

    def __init__(self, params: Iterable[Any], lr: LR = 3e-3, betas: tuple[Scalar, Scalar] = (0.95, 0.95),
                 shampoo_beta: Scalar | None = -1, eps: Scalar = 1e-8, weight_decay: Scalar = 0.01,
                 precondition_frequency: Count = 10, max_precond_dim: int = 10000, merge_dims: bool = False,
                 precondition_1d: bool = False, normalize_grads: Flag = False, data_format: str = "channels_first",
                 correct_bias: Flag = True, *, compile: bool = False) -> None:
        betas = tuple(betas) if isinstance(betas, list) else betas
        super().__init__(params, reference_chain(betas), compile=compile, lr=lr, betas=betas,
                         shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
                         precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim,
                         merge_dims=merge_dims, precondition_1d=precondition_1d, normalize_grads=normalize_grads,
                         data_format=data_format, correct_bias=correct_bias)

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

from ..core import Schedule, as_tuple, named_chain
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


def soap_chain(betas, refresh: Schedule, schedule_free_: bool = False, refresh_factors: str = "all"):
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


def _no_frequency(precondition_frequency):
    if precondition_frequency != 2:
        raise ValueError(
            "precondition_frequency: has no effect with the preconditioner schedule (precond_scheduler); "
            "use the preset without PrecondSchedule for a fixed interval"
        )


class _SOAP(ChainOptimizer):
    def _build(self, params, refresh, sf=False, refresh_factors="all", **hp):
        for name in ("betas", "precond_scheduler"):  # lists become tuples; other types are left to the checks
            if name in hp:
                hp[name] = as_tuple(hp[name])
        super().__init__(params, soap_chain(hp["betas"], refresh, sf, refresh_factors), **hp)


class ForeachSOAP(_SOAP):
    """SOAP (Vyas et al. 2024, arXiv 2409.11321) refreshing the eigenbasis every
    ``precondition_frequency`` steps. ``shampoo_beta=None``: the factors follow the debiased beta2
    (what HeavyBall 0.8.1 does with any value); a number takes effect."""

    def __init__(self, params, lr=3e-3, betas=(0.9, 0.95), shampoo_beta=None, eps=1e-8, weight_decay=0.01,
                 precondition_frequency=2, max_precond_dim=2048, merge_dims=True, precondition_1d=False,
                 normalize_grads=False, data_format="channels_first", correct_bias=True, warmup_steps=1,
                 compile=False, *, refresh_factors="all"):
        self._build(params, every(), compile=compile, refresh_factors=refresh_factors,
                    lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps,
                    weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                    max_precond_dim=max_precond_dim, merge_dims=merge_dims, precondition_1d=precondition_1d,
                    normalize_grads=normalize_grads, data_format=data_format, correct_bias=correct_bias,
                    warmup_steps=warmup_steps)


class PaLMForeachSOAP(_SOAP):
    """SOAP with PaLM's ``beta2_t = 1 - t^-beta2_scale``, refreshing every ``precondition_frequency``."""

    def __init__(self, params, lr=3e-3, beta=0.9, betas=(None, None), shampoo_beta=None, eps=1e-8,
                 weight_decay=0.01, precondition_frequency=2, max_precond_dim=2048, merge_dims=True,
                 precondition_1d=False, normalize_grads=False, data_format="channels_first", correct_bias=True,
                 warmup_steps=1, beta2_scale=0.8, compile=False, *, refresh_factors="all"):
        betas = palm_betas(beta, betas)
        self._build(params, every(), compile=compile, refresh_factors=refresh_factors,
                    lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps,
                    weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                    max_precond_dim=max_precond_dim, merge_dims=merge_dims, precondition_1d=precondition_1d,
                    normalize_grads=normalize_grads, data_format=data_format, correct_bias=correct_bias,
                    warmup_steps=warmup_steps, beta2_scale=beta2_scale)


PalmForEachSoap = PaLMForeachSOAP


class PrecondScheduleForeachSOAP(_SOAP):
    """SOAP refreshing with probability ``1 / (1 + log10(t^offset)^scale)`` (``precond_scheduler``)."""

    def __init__(self, params, lr=3e-3, betas=(0.9, 0.95), shampoo_beta=None, eps=1e-8, weight_decay=0.01,
                 precondition_frequency=2, max_precond_dim=2048, merge_dims=True, precondition_1d=False,
                 normalize_grads=False, data_format="channels_first", correct_bias=True, warmup_steps=1,
                 precond_scheduler=(1 / 3, 9), compile=False, *, refresh_factors="all"):
        _no_frequency(precondition_frequency)
        self._build(params, precond_schedule(), compile=compile, refresh_factors=refresh_factors,
                    lr=lr, betas=betas, shampoo_beta=shampoo_beta,
                    eps=eps, weight_decay=weight_decay, max_precond_dim=max_precond_dim, merge_dims=merge_dims,
                    precondition_1d=precondition_1d, normalize_grads=normalize_grads, data_format=data_format,
                    correct_bias=correct_bias, warmup_steps=warmup_steps, precond_scheduler=precond_scheduler)


class PrecondSchedulePaLMForeachSOAP(_SOAP):
    """HeavyBall's recommended optimizer: SOAP with PaLM's beta2 and the preconditioner schedule."""

    def __init__(self, params, lr=3e-3, beta=0.9, shampoo_beta=None, eps=1e-8, weight_decay=0.01,
                 precondition_frequency=2, max_precond_dim=2048, merge_dims=True, precondition_1d=False,
                 normalize_grads=False, data_format="channels_first", correct_bias=True, warmup_steps=1,
                 precond_scheduler=(1 / 3, 9), betas=(None, None), beta2_scale=0.8,
                 compile=False, *, refresh_factors="all"):
        _no_frequency(precondition_frequency)
        betas = palm_betas(beta, betas)
        self._build(params, precond_schedule(), compile=compile, refresh_factors=refresh_factors,
                    lr=lr, betas=betas, shampoo_beta=shampoo_beta,
                    eps=eps, weight_decay=weight_decay, max_precond_dim=max_precond_dim, merge_dims=merge_dims,
                    precondition_1d=precondition_1d, normalize_grads=normalize_grads, data_format=data_format,
                    correct_bias=correct_bias, warmup_steps=warmup_steps, precond_scheduler=precond_scheduler,
                    beta2_scale=beta2_scale)


class SFPaLMForeachSOAP(_SOAP):
    """Schedule-free SOAP (no first moment; adaptive gradient clipping first), PaLM beta2,
    refreshing every ``precondition_frequency``. Call ``eval()``/``train()`` as for ForeachSFAdamW."""

    def __init__(self, params, lr=3e-3, beta=0.9, beta2_scale=0.8, eps=1e-8, weight_decay=0.01,
                 precondition_frequency=2, max_precond_dim=2048, merge_dims=True, precondition_1d=False,
                 normalize_grads=False, data_format="channels_first", correct_bias=True, warmup_steps=1, r=0.0,
                 weight_lr_power=2.0, gradient_clip_val=0.1, betas=(None, None),
                 compile=False, *, refresh_factors="all"):
        betas = palm_betas(beta, betas)
        self._build(params, every(), compile=compile, refresh_factors=refresh_factors,
                    sf=True, lr=lr, betas=betas, eps=eps,
                    weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                    max_precond_dim=max_precond_dim, merge_dims=merge_dims, precondition_1d=precondition_1d,
                    normalize_grads=normalize_grads, data_format=data_format, correct_bias=correct_bias,
                    warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                    gradient_clip_val=gradient_clip_val, beta2_scale=beta2_scale)


class PrecondScheduleSFPaLMForeachSOAP(_SOAP):
    """Schedule-free SOAP with PaLM's beta2 and the preconditioner schedule
    (exported by HeavyBall 0.8.1 as ``PrecondScheduleSFPaLMSOAP``; both names work)."""

    def __init__(self, params, lr=3e-3, beta=0.9, beta2_scale=0.8, eps=1e-8, weight_decay=0.01,
                 precondition_frequency=2, max_precond_dim=2048, merge_dims=True, precondition_1d=False,
                 normalize_grads=False, data_format="channels_first", correct_bias=True, warmup_steps=1, r=0.0,
                 weight_lr_power=2.0, gradient_clip_val=0.1, precond_scheduler=(1 / 3, 9), betas=(None, None),
                 compile=False, *, refresh_factors="all"):
        _no_frequency(precondition_frequency)
        betas = palm_betas(beta, betas)
        self._build(params, precond_schedule(), compile=compile, refresh_factors=refresh_factors,
                    sf=True, lr=lr, betas=betas, eps=eps,
                    weight_decay=weight_decay, max_precond_dim=max_precond_dim, merge_dims=merge_dims,
                    precondition_1d=precondition_1d, normalize_grads=normalize_grads, data_format=data_format,
                    correct_bias=correct_bias, warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                    gradient_clip_val=gradient_clip_val, precond_scheduler=precond_scheduler,
                    beta2_scale=beta2_scale)


PrecondScheduleSFPaLMSOAP = PrecondScheduleSFPaLMForeachSOAP


# --------------------------------------------------------------------------- the SOAP reference


def reference_chain(betas=(0.95, 0.95)):
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
    """

    def __init__(self, params, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1, eps=1e-8, weight_decay=0.01,
                 precondition_frequency=10, max_precond_dim=10000, merge_dims=False, precondition_1d=False,
                 normalize_grads=False, data_format="channels_first", correct_bias=True, *, compile=False):
        betas = tuple(betas) if isinstance(betas, list) else betas
        super().__init__(params, reference_chain(betas), compile=compile, lr=lr, betas=betas,
                         shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
                         precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim,
                         merge_dims=merge_dims, precondition_1d=precondition_1d, normalize_grads=normalize_grads,
                         data_format=data_format, correct_bias=correct_bias)

"""Schedules: hyperparameter values that are functions of the step ``t`` (from 1)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core import Hyper, Schedule, non_negative
from .foreach import at_least

__all__ = ["palm_beta2", "palm_betas", "step_power"]


@dataclass(frozen=True)
class palm_beta2(Schedule):  # noqa: N801 - optax-style name
    """PaLM's second-moment decay (Chowdhery et al. 2022, arXiv 2204.02311, sec. 5):

        beta2_t = 1 - t^(-scale)

    It grows towards 1, so v averages over about ``t^scale`` recent steps. With ``scale=None``
    the exponent is read from the group's ``beta2_scale`` (default 0.8), as the PaLM presets do.
    Use it as the second beta: ``scale_by_laprop(betas=(0.9, palm_beta2()))``.
    """

    scale: float | None = None

    @property
    def hyperparams(self):  # type: ignore[override]
        return {} if self.scale is not None else {"beta2_scale": Hyper(0.8, non_negative)}

    def at(self, step, group):
        scale = self.scale if self.scale is not None else group["beta2_scale"]
        return 1 - at_least(step, 1) ** (-scale)



def palm_betas(beta, betas) -> tuple:
    """The ``betas`` of HeavyBall's PaLM presets: ``(beta, palm_beta2())``; ``betas[0]``, if given,
    overrides ``beta`` (as in HeavyBall 0.8.1) and ``betas[1]`` must be ``None`` (beta2 is the
    schedule; set ``beta2_scale``)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas: expected a pair (beta1 or None, None), got {betas!r}")
    if betas[1] is not None:
        raise ValueError("betas: beta2 follows the PaLM schedule (set beta2_scale); pass betas=(beta1, None)")
    return (beta if betas[0] is None else betas[0], palm_beta2())


@dataclass(frozen=True)
class step_power(Schedule):  # noqa: N801
    """``value_t = scale * t^exponent`` (``t`` from 1). ``step_power(0.25)`` is ADOPT's clipping
    bound ``t^(1/4)`` (Taniguchi et al. 2024, arXiv 2411.02853, Algorithm 2), which grows slowly
    enough to keep the convergence guarantee."""

    exponent: float
    scale: float = 1.0

    def at(self, step, group):
        return self.scale * at_least(step, 1) ** self.exponent

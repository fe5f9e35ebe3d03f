"""Schedules: hyperparameter values that are functions of the step ``t`` (from 1)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core import Hyper, Schedule, non_negative

__all__ = ["palm_beta2"]


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
        return 1 - max(step, 1) ** (-scale)


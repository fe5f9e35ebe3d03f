"""Schedules: hyperparameter values that are functions of the step ``t`` (from 1)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from ..core import Elements, Hyper, Schedule, non_negative, positive, positive_int
from .foreach import at_least

__all__ = ["palm_beta2", "palm_betas", "step_power", "every", "precond_schedule"]


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


# --------------------------------------------------------------------------- SOAP's refresh schedules


@dataclass(frozen=True)
class every(Schedule):  # noqa: N801 - optax-style name
    """Refresh the eigenbasis when ``t % n == 0``; ``n=None`` reads ``precondition_frequency``
    (``soap_precondition`` passes a group whose schedules are evaluated at t)."""

    n: int | None = None

    def __post_init__(self):
        if self.n is not None and positive_int(self.n) is not None:
            raise ValueError(f"every: n must be an integer >= 1 or None (read precondition_frequency), got {self.n!r}")

    @property
    def hyperparams(self):  # type: ignore[override]
        if self.n is not None:
            return {}
        return {"precondition_frequency": Hyper(2, positive_int)}

    def at(self, step, group):
        n = self.n if self.n is not None else group["precondition_frequency"]
        return step > 0 and step % n == 0


@dataclass(frozen=True, eq=True)
class precond_schedule(Schedule):  # noqa: N801
    """Refresh often early, rarely late (HeavyBall's preconditioner schedule, after PSGD's;
    Li et al., arXiv 1512.04202): at SOAP step t refresh with probability

        p(t) = 1 / (1 + log10(max(t, 1)^offset)^scale)

    The draw for step t is the t-th ``random()`` of ``random.Random(seed)``, so every param group
    and bucket of one step sees one draw (HeavyBall 0.8.1 draws once per group per step from one
    generator) and a resumed run continues the same sequence: its state is the step count, which
    is in the state dict. ``offset, scale`` come from ``precond_scheduler`` (default (1/3, 9)).
    """

    seed: int = 0x120983109
    _cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    hyperparams = {"precond_scheduler": Hyper((1 / 3, 9), Elements("a pair (offset, scale) of finite numbers > 0",
                                                                     positive, positive))}

    @staticmethod
    def probability(step: int, offset: float = 1 / 3, scale: float = 9) -> float:
        return 1 / (1 + math.log10(max(step, 1) ** offset) ** scale)

    def draw(self, step: int) -> float:
        """The ``step``-th value (from 1) of ``random.Random(seed)``."""
        rng, pos, last = self._cache.get("rng"), self._cache.get("pos", 0), self._cache.get("last")
        if step == pos and last is not None:
            return last
        if rng is None or step < pos:
            rng, pos = random.Random(self.seed), 0
        while pos < step:
            last = rng.random()
            pos += 1
        self._cache.update(rng=rng, pos=pos, last=last)
        assert last is not None  # step >= 1 draws at least once
        return last

    def at(self, step, group):
        if step < 1:
            return False
        offset, scale = group["precond_scheduler"]
        return self.draw(step) < self.probability(step, offset, scale)

    def __getstate__(self):  # the cache is derived; do not pickle a Random
        return {"seed": self.seed}

    def __setstate__(self, state):
        object.__setattr__(self, "seed", state["seed"])
        object.__setattr__(self, "_cache", {})

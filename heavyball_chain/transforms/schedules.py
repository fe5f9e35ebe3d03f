"""Schedules: hyperparameter values that are functions of the step ``t`` (from 1)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core import Elements, Hyper, Scalar, Schedule, non_negative, positive, positive_int
from .foreach import at_least

__all__ = ["palm_beta2", "palm_betas", "step_power", "every", "precond_schedule"]


@dataclass(frozen=True)
class palm_beta2(Schedule):  # noqa: N801 - optax-style name
    """PaLM's second-moment decay (Chowdhery et al. 2022, arXiv 2204.02311, sec. 5):

        beta2_t = 1 - t^(-scale)

    It grows towards 1, so v averages over about ``t^scale`` recent steps. With ``scale=None``
    the exponent is read from the group's ``beta2_scale`` (default 0.8), as the PaLM presets do.
    Use it as the second beta: ``scale_by_laprop(betas=(0.9, palm_beta2()))``.

    Args:
        scale: the exponent, a fixed finite number >= 0 (> 0 for beta2 to grow towards 1);
            or None (the default): read the group's ``beta2_scale`` hyperparameter (a fixed
            number >= 0, default 0.8, not a schedule), which the schedule then declares.

    Examples:
        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> T.palm_beta2(0.8)(1), T.palm_beta2(0.8)(32)           # 1 - 32^-0.8 = 1 - 1/16
        (0.0, 0.9375)
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.scale_by_adam(betas=(0.9, T.palm_beta2())), T.scale_by_learning_rate(), T.apply_updates())
        >>> hc.ChainOptimizer([p], tx).param_groups[0]["beta2_scale"]   # declared by palm_beta2()
        0.8
    """

    scale: float | None = None

    def __post_init__(self) -> None:
        if self.scale is not None and non_negative(self.scale) is not None:
            raise ValueError(f"palm_beta2: scale must be {non_negative(self.scale)} or None (read beta2_scale), "
                             f"got {self.scale!r}")

    @property
    def hyperparams(self) -> dict[str, Hyper]:  # type: ignore[override]
        # fixed: read as a number by this schedule (a schedule of it would never be evaluated)
        return {} if self.scale is not None else {"beta2_scale": Hyper(0.8, non_negative, fixed=True)}

    def at(self, step: int | torch.Tensor, group: dict[str, Any]) -> Any:
        scale = self.scale if self.scale is not None else group["beta2_scale"]
        return 1 - at_least(step, 1) ** (-scale)



def palm_betas(beta: Scalar, betas: Any) -> tuple[Scalar, palm_beta2]:
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
    enough to keep the convergence guarantee.

    Args:
        exponent: the power of ``t`` (any finite number; negative: a decay such as ``t^(-1/2)``).
        scale: the factor in front (default 1).

    Examples:
        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> [T.step_power(0.25)(t) for t in (1, 16, 81)]             # ADOPT's clipping bound t^(1/4)
        [1.0, 2.0, 3.0]
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> tx = hc.chain(T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=T.step_power(-1.0))   # lr_t = 1 / t
        >>> for _ in range(2):
        ...     p.grad = torch.ones(1); opt.step()
        >>> p.data                                                    # -(1 + 1/2)
        tensor([-1.5000])
    """

    exponent: float
    scale: float = 1.0

    def at(self, step: int | torch.Tensor, group: dict[str, Any]) -> Any:
        return self.scale * at_least(step, 1) ** self.exponent


# --------------------------------------------------------------------------- SOAP's refresh schedules


@dataclass(frozen=True)
class every(Schedule):  # noqa: N801 - optax-style name
    """Refresh the eigenbasis when ``t % n == 0``; ``n=None`` reads ``precondition_frequency``
    (``soap_precondition`` passes a group whose schedules are evaluated at t).

    Args:
        n: the period, an integer >= 1, fixed; or None (the default): read the group's
            ``precondition_frequency`` hyperparameter (an integer >= 1, default 2), which the
            schedule then declares.

    Examples:
        >>> from heavyball_chain import transforms as T
        >>> [t for t in range(1, 10) if T.every(3)(t)]
        [3, 6, 9]
        >>> [T.every()(t) for t in (1, 2, 3, 4)]          # precondition_frequency's default, 2
        [False, True, False, True]
        >>> T.soap_precondition(T.every()).hyperparams["precondition_frequency"].default
        2
    """

    n: int | None = None

    def __post_init__(self) -> None:
        if self.n is not None and positive_int(self.n) is not None:
            raise ValueError(f"every: n must be an integer >= 1 or None (read precondition_frequency), got {self.n!r}")

    @property
    def hyperparams(self) -> dict[str, Hyper]:  # type: ignore[override]
        if self.n is not None:
            return {}
        return {"precondition_frequency": Hyper(2, positive_int)}

    def at(self, step: int, group: dict[str, Any]) -> bool:
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
    is in the state dict. ``offset, scale`` come from ``precond_scheduler`` (default (1/3, 9)),
    the hyperparameter this schedule declares.

    Args:
        seed: the seed of the ``random.Random`` whose draws decide the refreshes (default
            HeavyBall 0.8.1's).

    Examples:
        ``p(1) = 1``, ``p(1000) = 1 / 2`` and ``p(10^6) = 1 / (1 + 2^9)``:

        >>> from heavyball_chain import transforms as T
        >>> [round(T.precond_schedule.probability(t), 3) for t in (1, 10, 1000, 10**6)]
        [1.0, 1.0, 0.5, 0.002]
        >>> s = T.precond_schedule()
        >>> s(1), [s(t) for t in range(1, 50)] == [T.precond_schedule()(t) for t in range(1, 50)]
        (True, True)
    """

    seed: int = 0x120983109
    _cache: dict = field(default_factory=dict, init=False, compare=False, hash=False, repr=False)

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

    def at(self, step: int, group: dict[str, Any]) -> bool:
        if step < 1:
            return False
        offset, scale = group["precond_scheduler"]
        return self.draw(step) < self.probability(step, offset, scale)

    def __getstate__(self) -> dict[str, int]:  # the cache is derived; do not pickle a Random
        return {"seed": self.seed}

    def __setstate__(self, state: dict[str, int]) -> None:
        object.__setattr__(self, "seed", state["seed"])
        object.__setattr__(self, "_cache", {})

"""Transforms that write the parameters: ``p = p + u``, and the fp32 -> parameter write-back they share."""

from __future__ import annotations

import torch

from ..core import Bucket, Slot, Transform
from typing import Any, Sequence

__all__ = ["apply_updates", "stochastic_round_apply", "stochastic_round_", "StochasticWriter", "seed_for"]

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio) to spread seeds
_MASK = (1 << 63) - 1


def stochastic_round_(target: torch.Tensor, source: torch.Tensor, generator: torch.Generator) -> None:
    """Round fp32 ``source`` into bf16 ``target`` stochastically (Gupta et al. 2015, arXiv 1502.02551).

    bf16 keeps the top 16 bits of an fp32 number. Adding a uniform integer in [0, 2^16) to the
    fp32 bit pattern and clearing the low 16 bits rounds up with probability equal to the
    discarded fraction, so the rounding is unbiased: E[round(x)] = x.
    """
    noise = torch.randint(0, 1 << 16, source.shape, dtype=torch.int32, device=source.device,
                          generator=generator)
    noise.add_(source.view(torch.int32))
    noise.bitwise_and_(-65536)  # 0xFFFF0000
    target.copy_(noise.view(torch.float32))


def seed_for(seed: int, position: int) -> int:
    """A 63-bit seed for the parameter at ``position`` in the optimizer (over all param groups):
    distinct per parameter, the same after a resume or an ``add_param_group``."""
    return (seed * _MIX + position + 1) & _MASK


class StochasticWriter:
    """Writes compute-dtype values into a bucket's parameters: fp32/fp64 parameters are updated in
    place by the caller (``bucket.params_compute()`` returns them), bf16 ones by stochastic
    rounding, others (fp16) by round-to-nearest.

    The random bits come from a generator seeded by the ``seed`` of the bucket's first parameter
    (kept in the state, derived from ``seed`` and the parameter's position in the optimizer), the
    step and a ``stream`` number, so a resumed run draws the same bits, a parameter added later
    never shares a seed, and two writes of one step (a schedule-free step and a following
    ``eval()``) draw different ones.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed

    @staticmethod
    def slots(bucket: Bucket) -> dict[str, Slot]:
        return {"seed": Slot(int, init=None)} if bucket.params[0].dtype == torch.bfloat16 else {}

    def init(self, bucket: Bucket) -> None:
        if bucket.params[0].dtype == torch.bfloat16:
            key = bucket.key("seed")
            assert bucket.positions is not None  # an optimizer's bucket
            for position, s in zip(bucket.positions, bucket.states):
                s.setdefault(key, seed_for(self.seed, position))

    @staticmethod
    def check_step(bucket: Bucket) -> None:
        if bucket.capturable and bucket.params[0].dtype == torch.bfloat16:
            raise ValueError("capturable=True: bf16 parameters are written by stochastic rounding, whose random bits "
                             "are seeded on the host from the step (a replayed graph would repeat them); keep fp32 "
                             "parameters, or build the optimizer with capturable=False")

    def write(self, bucket: Bucket, values: list[torch.Tensor], stream: int = 0) -> None:
        dtype = bucket.params[0].dtype
        if dtype == bucket.dtype:
            return  # ``values`` are the parameters themselves, already updated
        if dtype != torch.bfloat16:
            for p, v in zip(bucket.params, values):
                p.copy_(v)
            return
        gen = torch.Generator(device=bucket.params[0].device)
        seed = bucket.states[0][bucket.key("seed")]
        gen.manual_seed((seed * _MIX + 4 * bucket.step + stream) & _MASK)
        for p, v in zip(bucket.params, values):
            stochastic_round_(p, v, gen)


def _fuse_in_place_write(bucket: Bucket) -> tuple | None:
    """The compiled path writes fp32/fp64 parameters in place; other dtypes are rounded eagerly."""
    return () if bucket.params[0].dtype == bucket.dtype else None


class apply_updates(Transform):  # noqa: N801 - optax-style transform name
    """``p = p + u``, computed in the compute dtype; low-precision parameters get round-to-nearest."""

    name = "apply_updates"
    writes_params = True
    capturable = True

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        p32 = bucket.params_compute()
        torch._foreach_add_(p32, updates)
        if p32[0] is not bucket.params[0]:
            for p, v in zip(bucket.params, p32):
                p.copy_(v)
        return updates

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return _fuse_in_place_write(bucket)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        p.add_(u)
        return u


class stochastic_round_apply(Transform):  # noqa: N801
    """``p = p + u`` in fp32, written back to bf16 parameters by stochastic rounding.

    fp32 parameters get a plain in-place add. For bf16, round-to-nearest drops every update
    smaller than half a bf16 ulp (about 0.4% of the weight); stochastic rounding keeps them in
    expectation (see :class:`StochasticWriter` for the random bits). fp16 gets round-to-nearest.
    """

    name = "stochastic_round_apply"
    writes_params = True
    capturable = True

    def __init__(self, seed: int = 0):
        self.writer = StochasticWriter(seed)

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return self.writer.slots(bucket)

    def init(self, bucket: Bucket) -> None:
        self.writer.init(bucket)

    def check_step(self, bucket: Bucket) -> None:
        self.writer.check_step(bucket)

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        p32 = bucket.params_compute()
        torch._foreach_add_(p32, updates)
        self.writer.write(bucket, p32)
        return updates

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return _fuse_in_place_write(bucket)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        p.add_(u)
        return u

"""Transforms that write the parameters: ``p = p + u``."""

from __future__ import annotations

import torch

from ..core import Bucket, Transform

__all__ = ["apply_updates", "stochastic_round_apply", "stochastic_round_"]

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


def _add_fp32(bucket: Bucket, updates: list[torch.Tensor]) -> tuple[list, list]:
    """Split the bucket into fp32 parameters (updated in place) and the rest (returned as fp32 sums)."""
    if bucket.params[0].dtype == torch.float32:  # a bucket has one dtype
        torch._foreach_add_(bucket.params, updates)
        return [], []
    p32 = [p.float() for p in bucket.params]
    torch._foreach_add_(p32, updates)
    return bucket.params, p32


class apply_updates(Transform):  # noqa: N801 - optax-style transform name
    """``p = p + u``, computed in fp32; low-precision parameters get round-to-nearest."""

    name = "apply_updates"
    writes_params = True

    def update(self, updates, bucket):
        targets, sums = _add_fp32(bucket, updates)
        for p, s in zip(targets, sums):
            p.copy_(s)
        return updates


class stochastic_round_apply(Transform):  # noqa: N801
    """``p = p + u`` in fp32, written back to bf16 parameters by stochastic rounding.

    fp32 parameters get a plain in-place add. For bf16, round-to-nearest would drop every update
    smaller than half a bf16 ulp (about 0.4% of the weight); stochastic rounding keeps them in
    expectation. The random bits come from a generator seeded by the parameter's ``seed`` (kept
    in its state, set at init from ``seed`` and the parameter's order) and the step, so a resumed
    run draws the same bits. Other low-precision dtypes (fp16) get round-to-nearest.
    """

    name = "stochastic_round_apply"
    writes_params = True

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._count = 0

    def init(self, bucket: Bucket) -> None:
        if bucket.params[0].dtype != torch.bfloat16:
            return
        for s in bucket.states:
            key = bucket.key("seed")
            if key not in s:
                s[key] = (self.seed * _MIX + self._count) & _MASK
                self._count += 1

    def update(self, updates, bucket):
        targets, sums = _add_fp32(bucket, updates)
        if not targets:
            return updates
        if targets[0].dtype != torch.bfloat16:
            for p, s in zip(targets, sums):
                p.copy_(s)
            return updates
        gen = torch.Generator(device=targets[0].device)
        gen.manual_seed((bucket.states[0][bucket.key("seed")] * _MIX + bucket.step) & _MASK)
        for p, s in zip(targets, sums):
            stochastic_round_(p, s, gen)
        return updates

"""Transforms that write the parameters: ``p = p + u``, and the fp32 -> parameter write-back they share."""

from __future__ import annotations

import torch

from ..core import Bucket, Slot, Transform
from typing import Any, Sequence

__all__ = ["apply_updates", "stochastic_round_apply", "stochastic_round_", "StochasticWriter", "seed_for",
           "mix_seed"]

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio) to spread seeds
_MASK = (1 << 63) - 1


def stochastic_round_(target: torch.Tensor, source: torch.Tensor, generator: torch.Generator) -> None:
    """Round fp32 ``source`` into bf16 ``target`` stochastically (Gupta et al. 2015, arXiv 1502.02551).

    bf16 keeps the top 16 bits of an fp32 number. Adding a uniform integer in [0, 2^16) to the
    fp32 bit pattern and clearing the low 16 bits rounds up with probability equal to the
    discarded fraction, so the rounding is unbiased: E[round(x)] = x.

    Args:
        target: the bf16 tensor written, shaped like ``source``.
        source: the fp32 values to round (read as their int32 bit pattern).
        generator: the ``torch.Generator`` on ``source``'s device the random bits come from; the
            same generator state gives the same rounding.

    Examples:
        A quarter of a bf16 ulp above 1 rounds up a quarter of the time, so the mean survives;
        round-to-nearest (``.bfloat16()``) loses it:

        >>> import torch
        >>> from heavyball_chain import transforms as T
        >>> x = torch.full((10000,), 1 + 2**-9)
        >>> y = torch.empty(10000, dtype=torch.bfloat16)
        >>> T.stochastic_round_(y, x, torch.Generator().manual_seed(0))
        >>> y.unique().tolist(), x.bfloat16().unique().tolist()
        ([1.0, 1.0078125], [1.0])
        >>> abs(y.float().mean().item() - (1 + 2**-9)) < 1e-4
        True
    """
    noise = torch.randint(0, 1 << 16, source.shape, dtype=torch.int32, device=source.device,
                          generator=generator)
    noise.add_(source.view(torch.int32))
    noise.bitwise_and_(-65536)  # 0xFFFF0000
    target.copy_(noise.view(torch.float32))


def mix_seed(seed: int, offset: int) -> int:
    """``(seed * φ64 + offset) mod 2^63``: a 63-bit seed derived from ``seed`` and an offset (a
    position, a step), spread by an odd multiplier so that nearby seeds and offsets give distant
    generator states. The one place the seed arithmetic lives (``seed_for``, the writer's and
    ``add_noise``'s per-step generators)."""
    return (seed * _MIX + offset) & _MASK


def seed_for(seed: int, position: int) -> int:
    """A 63-bit seed for the parameter at ``position`` in the optimizer (over all param groups):
    distinct per parameter, the same after a resume or an ``add_param_group``."""
    return mix_seed(seed, position + 1)


class StochasticWriter:
    """Writes compute-dtype values into a bucket's parameters: fp32/fp64 parameters are updated in
    place by the caller (``bucket.params_compute()`` returns them), bf16 ones by stochastic
    rounding, others (fp16) by round-to-nearest.

    The random bits come from a generator seeded by the ``seed`` of the bucket's first parameter
    (kept in the state, derived from ``seed`` and the parameter's position in the optimizer), the
    step and a ``stream`` number, so a resumed run draws the same bits, a parameter added later
    never shares a seed, and two writes of one step (a schedule-free step and a following
    ``eval()``) draw different ones.

    A helper for transforms that write the parameters (``stochastic_round_apply``,
    ``schedule_free``, ``decayed_apply``): they declare ``writer.slots(bucket)`` among their
    slots, call ``writer.init(bucket)`` in ``init`` (and ``writer.check_step(bucket)`` in
    ``check_step`` if they are capturable) and, after updating ``bucket.params_compute()``,
    ``writer.write(bucket, values)``.

    Args:
        seed: an integer from which each bf16 parameter's seed is derived (with its position in
            the optimizer); the same seed, positions and steps draw the same bits. Default 0.

    Examples:
        Writing fp32 values a quarter of a bf16 ulp above 1 into a bf16 parameter keeps their
        mean, 1 + 2^-9:

        >>> import torch
        >>> from heavyball_chain import transforms as T
        >>> from heavyball_chain.core import Bucket
        >>> p = torch.ones(10000, dtype=torch.bfloat16)
        >>> bucket = Bucket(params=[p], grads=[p], states=[{}], group={}, step=1, positions=[0])
        >>> writer = T.StochasticWriter(seed=0)
        >>> writer.init(bucket)  # the parameter's seed, kept in its state
        >>> writer.write(bucket, [torch.full((10000,), 1 + 2**-9)])
        >>> p.unique().tolist(), abs(p.float().mean().item() - (1 + 2**-9)) < 1e-4
        ([1.0, 1.0078125], True)
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
        gen.manual_seed(mix_seed(seed, 4 * bucket.step + stream))
        for p, v in zip(bucket.params, values):
            stochastic_round_(p, v, gen)


def _fuse_in_place_write(bucket: Bucket) -> tuple | None:
    """The compiled path writes fp32/fp64 parameters in place; other dtypes are rounded eagerly."""
    return () if bucket.params[0].dtype == bucket.dtype else None


class apply_updates(Transform):  # noqa: N801 - optax-style transform name
    """``p = p + u``, computed in the compute dtype; low-precision parameters get round-to-nearest.

    The usual end of a chain (``stochastic_round_apply`` for bf16 parameters, where
    round-to-nearest drops updates below half an ulp). It takes no arguments and reads no
    hyperparameter; ``u`` already carries the sign and the learning rate.

    Examples:
        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> opt = hc.ChainOptimizer([p], hc.chain(T.scale(-0.5), T.apply_updates()))
        >>> p.grad = torch.tensor([1.0, -2.0])
        >>> opt.step()  # p + (-0.5) g
        >>> p.data
        tensor([0.5000, 3.0000])
    """

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
    Stochastic rounding for low-precision training: Gupta et al. 2015, "Deep Learning with
    Limited Numerical Precision", arXiv 1502.02551.

    Args:
        seed: an integer from which each bf16 parameter's rounding seed is derived (with its
            position in the optimizer, kept in the state as ``seed``); not a hyperparameter.
            Default 0.

    Examples:
        A bf16 weight of 1 and an update of a quarter ulp (2^-9): round-to-nearest would keep 1,
        stochastic rounding moves a quarter of the weights up one ulp (2^-7), so the mean moves
        by 2^-9:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.ones(10000, dtype=torch.bfloat16))
        >>> tx = hc.chain(T.scale_by_learning_rate(), T.stochastic_round_apply(seed=0))
        >>> opt = hc.ChainOptimizer([p], tx, lr=2**-9)
        >>> p.grad = -torch.ones_like(p)  # u = -lr g = 2^-9
        >>> opt.step()
        >>> p.unique().tolist(), abs(p.float().mean().item() - (1 + 2**-9)) < 1e-4
        ([1.0, 1.0078125], True)
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

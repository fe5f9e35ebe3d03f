"""An exponential moving average of the weights, swapped in for evaluation."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..core import Bucket, Hyper, Transform, unit_interval

__all__ = ["ema_params", "ema_weights"]


class ema_params(Transform):  # noqa: N801 - optax-style transform name
    """Keep ``e = decay * e + (1 - decay) * p`` of the parameters after each update (Polyak &
    Juditsky 1992 averaging, in its exponential form), in fp32.

    Put it after the transform that writes the parameters; updates pass through unchanged. The
    average starts at the initial weights. Evaluate with it::

        with hc.transforms.ema_weights(opt):
            evaluate(model)          # parameters hold e; restored exactly on exit

    Reads ``ema_decay``. State: ``ema`` (fp32, one buffer per parameter).
    """

    name = "ema_params"

    def __init__(self, decay: float = 0.999):
        self.hyperparams = {"ema_decay": Hyper(decay, unit_interval)}

    def init(self, bucket: Bucket) -> None:
        bucket.init_state("ema", lambda p: p.detach().float().clone())

    def update(self, updates, bucket):
        if bucket.key("backup") in bucket.states[0]:
            raise RuntimeError("ema_params: step() inside ema_weights(); leave the context first")
        torch._foreach_lerp_(bucket.state("ema"), bucket.params_fp32(), 1 - bucket.hp("ema_decay"))
        return updates

    def swap_in_ema(self, bucket: Bucket) -> None:
        key = bucket.key("backup")
        for p, s, e in zip(bucket.params, bucket.states, bucket.state("ema")):
            s[key] = p.clone()  # the exact training weights (an fp32 -> bf16 round trip would not be)
            p.copy_(e)

    def swap_out_ema(self, bucket: Bucket) -> None:
        key = bucket.key("backup")
        for p, s in zip(bucket.params, bucket.states):
            p.copy_(s.pop(key))

    def state_bytes(self, p, group):
        return 4 * p.numel()


@contextlib.contextmanager
def ema_weights(optimizer) -> Iterator[None]:
    """Parameters hold their EMA (from ``ema_params`` in the optimizer's chain) inside the block,
    and exactly their training values again after it."""
    optimizer.visit("swap_in_ema")
    try:
        yield
    finally:
        optimizer.visit("swap_out_ema")

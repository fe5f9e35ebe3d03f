"""An exponential moving average of the weights, swapped in for evaluation."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

from ..core import Bucket, Hyper, Slot, Transform, copy_state, unit_interval

__all__ = ["ema_params", "ema_weights"]


class ema_params(Transform):  # noqa: N801 - optax-style transform name
    """Keep ``e = decay * e + (1 - decay) * p`` of the parameters after each update (Polyak &
    Juditsky 1992 averaging, in its exponential form), in the compute dtype (fp32; fp64 for fp64
    parameters).

    Put it after the transform that writes the parameters; updates pass through unchanged. The
    average starts at the initial weights. Evaluate with it::

        with hc.transforms.ema_weights(opt):
            evaluate(model)          # parameters hold e; restored exactly on exit

    Reads ``ema_decay``. State: ``ema`` (one buffer per parameter).
    """

    name = "ema_params"

    def __init__(self, decay: float = 0.999):
        self.hyperparams = {"ema_decay": Hyper(decay, unit_interval)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"ema": Slot(init=copy_state)}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        torch._foreach_lerp_(bucket.state("ema"), bucket.params_compute(), 1 - bucket.hp("ema_decay"))
        return updates

    def swap_in_ema(self, bucket: Bucket, backups: dict) -> None:
        assert bucket.positions is not None  # an optimizer's bucket
        for position, p, e in zip(bucket.positions, bucket.params, bucket.state("ema")):
            backups[(bucket.prefix, position)] = p.clone()  # exact (an fp32 -> bf16 round trip would not be)
            p.copy_(e)

    def swap_out_ema(self, bucket: Bucket, backups: dict) -> None:
        assert bucket.positions is not None
        for position, p in zip(bucket.positions, bucket.params):
            p.copy_(backups.pop((bucket.prefix, position)))


@contextlib.contextmanager
def ema_weights(optimizer) -> Iterator[None]:
    """Parameters hold their EMA (from ``ema_params`` in the optimizer's chain) inside the block,
    and exactly their training values again after it.

    The training weights are kept by the block, not in the optimizer's state, so a
    ``state_dict()`` taken inside it saves no backup. ``step()`` inside the block is refused
    (a ``RuntimeError`` before anything changes). Nested blocks are one block: the parameters
    already hold the EMA, and the outermost block restores them.
    """
    if getattr(optimizer, "_ema_weights_active", False):
        yield
        return
    backups: dict = {}

    def refuse(opt, args, kwargs):
        raise RuntimeError("step() inside ema_weights(): the parameters hold their EMA; leave the block first")

    optimizer.visit("swap_in_ema", backups)
    handle = optimizer.register_step_pre_hook(refuse)
    optimizer._ema_weights_active = True
    try:
        yield
    finally:
        optimizer._ema_weights_active = False
        handle.remove()
        optimizer.visit("swap_out_ema", backups)

"""An exponential moving average of the weights, swapped in for evaluation."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from ..core import Bucket, Hyper, Scalar, Slot, Transform, copy_state, unit_interval

if TYPE_CHECKING:
    from ..optimizer import ChainOptimizer

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

    Args:
        decay: the EMA weight ``decay``, in [0, 1) (0: ``e`` is the last weights); may be a
            schedule ``f(t)``. The default of the ``ema_decay`` hyperparameter.

    Examples:
        With ``decay = 0.5`` and weights 1 then 2 after the updates, ``e = 0.5 (0.5 · 0 + 0.5 · 1)
        + 0.5 · 2 = 1.25``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> tx = hc.chain(T.scale_by_learning_rate(), T.apply_updates(), T.ema_params())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, ema_decay=0.5)
        >>> for _ in range(2):
        ...     p.grad = -torch.ones(1); opt.step()
        >>> with T.ema_weights(opt):
        ...     print(p.data)
        tensor([1.2500])
    """

    name = "ema_params"

    def __init__(self, decay: Scalar = 0.999) -> None:
        self.hyperparams = {"ema_decay": Hyper(decay, unit_interval)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"ema": Slot(init=copy_state)}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        torch._foreach_lerp_(bucket.state("ema"), bucket.params_compute(), 1 - bucket.hp("ema_decay"))
        return updates

    def swap_in_ema(self, bucket: Bucket, backups: dict[tuple[str, int], torch.Tensor]) -> None:
        assert bucket.positions is not None  # an optimizer's bucket
        for position, p, e in zip(bucket.positions, bucket.params, bucket.state("ema")):
            backups[(bucket.prefix, position)] = p.clone()  # exact (an fp32 -> bf16 round trip would not be)
            p.copy_(e)

    def swap_out_ema(self, bucket: Bucket, backups: dict[tuple[str, int], torch.Tensor]) -> None:
        assert bucket.positions is not None
        for position, p in zip(bucket.positions, bucket.params):
            p.copy_(backups.pop((bucket.prefix, position)))


@contextlib.contextmanager
def ema_weights(optimizer: ChainOptimizer) -> Iterator[None]:
    """Parameters hold their EMA (from ``ema_params`` in the optimizer's chain: the exponential
    form of Polyak & Juditsky 1992 averaging) inside the block, and exactly their training values
    again after it.

    The training weights are kept by the block, not in the optimizer's state, so a
    ``state_dict()`` taken inside it saves no backup. ``step()`` inside the block is refused
    (a ``RuntimeError`` before anything changes). Nested blocks are one block: the parameters
    already hold the EMA, and the outermost block restores them.

    Args:
        optimizer: a :class:`~heavyball_chain.ChainOptimizer` whose chain holds ``ema_params``
            (parameters without an EMA are left as they are).

    Examples:
        After one step to ``p = 1`` from ``e = p = 0``, with ``ema_decay=0.5``, ``e = 0.5``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> tx = hc.chain(T.scale_by_learning_rate(), T.apply_updates(), T.ema_params())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, ema_decay=0.5)
        >>> p.grad = -torch.ones(1); opt.step()
        >>> with T.ema_weights(opt):
        ...     print(p.data)
        tensor([0.5000])
        >>> p.data
        tensor([1.])
    """
    if getattr(optimizer, "_ema_weights_active", False):
        yield
        return
    backups: dict[tuple[str, int], torch.Tensor] = {}

    def refuse(opt: Any, args: Any, kwargs: Any) -> None:
        raise RuntimeError("step() inside ema_weights(): the parameters hold their EMA; leave the block first")

    optimizer.visit("swap_in_ema", backups)
    handle = optimizer.register_step_pre_hook(refuse)
    setattr(optimizer, "_ema_weights_active", True)  # not a declared attribute of ChainOptimizer
    try:
        yield
    finally:
        setattr(optimizer, "_ema_weights_active", False)
        handle.remove()
        optimizer.visit("swap_out_ema", backups)

"""torch.optim's implementation flags (``foreach``, ``fused``, ``capturable``, ``differentiable``,
``maximize``), accepted by the drop-in presets so that a constructor call written for
torch.optim runs unchanged.

``foreach`` and ``fused`` choose among torch's kernels, which compute the same numbers; every
chain here runs foreach kernels (``compile=True`` fuses them), so any value is accepted.
``maximize`` negates the gradient first, as torch does. ``capturable`` is validated here and
passed on by the preset to :class:`~heavyball_chain.optimizer.ChainOptimizer`, which refuses it
for chains that cannot be captured. ``differentiable`` (autograd through the step) is not
offered, so ``True`` is refused rather than ignored.
"""

from __future__ import annotations

from ..core import Transform
from ..transforms.wrappers import scale

__all__ = ["torch_flags"]


def _flag(name: str, value: object, allow_none: bool) -> bool | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False{' or None' if allow_none else ''}, got {value!r}")
    return value


def torch_flags(optimizer: str, *, foreach: bool | None = None, fused: bool | None = None, capturable: bool = False,
                differentiable: bool = False, maximize: bool = False) -> list[Transform]:
    """Validate torch.optim's flags for ``optimizer`` and return the transforms that go first in
    its chain: ``[scale(-1)]`` when ``maximize`` (``g = -g``), else ``[]``."""
    _flag("foreach", foreach, allow_none=True)
    _flag("fused", fused, allow_none=True)
    _flag("capturable", capturable, allow_none=False)
    if _flag("differentiable", differentiable, allow_none=False):
        raise ValueError(f"{optimizer}: differentiable=True (autograd through the step) is not supported")
    return [scale(-1.0)] if _flag("maximize", maximize, allow_none=False) else []

"""MARS: variance-reduced gradients for adaptive optimizers, in its AdamW instance.

Yuan et al. 2024, "MARS: Unleashing the Power of Variance Reduction for Training Large Models",
arXiv 2411.10438. MARS replaces the stochastic gradient by a STORM-style corrected one,

    c_t = g_t + gamma * beta1 / (1 - beta1) * (g_t - g_{t-1}),   c_t = c_t / ||c_t|| if ||c_t|| > 1

("approximate" MARS: ``g_{t-1}`` is the previous step's gradient, on the previous batch, rather
than the exact form's gradient of the previous parameters on this batch, which costs a second
backward pass), and feeds ``c_t`` to an adaptive method; MARS-AdamW runs AdamW on it. Here that is
``mars_correction`` followed by torch.optim's Adam
(``scale_by_adam(debias="divide", eps_mode="add")``, the official code's form).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..core import Fresh, Hyper, Scalar, Slot, Transform, betas_pair, non_negative
from ..core import Bucket

__all__ = ["mars_correction"]


class mars_correction(Transform):  # noqa: N801 - optax-style transform name
    """MARS's variance-reduced gradient (Yuan et al. 2024, arXiv 2411.10438, Alg. 1 with the
    approximation of its Sec. 3 / official code, ``is_approx=True``):

        c = g + gamma * beta1 / (1 - beta1) * (g - g_prev);   c = c / max(||c||, 1);   g_prev = g

    with the norm per tensor (of the whole tensor under FSDP2). ``g_prev`` starts at 0, so the
    first step is ``c = (1 + gamma beta1 / (1 - beta1)) g``, clipped. ``gamma = 0`` leaves only the
    clipping. Place it first (after ``scale(-1)`` for maximisation): ``g_prev`` is the update this
    transform received. The per-tensor norm is not elementwise, so this runs eagerly under
    ``compile=True`` (the Adam step after it is fused).

    Reads ``gamma`` and ``betas`` (only beta1, the momentum the correction is scaled for). State:
    ``last_grad`` (the previous step's input, in the compute dtype).

    Args:
        gamma: the weight of the correction (>= 0; 0 leaves only the clipping). The default of
            the ``gamma`` hyperparameter.
        betas: ``(beta1, beta2)``, each in [0, 1) (either may be a schedule ``f(t)``); only
            beta1 is read here, shared with the Adam step that follows. The default of the
            ``betas`` hyperparameter.

    Examples:
        With ``gamma = 1`` and ``beta1 = 0.5``, ``c = 2 g - g_prev``: step 1 gives ``2 g1``
        (norm < 1, unclipped); step 2 gives ``2 g2 - g1 = [3, 4]``, of norm 5, clipped to
        ``[0.6, 0.8]``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.mars_correction(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, gamma=1.0, betas=(0.5, 0.99))
        >>> p.grad = torch.tensor([0.1, -0.2]); opt.step(); p.data
        tensor([-0.2000,  0.4000])
        >>> p.grad = torch.tensor([1.55, 1.9]); opt.step(); p.data
        tensor([-0.8000, -0.4000])
    """

    name = "mars_correction"
    # MARS's presets route by shape (2-D: MARS), and a complex parameter's real view has one more
    # dimension than the parameter: refused rather than routed differently from the official code
    supports_complex = False

    def __init__(self, gamma: Scalar = 0.025, betas: Sequence[Scalar] = (0.95, 0.99)) -> None:
        self.hyperparams = {"gamma": Hyper(gamma, non_negative), "betas": Hyper(tuple(betas), betas_pair)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"last_grad": Slot()}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        b1 = bucket.hp("betas")[0]
        last = bucket.state("last_grad")
        c = torch._foreach_sub(updates, last)
        torch._foreach_mul_(c, bucket.hp("gamma") * (b1 / (1 - b1)))
        torch._foreach_add_(c, updates)
        norms = bucket.norms(c)
        torch._foreach_clamp_min_(norms, 1.0)
        torch._foreach_div_(c, norms)
        torch._foreach_copy_(last, updates)
        return Fresh(c)

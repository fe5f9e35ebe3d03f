"""NAdam, RAdam and Adamax: the Adam variants whose math is more than a convention of
:mod:`.moments` (a momentum schedule, a rectification switch, an infinity norm).

All three keep torch.optim's state (raw EMAs from 0, ``exp_avg``/``exp_avg_sq``/``exp_inf``),
its bias corrections and its placement of eps (added), in torch.optim's order of operations,
so the torch-style presets (:mod:`heavyball_chain.presets.torch_adam`) match torch.optim to
rounding. The learning rate is not applied here: the output is the step direction, and
``scale_by_learning_rate`` follows.
"""

from __future__ import annotations

import torch

from ..core import Fresh, Hyper, Scalar, Slot, Transform, betas_pair, non_negative
from .foreach import div_into_, ema_sq_, ema_sq_one_
from typing import Any, Sequence
from ..core import Bucket

__all__ = ["scale_by_nadam", "scale_by_radam", "scale_by_adamax", "nadam_mu"]


def nadam_mu(beta1: float, momentum_decay: float, step: int) -> float:
    """NAdam's momentum schedule ``mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))`` (Dozat 2016,
    following Sutskever et al. 2013's warming momentum; torch.optim's ``momentum_decay``)."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))


def _hyperparams(betas: Sequence[Scalar], eps: Scalar) -> dict[str, Hyper]:
    return {"betas": Hyper(tuple(betas), betas_pair), "eps": Hyper(eps, non_negative)}


class scale_by_nadam(Transform):  # noqa: N801 - optax-style transform name
    """NAdam (Dozat 2016, "Incorporating Nesterov Momentum into Adam", ICLR workshop), as
    torch.optim.NAdam computes it: Adam's EMAs with Nesterov's look-ahead on a warming momentum
    ``mu_t`` (:func:`nadam_mu`) whose running product ``P_t = mu_1 ... mu_t`` is kept per parameter:

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g²;   d = sqrt(v / (1 - b2^t)) + eps
        u = (1 - mu_t) / (1 - P_t) * g / d  +  mu_{t+1} / (1 - P_t mu_{t+1}) * m / d

    Reads ``betas``, ``eps`` (>= 0) and ``momentum_decay`` (>= 0). State: ``exp_avg``,
    ``exp_avg_sq`` and ``mu_product`` (a Python float, so reading it costs no device sync; torch
    keeps it as a float32 tensor).

    Args:
        betas: ``(b1, b2)``, the EMA weights of the first and second moments, each in [0, 1);
            either may be a schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        eps: added to ``sqrt(v / (1 - b2^t))`` (>= 0). The default of the ``eps`` hyperparameter.
        momentum_decay: ``d`` in ``mu_t = b1 (1 - 0.5 * 0.96^(t d))`` (>= 0): how fast the
            momentum warms up from ``b1 / 2`` towards ``b1`` (0 holds it at ``b1 / 2``). The default
            of the ``momentum_decay`` hyperparameter.

    Examples:
        Followed by ``-lr``, it takes torch.optim.NAdam's steps:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p, q = (torch.nn.Parameter(torch.tensor([1.0, -2.0])) for _ in range(2))
        >>> tx = hc.chain(T.scale_by_nadam(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt, ref = hc.ChainOptimizer([p], tx, lr=0.1), torch.optim.NAdam([q], lr=0.1)
        >>> for g in ([0.5, -3.0], [2.0, 1.0], [-1.0, 0.5]):
        ...     p.grad, q.grad = torch.tensor(g), torch.tensor(g); opt.step(); ref.step()
        >>> torch.allclose(p, q)
        True
    """

    name = "scale_by_nadam"

    def __init__(self, betas: Sequence[Scalar] = (0.9, 0.999), eps: Scalar = 1e-8,
                 momentum_decay: Scalar = 4e-3) -> None:
        self.hyperparams = {**_hyperparams(betas, eps), "momentum_decay": Hyper(momentum_decay, non_negative)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"exp_avg": Slot(), "exp_avg_sq": Slot(), "mu_product": Slot(float, init=lambda p: 1.0)}

    def _coefficients(self, bucket: Bucket, products: Sequence[Any]) -> tuple[list[Any], list[Any], list[Any]]:
        """Per parameter: the new product ``P_t``, ``(1 - mu_t) / (1 - P_t)`` and ``mu_{t+1} / (1 - P_t mu_{t+1})``."""
        b1 = bucket.hp("betas")[0]
        decay, t = bucket.hp("momentum_decay"), bucket.step
        mu, mu_next = nadam_mu(b1, decay, t), nadam_mu(b1, decay, t + 1)
        new = [p * mu for p in products]
        return new, [(1.0 - mu) / (1.0 - p) for p in new], [mu_next / (1.0 - p * mu_next) for p in new]

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        b1, b2 = bucket.hp("betas")
        products, c_g, c_m = self._coefficients(bucket, bucket.state("mu_product"))
        bucket.set_state("mu_product", products)
        m, v = bucket.state("exp_avg"), bucket.state("exp_avg_sq")
        torch._foreach_lerp_(m, updates, 1 - b1)
        ema_sq_(v, updates, b2)
        denom = torch._foreach_div(v, 1 - b2**bucket.step)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, bucket.hp("eps"))
        out = torch._foreach_mul(updates, c_g)
        torch._foreach_div_(out, denom)
        torch._foreach_addcdiv_(out, m, denom, c_m)
        return Fresh(out)

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        old = bucket.state("mu_product")
        if any(p != old[0] for p in old):  # parameters with different histories: eager, per-parameter scalars
            return None
        products, c_g, c_m = self._coefficients(bucket, old[:1])
        bucket.set_state("mu_product", products * len(old))
        b1, b2 = bucket.hp("betas")
        return 1 - b1, b2, 1 - b2, 1 - b2**bucket.step, bucket.hp("eps"), c_g[0], c_m[0]

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        m, v = state
        m.lerp_(u, s[0])
        ema_sq_one_(v, u, s[1], s[2])
        d = (v / s[3]).sqrt() + s[4]
        return (s[5] * u) / d + (s[6] * m) / d


def radam_rectification(beta2: float, step: int) -> float | None:
    """RAdam's variance rectification ``r_t`` (Liu et al. 2020, arXiv 1908.03265, Algorithm 2),
    or ``None`` while the variance of the adaptive lr is intractable (``rho_t <= 5``, torch's
    threshold):

        rho_inf = 2 / (1 - b2) - 1;   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))

    A function of the step and beta2 only, so the switch is a host-side ``if``, never a sync."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / (1 - beta2**step)
    if rho_t <= 5.0:
        return None
    return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5


class scale_by_radam(Transform):  # noqa: N801
    """RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond", arXiv
    1908.03265), as torch.optim.RAdam computes it:

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g²;   m̂ = m / (1 - b1^t)
        u = m̂ r_t sqrt(1 - b2^t) / (sqrt(v) + eps)   if rho_t > 5   (:func:`radam_rectification`)
        u = m̂                                         otherwise (SGD with momentum)

    Note where eps goes: added to the *uncorrected* ``sqrt(v)``, as torch does. Reads ``betas``
    and ``eps`` (>= 0). State: ``exp_avg``, ``exp_avg_sq``.

    Args:
        betas: ``(b1, b2)``, the EMA weights of the first and second moments, each in [0, 1);
            either may be a schedule ``f(t)``. The default of the ``betas`` hyperparameter.
            ``b2`` also sets ``rho_t``, hence the step from which the rectified form is used.
        eps: added to the uncorrected ``sqrt(v)`` (>= 0). The default of the ``eps``
            hyperparameter.

    Examples:
        With ``b2 = 0.999``, ``rho_1 = 1999 - 1998 = 1 <= 5``: the first step is SGD with
        momentum, ``u = m / (1 - b1) = g``, not normalised by v:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> tx = hc.chain(T.scale_by_radam(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1)
        >>> p.grad = torch.tensor([0.5, -3.0])
        >>> opt.step()
        >>> p.data
        tensor([ 0.9500, -1.7000])
    """

    name = "scale_by_radam"

    def __init__(self, betas: Sequence[Scalar] = (0.9, 0.999),
                 eps: Scalar = 1e-8) -> None:
        self.hyperparams = _hyperparams(betas, eps)

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"exp_avg": Slot(), "exp_avg_sq": Slot()}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        b1, b2 = bucket.hp("betas")
        t = bucket.step
        m, v = bucket.state("exp_avg"), bucket.state("exp_avg_sq")
        torch._foreach_lerp_(m, updates, 1 - b1)
        ema_sq_(v, updates, b2)
        rect = radam_rectification(b2, t)
        if rect is None:
            return Fresh(torch._foreach_div(m, 1 - b1**t))
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, bucket.hp("eps"))
        out = div_into_(m, denom)
        torch._foreach_mul_(out, rect * (1 - b2**t) ** 0.5 / (1 - b1**t))
        return out

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        b1, b2 = bucket.hp("betas")
        t = bucket.step
        rect = radam_rectification(b2, t)
        a, q = (0.0, 1 / (1 - b1**t)) if rect is None else (rect * (1 - b2**t) ** 0.5 / (1 - b1**t), 0.0)
        return 1 - b1, b2, 1 - b2, bucket.hp("eps"), a, q

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        m, v = state
        m.lerp_(u, s[0])
        ema_sq_one_(v, u, s[1], s[2])
        return m * (s[4] / (v.sqrt() + s[3]) + s[5])  # (a, q) = (r_t sqrt(bc2) / bc1, 0) or (0, 1 / bc1)


class scale_by_adamax(Transform):  # noqa: N801
    """Adamax (Kingma & Ba 2015, arXiv 1412.6980, sec. 7.1): Adam with the infinity norm in place
    of the second moment, as torch.optim.Adamax computes it (eps inside the max):

        m = b1 m + (1 - b1) g;   w = max(b2 w, |g| + eps);   u = m / ((1 - b1^t) w)

    ``w`` needs no bias correction (a max of decayed values is not biased towards 0). Reads
    ``betas`` and ``eps`` (>= 0). State: ``exp_avg``, ``exp_inf``.

    Args:
        betas: ``(b1, b2)``, the EMA weight of m and the decay of the infinity norm w, each in
            [0, 1); either may be a schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        eps: added to ``|g|`` inside the max (>= 0). The default of the ``eps`` hyperparameter.

    Examples:
        With ``b1 = b2 = 0.5`` and ``eps = 0``, step 1 moves by ``-lr sign(g)``. At step 2,
        ``m = 0.25 g1 + 0.5 g2 = [1.5, 1.25]`` and ``w = max(0.5 |g1|, |g2|) = [2, 2]`` (the first
        coordinate still divides by its decayed first gradient), so ``u = m / (0.75 w) = [1, 5/6]``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.scale_by_adamax(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, betas=(0.5, 0.5), eps=0.0)
        >>> p.grad = torch.tensor([4.0, 1.0]); opt.step(); p.data
        tensor([-1., -1.])
        >>> p.grad = torch.tensor([1.0, 2.0]); opt.step(); p.data
        tensor([-2.0000, -1.8333])
    """

    name = "scale_by_adamax"

    def __init__(self, betas: Sequence[Scalar] = (0.9, 0.999),
                 eps: Scalar = 1e-8) -> None:
        self.hyperparams = _hyperparams(betas, eps)

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"exp_avg": Slot(), "exp_inf": Slot()}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        b1, b2 = bucket.hp("betas")
        m, w = bucket.state("exp_avg"), bucket.state("exp_inf")
        torch._foreach_lerp_(m, updates, 1 - b1)
        torch._foreach_mul_(w, b2)
        tmp = torch._foreach_abs(updates)
        torch._foreach_add_(tmp, bucket.hp("eps"))
        torch._foreach_maximum_(w, tmp)
        c1 = 1 - b1**bucket.step
        for x, d in zip(w, tmp):  # the denominator (1 - b1^t) w in the spent temporary
            torch.mul(x, c1, out=d)
        return div_into_(m, tmp)

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        b1, b2 = bucket.hp("betas")
        return 1 - b1, b2, bucket.hp("eps"), 1 - b1**bucket.step

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        m, w = state
        m.lerp_(u, s[0])
        w.copy_(torch.maximum(w * s[1], u.abs() + s[2]))
        return m / (w * s[3])

"""Adam-family moment transforms, in HeavyBall's debiased-beta ("inplace EMA") form by default.

With ``b̂(b, t) = 1 - (1 - b) / (1 - b^t)`` the EMA ``m_t = b̂ m_{t-1} + (1 - b̂) g_t`` (from
``m_0 = 0``) equals Adam's bias-corrected ``m_t / (1 - b^t)`` exactly, with no extra division
later; ``b̂(b, 1) = 0``, so the first step copies its input. The denominator clamps rather than
adds eps: ``denom = max(sqrt(v), eps)``.

Every transform here takes the same two options for the other conventions (one mechanism,
:class:`Convention`), which change the rounding but not the math of ``debias="beta"``:

* ``debias``: ``"beta"`` (the default above); ``"divide"``: raw EMAs ``m = b1 m + (1 - b1) g``
  (torch.optim's state) divided by the corrections when used, ``m / (1 - b1^t)`` and
  ``sqrt(v) / sqrt(1 - b2^t)``, in torch.optim's order of operations; ``"none"``: raw EMAs used
  as they are (ADOPT's official form); ``"divide_root"`` (``scale_by_rms`` only): the raw EMA
  divided under the root, ``sqrt(v / (1 - b2^t))``, schedulefree's AdamWScheduleFree order.
* ``eps_mode``: ``"max"`` (``max(sqrt(v̂), eps)``, the default) or ``"add"`` (``sqrt(v̂) + eps``,
  torch.optim's; eps may then be 0).
"""

from __future__ import annotations

import torch

from ..core import Borrowed, Fresh, Hyper, Scalar, Slot, Transform, betas_pair, boolean, non_negative, positive
from .foreach import div_into_, ema_sq_, ema_sq_one_, is_one, lerp_, sqrt
from .schedules import step_power
from typing import Any, Sequence, overload
from ..core import Bucket

__all__ = ["Convention", "beta_debias", "scale_by_adam", "scale_by_laprop", "scale_by_adopt", "scale_by_rms"]

DEBIAS = ("beta", "divide", "none")
DIVIDE_ROOT = "divide_root"  # scale_by_rms only: sqrt(v / (1 - b2^t)), schedulefree's order
EPS_MODES = ("max", "add")


@overload
def beta_debias(beta: float, step: int) -> float: ...
@overload
def beta_debias(beta: float, step: torch.Tensor) -> torch.Tensor: ...


def beta_debias(beta: float, step: int | torch.Tensor) -> float | torch.Tensor:
    """``b̂(b, t) = 1 - (1 - b) / (1 - b^t)``: the EMA weight that makes an EMA bias-free (a 0-d
    tensor at a tensor step).

    An EMA ``m_t = b̂(b, t) m_{t-1} + (1 - b̂(b, t)) g_t`` equals the raw EMA of weight ``b``
    divided by Adam's bias correction ``1 - b^t`` (Kingma & Ba 2015, arXiv 1412.6980, sec. 3),
    at every step; this is HeavyBall's "inplace EMA" form of that correction.

    Args:
        beta: the EMA weight ``b``, in [0, 1).
        step: the step ``t`` (>= 1; ``b̂(b, 1) = 0``): an int, or a 0-d tensor (a capturable
            optimizer's device step counter), for which the result is a 0-d tensor.

    Examples:
        The first step copies the gradient; the second gives Adam's bias-corrected mean:

        >>> from heavyball_chain import transforms as T
        >>> T.beta_debias(0.9, 1)
        0.0
        >>> w = T.beta_debias(0.9, 2)
        >>> m = w * 1.0 + (1 - w) * 3.0  # g_1 = 1, then g_2 = 3
        >>> abs(m - (0.9 * 0.1 * 1.0 + 0.1 * 3.0) / (1 - 0.9**2)) < 1e-12  # raw EMA / (1 - b^2)
        True
    """
    return 1 - (1 - beta) / (1 - beta**step)


class Convention:
    """How a moment transform corrects the EMAs' bias (``debias``) and where eps goes
    (``eps_mode``); see the module docstring. Mixed into every transform of this module, so each
    states its math once for all conventions. (NAdam, RAdam and Adamax in :mod:`.adam_variants`
    have torch.optim's conventions built in: their corrections are part of their math.)

    * :meth:`ema_beta` is the EMA weight to use at step ``t`` (``b̂(b, t)`` or ``b``);
    * :meth:`correction` is the divisor of a raw EMA at step ``t`` (``1 - b^t`` or 1);
    * :meth:`denominator` is ``sqrt(v) / sqrt(c2)`` clamped by or plus eps, times ``c1``.
    """

    debias: str = "beta"
    eps_mode: str = "max"
    name: str  # the Transform's (Convention is mixed into transforms)
    hyperparams: dict[str, Hyper]

    def _convention(self, debias: str, eps_mode: str, allowed: Sequence[str] = DEBIAS) -> None:
        if debias not in allowed:
            raise ValueError(f"debias: expected one of {', '.join(map(repr, allowed))}, got {debias!r}")
        if eps_mode not in EPS_MODES:
            raise ValueError(f"eps_mode: expected one of {', '.join(map(repr, EPS_MODES))}, got {eps_mode!r}")
        self.debias, self.eps_mode = debias, eps_mode

    def _eps_hyper(self, eps: Scalar) -> Hyper:
        """eps divides nothing by itself when added, so 0 is allowed there (as torch.optim does)."""
        return Hyper(eps, non_negative if self.eps_mode == "add" else positive)

    def ema_beta(self, beta: float, step: int) -> float:
        return beta_debias(beta, step) if self.debias == "beta" else beta

    def correction(self, beta: float, step: int) -> float:
        return 1 - beta**step if self.debias in ("divide", DIVIDE_ROOT) else 1.0

    def root_divisor(self, beta: float, step: int) -> float:
        """What :meth:`denominator` divides v's root by: ``sqrt(1 - b^t)``, or ``1 - b^t`` itself
        under the root (``"divide_root"``)."""
        c = self.correction(beta, step)
        return c if self.debias == DIVIDE_ROOT else sqrt(c)

    def denominator(self, v: list[torch.Tensor], eps: float, c2: float = 1.0, c1: float = 1.0) -> list[torch.Tensor]:
        """``(sqrt(v) / c2 ⊕ eps) * c1`` as new tensors (``sqrt(v / c2)`` under ``"divide_root"``),
        ``⊕`` being ``max`` or ``+``; the divisions by 1 are skipped (they are exact anyway)."""
        if self.debias == DIVIDE_ROOT and not is_one(c2):
            denom = list(torch._foreach_div(v, c2))
            torch._foreach_sqrt_(denom)
        else:
            denom = list(torch._foreach_sqrt(v))
            if not is_one(c2):
                torch._foreach_div_(denom, c2)
        if self.eps_mode == "add":
            torch._foreach_add_(denom, eps)
        else:
            torch._foreach_maximum_(denom, eps)
        if not is_one(c1):
            torch._foreach_mul_(denom, c1)
        return denom

    def denominator_one(self, v: torch.Tensor, eps: torch.Tensor, c2: torch.Tensor | None = None,
                        c1: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`denominator` on one tensor for the compiled path (``c1``, ``c2`` given as 0-d
        tensors only when ``debias`` divides)."""
        if c2 is None:
            d = v.sqrt()
        else:
            d = (v / c2).sqrt() if self.debias == DIVIDE_ROOT else v.sqrt() / c2
        d = d + eps if self.eps_mode == "add" else torch.maximum(d, eps)
        return d if c1 is None else d * c1

    def _convention_repr(self, extra: str = "") -> str:
        parts = [f"debias={self.debias}"] if self.debias != "beta" else []
        parts += [f"eps_mode={self.eps_mode}"] if self.eps_mode != "max" else []
        parts += [extra] if extra else []
        return f"{self.name}({', '.join(self.hyperparams)}{'; ' + ', '.join(parts) if parts else ''})"


_MOMENTS = {"exp_avg": Slot(), "exp_avg_sq": Slot()}


class scale_by_adam(Convention, Transform):  # noqa: N801 - optax-style transform name
    """Adam (Kingma & Ba 2015, arXiv 1412.6980) with debiased betas:

        m = lerp(m, g, 1 - b̂1(t));  v = b̂2(t) v + (1 - b̂2(t)) g²;  u = m / max(sqrt(v), eps)

    With ``debias="divide", eps_mode="add"`` it is torch.optim.Adam's form and order of
    operations: raw EMAs and ``u = m / ((sqrt(v) / sqrt(1 - b2^t) + eps) (1 - b1^t))``.
    ``amsgrad`` (Reddi et al. 2018, "On the Convergence of Adam and Beyond", arXiv 1904.09237)
    divides by the running maximum of the second moment instead, ``v_max = max(v_max, v)``
    (of the stored v: the debiased one under ``"beta"``, the raw one otherwise).

    Reads ``betas`` and ``eps`` from the param group. State: ``exp_avg``, ``exp_avg_sq`` (and
    ``max_exp_avg_sq`` with amsgrad), in the compute dtype.

    Args:
        betas: ``(b1, b2)``, the EMA weights of the first and second moments, each in [0, 1);
            either may be a schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        eps: the floor of ``sqrt(v)`` (``eps_mode="max"``, > 0) or the term added to it
            (``"add"``, >= 0). The default of the ``eps`` hyperparameter.
        debias: ``"beta"``, ``"divide"`` or ``"none"``: how the EMAs' bias is corrected (module
            docstring).
        eps_mode: ``"max"`` or ``"add"``: where eps goes.
        amsgrad: divide by the running maximum of v.

    Examples:
        Adam's first step moves every weight by lr against the sign of its gradient:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> tx = hc.chain(T.scale_by_adam(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1)
        >>> p.grad = torch.tensor([0.5, -3.0])
        >>> opt.step()
        >>> p.data
        tensor([ 0.9000, -1.9000])
    """

    name = "scale_by_adam"
    capturable = True

    def __init__(self, betas: Sequence[Scalar] = (0.9, 0.99), eps: Scalar = 1e-8, *,
                 debias: str = "beta", eps_mode: str = "max", amsgrad: bool = False) -> None:
        self._convention(debias, eps_mode)
        if boolean(amsgrad) is not None:
            raise TypeError(f"amsgrad: expected True or False, got {amsgrad!r}")
        self.amsgrad = amsgrad
        self.hyperparams = {"betas": Hyper(tuple(betas), betas_pair), "eps": self._eps_hyper(eps)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {**_MOMENTS, "max_exp_avg_sq": Slot()} if self.amsgrad else _MOMENTS

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        b1, b2 = bucket.hp("betas")
        t = bucket.t
        m, v = bucket.state("exp_avg"), bucket.state("exp_avg_sq")
        lerp_(m, updates, 1 - self.ema_beta(b1, t))
        ema_sq_(v, updates, self.ema_beta(b2, t))
        if self.amsgrad:
            v_max = bucket.state("max_exp_avg_sq")
            torch._foreach_maximum_(v_max, v)
            v = v_max
        denom = self.denominator(v, bucket.hp("eps"), sqrt(self.correction(b2, t)), self.correction(b1, t))
        return div_into_(m, denom)

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        b1, b2 = bucket.hp("betas")
        t = bucket.t
        w1, w2 = self.ema_beta(b1, t), self.ema_beta(b2, t)
        out: tuple[Any, ...] = (1 - w1, w2, 1 - w2, bucket.hp("eps"))
        if self.debias == "divide":
            out += (sqrt(self.correction(b2, t)), self.correction(b1, t))
        return out

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        m, v = state[0], state[1]
        m.lerp_(u, s[0])
        ema_sq_one_(v, u, s[1], s[2])
        if self.amsgrad:
            state[2].copy_(torch.maximum(state[2], v))
            v = state[2]
        if self.debias == "divide":
            return m / self.denominator_one(v, s[3], s[4], s[5])
        return m / self.denominator_one(v, s[3])

    def __repr__(self) -> str:
        return self._convention_repr("amsgrad" if self.amsgrad else "")


class scale_by_laprop(Convention, Transform):  # noqa: N801
    """LaProp (Ziyin et al. 2020, arXiv 2002.04839): normalise first, then take momentum:

        v = b̂2(t) v + (1 - b̂2(t)) g²;  m = b̂1(t) m + (1 - b̂1(t)) g / max(sqrt(v), eps);  u = m

    (``debias="divide"``: raw EMAs, ``g / (sqrt(v) / sqrt(1 - b2^t) ⊕ eps)`` and
    ``u = m / (1 - b1^t)``.) Reads ``betas`` and ``eps``. State: ``exp_avg``, ``exp_avg_sq``.

    Args:
        betas: ``(b1, b2)``, the EMA weights of the first and second moments, each in [0, 1);
            either may be a schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        eps: the floor of ``sqrt(v)`` (``eps_mode="max"``, > 0) or the term added to it
            (``"add"``, >= 0). The default of the ``eps`` hyperparameter.
        debias: ``"beta"``, ``"divide"`` or ``"none"``: how the EMAs' bias is corrected (module
            docstring).
        eps_mode: ``"max"`` or ``"add"``: where eps goes.

    Examples:
        Two steps against the equation: at t = 1, ``b̂ = 0``, so ``v = g1²`` and ``m = sign(g1)``;
        at t = 2 the momentum averages the *normalised* gradients:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.scale_by_laprop(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, betas=(0.5, 0.5))
        >>> g1, g2 = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 2.0])
        >>> for g in (g1, g2): p.grad = g.clone(); opt.step()
        >>> w = T.beta_debias(0.5, 2)  # 1/3, for both moments
        >>> torch.allclose(p, -g1.sign() - (w * g1.sign() + (1 - w) * g2 / (w * g1**2 + (1 - w) * g2**2).sqrt()))
        True
    """

    name = "scale_by_laprop"
    capturable = True

    def __init__(self, betas: Sequence[Scalar] = (0.9, 0.99), eps: Scalar = 1e-8, *,
                 debias: str = "beta", eps_mode: str = "max") -> None:
        self._convention(debias, eps_mode)
        self.hyperparams = {"betas": Hyper(tuple(betas), betas_pair), "eps": self._eps_hyper(eps)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return _MOMENTS

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        b1, b2 = bucket.hp("betas")
        t = bucket.t
        m, v = bucket.state("exp_avg"), bucket.state("exp_avg_sq")
        ema_sq_(v, updates, self.ema_beta(b2, t))
        denom = self.denominator(v, bucket.hp("eps"), sqrt(self.correction(b2, t)))
        w1 = self.ema_beta(b1, t)
        torch._foreach_mul_(m, w1)
        if isinstance(w1, torch.Tensor):  # m + ((1 - w1) g) / denom, addcdiv's order of rounding
            torch._foreach_addcdiv_(m, torch._foreach_mul(updates, 1 - w1), denom)
        else:
            torch._foreach_addcdiv_(m, updates, denom, value=1 - w1)
        c1 = self.correction(b1, t)
        if not is_one(c1):
            for n, d in zip(m, denom):
                torch.div(n, c1, out=d)
            return Fresh(denom)
        return Borrowed(m, spare=denom)  # u = m: the next transform writes its result into denom


    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        b1, b2 = bucket.hp("betas")
        t = bucket.t
        w1, w2 = self.ema_beta(b1, t), self.ema_beta(b2, t)
        out: tuple[Any, ...] = (w2, 1 - w2, w1, 1 - w1, bucket.hp("eps"))
        if self.debias == "divide":
            out += (sqrt(self.correction(b2, t)), self.correction(b1, t))
        return out

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        m, v = state
        ema_sq_one_(v, u, s[0], s[1])
        if self.debias == "divide":
            m.mul_(s[2]).add_(s[3] * (u / self.denominator_one(v, s[4], s[5])))
            return m / s[6]
        m.mul_(s[2]).add_(s[3] * (u / self.denominator_one(v, s[4])))
        return m

    def __repr__(self) -> str:
        return self._convention_repr()


def _clip_value(v: Any) -> str | None:
    ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)
    return None if ok else "None (no clipping), a number > 0 or a schedule (a function of the step)"


class scale_by_adopt(Convention, Transform):  # noqa: N801
    """ADOPT (Taniguchi et al. 2024, arXiv 2411.02853), by default in HeavyBall 0.8.1's timing,
    one step late, with the clipping of the paper's current version (its Algorithm 2).

    The gradient is normalised by the *previous* second moment, so v never sees the gradient it
    divides, and clipped: ``n = clip(g / max(sqrt(v_prev), eps), ±c_k)`` with ``c_k = clip(k)``
    at the k-th momentum update (k = t - 1; default ``k^0.25``, the paper's schedule). At t = 1
    only ``v = g²``. At every t, v is updated last: ``v = b̂2(t) v + (1 - b̂2(t)) g²``.

    * ``delay=True`` (HeavyBall 0.8.1): at t = 2 ``m = n``; from t = 3 the output is the previous
      ``m`` and then ``m = b̂1(t-1) m + (1 - b̂1(t-1)) n``. Steps 1 and 2 return ``None``.
    * ``delay=False`` (the paper's Algorithm 2 and its official code): from t = 2,
      ``m = lerp(m, n, 1 - b̂1(t-1))`` and the output is this new ``m``. Only step 1 returns ``None``.

    ``debias="none"`` is the paper's form: raw EMAs, ``m`` from 0 (``m = (1 - b1) n`` at the first
    momentum update) and ``v = g²`` at t = 1, then ``v = b2 v + (1 - b2) g²``. (``"divide"`` is
    refused: ADOPT's v starts at g² and needs no correction.) "No update" means no weight decay
    and no lr either. Without clipping (``clip=None``, HeavyBall 0.8.1's ADOPT) a coordinate whose
    first gradient is exactly 0 (an unseen embedding row, a dead ReLU) is divided by eps at its
    next non-zero gradient. Reads ``betas``, ``eps``, ``clip``. State: ``exp_avg``, ``exp_avg_sq``.

    Args:
        betas: ``(b1, b2)``, the EMA weights of the first and second moments, each in [0, 1);
            either may be a schedule ``f(t)``. The default of the ``betas`` hyperparameter.
        eps: the floor of ``sqrt(v)`` (``eps_mode="max"``, > 0) or the term added to it
            (``"add"``, >= 0). The default of the ``eps`` hyperparameter.
        clip: the bound ``c_k`` of the normalised gradient at the k-th momentum update: None (no
            clipping), a number > 0, or a schedule of k (default ``step_power(0.25)``, ``k^0.25``).
            The default of the ``clip`` hyperparameter.
        delay: ``True`` for HeavyBall 0.8.1's timing (output one step late, first update at t = 3),
            ``False`` for the paper's (first update at t = 2).
        debias: ``"beta"`` or ``"none"`` (the paper's raw EMAs); ``"divide"`` is refused.
        eps_mode: ``"max"`` or ``"add"``: where eps goes.

    Examples:
        With the paper's timing, step 1 only records ``v = g²``; step 2 moves by
        ``-lr clip(g2 / |g1|, ±1)`` (``c_1 = 1^0.25``, and ``b̂1(1) = 0`` makes ``m = n``):

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(3))
        >>> tx = hc.chain(T.scale_by_adopt(delay=False), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0)
        >>> p.grad = torch.tensor([2.0, 2.0, 4.0]); opt.step(); p.data
        tensor([0., 0., 0.])
        >>> p.grad = torch.tensor([1.0, -4.0, 2.0]); opt.step(); p.data
        tensor([-0.5000,  1.0000, -0.5000])
    """

    name = "scale_by_adopt"
    capturable = True

    def __init__(self, betas: Sequence[Scalar] = (0.9, 0.99), eps: Scalar = 1e-8,
                 clip: Scalar | None = step_power(0.25), *, delay: bool = True,
                 debias: str = "beta", eps_mode: str = "max") -> None:
        self._convention(debias, eps_mode, allowed=("beta", "none"))
        if boolean(delay) is not None:
            raise TypeError(f"delay: expected True or False, got {delay!r}")
        self.delay = delay
        self.hyperparams = {"betas": Hyper(tuple(betas), betas_pair), "eps": self._eps_hyper(eps),
                            "clip": Hyper(clip, _clip_value)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return _MOMENTS

    def _clip(self, bucket: Bucket) -> Any:
        """This step's clip bound (for the (t-1)-th momentum update), or None."""
        return bucket.hp("clip", step=bucket.t - 1)

    def _b2(self, b2: float, bucket: Bucket) -> float:
        return 0.0 if bucket.step == 1 else self.ema_beta(b2, bucket.t)  # beta_debias(b2, 1) is 0 too

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        b1, b2 = bucket.hp("betas")
        t = bucket.step
        m, v = bucket.state("exp_avg"), bucket.state("exp_avg_sq")
        out: list[torch.Tensor] | None = None
        if t > 1:
            w1 = self.ema_beta(b1, bucket.t - 1)
            # n in the denominator's buffer; with delay the new m goes there too (the old m is this
            # step's output): one temporary
            n = div_into_(updates, self.denominator(v, bucket.hp("eps")))
            clip = self._clip(bucket)
            if clip is not None:  # one pass per tensor (the foreach form takes a pass per bound)
                for x in n:
                    x.clamp_(-clip, clip)
            if self.delay and bucket.capturable:  # m updated in place (a graph replays into it)
                out = Fresh([x.clone() for x in m]) if t > 2 else None
                lerp_(n, m, w1)
                torch._foreach_copy_(m, n)
            elif self.delay:
                lerp_(n, m, w1)  # (1 - w1) n + w1 m in one pass
                bucket.set_state("exp_avg", n)
                out = Fresh(m) if t > 2 else None  # the replaced m is referenced by nobody
            else:
                lerp_(m, n, 1 - w1)
                out = m
        ema_sq_(v, updates, self._b2(b2, bucket))
        return out


    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        t = bucket.step
        if t <= (2 if self.delay else 1):  # the steps that produce no update: eager
            return None
        b1, b2 = bucket.hp("betas")
        w1, w2 = self.ema_beta(b1, bucket.t - 1), self._b2(b2, bucket)
        clip = self._clip(bucket)
        return w1, 1 - w1, bucket.hp("eps"), w2, 1 - w2, float("inf") if clip is None else clip

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        m, v = state
        normed = (u / self.denominator_one(v, s[2])).clamp(min=-s[5], max=s[5])
        if self.delay:
            out = m.clone()
            m.mul_(s[0]).add_(s[1] * normed)
        else:
            out = m.lerp_(normed, s[1])
        ema_sq_one_(v, u, s[3], s[4])
        return out

    def __repr__(self) -> str:
        return self._convention_repr("" if self.delay else "no delay")


class scale_by_rms(Convention, Transform):  # noqa: N801
    """RMSProp-style normalisation (Tieleman & Hinton 2012) with a debiased second moment:

        v = b̂2(t) v + (1 - b̂2(t)) g²;  u = g / max(sqrt(v), eps)

    The preconditioner of schedule-free AdamW (it takes no momentum; schedule_free averages);
    ``debias="divide_root", eps_mode="add"`` is schedulefree's, ``u = g / (sqrt(v / (1 - b2^t)) + eps)``
    with the raw EMA v. Reads ``betas`` (only beta2) and ``eps``. State: ``exp_avg_sq`` (compute dtype).

    Args:
        betas: ``(b1, b2)``, each in [0, 1) (either may be a schedule ``f(t)``); only ``b2``, the
            EMA weight of v, is used (the pair is shared with the transforms it is chained with).
            The default of the ``betas`` hyperparameter.
        eps: the floor of ``sqrt(v)`` (``eps_mode="max"``, > 0) or the term added to it
            (``"add"``, >= 0). The default of the ``eps`` hyperparameter.
        debias: ``"beta"``, ``"divide"``, ``"none"`` or ``"divide_root"``: how v's bias is
            corrected (module docstring).
        eps_mode: ``"max"`` or ``"add"``: where eps goes.

    Examples:
        Step 1 has ``v = g²`` and moves by ``-lr sign(g)``; at step 2, ``b̂2(0.5, 2) = 1/3`` gives
        ``v = (g1² + 2 g2²) / 3 = [9, 1]`` and the update ``-lr g2 / sqrt(v) = [-1/3, -1]``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.scale_by_rms(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, betas=(0.9, 0.5))
        >>> p.grad = torch.tensor([5.0, 1.0]); opt.step(); p.data
        tensor([-1., -1.])
        >>> p.grad = torch.tensor([1.0, 1.0]); opt.step(); p.data
        tensor([-1.3333, -2.0000])
    """

    name = "scale_by_rms"
    capturable = True

    def __init__(self, betas: Sequence[Scalar] = (0.9, 0.99), eps: Scalar = 1e-8, *,
                 debias: str = "beta", eps_mode: str = "max") -> None:
        self._convention(debias, eps_mode, allowed=(*DEBIAS, DIVIDE_ROOT))
        self.hyperparams = {"betas": Hyper(tuple(betas), betas_pair), "eps": self._eps_hyper(eps)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"exp_avg_sq": Slot()}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        v = bucket.state("exp_avg_sq")
        b2 = bucket.hp("betas")[1]
        ema_sq_(v, updates, self.ema_beta(b2, bucket.t))
        denom = self.denominator(v, bucket.hp("eps"), self.root_divisor(b2, bucket.t))
        return div_into_(updates, denom)


    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        b2 = bucket.hp("betas")[1]
        w2 = self.ema_beta(b2, bucket.t)
        out = (w2, 1 - w2, bucket.hp("eps"))
        return out + (self.root_divisor(b2, bucket.t),) if self._divides else out

    @property
    def _divides(self) -> bool:
        return self.debias in ("divide", DIVIDE_ROOT)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        (v,) = state
        ema_sq_one_(v, u, s[0], s[1])
        return u / self.denominator_one(v, s[2], s[3] if self._divides else None)

    def __repr__(self) -> str:
        return self._convention_repr()

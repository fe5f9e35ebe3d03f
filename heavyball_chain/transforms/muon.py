"""Muon: momentum, then orthogonalised by a Newton–Schulz iteration (Jordan et al. 2024, "Muon: An
optimizer for hidden layers in neural networks", https://kellerjordan.github.io/posts/muon/), with
the shape-dependent learning rate of Liu et al. 2025 ("Muon is Scalable for LLM Training", arXiv
2502.16982) as an option, in torch.optim.Muon's conventions (torch 2.13):

    B = lerp(B, g, 1 - mu)                         (ema_momentum)
    U = lerp(g, B, mu)  (nesterov)  or  U = B
    O = NS_k(U)                                    (orthogonalize_via_newton_schulz, bf16)
    p = p (1 - lr wd) - lr r(shape) O              (decayed_apply with muon_lr_ratio)

Muon's update is computed in bfloat16, whose rounding turns any difference in the last bit of an
fp32 input into a difference of up to 2^-9 in the output; over a training run such differences
grow to percents (measured: 1% after 50 steps from a last-bit change of each step's parameter
update). So the ops here are torch's ops, one for one: the same lerps, the same bf16 matmuls (one
matrix at a time, as torch does, not batched), and the parameter update as torch writes it (the
decay multiplies the parameters first, then one fused multiply-add), so that a run equals
torch.optim.Muon's bit for bit.

Sharded (FSDP2) parameters: the momentum is elementwise and runs on the local shards; the
orthogonalisation needs the whole matrix and runs on its owner (``sharded.owner_computes``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .. import core
from ..core import (Elements, Fresh, Hyper, Slot, Transform, betas_pair, boolean, finite, non_negative,
                    unit_interval)
from ..core import LR, Count, Flag, Scalar
from .apply import StochasticWriter
from .sharded import owner_computes
from ..core import Bucket

__all__ = ["ema_momentum", "orthogonalize_via_newton_schulz", "newton_schulz", "muon_lr_ratio", "decayed_apply",
           "torch_adam_step",
           "NS_COEFFICIENTS"]

# The quintic's coefficients from Jordan et al. (chosen to maximise the slope at zero), torch's defaults.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def _host_number(value: Any) -> Any:
    """A CPU tensor read as a Python number (free: no device synchronisation), where torch.optim
    reads a tensor (``p.add_(u, alpha=tensor)``); device tensors stay tensors."""
    if isinstance(value, torch.Tensor) and value.device.type in core.HOST_DEVICES:
        return value.item()
    return value


class ema_momentum(Transform):  # noqa: N801 - optax-style transform name
    """Momentum as an exponential moving average (Muon's, Jordan et al. 2024; torch.optim.Muon):

        B = lerp(B, u, 1 - momentum) = momentum B + (1 - momentum) u
        out = lerp(u, B, momentum)   (nesterov)   or   out = B

    Unlike :class:`~heavyball_chain.transforms.trace` (SGD's ``B = momentum B + u``) the buffer is
    an average: its scale does not grow by ``1 / (1 - momentum)``. Reads ``momentum`` and
    ``nesterov`` (a group value, as in torch). State: ``momentum_buffer``.

    Args:
        momentum: the EMA weight ``mu`` of the buffer, in [0, 1); may be a schedule ``f(t)``.
            The default of the ``momentum`` hyperparameter.
        nesterov: return ``lerp(u, B, mu)`` (True) or the buffer ``B`` itself (False). The
            default of the ``nesterov`` hyperparameter.

    Examples:
        From ``B = 0`` the first step is ``B = (1 - mu) g`` and, with Nesterov,
        ``lerp(g, B, mu) = (1 - mu²) g``; with ``mu = 0.5`` and ``lr = 1``, ``p = -0.75 g``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.ema_momentum(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, momentum=0.5)
        >>> p.grad = torch.tensor([2.0, -4.0])
        >>> opt.step()
        >>> p.data
        tensor([-1.5000,  3.0000])
    """

    name = "ema_momentum"

    def __init__(self, momentum: Scalar = 0.95, nesterov: Flag = True) -> None:
        self.hyperparams = {"momentum": Hyper(momentum, unit_interval), "nesterov": Hyper(nesterov, boolean)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"momentum_buffer": Slot()}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        mu = bucket.hp("momentum")
        buf = bucket.state("momentum_buffer")
        torch._foreach_lerp_(buf, updates, 1 - mu)
        if bucket.hp("nesterov"):
            return Fresh(torch._foreach_lerp(updates, buf, mu))
        return buf

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        mu = bucket.hp("momentum")
        # lerp(u, B, 1) is B exactly: one kernel serves both forms
        return 1 - mu, mu if bucket.hp("nesterov") else 1.0

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        (buf,) = state
        buf.lerp_(u, s[0])
        return torch.lerp(u, buf, s[1])


def newton_schulz(g: torch.Tensor, coefficients: Sequence[float] = NS_COEFFICIENTS, steps: int = 5,
                  eps: float = 1e-7) -> torch.Tensor:
    """``NS_k(G)``: an approximate orthogonalisation ``U S' V^T`` of ``G = U S V^T`` (S' ≈ 1), in
    bfloat16. With ``X_0 = G / max(||G||_F, eps)`` (spectral norm <= 1) and ``(a, b, c)`` the
    coefficients, ``k`` steps of the quintic

        A = X X^T;   X = a X + (b A + c A²) X

    each of which maps every singular value s to ``a s + b s³ + c s⁵``. X is kept wide (rows <=
    columns; a tall G is transposed and the result transposed back), so ``A`` is the smaller Gram
    matrix. Returns a bfloat16 matrix of G's shape. The coefficients of Jordan et al. 2024 (the
    default) trade convergence for speed: the singular values do not converge to 1 but oscillate
    around it, so after five steps those that were not tiny in ``X_0`` lie in about [0.7, 1.2].

    Args:
        g: the matrix ``G`` (2-D, any floating dtype; it is not modified).
        coefficients: ``(a, b, c)``, the quintic's coefficients; default :data:`NS_COEFFICIENTS`
            (torch.optim.Muon's).
        steps: the number ``k`` of iterations (>= 0; 0 returns ``X_0``).
        eps: the floor of ``||G||_F`` in the normalisation (>= 0).

    Examples:
        One step maps each singular value ``s`` of ``X_0`` to ``a s + b s³ + c s⁵`` (up to bf16
        rounding; sorted, as the map reorders them):

        >>> import torch
        >>> from heavyball_chain.transforms import newton_schulz
        >>> g = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
        >>> s = torch.linalg.svdvals(g) / g.norm()                    # X_0's singular values
        >>> one = newton_schulz(g, steps=1)
        >>> one.dtype, one.shape
        (torch.bfloat16, torch.Size([2, 2]))
        >>> quintic = (3.4445 * s - 4.775 * s**3 + 2.0315 * s**5).sort().values
        >>> torch.allclose(torch.linalg.svdvals(one.float()).sort().values, quintic, atol=1e-2)
        True
    """
    a, b, c = coefficients
    tall = g.shape[0] > g.shape[1]
    x = g.to(torch.bfloat16, copy=True)
    x = x.mT if tall else x
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


def _ns_steps(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 100
    return None if ok else "an integer in [0, 100)"


def _refuse_non_matrix(bucket: Bucket, who: str) -> None:
    tensors = bucket.sharded if bucket.sharded is not None else bucket.params
    for i, p in enumerate(tensors):
        if p.dim() != 2:
            label = bucket.names[i] if bucket.names is not None else None
            position = bucket.positions[i] if bucket.positions is not None else i  # an optimizer's: given
            name = repr(label) if label else f"at position {position}"
            raise ValueError(f"{who}: parameter {name} has shape {tuple(p.shape)}; Muon orthogonalises 2-D matrices "
                             f"only (give biases, norms, embeddings and other non-2-D parameters to AdamW, e.g. "
                             f"with MuonWithAdamW)")


class orthogonalize_via_newton_schulz(Transform):  # noqa: N801
    """Replace each 2-D update by its Newton–Schulz orthogonalisation :func:`newton_schulz`
    (Jordan et al. 2024), computed in bfloat16 as torch.optim.Muon does; the result is returned in
    the compute dtype (exactly: every bf16 number is an fp32 one).

    Reads ``ns_coefficients`` (a, b, c), ``eps`` (the floor of the Frobenius norm) and ``ns_steps``
    (0 to 99, as torch). Refuses parameters that are not matrices (``check_step``: before the step
    changes anything). No state. Sharded parameters: on each matrix's owner
    (``sharded.owner_computes``).

    Args:
        ns_coefficients: ``(a, b, c)``, three finite numbers: the quintic's coefficients (default
            :data:`NS_COEFFICIENTS`). The default of the ``ns_coefficients`` hyperparameter.
        eps: the floor of the update's Frobenius norm, >= 0. The default of the ``eps``
            hyperparameter.
        ns_steps: the number of iterations, an integer in [0, 100). The default of the
            ``ns_steps`` hyperparameter.

    Examples:
        The step is :func:`newton_schulz` of the gradient (here with 2 iterations), in fp32:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2, 2))
        >>> tx = hc.chain(T.orthogonalize_via_newton_schulz(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, ns_steps=2)
        >>> p.grad = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
        >>> opt.step()
        >>> torch.equal(p.data, -T.newton_schulz(p.grad, steps=2).float())
        True
    """

    name = "orthogonalize_via_newton_schulz"
    supports_complex = False

    def __init__(self, ns_coefficients: Sequence[Scalar] = NS_COEFFICIENTS, eps: Scalar = 1e-7,
                 ns_steps: Count = 5) -> None:
        three = Elements("a triple (a, b, c) of finite numbers", finite, finite, finite)
        self.hyperparams = {"ns_coefficients": Hyper(tuple(ns_coefficients), three),
                            "eps": Hyper(eps, non_negative), "ns_steps": Hyper(ns_steps, _ns_steps)}

    def check_step(self, bucket: Bucket) -> None:
        _refuse_non_matrix(bucket, self.name)

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        if bucket.sharded is not None:
            return owner_computes(self._update, updates, bucket, init=lambda sub: None, skips=lambda step: False)
        return self._update(updates, bucket)

    def _update(self, updates: list[torch.Tensor], bucket: Bucket) -> Fresh:
        coefficients, eps, steps = bucket.hp("ns_coefficients"), bucket.hp("eps"), bucket.hp("ns_steps")
        return Fresh(newton_schulz(u, coefficients, steps, eps).to(u.dtype) for u in updates)


def _adjust_lr_fn(v: Any) -> str | None:
    return None if v in (None, "original", "match_rms_adamw") else "None, 'original' or 'match_rms_adamw'"


class muon_lr_ratio:  # noqa: N801 - used like a transform option
    """Muon's learning-rate multiplier ``r`` for an ``A x B`` matrix, chosen by ``adjust_lr_fn``:

    * ``None`` or ``"original"`` (Jordan et al.): ``r = sqrt(max(1, A / B))``;
    * ``"match_rms_adamw"`` (Liu et al. 2025, arXiv 2502.16982): ``r = 0.2 sqrt(max(A, B))``,
      which gives the update the RMS of a typical AdamW update, so AdamW's lr and weight decay carry over.

    Give it to :class:`decayed_apply` (``lr_ratio=muon_lr_ratio()``), which then reads the
    ``adjust_lr_fn`` hyperparameter (default None; fixed, not a schedule: it chooses the formula)
    and calls ``ratio(shape, adjust_lr_fn)`` per matrix. Takes no arguments.

    Examples:
        >>> import torch
        >>> from heavyball_chain import transforms as T
        >>> r = T.muon_lr_ratio()
        >>> r(torch.Size([100, 4]), None), r(torch.Size([4, 100]), "original")    # sqrt(max(1, A / B))
        (5.0, 1.0)
        >>> r(torch.Size([100, 4]), "match_rms_adamw")                             # 0.2 sqrt(max(A, B))
        2.0
    """

    hyperparams = {"adjust_lr_fn": Hyper(None, _adjust_lr_fn, fixed=True)}

    def __init__(self) -> None:  # no options (and so a signature without *args, **kwargs)
        pass

    def __call__(self, shape: torch.Size, adjust_lr_fn: str | None) -> float:
        a, b = shape[0], shape[1]
        if adjust_lr_fn == "match_rms_adamw":
            return 0.2 * math.sqrt(max(a, b))
        return math.sqrt(max(1, a / b))

    def __repr__(self) -> str:
        return "muon_lr_ratio(adjust_lr_fn)"


class decayed_apply(Transform):  # noqa: N801
    """Write the parameters with torch.optim's decoupled weight decay (Loshchilov & Hutter 2019,
    arXiv 1711.05101), in torch's order and rounding:

        p = p (1 - lr wd)          (first, on the parameters)
        p = p + a u                (one fused multiply-add: p.add_(u, alpha=a))

    With ``lr_ratio=None``, ``a = 1``: the update already carries its step size (Adafactor's
    relative step); ``lr`` then only scales the decay. With ``lr_ratio`` (:class:`muon_lr_ratio`),
    ``a = -lr r(shape)`` per matrix (its global shape under FSDP2): Muon's last line. Reads ``lr``
    (a number, a schedule or a one-element tensor; a tensor's products are computed in its dtype and
    ``a`` read on the host where that is free, the CPU, as torch does) and ``weight_decay`` (and the
    ratio's ``adjust_lr_fn``). bf16 parameters are updated in fp32 and written back by stochastic
    rounding (:class:`StochasticWriter`). No compiled form: its ``a`` differs per matrix shape.

    Args:
        lr: the learning rate, >= 0: a number, a schedule ``f(t)`` or a one-element tensor. The
            default of the ``lr`` hyperparameter.
        weight_decay: the decoupled decay ``wd``, >= 0 (0: no decay). The default of the
            ``weight_decay`` hyperparameter.
        lr_ratio: None (``a = 1``: add the update as it is) or a :class:`muon_lr_ratio`
            (``a = -lr r(shape)``; adds its ``adjust_lr_fn`` hyperparameter).
        seed: the seed of the stochastic rounding of bf16 parameters.

    Examples:
        Muon's write: ``p = p (1 - lr wd) - lr r u``, with ``r = sqrt(max(1, A / B))`` = 2 for a
        4 x 1 matrix and 1 for a 1 x 4 one:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> a, b = torch.nn.Parameter(torch.ones(4, 1)), torch.nn.Parameter(torch.ones(1, 4))
        >>> tx = hc.chain(T.decayed_apply(lr_ratio=T.muon_lr_ratio()))
        >>> opt = hc.ChainOptimizer([a, b], tx, lr=0.1, weight_decay=0.5)
        >>> a.grad, b.grad = torch.ones(4, 1), torch.ones(1, 4)
        >>> opt.step()
        >>> a.data.flatten(), b.data.flatten()    # 1 - 0.05 - 0.1 r
        (tensor([0.7500, 0.7500, 0.7500, 0.7500]), tensor([0.8500, 0.8500, 0.8500, 0.8500]))
    """

    name = "decayed_apply"
    writes_params = True

    def __init__(self, lr: LR = 1e-3, weight_decay: Scalar = 0.0, *,
                 lr_ratio: muon_lr_ratio | None = None, seed: int = 0) -> None:
        self.lr_ratio = lr_ratio
        self.hyperparams = {"lr": Hyper(lr, non_negative, tensor=True),
                            "weight_decay": Hyper(weight_decay, non_negative),
                            **(lr_ratio.hyperparams if lr_ratio is not None else {})}
        self.writer = StochasticWriter(seed)

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return self.writer.slots(bucket)

    def init(self, bucket: Bucket) -> None:
        self.writer.init(bucket)

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        lr, wd = bucket.hp("lr"), bucket.hp("weight_decay")  # a tensor lr: computed in its dtype, as torch
        p32 = bucket.params_compute()
        if wd != 0:
            torch._foreach_mul_(p32, 1 - lr * wd)
        if self.lr_ratio is None:
            torch._foreach_add_(p32, updates)
        else:
            shapes = bucket.sharded if bucket.sharded is not None else bucket.params
            fn = bucket.hp("adjust_lr_fn")
            by_ratio: dict[float, list[int]] = {}
            for i, p in enumerate(shapes):
                by_ratio.setdefault(self.lr_ratio(p.shape, fn), []).append(i)
            for ratio, idx in by_ratio.items():
                ps, us = [p32[i] for i in idx], [updates[i] for i in idx]
                alpha = _host_number(-(lr * ratio))
                if isinstance(alpha, torch.Tensor):  # on a device: no synchronisation (one more rounding)
                    torch._foreach_add_(ps, torch._foreach_mul(us, alpha))
                else:
                    torch._foreach_add_(ps, us, alpha=alpha)
        self.writer.write(bucket, p32)
        return updates

    def __repr__(self) -> str:
        return f"decayed_apply(lr, weight_decay{'; lr * ' + repr(self.lr_ratio) if self.lr_ratio else ''})"


class torch_adam_step(Transform):  # noqa: N801
    """Adam's step (Kingma & Ba 2015, arXiv 1412.6980), learning rate included, in torch.optim.Adam's
    order of operations, for the parameters Muon leaves to AdamW (followed by :class:`decayed_apply`
    it is torch.optim.AdamW bit for bit, which a model trained with Muon needs: its bf16
    orthogonalisation amplifies any last-bit difference in the other parameters):

        m = lerp(m, g, 1 - b1);   v = b2 v + (1 - b2) g²
        u = (-(lr / (1 - b1^t)) m) / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Reads ``lr`` (a number, a schedule or a one-element tensor), ``betas`` and ``eps`` (>= 0, added).
    State: ``exp_avg``, ``exp_avg_sq``.

    Args:
        lr: the learning rate, >= 0: a number, a schedule ``f(t)`` or a one-element tensor. The
            default of the ``lr`` hyperparameter.
        betas: ``(b1, b2)``, the EMA weights of the first and second moments, each in [0, 1);
            either may be a schedule. The default of the ``betas`` hyperparameter.
        eps: the term added to ``sqrt(v) / sqrt(1 - b2^t)``, >= 0. The default of the ``eps``
            hyperparameter.

    Examples:
        With :class:`decayed_apply` it is torch.optim.AdamW (same defaults), bit for bit:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p, q = torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = hc.ChainOptimizer([p], hc.chain(T.torch_adam_step(), T.decayed_apply()), lr=0.1, weight_decay=0.01)
        >>> ref = torch.optim.AdamW([q], lr=0.1, weight_decay=0.01)
        >>> for g in ([0.5, -3.0], [1.0, 2.0], [-0.25, 0.5]):
        ...     p.grad, q.grad = torch.tensor(g), torch.tensor(g)
        ...     opt.step(); ref.step()
        >>> torch.equal(p, q)
        True
    """

    name = "torch_adam_step"

    def __init__(self, lr: LR = 1e-3,
                 betas: Sequence[Scalar] = (0.9, 0.999), eps: Scalar = 1e-8) -> None:
        self.hyperparams = {"lr": Hyper(lr, non_negative, tensor=True), "betas": Hyper(tuple(betas), betas_pair),
                            "eps": Hyper(eps, non_negative)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"exp_avg": Slot(), "exp_avg_sq": Slot()}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        (b1, b2), t = bucket.hp("betas"), bucket.step
        lr, eps = bucket.hp("lr"), bucket.hp("eps")  # a tensor lr stays one (torch computes with it so)
        m, v = bucket.state("exp_avg"), bucket.state("exp_avg_sq")
        torch._foreach_lerp_(m, updates, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, updates, updates, value=1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, (1 - b2**t) ** 0.5)
        torch._foreach_add_(denom, eps)
        out = torch._foreach_mul(m, -(lr / (1 - b1**t)))
        torch._foreach_div_(out, denom)
        return Fresh(out)

"""Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory
Cost", arXiv 1804.04235), in torch.optim.Adafactor's conventions (torch 2.13):

    b̂2_t = 1 - t^beta2_decay                                   (beta2_decay <= 0; b̂2_1 = 0)
    matrices (the last two dimensions of a tensor with >= 2):
        R = b̂2 R + (1 - b̂2) mean_j G²_ij     C = b̂2 C + (1 - b̂2) mean_i G²_ij
        V̂ = R C / max(mean_i R_i, eps1)                         (rank-1 second moment)
    vectors and scalars:  V̂ = b̂2 V̂ + (1 - b̂2) G²
    U = G / sqrt(max(V̂, eps1²))                                (scale_by_factored_rms)
    Û = U / max(1, RMS(U) / d)                                  (clip_by_block_rms)
    α_t = max(eps2, RMS(p)) min(lr, 1 / sqrt(t))                (scale_by_relative_step)
    p = p (1 - lr wd) - α_t Û                                   (decayed_apply)

As torch does (and unlike the paper), eps1 is applied to the variance estimate rather than added
to G², ``lr`` caps the relative step (the paper's 10^-2) and scales the decoupled weight decay;
``eps1=None`` is the machine epsilon of the parameter's dtype; means stand for the paper's sums.
The state is one row and one column vector per matrix, ``O(n + m)`` instead of ``O(n m)``.

Sharded (FSDP2) parameters: the factored moment needs the whole matrix (column means run over
the sharded rows) and runs on its owner (``sharded.owner_computes``); the clip and the relative
step need only whole-tensor norms (``Bucket.norms`` sums them over the mesh) and run on shards.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from ..core import LR, Elements, Fresh, Hyper, Scalar, Slot, Transform, compute_dtype, non_negative
from .sharded import owner_computes
from ..core import Bucket

__all__ = ["scale_by_factored_rms", "clip_by_block_rms", "scale_by_relative_step"]


def _non_positive(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v <= 0
    return None if ok else "a finite number <= 0"


def _optional_non_negative(v: Any) -> str | None:
    return None if v is None or non_negative(v) is None else "None (the dtype's machine epsilon) or a number >= 0"


def _at_least_one(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 1
    return None if ok else "a finite number >= 1"


EPS_PAIR = Elements("a pair (eps1, eps2): eps1 None or a number >= 0, eps2 a number >= 0",
                    _optional_non_negative, non_negative)


def _eps_hyper(eps: Sequence[Scalar | None]) -> Hyper:
    return Hyper(tuple(eps) if isinstance(eps, list) else eps, EPS_PAIR)


def _global_shape(bucket: Bucket, i: int) -> torch.Size:
    return (bucket.sharded if bucket.sharded is not None else bucket.params)[i].shape


def _zeros(shape: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda p: torch.zeros(shape, dtype=compute_dtype(p.dtype), device=p.device)


class scale_by_factored_rms(Transform):  # noqa: N801 - optax-style transform name
    """Adafactor's normalisation (Shazeer & Stern 2018, arXiv 1804.04235)
    ``U = G / sqrt(max(V̂, eps1²))`` with the factored second moment of the module docstring
    (row and column EMAs over the last two dimensions of tensors with two or more, a full EMA
    for the others).

    Reads ``beta2_decay`` (<= 0) and ``eps`` (only eps1; None is the machine epsilon of the
    parameter's dtype, as torch). State: ``row_var`` (shape ``[..., n, 1]``) and ``col_var``
    (``[..., 1, m]``) for tensors of two or more dimensions, ``variance`` for the others; for
    sharded parameters, whole on the owner only.

    Args:
        beta2_decay: the exponent ``c`` of ``b̂2_t = 1 - t^c`` (<= 0; 0 keeps only the current
            ``G²``). The default of the ``beta2_decay`` hyperparameter.
        eps: the pair ``(eps1, eps2)``; only eps1 is read here, the floor of the variance
            estimate (as ``eps1²``) and of the row mean: None for the machine epsilon of the
            parameter's dtype, or a number >= 0. The default of the ``eps`` hyperparameter
            (eps2, >= 0, is :class:`scale_by_relative_step`'s).

    Examples:
        When ``G²`` is a rank-1 matrix the factored estimate is exact: at t = 1 (``b̂2 = 0``),
        ``V̂ = R C / mean(R) = G²``, and the update is ``-lr sign(G)``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2, 2))
        >>> tx = hc.chain(T.scale_by_factored_rms(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1)
        >>> p.grad = torch.tensor([[1.0, -2.0], [-3.0, 6.0]])  # the outer product of [1, -3] and [1, -2]
        >>> opt.step()
        >>> p.data
        tensor([[-0.1000,  0.1000],
                [ 0.1000, -0.1000]])
    """

    name = "scale_by_factored_rms"
    supports_complex = False  # its factors are of real matrices; torch refuses complex parameters too

    def __init__(self, beta2_decay: Scalar = -0.8, eps: Sequence[Scalar | None] = (None, 1e-3)) -> None:
        self.hyperparams = {"beta2_decay": Hyper(beta2_decay, _non_positive), "eps": _eps_hyper(eps)}

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        shape = _global_shape(bucket, 0)
        sharded = bucket.sharded is not None
        if len(shape) < 2:
            return {"variance": Slot(init=None if sharded else _zeros(shape))}
        row, col = (*shape[:-1], 1), (*shape[:-2], 1, shape[-1])
        return {"row_var": Slot(shape=row, init=None if sharded else _zeros(row)),
                "col_var": Slot(shape=col, init=None if sharded else _zeros(col))}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        eps1 = bucket.hp("eps")[0]
        if eps1 is None:  # the parameter's own dtype, as torch.optim (not the compute dtype)
            eps1 = torch.finfo(bucket.params[0].dtype).eps
        if bucket.sharded is not None:
            return owner_computes(lambda us, b: self._update(us, b, eps1), updates, bucket, self.init,
                                  skips=lambda step: False)
        return self._update(updates, bucket, eps1)

    def _update(self, updates: list[torch.Tensor], bucket: Bucket, eps1: float) -> Fresh:
        w = bucket.step ** bucket.hp("beta2_decay")  # 1 - b̂2_t
        out: list[torch.Tensor] = [None] * len(updates)  # type: ignore[list-item]
        vectors = [i for i, u in enumerate(updates) if u.dim() < 2]
        if vectors:
            gs = [updates[i] for i in vectors]
            v = [bucket.states[i][bucket.key("variance")] for i in vectors]
            torch._foreach_lerp_(v, torch._foreach_mul(gs, gs), w)
            est = torch._foreach_clamp_min(v, eps1 * eps1)
            torch._foreach_rsqrt_(est)
            torch._foreach_mul_(est, gs)
            for i, e in zip(vectors, est):
                out[i] = e
        for i, g in enumerate(updates):
            if g.dim() < 2:
                continue
            state = bucket.states[i]
            r, c = state[bucket.key("row_var")], state[bucket.key("col_var")]
            r.lerp_(torch.linalg.vector_norm(g, dim=-1, keepdim=True).square_().div_(g.shape[-1]), w)
            c.lerp_(torch.linalg.vector_norm(g, dim=-2, keepdim=True).square_().div_(g.shape[-2]), w)
            est = (r * c).div_(r.mean(dim=-2, keepdim=True).clamp_(min=eps1))
            out[i] = est.clamp_(min=eps1 * eps1).rsqrt_().mul_(g)
        return Fresh(out)


class clip_by_block_rms(Transform):  # noqa: N801
    """Adafactor's update clipping (Shazeer & Stern 2018, section 6): per tensor,

        u = u / max(1, RMS(u) / d),   RMS(u) = ||u||_2 / sqrt(numel)

    so no tensor's update has an RMS above ``d``. Whole-tensor norms for sharded parameters, no
    host synchronisation. Reads ``d`` (>= 1, as torch).

    Args:
        d: the largest RMS an update keeps (>= 1; the paper's 1). The default of the ``d``
            hyperparameter.

    Examples:
        The RMS is the whole tensor's, so a coordinate may stay above ``d``: ``[1, 7]`` has RMS 5
        and is divided by 5; ``[0.5, -0.5]`` (RMS 0.5) passes unchanged:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.clip_by_block_rms(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([a, b], tx, lr=1.0)
        >>> a.grad, b.grad = torch.tensor([1.0, 7.0]), torch.tensor([0.5, -0.5])
        >>> opt.step()
        >>> a.data, b.data
        (tensor([-0.2000, -1.4000]), tensor([-0.5000,  0.5000]))
    """

    name = "clip_by_block_rms"

    def __init__(self, d: Scalar = 1.0) -> None:
        self.hyperparams = {"d": Hyper(d, _at_least_one)}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        d = bucket.hp("d")
        norms = bucket.norms(updates)
        denominators = [torch.clamp(n / (math.sqrt(_global_shape(bucket, i).numel()) * d), min=1.0)
                        for i, n in enumerate(norms)]
        if isinstance(updates, Fresh):
            torch._foreach_div_(updates, denominators)
            return updates
        return Fresh(torch._foreach_div(updates, denominators))


class scale_by_relative_step(Transform):  # noqa: N801
    """Adafactor's relative step size (Shazeer & Stern 2018, section 8), negated for adding:

        u = -α_t u,   α_t = max(eps2, RMS(p)) ρ_t,   ρ_t = min(lr, 1 / sqrt(t))

    The step is relative to the parameter's scale (its RMS, floored at eps2, taken before this
    step's update and decay); ``lr`` caps ρ_t where the paper uses 10^-2 (torch.optim's choice).
    Reads ``lr`` (a number, a schedule or a one-element tensor) and ``eps`` (only eps2).

    Args:
        lr: the cap of ``ρ_t`` (>= 0): a number, a schedule ``f(t)`` or a one-element float
            tensor. The default of the ``lr`` hyperparameter.
        eps: the pair ``(eps1, eps2)``; only eps2 is read here, the floor of ``RMS(p)`` (>= 0).
            The default of the ``eps`` hyperparameter (eps1 is :class:`scale_by_factored_rms`'s).

    Examples:
        The step is ``RMS(p) min(lr, 1)`` at t = 1: 0.5 for ``p = [1, 7]`` (RMS 5), and
        ``eps2 lr = 1e-4`` for a parameter at 0. The output is already negated: no
        ``scale_by_learning_rate``.

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> a, b = torch.nn.Parameter(torch.tensor([1.0, 7.0])), torch.nn.Parameter(torch.zeros(2))
        >>> opt = hc.ChainOptimizer([a, b], hc.chain(T.scale_by_relative_step(), T.apply_updates()), lr=0.1)
        >>> a.grad, b.grad = torch.ones(2), torch.ones(2)
        >>> opt.step()
        >>> a.data, b.data
        (tensor([0.5000, 6.5000]), tensor([-0.0001, -0.0001]))
    """

    name = "scale_by_relative_step"

    def __init__(self, lr: LR = 1e-2, eps: Sequence[Scalar | None] = (None, 1e-3)) -> None:
        self.hyperparams = {"lr": Hyper(lr, non_negative, tensor=True), "eps": _eps_hyper(eps)}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        lr, eps2 = bucket.hp("lr"), bucket.hp("eps")[1]
        cap = 1 / bucket.step**0.5
        rho = torch.clamp(lr, max=cap) if isinstance(lr, torch.Tensor) else min(lr, cap)
        norms = bucket.norms(bucket.params_compute())
        factors = [torch.clamp(n / math.sqrt(_global_shape(bucket, i).numel()), min=eps2) * -rho
                   for i, n in enumerate(norms)]
        if isinstance(updates, Fresh):
            torch._foreach_mul_(updates, factors)
            return updates
        return Fresh(torch._foreach_mul(updates, factors))

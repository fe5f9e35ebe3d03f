"""SOAP: Adam in the eigenbasis of Shampoo's Kronecker factors (Vyas et al. 2024, arXiv 2409.11321).

For a parameter whose (merged) shape is ``(d_0, ..., d_k)``, SOAP keeps one factor
``GG_i ≈ E[G_(i) G_(i)^T]`` (``d_i x d_i``, ``G_(i)`` the gradient unfolded along dimension i)
per dimension with ``d_i <= max_precond_dim``, and its eigenbasis ``Q_i``. With
``rot(x) = x ×_i Q_i^T`` (every dimension multiplied by its ``Q_i^T``) and ``rot⁻¹`` its inverse:

    m = b̂1 m + (1 - b̂1) g                         (first moment)
    v = b̂2 v + (1 - b̂2) rot(g)²                   (second moment, rotated space)
    u = rot⁻¹( rot(m) / max(sqrt(v), eps) )
    GG_i = lerp(GG_i, G_(i) G_(i)^T, 1 - β_s)       (β_s = shampoo_beta, default: b̂2)

``rot`` is linear and fixed between refreshes, so the state keeps ``m̃ = rot(m)`` instead of m:
``m̃ = b̂1 m̃ + (1 - b̂1) rot(g)`` needs no rotation of its own, which saves one of the three
rotations of a step; a refresh moves it to the new basis, ``m̃ = rot_new(rot_old⁻¹(m̃))`` (the
same numbers as keeping m, up to fp32 rounding).

The first step of a parameter only initialises: ``GG_i = G_(i) G_(i)^T``, ``Q_i = eigh(GG_i)``
(eigenvalues descending) and returns ``None``. A refresh (chosen by ``refresh``: :class:`every`
or :class:`precond_schedule`) does one power iteration and QR: ``T = GG_i Q_i``, estimated
eigenvalues ``diag(Q_i^T GG_i Q_i)`` sorted descending, ``Q_i = qr(T[:, order]).Q``, and ``v``
re-ordered along dimension i by the same order so it stays aligned with ``Q_i``'s columns.
SOAP's own step ``t`` counts from 1 at the step after initialisation; schedules given as
hyperparameters are evaluated at it. ``max_precond_dim``, ``merge_dims``, ``precondition_1d`` and
``data_format`` decide which factors exist and their shapes, so they cannot be schedules.

Two conventions. The equations above are HeavyBall 0.8.1's (the defaults). The SOAP reference
(github.com/nikhilvyas/SOAP, ``soap.py``) differs in four places, each a constructor option:

    option              HeavyBall 0.8.1 (default)             SOAP reference
    init                "outer": GG_i = G_(i) G_(i)^T,         "ema": GG_i = (1 - β_s) G_(i) G_(i)^T
                        Q_i = eigh, then one refresh            (the EMA from zero), Q_i = eigh
    eps_mode            "max": max(sqrt(v), eps)                "add": sqrt(v) + eps
    bias_correction     "betas": debiased b̂1, b̂2 (and β_s      "step_size": raw b1, b2 (and β_s = b2);
                        = b̂2) in the moments                   u *= sqrt(1 - b2^t) / (1 - b1^t) after
                                                                ``normalize_grads`` (Adam's step size)
    merge               "trailing": dimension 0 apart, the      "leading": all dimensions from the
                        others merged from the back while       front while the product stays
                        the product stays < max_precond_dim     <= max_precond_dim (a small matrix
                                                                becomes one vector: [3, 4] -> [12])

A fifth option is ours, for speed: ``refresh_factors="one"`` refreshes, at each refresh, the
basis of one factor only, in turn (a matrix's Q_0 at one refresh, Q_1 at the next; the count is
the ``refreshes`` state). Each factor's basis is then refreshed half as often as the schedule
says; the factors themselves are updated every step. A refresh costs a power iteration and a
QR per refreshed factor, more than half of a refresh step (docs/performance.md): this halves
it. Not HeavyBall's math, so not the default; ``benchmarks/soap_refresh.py`` compares the two.

With ``merge="leading"``, ``data_format="channels_last"`` reads 4-D weights as ``[out, kh, kw, in]``:
they are merged (and their moments kept) as ``[out, in, kh, kw]``. ``bias_correction`` applies
only with ``correct_bias``; without it both conventions use raw betas and no step-size factor.
(The reference also decays the weights after the update, ``p = (p - lr_t u)(1 - lr wd)``:
:class:`decay_after_update`.)

Range. Every entry of ``G_(i) G_(i)^T`` and of ``rot(g)²`` is at most ``‖g‖²`` (Cauchy-Schwarz;
``rot`` is orthogonal), so ``GG_i`` and ``v``, convex combinations of them, are too. A gradient
with ``‖g‖² > L = finfo.max / 2^32`` (fp32: ``‖g‖ > 2^48 ≈ 2.8e14``, far beyond any trained
model's) is therefore first multiplied by the largest power of two ``s < 1`` that brings it under
``L``: the factors, ``v`` and the refresh's ``GG_i Q_i`` (``<= d_i L``) stay finite, where ``G G^T``
would overflow to inf and ``eigh``/QR fail or return NaN. The eigenbasis is scale-invariant and so is
``m / sqrt(v)`` (a first update is unchanged); later the step weighs in ``m``, ``v`` and ``GG_i``
as a gradient of that bounded size would, like clipping. Below ``L`` nothing changes (``s = 1``).
A first gradient that is exactly zero gives ``GG_i = 0`` and ``Q_i = I`` (the QR of zero): Adam in the
parameter's own coordinates until a refresh after a nonzero gradient. Non-finite gradients pass
unchanged (wrap the chain in ``apply_if_finite`` to skip them).

Parameters of equal merged shape are processed as one stack (batched ``bmm`` and ``eigh``; the QR
of a refresh one matrix at a time), and their state tensors are views of that stack. Sharded
(FSDP2) parameters: each matrix is owned by one rank, which gathers its gradient, keeps its
state and computes its update (``sharded.owner_computes``; docs/distributed.md).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..core import (Bucket, Fresh, Hyper, Schedule, Slot, Transform, as_tuple, betas_pair, boolean, compute_dtype,
                    finite, non_negative, positive, positive_int, unit_interval, zeros_state)
from ..core import Flag, Scalar
from .moments import beta_debias
from .schedules import every, precond_schedule
from .sharded import owner_computes

__all__ = ["soap_precondition", "every", "precond_schedule", "merged_shape"]


# --------------------------------------------------------------------------- shapes


def merged_shape(shape: tuple[int, ...], max_precond_dim: int, merge_dims: bool,
                 merge: str = "trailing") -> tuple[int, ...]:
    """``merge="trailing"`` (HeavyBall): merge trailing dimensions greedily from the back while
    their product stays below ``max_precond_dim``, keeping dimension 0 apart (fan-out is never
    folded into fan-in): ``[128, 64, 3, 3] -> [128, 576]``. 1-D and 0-D shapes are kept.

    ``merge="leading"`` (the SOAP reference): merge greedily from the front, dimension 0
    included, while the product stays ``<= max_precond_dim``; a dimension above it stays alone
    and size-1 dimensions vanish: ``[128, 64, 3, 3] -> [8192, 9]`` with 10000, ``[3, 4] -> [12]``."""
    shape = tuple(shape)
    if not merge_dims:
        return shape
    if merge == "leading":
        return _merged_leading(shape, max_precond_dim)
    if len(shape) <= 1:
        return shape
    groups: list[int] = []
    current = 1
    for size in reversed(shape[1:]):
        if current * size >= max_precond_dim:
            if current > 1:
                groups.append(current)
                current = size
            else:
                groups.append(size)
                current = 1
        else:
            current *= size
    if current > 1 or not groups:
        groups.append(current)
    return (shape[0], *reversed(groups))


def _merged_leading(shape: tuple[int, ...], max_dim: int) -> tuple[int, ...]:
    groups: list[int] = []
    current = 1
    for size in shape:
        if current * size <= max_dim:
            current *= size
        elif current > 1:
            groups.append(current)
            current = size
        else:
            groups.append(size)
    if current > 1 or not groups:
        groups.append(current)
    return tuple(groups)


_CHANNELS_LAST = (0, 3, 1, 2)  # [out, kh, kw, in] -> [out, in, kh, kw]
_CHANNELS_LAST_BACK = (0, 2, 3, 1)


def _layout(p: torch.Tensor, group: dict, merge: str = "trailing") -> tuple:
    """(merged shape, which of its dimensions get a factor, the permutation applied before merging
    or ``None``). Reads the group directly: these values are never schedules (``Hyper(fixed=True)``)."""
    max_dim = group["max_precond_dim"]
    if p.dim() <= 1:
        n = p.numel()
        return (n,), ((group["precondition_1d"] and n <= max_dim),), None
    perm = None
    shape = tuple(p.shape)
    if group["merge_dims"] and p.dim() == 4 and group["data_format"] == "channels_last":
        perm = _CHANNELS_LAST
        shape = tuple(shape[k] for k in perm)
    shape = merged_shape(shape, max_dim, group["merge_dims"], merge)
    return shape, tuple(d <= max_dim for d in shape), perm


def _moment_shape(p: torch.Tensor, perm: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The moments' shape: the parameter's (``None``), or its channels-first permutation."""
    return None if perm is None else tuple(p.shape[k] for k in perm)


# --------------------------------------------------------------------------- batched linear algebra


def _rotate(x: torch.Tensor, qs: list[torch.Tensor | None], back: bool) -> torch.Tensor:
    """``x ×_i Q_i^T`` (or ``×_i Q_i`` with ``back``) for a stack ``x`` of shape ``[B, *shape]``."""
    if len(qs) == 2:  # matrices: Q_0^T x Q_1 (back: Q_0 x Q_1^T), transposes as BLAS flags, no copies
        q0, q1 = qs
        if q0 is not None:
            x = torch.bmm(q0 if back else q0.mT, x)
        if q1 is not None:
            x = torch.bmm(x, q1.mT if back else q1)
        return x
    for i, q in enumerate(qs):
        if q is None:
            continue
        x = x.movedim(i + 1, -1)
        moved = x.shape
        x = torch.bmm(x.reshape(moved[0], -1, moved[-1]), q.transpose(1, 2) if back else q).reshape(moved)
        x = x.movedim(-1, i + 1)
    return x


def _outer(x: torch.Tensor, i: int) -> torch.Tensor:
    """``G_(i) G_(i)^T`` for every element of the stack ``x`` (``[B, d_i, d_i]``)."""
    if x.dim() == 3:  # matrices: G G^T or G^T G without a transposing copy
        return torch.bmm(x, x.mT) if i == 0 else torch.bmm(x.mT, x)
    g = x.movedim(i + 1, 1).reshape(x.shape[0], x.shape[i + 1], -1)
    return torch.bmm(g, g.transpose(1, 2))


def _eigenbasis(gg: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of symmetric ``gg`` (batched), columns by descending eigenvalue."""
    eye = torch.eye(gg.shape[-1], dtype=gg.dtype, device=gg.device)
    try:
        q = torch.linalg.eigh(gg + 1e-30 * eye).eigenvectors
    except RuntimeError:  # rare convergence failure in fp32: retry in fp64
        q = torch.linalg.eigh((gg + 1e-30 * eye).double()).eigenvectors.to(gg.dtype)
    return q.flip(-1)


def _refresh_(gg: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """One power iteration + QR, writing the new basis into the stack ``q``; returns the column
    order applied (``[B, d]``). One matrix at a time: LAPACK's QR is per matrix anyway, and the
    temporaries stay those of one matrix (a 4096-wide factor's are 64 MB each), not of the stack."""
    orders = []
    for k in range(q.shape[0]):
        t = gg[k] @ q[k]
        estimated = (q[k] * t).sum(dim=0)  # diag(Q^T GG Q), per column
        order = torch.argsort(estimated, descending=True)
        h, tau = torch.geqrf(t[:, order])
        del t
        # the Q of QR without forming R: same LAPACK Householder reflectors, bit-identical, ~10% cheaper
        q[k].copy_(torch.linalg.householder_product(h, tau))
        orders.append(order)
    return torch.stack(orders)


def _stack(updates: list[torch.Tensor], idx: list[int], shape: tuple[int, ...],
           perm: tuple[int, ...] | None = None) -> torch.Tensor:
    """The gradients ``idx`` as one ``[B, *shape]`` tensor, each multiplied by the power of two
    ``s <= 1`` that brings ``‖s g‖²`` under ``L`` (the module docstring's range; ``s = 1``, an exact
    no-op, for every ordinary gradient). Computed on the device, with no synchronisation: where the
    norm itself overflows, ``‖g‖ <= sqrt(n) finfo.max`` gives the ``s`` that fits any finite g."""
    parts = [(updates[j] if perm is None else updates[j].permute(perm)).reshape(shape) for j in idx]
    g = parts[0][None] if len(parts) == 1 else torch.stack(parts)
    finfo = torch.finfo(g.dtype)
    half_log2_limit = 0.5 * (math.log2(finfo.max) - 32)
    worst = math.log2(finfo.max) + 0.5 * math.log2(max(math.prod(shape), 1)) - half_log2_limit
    excess = torch.stack(torch._foreach_norm(parts)).log2_().sub_(half_log2_limit)  # inf if the norm overflowed
    scale = excess.clamp_(0, worst).nan_to_num_(0.0).ceil_().neg_().exp2_()  # 0 and nan norms: 1
    scale = scale.view(-1, *[1] * len(shape))
    return g.mul_(scale) if len(parts) > 1 else g * scale  # a stack is ours; one gradient is a view


def _update_factor_(gg: torch.Tensor, x: torch.Tensor, i: int, beta: float) -> None:
    """``GG_i = beta GG_i + (1 - beta) G_(i) G_(i)^T`` in place (for matrices inside the matmul,
    with no ``d x d`` temporary)."""
    if x.dim() == 3:
        a, b = (x, x.mT) if i == 0 else (x.mT, x)
        gg.baddbmm_(a, b, beta=beta, alpha=1 - beta)
    else:
        gg.lerp_(_outer(x, i), 1 - beta)


# --------------------------------------------------------------------------- the transform


def _shampoo_beta(v: Any) -> str | None:
    if v is None or unit_interval(v) is None or (non_negative(v) is not None and finite(v) is None):
        return None
    return "None or a negative number (both: follow beta2; the SOAP reference's default is -1) or a number in [0, 1)"


def _precond_dim(v: Any) -> str | None:
    return None if positive_int(v) is None else (
        "an integer >= 1 (dimensions larger than it get no factor, so 0 would precondition nothing; "
        "without preconditioning use ForeachAdamW or ForeachLaProp)")




def _data_format(v: Any) -> str | None:
    return None if v == "channels_first" else (
        "'channels_first' (torch conv weights are [out, in, kh, kw] whatever their memory format; "
        "'channels_last' for [out, kh, kw, in] weights needs soap_precondition(merge='leading'), "
        "the SOAP reference's merging rule)")


def _data_format_leading(v: Any) -> str | None:
    return None if v in ("channels_first", "channels_last") else (
        "'channels_first' or 'channels_last' (4-D weights [out, kh, kw, in], merged as [out, in, kh, kw])")


_OPTIONS = {"init": ("outer", "ema"), "eps_mode": ("max", "add"), "bias_correction": ("betas", "step_size"),
            "merge": ("trailing", "leading"), "refresh_factors": ("all", "one")}


class soap_precondition(Transform):  # noqa: N801 - optax-style transform name
    """SOAP preconditioning (Vyas et al. 2024, arXiv 2409.11321; see the module docstring for the
    equations).

    Reads ``betas`` (b1, b2; either may be a schedule such as ``palm_beta2()``), ``eps``,
    ``shampoo_beta`` (None: the factors follow b̂2, as HeavyBall 0.8.1 does), ``max_precond_dim``,
    ``merge_dims``, ``precondition_1d``, ``normalize_grads`` (divide each update by its RMS, as the
    SOAP reference does), ``correct_bias`` (False: raw betas instead of debiased ones, as the
    reference) and ``data_format`` (only ``'channels_first'``). ``refresh`` decides when the
    eigenbasis is refreshed. With ``first_moment=False`` there is no ``m``:
    ``u = rot⁻¹(rot(g) / max(sqrt(v), eps))`` (schedule-free SOAP).

    Every value may be a schedule, evaluated at SOAP's step t, except the layout ones
    (``max_precond_dim``, ``merge_dims``, ``precondition_1d``, ``data_format``: ``Hyper(fixed=True)``).
    A negative ``shampoo_beta`` means None (the reference's default is -1).

    The keyword-only options choose between HeavyBall 0.8.1's conventions (the defaults) and the
    SOAP reference's (``init="ema", eps_mode="add", bias_correction="step_size", merge="leading"``);
    the module docstring lists what each changes. They shape the transform, so they are
    constructor arguments, not param-group values.

    Args:
        refresh: when to refresh the eigenbasis: a schedule giving a bool at SOAP's step t,
            :class:`every` (the default, ``every()``: every ``precondition_frequency`` steps) or
            :class:`precond_schedule`; the hyperparameters it declares join the chain's.
        betas: ``(b1, b2)``, the EMA weights of the moments, each in [0, 1); either may be a
            schedule. The default of the ``betas`` hyperparameter.
        eps: the floor of ``sqrt(v)`` (``eps_mode="max"``) or the term added to it (``"add"``),
            > 0 in both. The default of the ``eps`` hyperparameter.
        shampoo_beta: the factors' EMA weight ``β_s`` in [0, 1), or None or a negative number
            (both: follow b2, debiased as b2 is). The default of the ``shampoo_beta``
            hyperparameter.
        max_precond_dim: an integer >= 1: dimensions larger than it get no factor (and merging
            stops at it). The default of the ``max_precond_dim`` hyperparameter (fixed).
        merge_dims: merge dimensions as ``merge`` says before factoring. The default of the
            ``merge_dims`` hyperparameter (fixed).
        precondition_1d: give 1-D (and 0-D) parameters of at most ``max_precond_dim`` elements a
            factor too (False: plain Adam for them). The default of the ``precondition_1d``
            hyperparameter (fixed).
        normalize_grads: divide each update by its RMS. The default of the ``normalize_grads``
            hyperparameter.
        correct_bias: correct the moments' bias as ``bias_correction`` says (False: raw betas,
            no step-size factor). The default of the ``correct_bias`` hyperparameter.
        data_format: ``"channels_first"``, or with ``merge="leading"`` also ``"channels_last"``
            (4-D weights as ``[out, kh, kw, in]``). The default of the ``data_format``
            hyperparameter (fixed).
        first_moment: keep ``m`` (False: precondition the gradient itself, for schedule-free
            SOAP).
        init: ``"outer"`` (HeavyBall) or ``"ema"`` (the reference): the factors' first value.
        eps_mode: ``"max"`` (HeavyBall) or ``"add"`` (the reference): where eps goes.
        bias_correction: ``"betas"`` (HeavyBall: debiased betas) or ``"step_size"`` (the
            reference: raw betas and Adam's step-size factor).
        merge: ``"trailing"`` (HeavyBall) or ``"leading"`` (the reference): how dimensions merge
            (:func:`merged_shape`).
        refresh_factors: ``"all"`` (every factor's basis at each refresh) or ``"one"`` (one
            factor's, in turn).

    Examples:
        The first step only builds ``GG_i`` and ``Q_i`` (the eigenvectors of ``G G^T`` and
        ``G^T G``); the next, with debiased betas, is ``u = Q_0 sign(Q_0^T G Q_1) Q_1^T``: the
        orthogonal factor ``U V^T`` of ``G = U S V^T`` (an eps above the rounding noise of
        ``rot(G)``'s zeros keeps them zero):

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p, g = torch.nn.Parameter(torch.zeros(2, 2)), torch.tensor([[2.0, 1.0], [0.0, 1.0]])
        >>> tx = hc.chain(T.soap_precondition(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, eps=1e-3)
        >>> p.grad = g; opt.step(); p.abs().sum().item()       # no update at the first step
        0.0
        >>> opt.step()
        >>> U, S, Vh = torch.linalg.svd(g)
        >>> torch.allclose(p, -U @ Vh, atol=1e-3)
        True
    """

    name = "soap_precondition"
    supports_complex = False  # its factors are of real matrices; a complex one's real view is not one

    def __init__(self, refresh: Schedule | None = None,
                 betas: Sequence[Scalar] = (0.9, 0.95), eps: Scalar = 1e-8,
                 shampoo_beta: Scalar | None = None, max_precond_dim: int = 2048, merge_dims: bool = True,
                 precondition_1d: bool = False, normalize_grads: Flag = False, correct_bias: Flag = True,
                 data_format: str = "channels_first", first_moment: bool = True, *, init: str = "outer",
                 eps_mode: str = "max", bias_correction: str = "betas", merge: str = "trailing",
                 refresh_factors: str = "all") -> None:
        self.refresh = refresh if refresh is not None else every()
        self.first_moment = first_moment
        self.options = {"init": init, "eps_mode": eps_mode, "bias_correction": bias_correction, "merge": merge,
                        "refresh_factors": refresh_factors}
        for name, value in self.options.items():
            if value not in _OPTIONS[name]:
                raise ValueError(f"{name}: expected one of {_OPTIONS[name]}, got {value!r} (soap_precondition)")
        self.init_mode, self.eps_mode, self.bias_correction, self.merge = init, eps_mode, bias_correction, merge
        self.refresh_factors = refresh_factors
        self.hyperparams = {
            "betas": Hyper(as_tuple(betas), betas_pair),
            "eps": Hyper(eps, positive),
            "shampoo_beta": Hyper(shampoo_beta, _shampoo_beta),
            "max_precond_dim": Hyper(max_precond_dim, _precond_dim, fixed=True),
            "merge_dims": Hyper(merge_dims, boolean, fixed=True),
            "precondition_1d": Hyper(precondition_1d, boolean, fixed=True),
            "normalize_grads": Hyper(normalize_grads, boolean),
            "correct_bias": Hyper(correct_bias, boolean),
            "data_format": Hyper(data_format, _data_format_leading if merge == "leading" else _data_format,
                                 fixed=True),
            **self.refresh.hyperparams,
        }

    def __repr__(self) -> str:  # non-default options only: state dicts record this signature
        options = "".join(f", {k}={v}" for k, v in self.options.items() if v != _OPTIONS[k][0])
        return f"{self.name}(refresh={type(self.refresh).__name__}, first_moment={self.first_moment}{options})"

    # -- state ---------------------------------------------------------------------------

    def slots(self, bucket: Bucket) -> dict:
        """Moments (parameter-shaped; a merged channels_last weight's as ``[out, in, kh, kw]``), and
        per preconditioned dimension i a factor ``GG<i>`` and its eigenbasis ``Q<i>`` (``d_i x d_i``,
        made at the first step). Sharded parameters: all on the matrix's owner only (sharded.py)."""
        p = bucket.params[0]
        shape, pre, perm = _layout(p, bucket.group, self.merge)
        moment_shape = _moment_shape(p, perm)
        if bucket.sharded is not None:
            make = None
        elif moment_shape is None:
            make = zeros_state
        else:  # channels_last: the moments are kept in the merged (channels-first) order
            make = lambda p: torch.zeros(moment_shape, dtype=compute_dtype(p.dtype), device=p.device)  # noqa: E731
        moment = Slot(shape=moment_shape, init=make)
        out = {"exp_avg": moment, "exp_avg_sq": moment} if self.first_moment else {"exp_avg_sq": moment}
        for i, (d, on) in enumerate(zip(shape, pre)):
            if on:
                out[f"GG{i}"] = out[f"Q{i}"] = Slot(shape=(d, d), init=None)
        if self.refresh_factors == "one":
            out["refreshes"] = Slot(int, init=lambda p: 0)
        return out

    # -- step ----------------------------------------------------------------------------

    def _classes(self, bucket: Bucket) -> dict[tuple, list[int]]:
        classes: dict[tuple, list[int]] = {}
        for i, p in enumerate(bucket.params):
            classes.setdefault(_layout(p, bucket.group, self.merge), []).append(i)
        return classes

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        if bucket.sharded is not None:
            return owner_computes(self._update, updates, bucket, self.init, skips=lambda step: step == 1)
        return self._update(updates, bucket)

    def _update(self, updates: list[torch.Tensor], bucket: Bucket) -> Fresh | None:
        t = bucket.step - 1  # SOAP's step: the first call only initialises
        classes = self._classes(bucket)
        if t == 0:
            # "ema": the factors' EMA from zero, with the weight it would have at SOAP's step 1
            weight = 1 - self._betas(bucket, 1)[2] if self.init_mode == "ema" else 1.0
            for (shape, pre, perm), idx in classes.items():
                g = _stack(updates, idx, shape, perm)
                for i, on in enumerate(pre):
                    if on:
                        gg = _outer(g, i)
                        if weight != 1.0:
                            gg.mul_(weight)
                        q = _eigenbasis(gg).contiguous()
                        if self.init_mode == "outer":
                            _refresh_(gg, q)
                        self._store(bucket, idx, f"GG{i}", gg)
                        self._store(bucket, idx, f"Q{i}", q)
            return None

        def hp(name: str) -> Any:  # every value through the bucket: schedules evaluated at SOAP's step
            return bucket.hp(name, step=t)

        b1, b2, shampoo = self._betas(bucket, t)
        refresh = self.refresh.at(t, {**bucket.group, **{n: hp(n) for n in self.refresh.hyperparams}})
        eps = hp("eps")

        out: list[torch.Tensor] = [None] * len(updates)  # type: ignore[list-item]
        for (shape, pre, perm), idx in classes.items():
            u = self._step_class(bucket, idx, shape, pre, _stack(updates, idx, shape, perm), b1, b2, eps,
                                 shampoo, refresh)
            for k, j in enumerate(idx):
                if perm is None:
                    out[j] = u[k].view(updates[j].shape)
                else:
                    moment_shape = tuple(updates[j].shape[d] for d in perm)  # _moment_shape's, not None
                    out[j] = u[k].view(moment_shape).permute(_CHANNELS_LAST_BACK)
        if hp("normalize_grads"):
            rms = torch._foreach_norm(out)
            out = [u / (1e-30 + r / math.sqrt(max(u.numel(), 1))) for u, r in zip(out, rms)]
        if self.bias_correction == "step_size" and hp("correct_bias"):  # Adam's step size, after normalizing
            torch._foreach_mul_(out, math.sqrt(1 - b2**t) / (1 - b1**t))
        return Fresh(out)  # slices of this step's temporaries: the next transform may overwrite them

    def _betas(self, bucket: Bucket, t: int) -> tuple[float, float, float]:
        """(b1, b2, β_s) of the moments and factors at SOAP's step ``t``: debiased betas with
        ``bias_correction="betas"`` and ``correct_bias``, else raw ones; β_s = shampoo_beta, or b2
        when it is None or negative."""
        b1, b2 = bucket.hp("betas", step=t)
        if self.bias_correction == "betas" and bucket.hp("correct_bias", step=t):
            b1, b2 = beta_debias(b1, t), beta_debias(b2, t)
        shampoo = bucket.hp("shampoo_beta", step=t)
        return b1, b2, b2 if shampoo is None or shampoo < 0 else shampoo

    def _step_class(self, bucket: Bucket, idx: list[int], shape: tuple[int, ...], pre: tuple[bool, ...],
                    g: torch.Tensor, b1: float, b2: float, eps: float, shampoo: float, refresh: bool) -> torch.Tensor:
        """One step for the parameters ``idx`` of one merged shape, whose gradients are the stack ``g``
        (``[B, *shape]``); returns the updates ``[B, *shape]``. A method of its own so its temporaries
        are freed before the next class."""
        qs = [self._stacked(bucket, idx, f"Q{i}", None) if on else None for i, on in enumerate(pre)]
        g_rot = _rotate(g, qs, back=False)
        v = self._stacked(bucket, idx, "exp_avg_sq", shape)
        v.mul_(b2).addcmul_(g_rot, g_rot, value=1 - b2)
        denom = v.sqrt().add_(eps) if self.eps_mode == "add" else v.sqrt().clamp_min_(eps)
        m = None
        if self.first_moment:  # m is kept in the eigenbasis: rot(m) = b̂1 rot(m) + (1 - b̂1) rot(g)
            m = self._stacked(bucket, idx, "exp_avg", shape)
            m.mul_(b1).add_(g_rot, alpha=1 - b1)
            num = m / denom
        else:
            num = g_rot / denom
        del g_rot, denom
        u = _rotate(num, qs, back=True)
        del num
        renewed = [on and refresh for on in pre]  # the factors whose basis this step refreshes
        if refresh and any(pre) and self.refresh_factors == "one":  # in turn, one per refresh
            key = bucket.key("refreshes")
            count = bucket.states[idx[0]][key]
            dims = [i for i, on in enumerate(pre) if on]
            renewed = [i == dims[count % len(dims)] for i in range(len(pre))]
            for j in idx:
                bucket.states[j][key] = count + 1
        moved = [q if r else None for q, r in zip(qs, renewed)]
        # m (kept in the eigenbasis) goes back along the dimensions being refreshed, and forward after
        m_original = _rotate(m, moved, back=True) if any(renewed) and m is not None else None
        for i, on in enumerate(pre):
            if not on:
                continue
            gg = self._stacked(bucket, idx, f"GG{i}", None)
            _update_factor_(gg, g, i, shampoo)
            if renewed[i]:
                q = qs[i]
                assert q is not None  # a preconditioned dimension has a basis
                order = _refresh_(gg, q)  # q is the state: refreshed in place
                index = order.view(order.shape[0], *[-1 if d == i else 1 for d in range(len(shape))])
                v.copy_(v.gather(i + 1, index.expand_as(v)))  # v stays aligned with Q's columns
        if m_original is not None:
            assert m is not None
            m.copy_(_rotate(m_original, moved, back=False))  # into the new basis
        return u

    # -- helpers -------------------------------------------------------------------------

    def _stacked(self, bucket: Bucket, idx: list[int], name: str, shape: tuple[int, ...] | None) -> torch.Tensor:
        """State ``name`` of parameters ``idx`` as one ``[B, *shape]`` tensor whose slices *are* the
        per-parameter state tensors (views). Built once (or after ``load_state_dict`` copied the
        state apart); every later step gets it for free, with no stacking copy."""
        key = bucket.key(name)
        tensors = [bucket.states[j][key] for j in idx]
        base = tensors[0]._base
        if (base is not None and base.shape[0] == len(idx)
                and all(t._base is base and t.data_ptr() == base[k].data_ptr() for k, t in enumerate(tensors))):
            return base
        base = torch.stack([t if shape is None else t.reshape(shape) for t in tensors])
        for k, (j, t) in enumerate(zip(idx, tensors)):
            bucket.states[j][key] = base[k].view(t.shape)
        return base

    def _store(self, bucket: Bucket, idx: list[int], name: str, stacked: torch.Tensor) -> None:
        """Make ``stacked`` (``[B, ...]``) the state ``name`` of parameters ``idx`` (as views).

        Row-major, whatever LAPACK returned (QR's Q is column-major): a resumed run restacks
        the state row-major, and matmuls round differently on other layouts."""
        key = bucket.key(name)
        stacked = stacked.contiguous()
        for k, j in enumerate(idx):
            bucket.states[j][key] = stacked[k]

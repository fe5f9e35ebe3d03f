"""Gradient utilities: clipping, noise, momentum, sign and cautious masking."""

from __future__ import annotations

import torch

from ..core import Bucket, Hyper, Slot, Transform, finite, non_negative, positive, unit_interval, zeros_state
from ..core import Scalar
from .apply import mix_seed, seed_for
from typing import Any, Sequence

__all__ = ["clip_by_global_norm", "clip_by_value", "add_noise", "trace", "scale_by_sign", "cautious"]


class clip_by_global_norm(Transform):  # noqa: N801 - optax-style transform name
    """Rescale all updates together when their joint norm exceeds ``max_norm`` (Pascanu et al.
    2013, arXiv 1211.5063):

        u = u * max_norm / max(||u||, max_norm),   ||u|| = sqrt(sum_i ||u_i||²)

    The norm is over one bucket: the tensors of one param group that share device and dtype (all
    of the group's in a single-dtype model; whole tensors under FSDP2). Param groups are clipped
    separately. No host sync. Reads ``max_norm``.

    Args:
        max_norm: the largest joint norm let through, a finite number > 0 (or a schedule
            ``f(t)``). The default of the ``max_norm`` hyperparameter.

    Examples:
        Two tensors with joint gradient norm 5 (3 and 4) are both scaled by ``max_norm / 5``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
        >>> tx = hc.chain(T.clip_by_global_norm(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([a, b], tx, lr=1.0, max_norm=1.0)
        >>> a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
        >>> opt.step()
        >>> a.data, b.data
        (tensor([-0.6000,  0.0000]), tensor([-0.8000]))
    """

    name = "clip_by_global_norm"

    def __init__(self, max_norm: Scalar = 1.0):
        self.hyperparams = {"max_norm": Hyper(max_norm, positive)}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        max_norm = bucket.hp("max_norm")
        total = torch.stack(bucket.norms(updates)).square().sum().sqrt()
        factor = max_norm / torch.clamp(total, min=max_norm)
        return torch._foreach_mul(updates, factor)


class clip_by_value(Transform):  # noqa: N801
    """Clamp every component: ``u = clamp(u, -max_delta, max_delta)``. Reads ``max_delta``.

    Args:
        max_delta: the largest magnitude of a component, a finite number > 0 (or a schedule
            ``f(t)``). The default of the ``max_delta`` hyperparameter.

    Examples:
        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.clip_by_value(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1, max_delta=1.0)
        >>> p.grad = torch.tensor([0.5, -3.0])
        >>> opt.step()  # -0.1 * clamp(g, -1, 1)
        >>> p.data
        tensor([-0.0500,  0.1000])
    """

    name = "clip_by_value"

    def __init__(self, max_delta: Scalar = 1.0):
        self.hyperparams = {"max_delta": Hyper(max_delta, positive)}

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        d = bucket.hp("max_delta")
        out = torch._foreach_clamp_min(updates, -d)
        torch._foreach_clamp_max_(out, d)
        return out

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        d = bucket.hp("max_delta")
        return -d, d

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(u, s[0]), s[1])


class add_noise(Transform):  # noqa: N801
    """Annealed Gaussian gradient noise (Neelakantan et al. 2015, arXiv 1511.06807):

        u = u + n,   n ~ N(0, eta / (1 + t)^gamma),   t = 0, 1, 2, ... the update count

    The noise of a parameter is drawn from a generator seeded by a per-parameter seed (kept in the
    state, derived from ``seed`` and the parameter's position in the optimizer) and the step, so
    a resumed run draws the same noise. Reads ``noise_eta``, ``noise_gamma``. State: ``seed``.

    Args:
        eta: the variance of the noise at the first update, a finite number >= 0 (0: no noise;
            or a schedule ``f(t)``). The default of the ``noise_eta`` hyperparameter.
        gamma: the decay exponent of the variance, a finite number >= 0 (0: constant; or a
            schedule). The default of the ``noise_gamma`` hyperparameter.
        seed: an integer from which each parameter's noise seed is derived (with its position in
            the optimizer); not a hyperparameter. Default 0.

    Examples:
        With zero gradients each step moves the parameters by the noise alone, whose standard
        deviation is ``sqrt(eta / t^gamma)``: 0.1 at the first update, 0.083 at the second:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(10000))
        >>> opt = hc.ChainOptimizer([p], hc.chain(T.add_noise(eta=0.01, gamma=0.55), T.apply_updates()))
        >>> p.grad = torch.zeros_like(p)
        >>> for t in (1, 2):
        ...     before = p.detach().clone()
        ...     opt.step()
        ...     print(abs((p - before).std().item() - (0.01 / t**0.55) ** 0.5) < 2e-3)
        True
        True
    """

    name = "add_noise"

    def __init__(self, eta: Scalar = 0.01, gamma: Scalar = 0.55,
                 seed: int = 0):
        self.hyperparams = {"noise_eta": Hyper(eta, non_negative), "noise_gamma": Hyper(gamma, non_negative)}
        self.seed = seed

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"seed": Slot(int, init=None)}

    def init(self, bucket: Bucket) -> None:
        assert bucket.positions is not None  # an optimizer's bucket
        for i, s in zip(bucket.positions, bucket.states):
            s.setdefault(bucket.key("seed"), seed_for(self.seed, i))

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        std = (bucket.hp("noise_eta") / (bucket.step ** bucket.hp("noise_gamma"))) ** 0.5
        if not updates:
            return updates
        gen = torch.Generator(device=updates[0].device)
        out = []
        seeds: list[int] = [s[bucket.key("seed")] for s in bucket.states]
        for u, seed in zip(updates, seeds):
            gen.manual_seed(mix_seed(seed, bucket.step))
            out.append(torch.randn(u.shape, generator=gen, device=u.device, dtype=u.dtype).mul_(std).add_(u))
        return out


def closed_unit_interval(v: Any) -> str | None:
    """A check: a number in [0, 1] (torch's ``dampening``, RMSprop's ``alpha``)."""
    return None if finite(v) is None and 0 <= v <= 1 else "a number in [0, 1]"


class trace(Transform):  # noqa: N801
    """Heavy-ball momentum (Polyak 1964, "Some methods of speeding up the convergence of iteration
    methods"), or Nesterov's (Sutskever et al. 2013, ICML, "On the importance of initialization and
    momentum in deep learning") with ``nesterov``, with torch.optim.SGD's dampening ``d``:

        m_1 = u_1;   m_t = momentum * m_{t-1} + (1 - d) * u_t;   u = m   (Nesterov: u = u_t + momentum * m_t)

    The buffer starts as the first update itself, undampened, as in torch.optim.SGD (with ``d = 0``
    that is the zero-initialised ``m = momentum * 0 + u``). It is created at the first step with
    ``momentum != 0``; while ``momentum == 0`` the transform is the identity, keeps no buffer and
    ignores ``d`` (torch's SGD and RMSprop, whose default momentum is 0, keep no buffer either).
    Reads ``momentum`` (in [0, 1)) and ``dampening`` (in [0, 1], default 0). State:
    ``momentum_buffer``, created lazily.

    Args:
        momentum: the weight of the buffer, in [0, 1) (0: the identity; or a schedule ``f(t)``).
            The default of the ``momentum`` hyperparameter.
        nesterov: ``True`` for Nesterov's form ``u = u_t + momentum * m_t`` (a bool); not a
            hyperparameter. Default ``False``, heavy ball.
        dampening: ``d`` in [0, 1], the weight ``1 - d`` of each new update in the buffer (not
            of the first). The default of the ``dampening`` hyperparameter.

    Examples:
        Two unit gradients: ``m_1 = 1``, ``m_2 = 0.9 + 1 = 1.9``, so p moves by -(1 + 1.9):

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> tx = hc.chain(T.trace(0.9), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0)
        >>> for _ in range(2):
        ...     p.grad = torch.ones(1)
        ...     opt.step()
        >>> p.data
        tensor([-2.9000])
    """

    name = "trace"

    def __init__(self, momentum: Scalar = 0.9, nesterov: bool = False,
                 dampening: Scalar = 0.0):
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov: expected True or False, got {nesterov!r}")
        self.hyperparams = {"momentum": Hyper(momentum, unit_interval),
                            "dampening": Hyper(dampening, closed_unit_interval)}
        self.nesterov = nesterov

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"momentum_buffer": Slot(init=None)}  # created at the first step with momentum != 0

    def state_bytes(self, p: torch.Tensor, group: dict) -> int:
        momentum = group.get("momentum", self.hyperparams["momentum"].default)
        if isinstance(momentum, (int, float)) and momentum == 0:
            return 0  # no buffer while momentum is 0
        return super().state_bytes(p, group)

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        beta = bucket.hp("momentum")
        if beta == 0:
            return updates
        one_minus_d = 1 - bucket.hp("dampening")
        key = bucket.key("momentum_buffer")
        new = [i for i, s in enumerate(bucket.states) if key not in s]
        old = [i for i, s in enumerate(bucket.states) if key in s]
        if old:
            m_old = bucket.subset(old).state("momentum_buffer") if new else bucket.state("momentum_buffer")
            u_old = [updates[i] for i in old] if new else updates
            torch._foreach_mul_(m_old, beta)
            if one_minus_d == 1:
                torch._foreach_add_(m_old, u_old)
            else:
                torch._foreach_add_(m_old, u_old, alpha=one_minus_d)
        if new:  # the first step: m = u, not dampened
            bucket.subset(new).set_state("momentum_buffer", [updates[i].clone() for i in new])
        m = bucket.state("momentum_buffer")
        if self.nesterov:
            return torch._foreach_add(updates, m, alpha=beta)
        return m


    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        beta = bucket.hp("momentum")
        if beta == 0:
            return None  # the identity, and no buffer to hand the kernel: eager
        key = bucket.key("momentum_buffer")
        missing = [key not in s for s in bucket.states]
        if all(missing):  # the first step: zero buffers, and m = 0 m + 1 u = u (not dampened)
            bucket.init_state("momentum_buffer", zeros_state)
            return 0.0, 1.0, beta
        if any(missing):
            return None  # some buffers are new, some not: eager
        return beta, 1 - bucket.hp("dampening"), beta

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        (m,) = state
        m.mul_(s[0]).add_(s[1] * u)
        return u + s[2] * m if self.nesterov else m

    def __repr__(self) -> str:
        return f"trace(momentum{', nesterov' if self.nesterov else ''})"


class scale_by_sign(Transform):  # noqa: N801
    """``u = sign(u)`` (signSGD, Bernstein et al. 2018, arXiv 1802.04434; with ``trace`` before it,
    signum).

    It takes no arguments and reads no hyperparameter; ``sign(0) = 0``.

    Examples:
        Every weight moves by lr against the sign of its gradient, whatever its size:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.ones(3))
        >>> tx = hc.chain(T.scale_by_sign(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1)
        >>> p.grad = torch.tensor([0.3, -2.0, 0.0])
        >>> opt.step()
        >>> p.data
        tensor([0.9000, 1.1000, 1.0000])
    """

    name = "scale_by_sign"

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        return torch._foreach_sign(updates)

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return ()

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        return u.sign()


class cautious(Transform):  # noqa: N801
    """Cautious update (Liang et al. 2024, "Cautious Optimizers", arXiv 2411.16085): drop the
    components whose sign disagrees with the gradient and rescale the rest, per tensor:

        phi = 1[u * g > 0];   u = u * phi * numel(u) / (sum(phi) + 1)

    Place it where ``u`` still points along the gradient, i.e. before ``scale_by_learning_rate``
    (which negates). ``g`` is the parameter's gradient of this step. It takes no arguments and
    reads no hyperparameter.

    Examples:
        After momentum, step 1: ``m = g`` agrees everywhere, ``u = g * 3/4``; step 2:
        ``m = 0.5 * 1 + g = [1.5, 0.25, 0.25]`` disagrees with ``g`` in the last two components,
        which are dropped, and the first is scaled by 3/2:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(3))
        >>> tx = hc.chain(T.trace(0.5), T.cautious(), T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0)
        >>> for g in ([1.0, 1.0, 1.0], [1.0, -0.25, -0.25]):
        ...     p.grad = torch.tensor(g)
        ...     opt.step()
        >>> p.data  # -0.75 - 1.5 * 3/2 = -3; the others -0.75, then no move
        tensor([-3.0000, -0.7500, -0.7500])
    """

    name = "cautious"
    capturable = True

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        out = []
        for u, g in zip(updates, bucket.grads):
            phi = (u * g > 0).to(u.dtype)
            out.append(u * phi * (u.numel() / (phi.sum() + 1)))
        return out

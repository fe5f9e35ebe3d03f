"""Schedule-Free (Defazio et al. 2024, "The Road Less Scheduled", arXiv 2405.15682)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..core import LR, Bucket, Count, Hyper, Scalar, Slot, Transform, betas_pair, copy_state, finite, non_negative
from .foreach import add_scaled_, lerp_
from .apply import StochasticWriter
from .scaling import lr_hyperparams, warmed_up_lr

__all__ = ["schedule_free"]

_WEIGHT_LR = ("current", "max")


def _record(bucket: Bucket, name: str, value: Any) -> None:
    """Set the per-bucket number ``name`` (kept in every parameter's state) to ``value``; in a
    capturable optimizer, once it is a tensor, by copying into it (a replayed graph reads and
    writes the same memory)."""
    held = bucket.state(name)
    if bucket.capturable and all(isinstance(h, torch.Tensor) for h in held):
        torch._foreach_copy_(held, [value] * len(held))
    elif isinstance(value, torch.Tensor):  # one tensor per parameter: parameters step at different times
        bucket.set_state(name, [value.clone() for _ in bucket.params])
    else:
        bucket.set_state(name, [value] * len(bucket.params))


class schedule_free(Transform):  # noqa: N801 - optax-style transform name
    """Schedule-Free (Defazio et al. 2024, arXiv 2405.15682): replace the lr schedule by
    interpolation and averaging.

    Three sequences: z (the SGD-like iterate), x (the weighted average of z, evaluated at
    test time) and y = (1 - b1) z + b1 x (where the gradient is taken; the parameters hold y
    while training). With ``lr_t`` the warmed-up lr and ``c_t = w_t / sum_k w_k``,
    ``w_t = t^r lr_t^weight_lr_power`` (``weight_lr="current"``: HeavyBall's convention) or
    ``w_t = t^r (max_{k<=t} lr_k)^weight_lr_power`` (``weight_lr="max"``: the paper's sec. 3
    "Weighting" and the schedulefree package; a decaying lr then does not shrink the weights of
    later iterates), one step on the incoming update ``u`` is

        y = lerp(y, z, c_t) + lr_t (b1 (1 - c_t) - 1) u;   z = z - lr_t u

    which is the paper's x/z update rewritten on y, with no buffer for x. ``eval()`` sets the
    parameters to ``x = lerp(y, z, 1 - 1/b1)``, ``train()`` back to ``y = lerp(x, z, 1 - b1)``.

    Reads ``lr``, ``warmup_steps``, ``betas`` (b1 = betas[0]), ``r``, ``weight_lr_power``.
    State per parameter: ``z`` (compute dtype: fp32, fp64 for fp64 parameters), ``weight_sum``
    (a float; a 0-d tensor when ``lr`` is a tensor), ``train_mode`` and, with ``weight_lr="max"``,
    ``lr_max`` (like ``weight_sum``); bf16 parameters are written by stochastic rounding.

    Args:
        lr: the learning rate, >= 0: a number, a schedule ``f(t)`` or a one-element tensor. The
            default of the ``lr`` hyperparameter.
        betas: ``(b1, b2)``, each in [0, 1); this transform reads b1, the interpolation weight of
            y (0: y = z, plain SGD on the update, and ``eval()`` is refused: x is not kept). The
            default of the ``betas`` hyperparameter (whose b2 a preconditioner before it, such as
            ``scale_by_rms``, reads).
        warmup_steps: the length of the lr's linear warmup, an integer >= 0 (0: none). The
            default of the ``warmup_steps`` hyperparameter.
        r: the power of ``t`` in the weights ``w_t``, a finite number (0: no step weighting).
            The default of the ``r`` hyperparameter.
        weight_lr_power: the power of the lr in the weights ``w_t``, >= 0. The default of the
            ``weight_lr_power`` hyperparameter.
        seed: the seed of the stochastic rounding of bf16 parameters.
        weight_lr: ``"current"`` or ``"max"``: which lr weighs ``w_t`` (a constructor option,
            not a hyperparameter).

    Examples:
        With a constant lr the weights are equal, ``c_t = 1 / t``, and ``x`` is the mean of the
        z's; here ``z_t = 1 - 0.1 t`` and ``y = 0.1 z + 0.9 x``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = hc.ChainOptimizer([p], hc.chain(T.schedule_free()), lr=0.1, betas=(0.9, 0.99))
        >>> for _ in range(2):
        ...     p.grad = torch.ones(1); opt.step()
        >>> p.data                       # y = 0.1 * 0.8 + 0.9 * (0.9 + 0.8) / 2
        tensor([0.8450])
        >>> _ = opt.eval(); p.data       # x
        tensor([0.8500])
    """

    name = "schedule_free"
    writes_params = True
    capturable = True

    def __init__(self, lr: LR = 0.0025,
                 betas: Sequence[Scalar] = (0.9, 0.99), warmup_steps: Count = 0,
                 r: Scalar = 0.0, weight_lr_power: Scalar = 2.0, seed: int = 0, weight_lr: str = "current") -> None:
        if weight_lr not in _WEIGHT_LR:
            raise ValueError(f"weight_lr: expected 'current' or 'max', got {weight_lr!r}")
        self.weight_lr = weight_lr
        self.hyperparams = {
            **lr_hyperparams(lr, warmup_steps),
            "betas": Hyper(tuple(betas), betas_pair),
            "r": Hyper(r, finite),
            "weight_lr_power": Hyper(weight_lr_power, non_negative),
        }
        self.writer = StochasticWriter(seed)

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        scalar = Slot((float, torch.Tensor), shape=(), dtype=torch.float64, init=lambda p: 0.0)
        out = {"z": Slot(init=copy_state), "weight_sum": scalar, "train_mode": Slot(bool, init=lambda p: True),
               **self.writer.slots(bucket)}
        if self.weight_lr == "max":
            out["lr_max"] = scalar  # the largest lr_t so far (lr_t >= 0, so 0 is "none yet")
        return out

    def init(self, bucket: Bucket) -> None:
        super().init(bucket)
        self.writer.init(bucket)

    def check_step(self, bucket: Bucket) -> None:
        self.writer.check_step(bucket)
        key = bucket.key("train_mode")
        if not all(s.get(key, True) for s in bucket.states):
            raise RuntimeError("step() called in eval mode: call optimizer.train() before training")

    def _coefficients(self, bucket: Bucket) -> tuple[Any, Any, Any]:
        """This step's ``(c_t, lr_t (b1 (1 - c_t) - 1), -lr_t)``; records the new weight sum. With a
        tensor lr they are 0-d fp64 tensors (no host synchronisation; fp64, so they round as the
        Python floats of a float lr do)."""
        lr = warmed_up_lr(bucket)
        if isinstance(lr, torch.Tensor):
            lr = lr.to(torch.float64)
        b1 = bucket.hp("betas")[0]
        weight_lr = lr if self.weight_lr == "current" else self._lr_max(bucket, lr)
        weight = bucket.t ** bucket.hp("r") * weight_lr ** bucket.hp("weight_lr_power")
        weight_sum = bucket.states[0][bucket.key("weight_sum")] + weight
        c: Any
        if isinstance(weight_sum, torch.Tensor):
            c = torch.where(weight_sum > 0, weight / weight_sum, torch.zeros_like(weight_sum))
        else:
            c = weight / weight_sum if weight_sum > 0 else 0.0
        _record(bucket, "weight_sum", weight_sum)
        return c, lr * (b1 * (1 - c) - 1), -lr

    @staticmethod
    def _lr_max(bucket: Bucket, lr: Any) -> Any:
        """``max(lr_max, lr_t)``, recorded; a 0-d fp64 tensor once either is a tensor (no sync)."""
        previous = bucket.states[0][bucket.key("lr_max")]
        lr_max: Any
        if isinstance(lr, torch.Tensor):
            lr_max = torch.maximum(previous, lr) if isinstance(previous, torch.Tensor) else lr.clamp_min(previous)
        elif isinstance(previous, torch.Tensor):
            lr_max = previous.clamp_min(lr)
        else:
            lr_max = max(lr, previous)
        _record(bucket, "lr_max", lr_max)
        return lr_max

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        c, k, minus_lr = self._coefficients(bucket)
        y, z = bucket.params_compute(), bucket.state("z")
        # a tensor lr or step: tensor coefficients, no host synchronisation (addcmul by a 0-d tensor
        # rounds as add(alpha=k) does)
        lerp_(y, z, c)
        add_scaled_(y, updates, k)
        add_scaled_(z, updates, minus_lr)
        self.writer.write(bucket, y)
        return updates


    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        if bucket.params[0].dtype != bucket.dtype:  # bf16 parameters: stochastic rounding, eager
            return None
        return self._coefficients(bucket)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        (z,) = state
        p.lerp_(z, s[0]).add_(s[1] * u)
        z.add_(s[2] * u)
        return u

    def _swap(self, bucket: Bucket, to_train: bool) -> None:
        if all(m == to_train for m in bucket.state("train_mode")):
            return
        b1 = bucket.hp("betas")[0]
        if b1 == 0:  # y = z: the average x is not kept, so there is nothing to swap in
            raise ValueError("schedule_free: eval()/train() need betas[0] > 0: with betas[0] = 0 the "
                             "parameters hold z and the average x cannot be recovered from them")
        p, z = bucket.params_compute(), bucket.state("z")
        torch._foreach_lerp_(p, z, (1 - b1) if to_train else (1 - 1 / b1))
        self.writer.write(bucket, p, stream=2 if to_train else 1)
        bucket.set_state("train_mode", [to_train] * len(bucket.params))

    def __repr__(self) -> str:
        base = super().__repr__()
        return base if self.weight_lr == "current" else base[:-1] + ", weight_lr=max)"

    def eval(self, bucket: Bucket) -> None:
        """Parameters y -> x (the averaged iterate, for evaluation and saving)."""
        self._swap(bucket, to_train=False)

    def train(self, bucket: Bucket) -> None:
        """Parameters x -> y (where gradients are taken)."""
        self._swap(bucket, to_train=True)

"""Schedule-Free (Defazio et al. 2024, "The Road Less Scheduled", arXiv 2405.15682)."""

from __future__ import annotations

import torch

from ..core import Bucket, Hyper, Transform, betas_pair, non_negative, non_negative_int
from .apply import StochasticWriter

__all__ = ["schedule_free"]


def _is_real(v) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
    return None if ok else "a finite number"


class schedule_free(Transform):  # noqa: N801 - optax-style transform name
    """Schedule-Free: replace the lr schedule by interpolation and averaging.

    Three sequences: z (the SGD-like iterate), x (the weighted average of z, evaluated at
    test time) and y = (1 - b1) z + b1 x (where the gradient is taken; the parameters hold y
    while training). With ``lr_t`` the warmed-up lr and ``c_t = w_t / sum_k w_k``,
    ``w_t = t^r lr_t^weight_lr_power`` (paper, sec. 3 "Weighting", with HeavyBall's current lr
    in place of the paper's max lr), one step on the incoming update ``u`` is

        y = lerp(y, z, c_t) + lr_t (b1 (1 - c_t) - 1) u;   z = z - lr_t u

    which is the paper's x/z update rewritten on y, with no buffer for x. ``eval()`` sets the
    parameters to ``x = lerp(y, z, 1 - 1/b1)``, ``train()`` back to ``y = lerp(x, z, 1 - b1)``.

    Reads ``lr``, ``warmup_steps``, ``betas`` (b1 = betas[0]), ``r``, ``weight_lr_power``.
    State per parameter: ``z`` (fp32, whatever the parameter dtype), ``weight_sum`` and
    ``train_mode``; bf16 parameters are written by stochastic rounding.
    """

    name = "schedule_free"
    writes_params = True

    def __init__(self, lr=0.0025, betas=(0.9, 0.99), warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, seed: int = 0):
        self.hyperparams = {
            "lr": Hyper(lr, non_negative),
            "betas": Hyper(tuple(betas), betas_pair),
            "warmup_steps": Hyper(warmup_steps, non_negative_int),
            "r": Hyper(r, _is_real),
            "weight_lr_power": Hyper(weight_lr_power, non_negative),
        }
        self.writer = StochasticWriter(seed)

    def init(self, bucket: Bucket) -> None:
        bucket.init_state("z", lambda p: p.detach().to(torch.float32, copy=True))
        bucket.init_state("weight_sum", lambda p: 0.0)
        bucket.init_state("train_mode", lambda p: True)
        self.writer.init(bucket)

    def _lr(self, bucket: Bucket) -> float:
        lr, warmup = bucket.hp("lr"), bucket.hp("warmup_steps")
        return lr * min(bucket.step / warmup, 1) if warmup > 0 else lr

    def _coefficients(self, bucket: Bucket) -> tuple[float, float, float]:
        """This step's ``(c_t, lr_t (b1 (1 - c_t) - 1), -lr_t)``; records the new weight sum."""
        if not all(bucket.state("train_mode")):
            raise RuntimeError("step() called in eval mode: call optimizer.train() before training")
        lr = self._lr(bucket)
        b1 = bucket.hp("betas")[0]
        weight = bucket.step ** bucket.hp("r") * lr ** bucket.hp("weight_lr_power")
        weight_sum = bucket.states[0][bucket.key("weight_sum")] + weight
        c = weight / weight_sum if weight_sum > 0 else 0.0
        bucket.set_state("weight_sum", [weight_sum] * len(bucket.params))
        return c, lr * (b1 * (1 - c) - 1), -lr

    def update(self, updates, bucket):
        c, k, minus_lr = self._coefficients(bucket)
        y, z = bucket.params_fp32(), bucket.state("z")
        torch._foreach_lerp_(y, z, c)
        torch._foreach_add_(y, updates, alpha=k)
        torch._foreach_add_(z, updates, alpha=minus_lr)
        self.writer.write(bucket, y)
        return updates

    fused_state = ("z",)

    def fuse(self, bucket):
        if bucket.params[0].dtype != torch.float32:  # bf16 parameters: stochastic rounding, eager
            return None
        return self._coefficients(bucket)

    def fused(self, u, p, state, s):
        (z,) = state
        p.lerp_(z, s[0]).add_(s[1] * u)
        z.add_(s[2] * u)
        return u

    def _swap(self, bucket: Bucket, to_train: bool) -> None:
        if all(m == to_train for m in bucket.state("train_mode")):
            return
        b1 = bucket.hp("betas")[0]
        if b1 > 0:  # with b1 = 0, x = y
            p, z = bucket.params_fp32(), bucket.state("z")
            torch._foreach_lerp_(p, z, (1 - b1) if to_train else (1 - 1 / b1))
            self.writer.write(bucket, p, stream=2 if to_train else 1)
        bucket.set_state("train_mode", [to_train] * len(bucket.params))

    def eval(self, bucket: Bucket) -> None:
        """Parameters y -> x (the averaged iterate, for evaluation and saving)."""
        self._swap(bucket, to_train=False)

    def train(self, bucket: Bucket) -> None:
        """Parameters x -> y (where gradients are taken)."""
        self._swap(bucket, to_train=True)

    def state_bytes(self, p, group):
        return 4 * p.numel()

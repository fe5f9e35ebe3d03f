"""Train one optimizer on one task and record what the report needs."""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

from .optimizers import default_lr, make_optimizer, set_eval, state_bytes
from .tasks import make_task

__all__ = ["run", "CHECKPOINTS"]

CHECKPOINTS = (0.1, 0.25, 0.5, 0.75)  # then 'final', the mean over the last 10% of steps


def _window_mean(losses: list[float], end: int, width: int) -> float:
    window = losses[max(0, end - width):end]
    return sum(window) / len(window) if window else float("nan")


def run(task_name: str, optimizer: str, steps: int, lr: float | None, seed: int, compile: bool = False,
        text: bytes | None = None, progress: Callable[[int], None] | None = None, lr_factor: float = 1.0) -> dict:
    """One training run at ``lr_factor * lr``; ``lr=None`` takes the optimizer's default times the task's
    ``lr_scale``. Losses are deterministic for a given seed; times are not."""
    torch.manual_seed(seed)
    task = make_task(task_name, seed, text)
    lr = lr_factor * (lr if lr is not None else default_lr(optimizer) * task.lr_scale)
    params = [p for p in task.model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, task.model, lr, compile)
    n_params = sum(p.numel() for p in params)
    losses: list[float] = []
    seconds: list[float] = []
    step_times: list[float] = []
    start = time.perf_counter()
    diverged = False
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = task.train_loss(i)
        loss.backward()
        t = time.perf_counter()
        opt.step()
        step_times.append(time.perf_counter() - t)
        value = loss.item()
        losses.append(value)
        seconds.append(time.perf_counter() - start)
        if progress is not None:
            progress(i + 1)
        if not math.isfinite(value):
            diverged = True
            break
    set_eval(opt, True)
    with torch.no_grad():
        heldout = task.heldout_loss() if not diverged else float("nan")
    set_eval(opt, False)
    width = max(1, steps // 10)
    return {
        "task": task_name,
        "task_description": task.describe,
        "optimizer": optimizer,
        "lr": lr,
        "steps": steps,
        "seed": seed,
        "diverged": diverged,
        "checkpoints": {f"{int(c * 100)}%": _window_mean(losses, int(round(c * steps)), width) for c in CHECKPOINTS},
        "final_train": _window_mean(losses, len(losses), width) if not diverged else float("nan"),
        "heldout": heldout,
        "median_step_ms": 1e3 * statistics.median(step_times),
        "state_bytes_per_param": state_bytes(opt) / n_params,
        "params": n_params,
        "points": [{"step": i + 1, "loss": l, "seconds": s} for i, (l, s) in enumerate(zip(losses, seconds))],
    }

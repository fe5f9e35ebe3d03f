"""The model, data and training loop shared by the distributed workers and the single-process
references (tests/test_distributed.py)."""

from __future__ import annotations

import torch

STEPS = 6
GLOBAL_BATCH = 8
# presets run at their defaults, with a visible weight decay and warmup
KWARGS: dict[str, dict] = {}


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3)
        self.fc1 = torch.nn.Linear(4 * 4 * 4, 6)
        self.fc2 = torch.nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.conv(x)).flatten(1)
        return self.fc2(torch.tanh(self.fc1(h)))


def make_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return Model().to(dtype)


def batch(step: int):
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(GLOBAL_BATCH, 2, 6, 6, generator=g), torch.randn(GLOBAL_BATCH, 3, generator=g)


def train(model, opt, steps, rank=0, world=1, start=0):
    """Each rank takes its contiguous slice of the global batch; the loss is a mean, so the
    averaged gradient equals the full-batch gradient."""
    dtype = next(model.parameters()).dtype
    per = GLOBAL_BATCH // world
    losses = []
    for i in range(start, start + steps):
        x, y = batch(i)
        x, y = x[rank * per:(rank + 1) * per].to(dtype), y[rank * per:(rank + 1) * per]
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses

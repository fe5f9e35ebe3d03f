"""The model, data and training loop shared by the distributed workers and the single-process
references (tests/test_distributed.py)."""

from __future__ import annotations

import torch

import heavyball_chain as hc

STEPS = 6
GLOBAL_BATCH = 16
# Presets run at their defaults; SOAP with max_precond_dim=16 so that every Kronecker factor it
# keeps is full rank from the first gradient (see Model).
KWARGS: dict[str, dict] = {name: {"max_precond_dim": 16} for name in (
    "ForeachSOAP", "PaLMForeachSOAP", "PrecondScheduleForeachSOAP", "PrecondSchedulePaLMForeachSOAP",
    "SFPaLMForeachSOAP", "PrecondScheduleSFPaLMForeachSOAP", "SOAP")}
# Defaults, except where 6 steps at the default lr would move the weights too little to compare.
KWARGS.update(SGD={"lr": 0.02, "momentum": 0.9}, Lion={"lr": 1e-3}, RAdam={"lr": 3e-3})
# The largest move of one step, in units of lr, for the bound of the bf16 test: 1 for the
# sign-like adaptive steps (|m̂ / √v̂| <= 1 roughly); RMSprop's first step divides g by
# √(1 - alpha) |g| = 0.1 |g|, a move of 10 lr.
STEP_IN_LR = {"RMSprop": 10.0}
# Every preset, with Muon through MuonWithAdamW: torch's Muon takes only 2-D parameters and the
# model has biases and a conv kernel (which MuonWithAdamW gives to AdamW).
NAMES = [*hc.presets.HEAVYBALL, *(n for n in hc.presets.STANDARD if n != "Muon"), "MuonWithAdamW"]
# The bf16 and torch.distributed.checkpoint runs (the slow half of the worker) are for the presets
# whose state is of another kind: HeavyBall's (the originals), and among the drop-ins those with
# Python numbers (NAdam's mu_product, schedule-free's weight sums), state created from a group
# value (Adagrad), tensors not shaped like the parameter (Adafactor's factors, SOAP's matrices),
# partitions (MARS, MuonWithAdamW). The other drop-ins (SGD, Adam, AdamW, RAdam, Adamax,
# RMSprop, Lion, ADOPT, AdEMAMix) keep parameter-shaped tensors, as ForeachAdamW does, through
# the same code.
STATE_KINDS = [*hc.presets.HEAVYBALL, "NAdam", "AdamWScheduleFree", "Adagrad", "Adafactor", "SOAP", "MARS",
               "MuonWithAdamW"]


def make_opt(name, model, **kwargs):
    """Preset ``name`` over ``model`` (MuonWithAdamW takes the model itself: it routes by module)."""
    kwargs = {**KWARGS.get(name, {}), **kwargs}
    cls = getattr(hc, name)
    return cls(model, **kwargs) if name == "MuonWithAdamW" else cls(model.parameters(), **kwargs)


def lr_of(name) -> float:
    """The lr the distributed runs use for ``name``."""
    import inspect

    return KWARGS.get(name, {}).get("lr", inspect.signature(getattr(hc, name)).parameters["lr"].default)


class Model(torch.nn.Module):
    """A conv weight [8, 2, 2, 2] (merged to 8 x 8), a [8, 32] matrix (only its 8 x 8 factor is
    kept at max_precond_dim=16) and an 8 x 8 matrix, plus biases. A factor built from one gradient
    of a matrix wider than the batch is rank deficient, and SOAP then turns rounding-level
    gradient differences into large ones (its eigenbasis is not unique); these shapes avoid that,
    so a distributed run can be compared with a single process at all."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 8, 2)
        self.fc1 = torch.nn.Linear(8 * 2 * 2, 8)
        self.fc2 = torch.nn.Linear(8, 8)

    def forward(self, x):
        h = torch.tanh(self.conv(x)).flatten(1)
        return self.fc2(torch.tanh(self.fc1(h)))


def make_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return Model().to(dtype)


def batch(step: int):
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(GLOBAL_BATCH, 2, 3, 3, generator=g), torch.randn(GLOBAL_BATCH, 8, generator=g)


def train(model, opt, steps, rank=0, world=1, start=0):
    """Each rank takes its contiguous slice of the global batch; the loss is a mean, so the
    averaged gradient equals the full-batch gradient (up to rounding)."""
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


def train_averaged(model, opt, steps, world=2, start=0):
    """One process, fed each step what ``world`` ranks running :func:`train` reduce their
    gradients to: the gradient of each rank's slice, computed alone (same shapes, hence the same
    kernels, as on that rank), summed and divided by ``world``. For world=2 that is bit for bit
    what DDP's all-reduce and FSDP2's reduce-scatter produce (a two-term sum does not depend on
    the order, and halving is exact), so the optimizer steps see identical gradients and a
    distributed run can be compared with this one exactly, without SOAP's amplification of
    the difference between a half-batch average and a full-batch mean (tests/test_distributed.py)."""
    params = [p for p in model.parameters() if p.requires_grad]
    per = GLOBAL_BATCH // world
    for i in range(start, start + steps):
        x, y = batch(i)
        grads = []
        for r in range(world):
            xr, yr = x[r * per:(r + 1) * per].to(params[0].dtype), y[r * per:(r + 1) * per]
            grads.append(torch.autograd.grad(torch.nn.functional.mse_loss(model(xr).float(), yr), params))
        opt.zero_grad()
        for p, *gs in zip(params, *grads):
            total = gs[0]
            for g in gs[1:]:
                total = total + g
            p.grad = total / world
        opt.step()

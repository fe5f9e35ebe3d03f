"""Helpers shared by the test modules: ``from helpers import ...`` (tests/ is on ``sys.path``:
pytest puts the directory of tests/conftest.py there, and tests/ has no ``__init__.py``).

The tiny model and its batches, the training loop, the preset lists, a thread-count context
manager, a free TCP port, LR-schedule wrappers of the drop-ins' tests, and the compiled-vs-eager
runs. Pytest configuration and fixtures are in tests/conftest.py; the criterion of the drop-ins'
tests against their references in tests/reference.py.
"""

from __future__ import annotations

import contextlib
import socket

import torch

import heavyball_chain as hc

PRESETS = [getattr(hc.presets, name) for name in hc.presets.HEAVYBALL]
STANDARD = [getattr(hc.presets, name) for name in hc.presets.STANDARD]


# --------------------------------------------------------------------------- model and batches


class Net(torch.nn.Module):
    """1-D, 2-D and 4-D parameters: a conv, a linear layer and their biases."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.fc = torch.nn.Linear(3 * 4 * 4, 5)
        self.to(dtype)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def make_net(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return Net(dtype)


def batch(step, dtype=torch.float32):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8, 2, 6, 6, generator=g).to(dtype)
    y = torch.randn(8, 5, generator=g).to(dtype)
    return x, y


def loss_of(model, step, dtype=torch.float32):
    """The MSE loss of ``model`` on batch ``step``, computed in float32."""
    x, y = batch(step, dtype)
    return torch.nn.functional.mse_loss(model(x).float(), y.float())


def train(model, opt, steps, start=0, float32_loss=True):
    """Run ``steps`` steps on deterministic batches (``batch(start)`` onwards, in the parameters'
    dtype); return the last loss. The loss is computed in float32 (``loss_of``), or with
    ``float32_loss=False`` in the parameters' dtype (the float64 runs compared with float64
    oracles, whose gradients must not be rounded to float32)."""
    dtype = next(model.parameters()).dtype
    loss = None
    for i in range(start, start + steps):
        opt.zero_grad()
        if float32_loss:
            loss = loss_of(model, i, dtype)
        else:
            x, y = batch(i, dtype)
            loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return loss.item()


# --------------------------------------------------------------------------- environment


@contextlib.contextmanager
def num_threads(n: int):
    """``torch.set_num_threads(n)`` inside the block (or the decorated function), restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may take it before it
    is bound again: the callers retry once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- drop-ins' tests


def kwargs_id(kw):
    """A test id for a dict of keyword arguments: ``k=v,k=v``, or ``defaults`` when empty."""
    return ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults"


def with_decay(make, milestones=(15, 30), gamma=0.3):
    """``make`` with a MultiStepLR attached as ``opt.test_scheduler`` (stepped by ``step_scheduler``)."""
    def build(params):
        opt = make(params)
        opt.test_scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma)
        return opt
    return build


def step_scheduler(opt, step):
    """``every_step`` for ``reference.assert_matches``: steps ``with_decay``'s scheduler."""
    opt.test_scheduler.step()


# --------------------------------------------------------------------------- compile=True


def train_eager_and_compiled(cls, steps, **kw):
    """Two ``make_net()`` models, one trained ``steps`` steps with ``cls(params, **kw)``, the other
    with ``cls(params, compile=True, **kw)``. Returns ``(eager_model, eager_opt, compiled_model,
    compiled_opt)``; the caller compares them."""
    eager, compiled = make_net(), make_net()
    opt_e, opt_c = cls(eager.parameters(), **kw), cls(compiled.parameters(), compile=True, **kw)
    train(eager, opt_e, steps)
    train(compiled, opt_c, steps)
    return eager, opt_e, compiled, opt_c


def assert_compiled_equals_eager_step_by_step(cls, steps, atol=2e-6, **kw):
    """``cls(params, compile=True, **kw)`` against ``cls(params, **kw)`` one step at a time from
    the same state (the compiled twin gets the eager run's parameters and optimizer state before
    each step, so rounding differences are not amplified): after each of ``steps`` steps every
    parameter within ``atol``. Asserts that something was fused."""
    model, twin = make_net(0), make_net(0)
    opt, twin_opt = cls(model.parameters(), **kw), cls(twin.parameters(), compile=True, **kw)
    for i in range(steps):
        twin.load_state_dict(model.state_dict())
        twin_opt.load_state_dict(opt.state_dict())
        train(model, opt, 1, start=i)
        train(twin, twin_opt, 1, start=i)
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=atol)
    assert twin_opt._fuser._kernels

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import heavyball_chain as hc

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))

PRESETS = [getattr(hc.presets, name) for name in hc.presets.HEAVYBALL]
STANDARD = [getattr(hc.presets, name) for name in hc.presets.STANDARD]


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


def train(model, opt, steps, start=0):
    """Run ``steps`` steps on deterministic batches; return the last loss."""
    loss = None
    for i in range(start, start + steps):
        x, y = batch(i, next(model.parameters()).dtype)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).float(), y.float())
        loss.backward()
        opt.step()
    return loss.item()


@pytest.fixture(autouse=True)
def _drop_in_compile_tests_trace_with_aot_eager(request, monkeypatch):
    """The drop-ins' compile tests (tests/test_ref_*.py) check that each transform's fused form
    (``Transform.fused``, traced by dynamo as one graph) equals its eager ``update``. They run the
    graph with ``aot_eager``: no C++ build, ~0.3 s a preset where inductor takes 3-18 s on a cold
    cache (76 s for the 17 of them, measured). Inductor's code generation is tested on every
    HeavyBall preset in test_compiled.py, and here by the tests marked ``inductor``."""
    if not request.module.__name__.startswith("test_ref_") or request.node.get_closest_marker("inductor"):
        yield
        return
    from heavyball_chain.compiled import Fuser

    init = Fuser.__init__

    def traced_only(self, **options):
        init(self, **options)
        self.compile_options = {"fullgraph": True, "dynamic": True, "backend": "aot_eager"}

    monkeypatch.setattr(Fuser, "__init__", traced_only)
    yield


@pytest.fixture(params=PRESETS, ids=lambda c: c.__name__)
def preset(request):
    return request.param

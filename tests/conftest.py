"""Pytest configuration and fixtures only: the hypothesis profiles, the session's thread cap, the
``one_thread`` fixture, the drop-ins' compile tests traced with ``aot_eager`` and the ``preset``
fixture. The helpers the tests share (model, batches, training loop, preset lists, ...) are in
tests/helpers.py: ``from helpers import ...``."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from helpers import PRESETS

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))


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


@pytest.fixture
def one_thread(request):
    """``torch.set_num_threads(1)`` for the test, the previous count restored after. A module whose
    tests are tiny tensor ops uses it for all of them: ``pytestmark =
    pytest.mark.usefixtures("one_thread")`` (on a loaded 2-core machine a second OpenMP thread
    only makes each small op wait for a core). A module may set ``NUM_THREADS`` to run at another
    count (test_torch_generic.py: its TORCH_GENERIC_THREADS, 1 unless set)."""
    before = torch.get_num_threads()
    torch.set_num_threads(getattr(request.module, "NUM_THREADS", 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(params=PRESETS, ids=lambda c: c.__name__)
def preset(request):
    return request.param

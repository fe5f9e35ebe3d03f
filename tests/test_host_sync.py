"""A step reads no tensor value on the host and builds no tensor from Python data (CUDA readiness).

On CUDA, reading a value (``.item()``, ``bool(t)``, ``float(t)``, a Python branch on a tensor)
waits for the device, and ``torch.tensor(data, device=...)`` is a host-to-device copy that
cannot be captured in a CUDA graph. No GPU here, so the check runs a CPU step as it runs on
CUDA (``core.HOST_DEVICES`` emptied: the CPU-only check of a tensor lr's value is off) under
torch's profiler, which records ``aten::_local_scalar_dense`` / ``aten::is_nonzero`` for every
read and ``aten::lift_fresh`` for every tensor made from Python data. The lr is a 0-d tensor
(with a float lr, the numbers travel as kernel arguments, which is also free of copies).
"""

import inspect

import pytest
import torch
from helpers import PRESETS, STANDARD, make_net, train
from torch.profiler import profile

import heavyball_chain as hc
from heavyball_chain import core

SYNCS = {"aten::_local_scalar_dense", "aten::is_nonzero", "aten::item", "aten::lift_fresh"}
# refuse a tensor lr, as their references do (torch.optim's Muon and Adafactor)
NO_TENSOR_LR = {"Muon", "Adafactor"}


def _host_reads(preset, compile, monkeypatch, warmup=3, **extra):
    model = make_net(0)
    kwargs = {"lr": torch.tensor(1e-3), "compile": compile, **extra}
    opt = preset(model.parameters(), **kwargs)
    train(model, opt, warmup)  # ADOPT's first steps, SOAP's first preconditioner, compilation
    monkeypatch.setattr(core, "HOST_DEVICES", frozenset())
    with profile() as prof:
        train(model, opt, 2, start=warmup)
    return sorted({e.name for e in prof.events() if e.name in SYNCS and "step" in _stack(prof, e)})


def _stack(prof, event):
    """The names of ``event``'s enclosing ranges: the optimizer step, not the forward/backward."""
    names = []
    parent = event.cpu_parent
    while parent is not None:
        names.append(parent.name)
        parent = parent.cpu_parent
    return " ".join(names).lower()


@pytest.mark.parametrize("preset", PRESETS + [p for p in STANDARD if p.__name__ not in NO_TENSOR_LR],
                         ids=lambda c: c.__name__)
def test_eager_step_reads_no_tensor_value(preset, monkeypatch):
    assert _host_reads(preset, False, monkeypatch) == []


@pytest.mark.parametrize("name", ["ForeachAdamW", "ForeachLaProp", "ForeachADOPT", "PaLMForeachSFAdamW", "AdamW"])
def test_compiled_step_reads_no_tensor_value(name, monkeypatch):
    import heavyball_chain as hc
    assert _host_reads(getattr(hc.presets, name), True, monkeypatch) == []


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", hc.presets.CAPTURABLE)
def test_capturable_step_reads_no_tensor_value(name, compile, monkeypatch):
    """With a tensor step (capturable=True) too: warmup and PaLM's beta2 on the device."""
    if compile and name not in ("ForeachLaProp", "PaLMForeachSFAdamW"):
        pytest.skip("two compiled presets cover the fused path (compilation takes seconds)")
    takes_warmup = "warmup_steps" in inspect.signature(getattr(hc.presets, name)).parameters
    extra = {"warmup_steps": 10} if takes_warmup else {}
    assert _host_reads(getattr(hc.presets, name), compile, monkeypatch, capturable=True, **extra) == []


def test_the_probe_sees_a_read(monkeypatch):
    """The check is live: a transform that reads a value in its step is caught."""
    import heavyball_chain as hc
    from heavyball_chain import transforms as T

    class reads(T.scale):  # noqa: N801
        name = "reads"

        def update(self, updates, bucket):
            if updates[0].sum() > 0:  # a Python branch on a tensor value
                pass
            return super().update(updates, bucket)

    make = lambda ps, lr, compile: hc.ChainOptimizer(  # noqa: E731
        ps, hc.chain(reads(1.0), T.scale_by_learning_rate(lr), T.apply_updates()), compile=compile)
    assert "aten::is_nonzero" in _host_reads(make, False, monkeypatch)

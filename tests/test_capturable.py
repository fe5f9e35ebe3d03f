"""``capturable=True``: a step that a CUDA graph can capture once and replay.

No GPU here: tests/graph_replay.py records the aten ops of one step and replays them on the same
tensors, with every number frozen as at the capture, which is what a CUDA graph does. A
capturable optimizer replayed for many steps must equal the same optimizer stepped eagerly, bit
for bit, through warmup ends, PaLM's growing beta2, schedule-free weights and an lr changed in
place between replays; the non-capturable optimizer, replayed the same way, departs (the check is
live). tests/test_host_sync.py checks that a capturable step reads no tensor on the host.
"""

import pytest
import torch
from helpers import make_net
from graph_replay import capture

import heavyball_chain as hc
from heavyball_chain import presets as P
from heavyball_chain import transforms as T

WARMUP, REPLAYS = 3, 12

CONFIGS = {
    "ForeachAdamW": (P.ForeachAdamW, {}),
    "ForeachAdamW-warmup": (P.ForeachAdamW, {"warmup_steps": 8, "weight_decay": 0.1}),
    "ForeachAdamW-cautious": (P.ForeachAdamW, {"cautious": True}),
    "ForeachLaProp": (P.ForeachLaProp, {"warmup_steps": 5}),
    "ForeachADOPT": (P.ForeachADOPT, {}),
    "ForeachSFAdamW": (P.ForeachSFAdamW, {"warmup_steps": 8, "r": 0.5}),
    "PaLMForeachSFAdamW": (P.PaLMForeachSFAdamW, {}),
    "Adam-amsgrad": (P.Adam, {"amsgrad": True, "weight_decay": 0.01}),
    "Adam-maximize": (P.Adam, {"maximize": True}),
    "AdamW": (P.AdamW, {}),
    "ADOPT": (P.ADOPT, {}),
    "AdamWScheduleFree": (P.AdamWScheduleFree, {"warmup_steps": 8}),
}


def _grads(model, step):
    g = torch.Generator().manual_seed(1000 + step)
    for p in model.parameters():  # written into the same tensors every step, as a captured backward does
        new = torch.randn(p.shape, generator=g)
        if p.grad is None:
            p.grad = new
        else:
            p.grad.copy_(new)


def _make(cls, kwargs, capturable, lr):
    model = make_net(0)
    return model, cls(model.parameters(), lr=lr, capturable=capturable, **kwargs)


def _replayed_against_eager(cls, kwargs, capturable_replayed=True):
    """Returns (replayed model, eager model) after WARMUP eager steps, one captured step and
    REPLAYS replays, the lr (a tensor) decayed in place before every step."""
    lr_r, lr_e = torch.tensor(3e-3), torch.tensor(3e-3)
    replayed, opt_r = _make(cls, kwargs, capturable_replayed, lr_r)
    eager, opt_e = _make(cls, kwargs, True, lr_e)
    for step in range(WARMUP):
        for m, o in ((replayed, opt_r), (eager, opt_e)):
            _grads(m, step)
            o.step()
    graph = None
    for step in range(WARMUP, WARMUP + 1 + REPLAYS):
        for lr in (lr_r, lr_e):
            lr.mul_(0.95)
        _grads(replayed, step)
        _grads(eager, step)
        if graph is None:
            graph = capture(opt_r.step)
        else:
            graph.replay()
        opt_e.step()
    return replayed, opt_r, eager, opt_e


@pytest.mark.parametrize("name", list(CONFIGS))
def test_replayed_steps_equal_eager_steps(name):
    cls, kwargs = CONFIGS[name]
    replayed, opt_r, eager, opt_e = _replayed_against_eager(cls, kwargs)
    start = make_net(0)
    for a, b, p0 in zip(replayed.parameters(), eager.parameters(), start.parameters()):
        assert torch.equal(a, b), name
        assert (a - p0).abs().max() > 1e-3  # both moved
    for p in replayed.parameters():  # the device step counted the replays
        assert opt_r.state[p]["step"].item() == WARMUP + 1 + REPLAYS


def test_a_step_computed_on_the_host_departs_when_replayed():
    """The emulation is live: without capturable the debiased betas and the schedule-free weight
    are computed on the host, frozen in the captured step, and the replayed run departs."""
    for cls in (P.ForeachAdamW, P.PaLMForeachSFAdamW):
        replayed, _, eager, _ = _replayed_against_eager(cls, {}, capturable_replayed=False)
        gap = max((a - b).abs().max().item() for a, b in zip(replayed.parameters(), eager.parameters()))
        assert gap > 1e-5, cls.__name__


@pytest.mark.parametrize("skipping", [False, True], ids=["every-step", "skipping"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_capturable_equals_the_default_step(name, skipping):
    """capturable=True computes the same numbers as the default step (on the device, in fp64, as
    the host computes them): equal bit for bit here, at 1 and 2 threads.

    ``skipping``: a parameter without a gradient at odd steps takes fewer steps than the others,
    and the capturable run resumes from a checkpoint mid-run. The schedule-free weight sum was one
    tensor shared by a bucket's parameters once capturable, so the others advanced it for the
    skipping one (7e-3 from the default step after 9 steps), and a resumed run (load_state_dict
    copies each entry) departed from the uninterrupted one."""
    cls, kwargs = CONFIGS[name]
    runs = []
    for capturable in (False, True):
        model, opt = _make(cls, kwargs, capturable, torch.tensor(3e-3))
        for step in range(10):
            _grads(model, step)
            if skipping and step % 2:
                next(model.parameters()).grad = None
            opt.step()
            if skipping and capturable and step == 4:
                state = opt.state_dict()
                opt = cls(model.parameters(), lr=torch.tensor(3e-3), capturable=True, **kwargs)
                opt.load_state_dict(state)
        runs.append(model)
    for a, b in zip(*(m.parameters() for m in runs)):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_compiled_and_eager_capturable_steps_agree(compile):
    model, opt = _make(P.ForeachAdamW, {"warmup_steps": 4}, True, torch.tensor(3e-3))
    ref, ref_opt = _make(P.ForeachAdamW, {"warmup_steps": 4}, False, torch.tensor(3e-3))
    opt.compile = compile
    opt._fuser = hc.compiled.Fuser() if compile else None
    for step in range(6):
        for m, o in ((model, opt), (ref, ref_opt)):
            _grads(m, step)
            o.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # the fused kernel rounds as fp32 allows


def test_compiled_capturable_step_passes_no_changing_number_to_its_kernels(monkeypatch):
    """What a CUDA graph would freeze in the compiled step: the numbers the fused kernels read are
    written into their device buffer, Python numbers as kernel arguments (frozen by a capture) and
    tensors by a device copy. In a capturable optimizer the Python numbers are the same at every
    step (every number that changes is a tensor); in the default one they change."""
    seen = []
    real = hc.compiled.Fuser._scalar_buffer

    def spy(self, key, values, device, dtype):
        seen.append([v for v in values if not isinstance(v, torch.Tensor)])
        return real(self, key, values, device, dtype)

    monkeypatch.setattr(hc.compiled.Fuser, "_scalar_buffer", spy)
    for capturable in (True, False):
        seen.clear()
        model, opt = _make(P.ForeachLaProp, {"warmup_steps": 20}, capturable, torch.tensor(3e-3))
        opt.compile, opt._fuser = True, hc.compiled.Fuser()
        for step in range(5):
            _grads(model, step)
            opt.step()
        assert len(seen) == 5
        assert (seen[3] == seen[4]) == capturable, seen[3:]


# --------------------------------------------------------------------------- what is refused


def test_chains_that_cannot_be_captured_are_refused_naming_the_transform():
    params = list(make_net(0).parameters())
    with pytest.raises(ValueError, match="capturable=True: soap_precondition"):
        hc.ChainOptimizer(params, hc.chain(T.soap_precondition(), T.scale_by_learning_rate(), T.apply_updates()),
                          capturable=True)
    with pytest.raises(ValueError, match="scale_by_nadam"):
        P.NAdam(params, capturable=True)
    with pytest.raises(TypeError, match="capturable"):
        P.ForeachAdamW(params, capturable=1)
    with pytest.raises(TypeError, match="capturable"):
        P.ForeachSOAP(params, capturable=True)  # the SOAP presets do not take it


@pytest.mark.parametrize("name", P.HEAVYBALL + P.STANDARD)
def test_the_capturable_presets_are_those_listed(name):
    """presets.CAPTURABLE take capturable=True and step; the others do not take the argument
    (TypeError) or, for torch.optim's signatures, refuse it naming the transform (ValueError)."""
    cls = getattr(P, name)
    model = make_net(0)
    if name in P.CAPTURABLE:
        opt = cls(model.parameters(), capturable=True)
        _grads(model, 0)
        opt.step()
        assert all(isinstance(s["step"], torch.Tensor) for s in opt.state.values())
    else:
        with pytest.raises((TypeError, ValueError), match="capturable"):
            cls(model.parameters(), capturable=True)


def test_bf16_parameters_are_refused_before_the_step_changes_anything():
    """Stochastic rounding seeds its random bits on the host from the step: not capturable."""
    model = make_net(0, dtype=torch.bfloat16)
    opt = P.ForeachAdamW(model.parameters(), capturable=True)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="bf16"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not any(opt.state.values())


# --------------------------------------------------------------------------- checkpoints


def test_checkpoints_move_between_capturable_and_default_optimizers():
    """After replays the device step is the truth; a checkpoint saved then resumes exactly in a
    capturable or a default optimizer (the step becomes an int), and the other way round."""
    replayed, opt_r, _, _ = _replayed_against_eager(P.ForeachADOPT, {"warmup_steps": 30})
    sd = opt_r.state_dict()
    lr = float(opt_r.param_groups[0]["lr"])
    finals = []
    for capturable in (True, False):
        model = make_net(0)
        model.load_state_dict(replayed.state_dict())
        opt = P.ForeachADOPT(model.parameters(), lr=torch.tensor(lr), warmup_steps=30, capturable=capturable)
        opt.load_state_dict(sd)
        step = next(iter(opt.state.values()))["step"]
        assert (step.item() if capturable else step) == WARMUP + 1 + REPLAYS
        assert isinstance(step, torch.Tensor) == capturable
        for s in range(20, 24):
            _grads(model, s)
            opt.step()
        finals.append(model)
        if not capturable:  # and back: a default checkpoint into a capturable optimizer
            back = make_net(0)
            back.load_state_dict(model.state_dict())
            opt2 = P.ForeachADOPT(back.parameters(), lr=torch.tensor(lr), warmup_steps=30, capturable=True)
            opt2.load_state_dict(opt.state_dict())
            assert next(iter(opt2.state.values()))["step"].dtype == torch.float64
    for a, b in zip(*(m.parameters() for m in finals)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad, expected", [(torch.tensor(-1.0, dtype=torch.float64), "whole number"),
                                           (torch.tensor(2.5, dtype=torch.float64), "whole number"),
                                           (torch.tensor(3.0), "dtype"),
                                           (torch.tensor([3.0], dtype=torch.float64), "shape")])
def test_a_corrupt_step_tensor_is_refused_at_load(bad, expected):
    model = make_net(0)
    opt = P.ForeachAdamW(model.parameters(), capturable=True)
    _grads(model, 0)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["step"] = bad
    before = {k: v.clone() for k, v in opt.state[next(model.parameters())].items() if isinstance(v, torch.Tensor)}
    with pytest.raises(ValueError, match=expected):
        opt.load_state_dict(sd)
    after = opt.state[next(model.parameters())]
    assert all(torch.equal(after[k], v) for k, v in before.items())

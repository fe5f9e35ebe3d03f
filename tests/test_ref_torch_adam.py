"""Adam, AdamW, NAdam, RAdam, Adamax against torch.optim (the installed torch, 2.13), 50 steps at
rtol 1e-5 (``reference.assert_matches``), at 1 and 2 threads.

Measured largest relative differences, every case at 1 and at 2 threads: without weight decay or
with coupled decay 1.3e-8 .. 8.6e-7 (amsgrad 3.4e-7, a tensor lr under ExponentialLR 1.7e-7);
with decoupled decay 6.3e-7 .. 2.0e-6 (torch multiplies p by 1 - lr wd and then adds the step,
we add ``-lr (u + wd p)`` once: the same math, rounded differently).

Also: the moment options (``debias``, ``eps_mode``) agree with the default form where the math is
the same; ``cautious=True`` against a float64 oracle; ``cautious=False`` is the chain of before;
bad arguments; ``compile=True`` equals eager; exact resume from a state dict.
"""

import inspect
import warnings

import pytest
import torch

from helpers import assert_compiled_equals_eager_step_by_step, batch, make_net, num_threads, train
from reference import assert_matches, assert_resumes_exactly

import heavyball_chain as hc
from heavyball_chain import transforms as T
from heavyball_chain.presets.adam_family import ForeachADOPT, ForeachAdamW, ForeachLaProp
from heavyball_chain.presets.torch_adam import Adam, AdamW, Adamax, NAdam, RAdam
from heavyball_chain.transforms.moments import scale_by_adam, scale_by_adopt, scale_by_laprop, scale_by_rms

TORCH = {Adam: torch.optim.Adam, AdamW: torch.optim.AdamW, NAdam: torch.optim.NAdam, RAdam: torch.optim.RAdam,
         Adamax: torch.optim.Adamax}

CASES = [
    (Adam, {}),
    (Adam, {"lr": 1e-2, "weight_decay": 0.1}),
    (Adam, {"amsgrad": True, "lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6}),
    (Adam, {"maximize": True, "weight_decay": 0.1}),
    (Adam, {"decoupled_weight_decay": True, "weight_decay": 0.1, "lr": 1e-2}),
    (Adam, {"eps": 0.0, "foreach": True, "fused": False}),
    (AdamW, {}),
    (AdamW, {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True, "maximize": True}),
    (NAdam, {}),
    (NAdam, {"weight_decay": 0.1, "momentum_decay": 0.05}),
    (NAdam, {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True}),
    (RAdam, {}),
    (RAdam, {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (RAdam, {"betas": (0.9, 0.9), "weight_decay": 0.1, "maximize": True}),
    (Adamax, {}),
    (Adamax, {"lr": 1e-2, "weight_decay": 0.1, "maximize": True, "betas": (0.8, 0.99)}),
]


def _id(case):
    cls, kw = case
    return cls.__name__ + "".join(f"-{k}={v}" for k, v in kw.items())


# Every case was measured at 1 and 2 threads (the numbers above); the suite runs all of them at
# 1 thread and one case per preset at 2 (a 2-thread run costs much more on a loaded machine).
TWO_THREADS = {1, 7, 10, 12, 15}


@pytest.mark.parametrize("threads,case", [(1, c) for c in CASES] + [(2, CASES[i]) for i in sorted(TWO_THREADS)],
                         ids=[f"{_id(c)}-1t" for c in CASES] + [f"{_id(CASES[i])}-2t" for i in sorted(TWO_THREADS)])
def test_matches_torch(case, threads):
    cls, kw = case
    with num_threads(threads):
        assert_matches(lambda ps: cls(ps, **kw), lambda ps: TORCH[cls](ps, **kw))


@pytest.mark.parametrize("cls,kw", [(Adam, {}), (AdamW, {"weight_decay": 0.1}), (NAdam, {"decoupled_weight_decay": True,
                                                                                      "weight_decay": 0.1})],
                         ids=["Adam", "AdamW", "NAdamW"])
def test_tensor_lr_and_scheduler_match_torch(cls, kw):
    """A one-element tensor lr, changed in place by an LR scheduler every step (the decoupled decay
    ``1 - lr wd`` depends on it)."""
    schedulers = {}

    def every_step(opt, step):  # after each opt.step(); the scheduler is made (lr unchanged) after the first,
        with warnings.catch_warnings():  # so torch warns "scheduler.step() before optimizer.step()" once
            warnings.simplefilter("ignore")
            if opt not in schedulers:
                schedulers[opt] = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)
            schedulers[opt].step()

    with num_threads(1):
        assert_matches(lambda ps: cls(ps, lr=torch.tensor(1e-2), **kw),
                       lambda ps: TORCH[cls](ps, lr=torch.tensor(1e-2), **kw), every_step=every_step)


def test_signatures_match_torch():
    for ours, ref in TORCH.items():
        mine = inspect.signature(ours).parameters
        theirs = inspect.signature(ref).parameters
        assert [(n, p.kind, p.default) for n, p in theirs.items()] == \
               [(n, p.kind, p.default) for n, p in mine.items() if n not in ("compile", "cautious")], ours.__name__
        assert mine["compile"].kind is mine["cautious"].kind is inspect.Parameter.KEYWORD_ONLY
    assert issubclass(AdamW, Adam)


@pytest.mark.parametrize("make", [lambda **k: scale_by_adam(**k), lambda **k: scale_by_laprop(**k),
                                  lambda **k: scale_by_rms(**k)], ids=["adam", "laprop", "rms"])
def test_debias_divide_is_the_same_math_as_debiased_betas(make):
    """``debias="divide"`` (raw EMAs divided by 1 - b^t) and the default debiased betas are one
    formula: step by step they agree to fp32 rounding. ``eps_mode="add"`` moves the result."""
    results = []
    for kw in ({}, {"debias": "divide"}, {"debias": "divide", "eps_mode": "add"}):
        model = make_net(0)
        opt = hc.ChainOptimizer(model.parameters(), hc.chain(make(eps=1e-3, **kw), T.scale_by_learning_rate(),
                                                             T.apply_updates()), lr=1e-2, betas=(0.9, 0.99))
        train(model, opt, 10)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=2e-6)
    assert (results[2] - results[0]).abs().max() > 1e-4


def test_option_errors():
    with pytest.raises(ValueError, match="debias"):
        scale_by_adam(debias="torch")
    with pytest.raises(ValueError, match="debias"):
        scale_by_adopt(debias="divide")
    with pytest.raises(ValueError, match="eps_mode"):
        scale_by_laprop(eps_mode="plus")
    with pytest.raises(TypeError, match="amsgrad"):
        scale_by_adam(amsgrad=1)
    with pytest.raises(TypeError, match="delay"):
        scale_by_adopt(delay="no")


# --------------------------------------------------------------------------- cautious


@num_threads(1)
def _cautious_adamw_oracle(steps, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, wd=0.1):
    """torch.optim.AdamW's math with Liang et al.'s mask, in float64, written out per tensor."""
    model = make_net(0, torch.float64)
    m = {p: torch.zeros_like(p) for p in model.parameters()}
    v = {p: torch.zeros_like(p) for p in model.parameters()}
    b1, b2 = betas
    for t in range(1, steps + 1):
        model.zero_grad()
        x, y = batch(t - 1, torch.float64)
        torch.nn.functional.mse_loss(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                g = p.grad
                m[p] = b1 * m[p] + (1 - b1) * g
                v[p] = b2 * v[p] + (1 - b2) * g * g
                u = (m[p] / (1 - b1**t)) / ((v[p] / (1 - b2**t)).sqrt() + eps)
                phi = (u * g > 0).double()
                u = u * phi * (u.numel() / (phi.sum() + 1))
                p.mul_(1 - lr * wd).sub_(lr * u)
    return model


@num_threads(1)
def test_cautious_adamw_matches_float64_oracle():
    model = make_net(0, torch.float64)
    opt = AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, cautious=True)
    train(model, opt, 30, float32_loss=False)
    oracle = _cautious_adamw_oracle(30)
    for (name, p), q in zip(model.named_parameters(), oracle.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=lambda s: f"{name}: {s}")
    plain = make_net(0, torch.float64)
    popt = AdamW(plain.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    train(plain, popt, 30, float32_loss=False)
    assert max((p - q).abs().max().item() for p, q in zip(model.parameters(), plain.parameters())) > 1e-3


@pytest.mark.parametrize("cls", [Adam, AdamW, NAdam, RAdam, Adamax, ForeachAdamW, ForeachLaProp, ForeachADOPT])
def test_cautious_goes_right_after_the_moments(cls):
    opt = cls(make_net().parameters(), cautious=True)
    names = [n for n, _ in opt.transform.children()]
    assert names[names.index("moments") + 1] == "cautious"
    assert names.index("cautious") < names.index("lr")


@pytest.mark.parametrize("cls,moments", [(ForeachAdamW, scale_by_adam), (ForeachLaProp, scale_by_laprop),
                                         (ForeachADOPT, scale_by_adopt)], ids=["AdamW", "LaProp", "ADOPT"])
def test_cautious_false_is_the_chain_of_before(cls, moments):
    """The HeavyBall presets with ``cautious=False`` are today's chain: same signature (old
    checkpoints load) and the same numbers, bit for bit."""
    before = hc.named_chain(("moments", moments()), ("decay", T.add_decayed_weights()),
                            ("lr", T.scale_by_learning_rate()), ("apply", T.stochastic_round_apply()))
    a, b = make_net(0), make_net(0)
    ours = cls(a.parameters(), lr=1e-2, weight_decay=0.1, cautious=False)
    ref = hc.ChainOptimizer(b.parameters(), before, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99),
                            **({"clip": ours.param_groups[0]["clip"]} if cls is ForeachADOPT else {}))
    assert ours.signature == ref.signature
    train(a, ours, 8)
    train(b, ref, 8)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_cautious_changes_the_heavyball_presets():
    for cls in (ForeachAdamW, ForeachLaProp, ForeachADOPT):
        a, b = make_net(0), make_net(0)
        train(a, cls(a.parameters(), lr=1e-2), 8)
        train(b, cls(b.parameters(), lr=1e-2, cautious=True), 8)
        assert max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters())) > 1e-4, cls.__name__


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("cls", list(TORCH), ids=lambda c: c.__name__)
def test_bad_arguments_name_the_argument(cls):
    ps = lambda: make_net().parameters()  # noqa: E731
    for kw, err, name in [({"lr": -1.0}, ValueError, "lr"), ({"betas": (1.0, 0.999)}, ValueError, "betas"),
                          ({"betas": (0.9, -0.1)}, ValueError, "betas"), ({"betas": 0.9}, ValueError, "betas"),
                          ({"eps": -1e-8}, ValueError, "eps"), ({"weight_decay": -0.1}, ValueError, "weight_decay"),
                          ({"maximize": 1}, TypeError, "maximize"), ({"capturable": 1}, TypeError, "capturable"),
                          ({"differentiable": True}, ValueError, "differentiable"),
                          ({"compile": "yes"}, TypeError, "compile"), ({"cautious": None}, TypeError, "cautious"),
                          ({"cautious": True, "maximize": True}, ValueError, "cautious")]:
        with pytest.raises(err, match=name):
            cls(ps(), **kw)
    if cls is Adam:
        for kw, name in [({"amsgrad": "no"}, "amsgrad"), ({"decoupled_weight_decay": 0}, "decoupled_weight_decay")]:
            with pytest.raises(TypeError, match=name):
                cls(ps(), **kw)
    if cls is NAdam:
        with pytest.raises(ValueError, match="momentum_decay"):
            cls(ps(), momentum_decay=-1.0)
    with pytest.raises(TypeError):
        cls(ps(), warmup=3)


# --------------------------------------------------------------------------- compile, resume


@pytest.mark.parametrize("cls,kw", [(Adam, {"amsgrad": True, "weight_decay": 0.1}), (AdamW, {}), (NAdam, {}),
                                    (RAdam, {"betas": (0.9, 0.9)}), (Adamax, {"weight_decay": 0.1})],
                         ids=["Adam", "AdamW", "NAdam", "RAdam", "Adamax"])
def test_compiled_equals_eager(cls, kw):
    """One step at a time from the same state (rounding differences are not amplified); RAdam with
    b2 = 0.9 switches to the rectified step at t = 5, inside the run."""
    assert_compiled_equals_eager_step_by_step(cls, 6, lr=1e-2, **kw)


@pytest.mark.parametrize("cls,kw", [(Adam, {"amsgrad": True, "weight_decay": 0.1}),
                                    (AdamW, {"cautious": True}), (NAdam, {"decoupled_weight_decay": True}),
                                    (RAdam, {"betas": (0.9, 0.9)}), (Adamax, {})],
                         ids=["Adam", "AdamW", "NAdam", "RAdam", "Adamax"])
def test_exact_resume(cls, kw):
    assert_resumes_exactly(lambda ps: cls(ps, lr=1e-2, **kw), make_fresh=lambda ps: cls(ps, lr=0.5, **kw))

"""SGD, RMSprop and Adagrad against torch.optim (torch 2.13), the reference.

Criterion (tests/reference.py): after 50 steps on the shared batches every parameter tensor is
within 1e-5 of torch's, relative to its largest entry. Measured worst differences, at 1 and 2
threads, are a few 1e-7 (up to 1.6e-6 for RMSprop's default lr 1e-2, whose first, not
bias-corrected steps are large): ours computes ``p + (-lr) (g / d)`` where torch fuses
``p.addcdiv_(g, d, value=-lr)`` and the like, a few ulps per step.

Maximize runs use lr 0.01: gradient *ascent* on the MSE loss at lr 0.05 grows the weights ~600x
in 50 steps (8e9x with momentum), and that divergence amplifies the ulp-level differences to 1e-3
and beyond; at lr 0.01 the weights move ~30% and the runs agree to 2e-7.

The tests run at one thread (the differences above were measured at 1 and 2): on a shared
2-core machine, two OpenMP threads that wait for a busy core make these tiny steps 10-40x slower.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

from helpers import make_net, train, train_eager_and_compiled
from heavyball_chain.presets.torch_classic import SGD, Adagrad, RMSprop
from reference import assert_matches

pytestmark = pytest.mark.usefixtures("one_thread")  # see the module docstring

TORCH = {SGD: torch.optim.SGD, RMSprop: torch.optim.RMSprop, Adagrad: torch.optim.Adagrad}

CASES = [
    # (preset, keyword arguments for both); lr given where torch's default moves the weights too little
    (SGD, dict(lr=0.05)),
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (SGD, dict(lr=0.05, dampening=0.5)),  # momentum 0: dampening does nothing
    (SGD, dict(lr=0.01, momentum=0.5, dampening=0.1, maximize=True)),
    (RMSprop, dict()),
    (RMSprop, dict(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=0.01)),
    (RMSprop, dict(lr=1e-3, centered=True)),
    (RMSprop, dict(lr=1e-3, momentum=0.9)),
    (RMSprop, dict(lr=1e-3, centered=True, momentum=0.9, weight_decay=0.01, maximize=True)),
    (Adagrad, dict()),
    (Adagrad, dict(lr_decay=0.05, weight_decay=0.01)),
    (Adagrad, dict(initial_accumulator_value=0.1, eps=1e-6)),
    (Adagrad, dict(lr_decay=0.01, initial_accumulator_value=0.5, maximize=True)),
]


def _id(case):
    preset, kw = case
    return f"{preset.__name__}-" + ",".join(f"{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_torch(case):
    preset, kw = case
    assert_matches(lambda p: preset(p, **kw), lambda p: TORCH[preset](p, **kw))


def _step_lr(opt, step):  # every 10 steps lr *= 0.5 (what StepLR does; torch's and ours read group["lr"])
    if step % 10 == 9:
        for g in opt.param_groups:
            g["lr"] *= 0.5


@pytest.mark.parametrize("preset,kw", [(SGD, dict(lr=0.05, momentum=0.9)), (RMSprop, dict(lr=1e-3, momentum=0.5)),
                                       (Adagrad, dict(lr_decay=0.01))], ids=lambda x: getattr(x, "__name__", ""))
def test_lr_scheduler(preset, kw):
    def scheduled(make):
        def build(params):
            opt = make(params)
            # SGD and RMSprop also get their momentum cycled (OneCycleLR's default), Adagrad has none
            opt.scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=kw.get("lr", 0.01), total_steps=50,
                                                                cycle_momentum=preset is not Adagrad)
            return opt
        return build

    assert_matches(scheduled(lambda p: preset(p, **kw)), scheduled(lambda p: TORCH[preset](p, **kw)),
                   every_step=lambda opt, step: opt.scheduler.step() if step < 49 else None)


@pytest.mark.parametrize("preset,kw", [(SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
                                       (RMSprop, dict(lr=1e-3, centered=True, momentum=0.9)),
                                       (Adagrad, dict(lr=0.01, lr_decay=0.01))],
                         ids=lambda x: getattr(x, "__name__", ""))
def test_tensor_lr(preset, kw):
    def make(cls):
        return lambda p: cls(p, **{**kw, "lr": torch.tensor(kw["lr"])})

    assert_matches(make(preset), make(TORCH[preset]), every_step=_step_lr)


def test_scheduler_object_on_a_preset():
    """StepLR itself (not a hand-written schedule) drives our lr as torch's."""
    model, ref_model = make_net(), make_net()
    opt, ref = SGD(model.parameters(), lr=0.05, momentum=0.9), torch.optim.SGD(ref_model.parameters(), lr=0.05,
                                                                               momentum=0.9)
    scheds = [torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5) for o in (opt, ref)]
    for step in range(10):
        train(model, opt, 1, start=step)
        train(ref_model, ref, 1, start=step)
        for s in scheds:
            s.step()
    assert opt.param_groups[0]["lr"] == ref.param_groups[0]["lr"]
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("preset", [SGD, RMSprop, Adagrad])
def test_complex_parameters(preset):
    kw = dict(lr=0.01, momentum=0.9, weight_decay=0.01) if preset is not Adagrad else dict(lr=0.01, lr_decay=0.01)
    if preset is RMSprop:
        kw["centered"] = True
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(4, 3, dtype=torch.complex64, generator=gen)
    ours, ref = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    opt, ref_opt = preset([ours], **kw), TORCH[preset]([ref], **kw)
    for _ in range(20):
        g = torch.randn(4, 3, dtype=torch.complex64, generator=gen)
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours.detach(), init)


# --------------------------------------------------------------------------- drop-in surface


@pytest.mark.parametrize("preset", [SGD, RMSprop, Adagrad])
def test_signature_is_torchs_plus_compile(preset):
    ours = inspect.signature(preset).parameters
    theirs = inspect.signature(TORCH[preset]).parameters
    assert list(ours)[:-1] == list(theirs)
    for name, p in theirs.items():
        assert (ours[name].kind, ours[name].default) == (p.kind, p.default), name
    assert ours["compile"].kind is inspect.Parameter.KEYWORD_ONLY and ours["compile"].default is False


@pytest.mark.parametrize("preset,names", [
    (SGD, ["lr", "momentum", "dampening", "weight_decay"]),
    (RMSprop, ["lr", "alpha", "eps", "weight_decay", "momentum"]),
    (Adagrad, ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"]),
], ids=lambda x: getattr(x, "__name__", ""))
def test_param_groups_hold_torchs_names(preset, names):
    params = list(make_net().parameters())
    ours, theirs = preset(params), TORCH[preset](params)
    for name in names:
        assert ours.param_groups[0][name] == theirs.param_groups[0][name], name


def test_no_momentum_buffer_without_momentum():
    """As torch: SGD and RMSprop keep no buffer at momentum 0, and predict so."""
    for preset in (SGD, RMSprop):
        model = make_net()
        opt = preset(model.parameters())
        predicted = opt.state_bytes()
        train(model, opt, 2)
        assert not any("momentum_buffer" in k for s in opt.state.values() for k in s)
        actual = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                     if isinstance(v, torch.Tensor))
        assert predicted == actual
    model = make_net()
    opt = SGD(model.parameters(), momentum=0.9)
    predicted = opt.state_bytes()
    train(model, opt, 2)
    assert predicted == sum(p.numel() * 4 for p in model.parameters())


def test_momentum_switched_on_later_starts_from_the_gradient():
    """torch creates SGD's buffer at the first step with momentum != 0, as the gradient itself."""
    model, ref_model = make_net(), make_net()
    opt = SGD(model.parameters(), lr=0.05, dampening=0.5)
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.05, dampening=0.5)
    for step in range(10):
        if step == 4:
            for o in (opt, ref):
                o.param_groups[0]["momentum"] = 0.9
        train(model, opt, 1, start=step)
        train(ref_model, ref, 1, start=step)
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- errors


BAD = [
    (SGD, dict(lr=-1.0), ValueError, "lr"),
    (SGD, dict(lr=torch.tensor([0.1, 0.2])), ValueError, "lr"),
    (SGD, dict(momentum=-0.1), ValueError, "momentum"),
    (SGD, dict(momentum=1.0), ValueError, "momentum"),
    (SGD, dict(momentum=0.9, dampening=1.5), ValueError, "dampening"),
    (SGD, dict(weight_decay=-1e-2), ValueError, "weight_decay"),
    (SGD, dict(nesterov=True), ValueError, "nesterov"),
    (SGD, dict(momentum=0.9, dampening=0.1, nesterov=True), ValueError, "nesterov"),
    (SGD, dict(nesterov=1), TypeError, "nesterov"),
    (SGD, dict(maximize="yes"), TypeError, "maximize"),
    (SGD, dict(differentiable=True), ValueError, "differentiable"),
    (SGD, dict(compile=1), TypeError, "compile"),
    (RMSprop, dict(alpha=1.5), ValueError, "alpha"),
    (RMSprop, dict(eps=-1e-8), ValueError, "eps"),
    (RMSprop, dict(momentum=-0.5), ValueError, "momentum"),
    (RMSprop, dict(centered=None), TypeError, "centered"),
    (RMSprop, dict(capturable=True), ValueError, "capturable"),
    (RMSprop, dict(foreach="no"), TypeError, "foreach"),
    (Adagrad, dict(lr_decay=-0.1), ValueError, "lr_decay"),
    (Adagrad, dict(initial_accumulator_value=-1.0), ValueError, "initial_accumulator_value"),
    (Adagrad, dict(initial_accumulator_value=lambda t: 0.1), ValueError, "initial_accumulator_value"),
    (Adagrad, dict(eps=float("nan")), ValueError, "eps"),
    (Adagrad, dict(fused=3), TypeError, "fused"),
    (Adagrad, dict(weight_decay="0.1"), ValueError, "weight_decay"),
]


@pytest.mark.parametrize("preset,kw,error,name", BAD, ids=[f"{p.__name__}-{n}-{e.__name__}" for p, _, e, n in BAD])
def test_bad_arguments_are_refused(preset, kw, error, name):
    with pytest.raises(error, match=name):
        preset(make_net().parameters(), **kw)


# --------------------------------------------------------------------------- compiled, resume

RICH = {
    SGD: dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01, maximize=True),
    RMSprop: dict(lr=1e-3, centered=True, momentum=0.9, weight_decay=0.01),
    Adagrad: dict(lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01),
}


@pytest.mark.parametrize("preset", [SGD, RMSprop, Adagrad])
def test_compiled_equals_eager(preset):
    eager, _, compiled, _ = train_eager_and_compiled(preset, 4, **RICH[preset])
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("preset", [SGD, RMSprop, Adagrad])
def test_state_dict_resume_is_exact(preset):
    kw = RICH[preset]
    straight = make_net()
    train(straight, preset(straight.parameters(), **kw), 12)

    model = make_net()
    opt = preset(model.parameters(), **kw)
    train(model, opt, 6)
    saved = copy.deepcopy(opt.state_dict())
    resumed = preset(model.parameters(), **kw)
    resumed.load_state_dict(saved)
    train(model, resumed, 6, start=6)
    for a, b in zip(straight.parameters(), model.parameters()):
        assert torch.equal(a, b)


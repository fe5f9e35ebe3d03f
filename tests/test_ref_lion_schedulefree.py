"""Lion (lion-pytorch 0.2.5) and AdamWScheduleFree (schedulefree 1.4.1): drop-in parity, bad
arguments, compile=True, exact resume.

Measured at 1 and 2 threads (the same numbers at both): AdamWScheduleFree matches schedulefree
exactly (0.0) in every setting below, train and eval mode, including an lr decayed mid-run. Lion
matches exactly without weight decay; with weight decay lion-pytorch multiplies the weights by
``1 - lr wd`` rounded to fp32 (the factor's rounding error, up to 6e-8, is ~1e-3 of ``lr wd`` =
3e-5), while we add ``wd p`` to the update: after 50 steps the two differ by up to 2.1e-6
(relative), and ours is the closer of the two to a float64 run (4.6e-7 against 2.1e-6).
"""

from __future__ import annotations

import pytest
import torch

from helpers import kwargs_id, make_net, step_scheduler, train, train_eager_and_compiled, with_decay
from heavyball_chain.presets.lion import Lion
from heavyball_chain.presets.schedule_free import AdamWScheduleFree
from reference import assert_matches, assert_resumes_exactly, relative_diffs

lion_pytorch = pytest.importorskip("lion_pytorch")
schedulefree = pytest.importorskip("schedulefree")

# The numbers in the module docstring were measured at 1 and 2 threads and are the same at both;
# the tests run at 1 (tiny tensors: a second thread only adds synchronisation, which on a loaded
# 2-core machine made each comparison ~5x slower).
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- Lion

LION = [
    {},
    {"lr": 3e-4, "weight_decay": 0.1},
    {"lr": 3e-4, "weight_decay": 0.5, "decoupled_weight_decay": True},
    {"lr": 1e-3, "betas": (0.95, 0.98)},
    {"lr": 1e-3, "betas": (0.0, 1.0)},  # both ends of lion-pytorch's [0, 1]: b2 = 1 is signSGD
]


@pytest.mark.parametrize("kwargs", LION, ids=kwargs_id)
def test_lion_matches_lion_pytorch(kwargs):
    # with weight decay, 2.1e-6: lion-pytorch's fp32 rounding of 1 - lr wd (module docstring)
    assert_matches(lambda ps: Lion(ps, **kwargs), lambda ps: lion_pytorch.Lion(ps, **kwargs), rtol=1e-5)


@pytest.mark.parametrize("decoupled", [False, True], ids=["coupled", "decoupled"])
def test_lion_matches_under_an_lr_scheduler(decoupled):
    """The decay per step is ``lr_t wd`` or (decoupled) ``lr_t wd / lr0``: both follow the scheduler."""
    kw = {"lr": 1e-3, "weight_decay": 1.0 if decoupled else 0.3, "decoupled_weight_decay": decoupled}
    assert_matches(with_decay(lambda ps: Lion(ps, **kw)), with_decay(lambda ps: lion_pytorch.Lion(ps, **kw)),
                    rtol=1e-5, every_step=step_scheduler)


def test_lion_decoupled_decay_uses_the_constructor_lr():
    """A param group with its own lr still divides by the constructor's lr (lion-pytorch's _init_lr)."""
    def make(cls):
        def build(ps):
            ps = list(ps)
            return cls([{"params": ps[:2], "lr": 3e-3}, {"params": ps[2:]}], lr=1e-3, weight_decay=0.5,
                       decoupled_weight_decay=True)
        return build
    assert_matches(make(Lion), make(lion_pytorch.Lion))


def test_lion_tensor_lr_equals_float_lr():
    a, b = make_net(), make_net()
    oa = Lion(a.parameters(), lr=1e-3, weight_decay=0.1)
    ob = Lion(b.parameters(), lr=torch.tensor(1e-3), weight_decay=0.1)
    train(a, oa, 10)
    train(b, ob, 10)
    assert max(relative_diffs(a, b).values()) <= 1e-6


@pytest.mark.parametrize("kwargs,error,match", [
    ({"lr": 0.0}, ValueError, "^lr: "),
    ({"lr": -1e-3}, ValueError, "^lr: "),
    ({"lr": "fast"}, ValueError, "^lr: "),
    ({"betas": (1.5, 0.99)}, ValueError, r"^betas\[0\]: "),
    ({"betas": (0.9, -0.1)}, ValueError, r"^betas\[1\]: "),
    ({"betas": (0.9,)}, ValueError, "^betas: "),
    ({"weight_decay": -0.1}, ValueError, "^weight_decay: "),
    ({"use_triton": "yes"}, TypeError, "^use_triton: "),
    ({"decoupled_weight_decay": 1}, TypeError, "^decoupled_weight_decay: "),
    ({"decoupled_weight_decay": True, "lr": lambda t: 1e-3}, ValueError, "^lr: "),
    ({"compile": "no"}, TypeError, "^compile: "),
    ({"eps": 1e-8}, TypeError, "eps"),
])
def test_lion_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Lion(make_net().parameters(), **kwargs)


def test_lion_use_triton_is_accepted_and_changes_nothing():
    a, b = make_net(), make_net()
    train(a, Lion(a.parameters(), lr=1e-3), 5)
    train(b, Lion(b.parameters(), lr=1e-3, use_triton=True), 5)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


@pytest.mark.inductor
def test_lion_compiled_equals_eager():
    kw = {"lr": 1e-3, "weight_decay": 0.5, "decoupled_weight_decay": True}
    a, _, b, _ = train_eager_and_compiled(Lion, 5, **kw)
    # sign() is discontinuous: fp32 rounding of b1 m + (1 - b1) g can flip a sign only where it is
    # ~0; no flip happens here, so the runs agree to rounding
    assert max(relative_diffs(a, b).values()) <= 1e-6


def test_lion_exact_resume():
    assert_resumes_exactly(lambda ps: Lion(ps, lr=1e-3, weight_decay=0.5, decoupled_weight_decay=True), steps=20)


# --------------------------------------------------------------------------- AdamWScheduleFree


def _sf_ref(**kw):
    def build(params):
        opt = schedulefree.AdamWScheduleFree(params, **kw)
        opt.train()  # schedulefree starts in eval mode and refuses step() until train()
        return opt
    return build


SF = [
    {},
    {"lr": 1e-2, "weight_decay": 0.1},
    {"warmup_steps": 10},
    {"lr": 1e-2, "r": 1.0, "weight_lr_power": 1.0},
    {"eps": 1e-3},
    {"lr": 5e-3, "betas": (0.8, 0.99), "warmup_steps": 5, "weight_decay": 0.01},
]


@pytest.mark.parametrize("kwargs", SF, ids=kwargs_id)
def test_sf_matches_schedulefree_train_and_eval(kwargs):
    """Side by side; every 10 steps both switch to eval (compared there: x) and back (y)."""
    ours_m, ref_m = make_net(), make_net()
    ours, ref = AdamWScheduleFree(ours_m.parameters(), **kwargs), _sf_ref(**kwargs)(ref_m.parameters())
    for step in range(50):
        for m, o in ((ours_m, ours), (ref_m, ref)):
            train(m, o, 1, start=step)
        if step % 10 == 9:
            ours.eval()
            ref.eval()
            assert max(relative_diffs(ours_m, ref_m).values()) <= 1e-5, f"eval mode, step {step}"
            ours.train()
            ref.train()
    assert max(relative_diffs(ours_m, ref_m).values()) <= 1e-5
    ours.eval()
    ref.eval()
    assert max(relative_diffs(ours_m, ref_m).values()) <= 1e-5
    assert max(relative_diffs(ref_m, make_net()).values()) > 1e-3


def test_sf_matches_with_a_decaying_lr():
    """c_t is weighted by the largest lr so far: after the lr drops, later iterates keep full weight."""
    kw = {"lr": 1e-2, "warmup_steps": 5}
    assert_matches(with_decay(lambda ps: AdamWScheduleFree(ps, **kw)), with_decay(_sf_ref(**kw)),
                    rtol=1e-5, every_step=step_scheduler)


def test_sf_lr_max_rule_is_what_makes_it_match():
    """The HeavyBall convention (current lr in c_t) on the same chain does not match after a decay,
    so the test above would catch a wrong rule."""
    from heavyball_chain.core import named_chain
    from heavyball_chain.optimizer import ChainOptimizer
    from heavyball_chain.transforms.scaling import add_decayed_weights
    from heavyball_chain.transforms import scale_by_rms
    from heavyball_chain.transforms.schedule_free import schedule_free

    def current(ps):
        tx = named_chain(("rms", scale_by_rms((0.9, 0.999), debias="divide_root", eps_mode="add")), ("decay", add_decayed_weights()),
                         ("schedule_free", schedule_free(betas=(0.9, 0.999))))
        return ChainOptimizer(ps, tx, lr=1e-2, betas=(0.9, 0.999))
    with pytest.raises(AssertionError, match="relative differences"):
        assert_matches(with_decay(current), with_decay(_sf_ref(lr=1e-2)), every_step=step_scheduler)


def test_sf_lr_max_is_optimizer_state():
    model = make_net()
    opt = AdamWScheduleFree(model.parameters(), lr=1e-2, warmup_steps=2)
    train(model, opt, 3)
    for g in opt.param_groups:
        g["lr"] = 1e-3
    train(model, opt, 2, start=3)
    state = opt.state[model.fc.weight]
    assert state["schedule_free/lr_max"] == 1e-2
    assert state["schedule_free/weight_sum"] == pytest.approx(5e-3**2 + 4 * 1e-2**2)


def test_sf_tensor_lr_equals_float_lr():
    a, b = make_net(), make_net()
    lr = torch.tensor(1e-2)
    oa = AdamWScheduleFree(a.parameters(), lr=1e-2, warmup_steps=3, weight_decay=0.1)
    ob = AdamWScheduleFree(b.parameters(), lr=lr, warmup_steps=3, weight_decay=0.1)
    for step in range(8):
        if step == 5:  # in place, as a compiled training loop would
            oa.param_groups[0]["lr"] = 2e-3
            lr.fill_(2e-3)
        train(a, oa, 1, start=step)
        train(b, ob, 1, start=step)
    assert isinstance(ob.state[b.fc.weight]["schedule_free/lr_max"], torch.Tensor)
    assert max(relative_diffs(a, b).values()) <= 1e-6


@pytest.mark.parametrize("kwargs,error,match", [
    ({"lr": -1e-3}, ValueError, "^lr: "),
    ({"betas": (1.0, 0.999)}, ValueError, r"^betas\[0\]: "),
    ({"betas": (0.9, 1.5)}, ValueError, r"^betas\[1\]: "),
    ({"eps": -1e-8}, ValueError, "^eps: "),
    ({"weight_decay": -0.1}, ValueError, "^weight_decay: "),
    ({"warmup_steps": 1.5}, ValueError, "^warmup_steps: "),
    ({"warmup_steps": -1}, ValueError, "^warmup_steps: "),
    ({"r": float("nan")}, ValueError, "^r: "),
    ({"weight_lr_power": -1.0}, ValueError, "^weight_lr_power: "),
    ({"foreach": "yes"}, TypeError, "^foreach: "),
    ({"compile": 1}, TypeError, "^compile: "),
    ({"momentum": 0.9}, TypeError, "momentum"),
])
def test_sf_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AdamWScheduleFree(make_net().parameters(), **kwargs)


def test_sf_step_in_eval_mode_raises():
    model = make_net()
    opt = AdamWScheduleFree(model.parameters(), foreach=False)
    train(model, opt, 2)
    opt.eval()
    with pytest.raises(RuntimeError, match=r"train\(\)"):
        train(model, opt, 1, start=2)


@pytest.mark.inductor
def test_sf_compiled_equals_eager():
    kw = {"lr": 1e-2, "weight_decay": 0.1, "warmup_steps": 2}
    a, oa, b, ob = train_eager_and_compiled(AdamWScheduleFree, 4, **kw)
    for o in (oa, ob):
        o.param_groups[0]["lr"] = 2e-3  # lr_max stays 1e-2: no recompile, same weights
    train(a, oa, 2, start=4)
    train(b, ob, 2, start=4)
    oa.eval()
    ob.eval()
    assert max(relative_diffs(a, b).values()) <= 1e-6


@pytest.mark.parametrize("save_in_eval", [False, True], ids=["saved-in-train", "saved-in-eval"])
def test_sf_exact_resume(save_in_eval):
    """The lr drops before the save, so the resumed run must get lr_max (1e-2, not 1e-3) from the state."""
    def drop_lr_at_10(opt):
        opt.register_step_post_hook(lambda o, *_: o.param_groups[0].__setitem__("lr", 1e-3)
                                    if o.state[o.param_groups[0]["params"][0]]["step"] == 10 else None)
    opt, fresh_opt = assert_resumes_exactly(
        lambda ps: AdamWScheduleFree(ps, lr=1e-2, warmup_steps=3, r=0.5, weight_decay=0.1), steps=20,
        save_in_eval=save_in_eval, before=drop_lr_at_10, train_mode_calls=True)
    key = "schedule_free/lr_max"
    assert fresh_opt.state[next(iter(fresh_opt.state))][key] == 1e-2

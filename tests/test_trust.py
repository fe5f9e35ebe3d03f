"""No input corrupts anything silently: dtypes, validation of every value (tuple elements and
evaluated schedules too), refused steps that change nothing, checkpoints that must belong to the
optimizer, and the wrappers' per-parameter bookkeeping. Each test reproduces a defect of an
earlier version (the issue "Trust")."""

import copy
import math

import pytest
import torch

import heavyball_chain as hc
from heavyball_chain import transforms as T
from helpers import PRESETS, STANDARD, make_net, train

PALM = [c for c in PRESETS if "PaLM" in c.__name__]
SOAP = [c for c in PRESETS if "SOAP" in c.__name__]
ELEMENTWISE = [c for c in PRESETS if "SOAP" not in c.__name__]


def snapshot(opt):
    """Everything a step may change: state (tensors cloned), groups, parameters."""
    state = {i: {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in opt.state[p].items()}
             for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    return state, groups, params


def assert_same(a, b):
    (sa, ga, pa), (sb, gb, pb) = a, b
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys(), i
        for k in sa[i]:
            x, y = sa[i][k], sb[i][k]
            assert torch.equal(x, y) if torch.is_tensor(x) else x == y, (i, k)
    assert [g.keys() for g in ga] == [g.keys() for g in gb]
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_parameters_are_refused(preset, dtype):
    with pytest.raises(TypeError, match="floating-point or complex"):
        preset([torch.zeros(3, dtype=dtype)])


@pytest.mark.parametrize("cls", SOAP, ids=lambda c: c.__name__)
def test_soap_refuses_complex_parameters(cls):
    with pytest.raises(TypeError, match="complex.*soap_precondition"):
        cls([torch.zeros(4, 4, dtype=torch.complex64, requires_grad=True)])


@pytest.mark.parametrize("cls", ELEMENTWISE, ids=lambda c: c.__name__)
def test_complex_parameter_keeps_its_imaginary_part(cls):
    """It was `.float()`-ed away at the first step. A complex parameter steps exactly as its real
    view would (torch.optim's convention); tests/test_torch_generic.py checks the general case."""
    c = torch.tensor([1 + 2j, -3 + 0.5j], requires_grad=True)
    r = torch.view_as_real(c).detach().clone().requires_grad_()
    oc, o_r = cls([c], lr=0.1), cls([r], lr=0.1)
    for i in range(4):
        g = torch.tensor([0.3 - 1j, 2 + 0.7j]) * (i + 1)
        c.grad, r.grad = g, torch.view_as_real(g).clone()
        oc.step()
        o_r.step()
    assert torch.equal(torch.view_as_real(c.detach()), r.detach())
    imag = c.detach().imag
    assert imag.abs().min() > 0 and (imag - torch.tensor([2.0, 0.5])).abs().min() > 0  # kept, and moved


def test_float64_parameter_is_not_rounded_to_float32(preset):
    """p = pi, zero gradient, one step: torch.optim leaves it exact; fp32 arithmetic moved it 8.7e-8."""
    p = torch.nn.Parameter(torch.full((3,), math.pi, dtype=torch.float64))
    opt = preset([p], weight_decay=0.0)
    for _ in range(3):
        p.grad = torch.zeros_like(p)
        opt.step()
    assert torch.equal(p.detach(), torch.full((3,), math.pi, dtype=torch.float64))
    assert {v.dtype for v in opt.state[p].values() if torch.is_tensor(v)} == {torch.float64}


def test_float64_step_is_exact_in_float64():
    """AdamW's first step with debiased betas is ``p - lr * g / max(|g|, eps) = p - lr sign(g)``:
    exact in fp64 (in fp32 the parameter would be rounded to 24 bits)."""
    p0 = torch.tensor([1 / 3, 2 / 7, -5 / 11], dtype=torch.float64)
    p = torch.nn.Parameter(p0.clone())
    opt = hc.ForeachAdamW([p], lr=1 / 1024)
    p.grad = torch.tensor([1e-3, -2.0, 5.0], dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), p0 - torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64) / 1024)


def test_float32_and_float64_parameters_in_one_optimizer():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = hc.ForeachLaProp([a, b], lr=0.1)
    for _ in range(3):
        a.grad, b.grad = torch.full((3,), 0.5), torch.full((3,), 0.5, dtype=torch.float64)
        opt.step()
    assert opt.state[a]["moments/exp_avg"].dtype == torch.float32
    assert opt.state[b]["moments/exp_avg"].dtype == torch.float64
    torch.testing.assert_close(a.detach().double(), b.detach(), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("cls", PALM, ids=lambda c: c.__name__)
@pytest.mark.parametrize("beta", [float("nan"), 1.0, 1.5, -0.1])
def test_palm_beta_is_validated(cls, beta):
    """betas = (beta, palm_beta2()) holds a schedule, and the whole tuple used to go unchecked."""
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        cls([torch.nn.Parameter(torch.zeros(3))], beta=beta)


def test_a_schedule_is_checked_when_evaluated_and_the_step_is_refused():
    p = torch.nn.Parameter(torch.ones(3))
    opt = hc.ChainOptimizer([p], hc.chain(T.scale_by_laprop(), T.scale_by_learning_rate(), T.apply_updates()),
                            betas=(0.9, lambda t: 0.99 if t < 3 else 1.0), lr=0.1)
    for _ in range(2):
        p.grad = torch.ones(3)
        opt.step()
    before = snapshot(opt)
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"betas: the schedule gave \(0.9, 1.0\) at step 3"):
        opt.step()
    assert_same(before, snapshot(opt))



@pytest.mark.parametrize("order", [1, -1])
@pytest.mark.parametrize("first, second, kwargs, match", [
    # Lion allows beta2 = 1, Adam does not: the chain refuses it, whichever transform comes first.
    (T.scale_by_lion, T.scale_by_adam, {"betas": (0.9, 1.0)}, r"betas.*element 1 a number in \[0, 1\)|betas\[1\]"),
    # RMSprop allows eps = 0 (as torch does), Adam's max(sqrt(v), eps) does not.
    (T.scale_by_rmsprop, T.scale_by_adam, {"eps": 0.0}, "eps: .*expected a finite number > 0"),
])
def test_a_hyperparameter_two_transforms_read_must_pass_both_checks(first, second, kwargs, match, order):
    """The merged declaration used to keep the first transform's check only."""
    a, b = (first(), second())[::order]
    tx = hc.chain(a, b, T.scale_by_learning_rate(), T.apply_updates())
    with pytest.raises(ValueError, match=match):
        hc.ChainOptimizer([torch.nn.Parameter(torch.ones(3))], tx, **kwargs)
    opt = hc.ChainOptimizer([torch.nn.Parameter(torch.ones(3))], tx)
    with pytest.raises(ValueError, match=match):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3))], **kwargs})
    assert len(opt.param_groups) == 1
    # A schedule is checked when evaluated, and the refused step changes nothing.
    scheduled = {k: (lambda t, v=v: v) if k == "eps" else (v[0], lambda t, v=v: v[1]) for k, v in kwargs.items()}
    p = torch.nn.Parameter(torch.ones(3))
    opt = hc.ChainOptimizer([p], tx, **scheduled)
    p.grad = torch.ones(3)
    before = snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt.step()
    assert_same(before, snapshot(opt))

@pytest.mark.parametrize("name,value,match", [
    ("betas", (0.9, 1), r"betas\[1\]"),
    ("betas", (0.9,), "betas"),
    ("lr", "x", "lr"),
    ("lr", -1.0, "lr"),
    ("eps", float("nan"), "eps"),
    ("weight_decay", None, "weight_decay"),
])
def test_values_set_in_a_group_mid_run_are_checked_before_the_step(preset, name, value, match):
    """betas[1] = 1 mid-run gave ZeroDivisionError inside the step; lr = 'x' a TypeError."""
    model = make_net()
    opt = preset(model.parameters())
    train(model, opt, 2)
    opt.param_groups[0][name] = value
    before = snapshot(opt)
    model.zero_grad()
    model(torch.randn(2, 2, 6, 6)).sum().backward()
    with pytest.raises(ValueError, match=match):
        opt.step()
    assert_same(before, snapshot(opt))


def test_a_list_changed_in_place_is_checked_again():
    """Values are checked once per object; a list (or a tensor) can change without becoming a new one."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = hc.ForeachLaProp([p], betas=[0.9, 0.99])
    p.grad = torch.ones(3)
    opt.step()
    opt.param_groups[0]["betas"][1] = 1.0
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        opt.step()


def test_a_refused_add_param_group_adds_nothing(preset):
    opt = preset([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": -1.0})
    assert len(opt.param_groups) == 1
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="twice"):
        opt.add_param_group({"params": [p, p]})
    assert len(opt.param_groups) == 1


def test_unknown_keyword_names_the_preset(preset):
    with pytest.raises(TypeError, match=rf"{preset.__name__}\.__init__\(\) got an unexpected keyword argument 'lrr'"):
        preset([torch.nn.Parameter(torch.zeros(2))], lrr=1e-3)


# --------------------------------------------------------------------------- tensor lr


@pytest.mark.parametrize("warmup", [0, 3])
def test_tensor_lr_equals_float_lr(preset, warmup):
    """torch.optim accepts a 0-d tensor lr (compiled and CUDA-graph training change it in place).
    For an lr that fp32 represents exactly, the run is the float run, bit for bit: the step's
    scalars are computed in fp64 from the tensor, as Python computes them from the float."""
    results = []
    for lr in (2.0**-8, torch.tensor(2.0**-8)):
        model = make_net()
        opt = preset(model.parameters(), lr=lr, warmup_steps=warmup)
        train(model, opt, 8)
        results.append([p.detach() for p in model.parameters()])
        assert opt.param_groups[0]["lr"] is lr
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("cls", [hc.ForeachAdamW, hc.AdamW, hc.SGD, hc.Lion, hc.AdamWScheduleFree, hc.SOAP],
                         ids=lambda c: c.__name__)
def test_one_element_lr_of_shape_1_equals_the_0d_one(cls):
    """Hyper(tensor=True) admits any one-element tensor; a (1,)-shaped lr (which torch.optim takes)
    crashed the foreach multiply that applies it. It now steps as the 0-d tensor does, bit for bit."""
    results = []
    for lr in (torch.tensor(2.0**-8), torch.tensor([2.0**-8])):
        model = make_net()
        train(model, cls(model.parameters(), lr=lr), 4)
        results.append([p.detach() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_tensor_lr_is_validated():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr"):
        hc.ForeachAdamW(p, lr=torch.tensor(-1.0))
    with pytest.raises(ValueError, match="one-element"):
        hc.ForeachAdamW(p, lr=torch.tensor([1e-3, 1e-3]))
    with pytest.raises(ValueError, match="eps"):
        hc.ForeachAdamW(p, eps=torch.tensor(1e-8))  # only lr may be a tensor


def test_scheduler_changes_a_tensor_lr_in_place():
    model = make_net()
    lr = torch.tensor(0.01)
    opt = hc.ForeachLaProp(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train(model, opt, 1)
    sched.step()
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.005)


# --------------------------------------------------------------------------- ADOPT


def _embedding_run(**kwargs):
    """An embedding whose step-1 batch sees 4 of its 16 rows: the others' first gradient is 0."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(16, 4), torch.nn.Flatten(), torch.nn.Linear(8, 1))
    start = model[0].weight.detach().clone()
    opt = hc.ForeachADOPT(model.parameters(), lr=0.01, **kwargs)
    g = torch.Generator().manual_seed(1)
    for i in range(20):
        x = torch.randint(0, 16 if i else 4, (8, 2), generator=g)
        opt.zero_grad()
        (model(x).squeeze(1) - x.sum(1).float() / 16).pow(2).mean().backward()
        opt.step()
    return (model[0].weight.detach() - start).abs().max().item()


def test_adopt_clips_the_normalised_gradient():
    """Unclipped (HeavyBall 0.8.1) a row first seen at step 2 gets g / eps and training blows up.
    Clipped to k^0.25, |m| <= 20^0.25 over 20 steps, so no weight moves more than
    sum(lr |m|) <= 20 * 0.01 * 20^0.25 (at most 17 of the 20 steps update it)."""
    assert not _embedding_run(clip=None) < 1e3
    assert _embedding_run() <= 20 * 0.01 * 20**0.25


def test_adopt_clip_options():
    assert 0 < _embedding_run(clip=0.5) <= 20 * 0.01 * 0.5
    assert _embedding_run(clip=lambda k: 1.0) <= 20 * 0.01
    with pytest.raises(ValueError, match="clip"):
        hc.ForeachADOPT([torch.nn.Parameter(torch.zeros(2))], clip=0)


# --------------------------------------------------------------------------- refused steps


def test_step_in_eval_mode_changes_nothing():
    """schedule_free raised after scale_by_rms had updated v."""
    model = make_net()
    opt = hc.ForeachSFAdamW(model.parameters())
    train(model, opt, 2)
    opt.eval()
    before = snapshot(opt)
    with pytest.raises(RuntimeError, match="eval mode"):
        train(model, opt, 1)
    assert_same(before, snapshot(opt))


def test_sparse_gradient_in_a_later_group_changes_nothing():
    """Group 1 used to step before group 2's sparse gradient was refused."""
    emb = torch.nn.Embedding(10, 3, sparse=True)
    lin = torch.nn.Linear(3, 1)
    opt = hc.ForeachAdamW([{"params": lin.parameters()}, {"params": emb.parameters()}])
    before = snapshot(opt)
    lin(emb(torch.tensor([1, 2]))).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()
    assert_same(before, snapshot(opt))
    assert not any(opt.state[p] for p in lin.parameters())


def _ema_optimizer(model):
    tx = hc.chain(T.scale_by_adam(), T.scale_by_learning_rate(), T.apply_updates(), T.ema_params(0.5))
    return hc.ChainOptimizer(model.parameters(), tx, lr=0.05)


def test_step_inside_ema_weights_changes_nothing():
    model = make_net()
    opt = _ema_optimizer(model)
    train(model, opt, 3)
    with T.ema_weights(opt):
        before = snapshot(opt)
        with pytest.raises(RuntimeError, match="ema_weights"):
            train(model, opt, 1)
        assert_same(before, snapshot(opt))


def test_nested_ema_weights_restore_the_training_weights():
    """Nesting raised KeyError on exit and left the EMA in the parameters."""
    model = make_net()
    opt = _ema_optimizer(model)
    train(model, opt, 3)
    weights = [p.detach().clone() for p in model.parameters()]
    ema = [opt.state[p]["3/ema"].clone() for p in model.parameters()]
    with T.ema_weights(opt):
        with T.ema_weights(opt):
            assert all(torch.equal(p, e) for p, e in zip(model.parameters(), ema))
        assert all(torch.equal(p, e) for p, e in zip(model.parameters(), ema))
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    train(model, opt, 1, start=3)  # steps again


def test_state_dict_inside_ema_weights_resumes():
    """A state_dict taken inside the block saved the backup; the resumed optimizer refused every step."""
    model = make_net()
    opt = _ema_optimizer(model)
    train(model, opt, 3)
    weights = copy.deepcopy(model.state_dict())
    with T.ema_weights(opt):
        sd = copy.deepcopy(opt.state_dict())  # as written to disk inside the block
    model2 = make_net()
    model2.load_state_dict(weights)
    opt2 = _ema_optimizer(model2)
    opt2.load_state_dict(sd)
    train(model, opt, 2, start=3)
    train(model2, opt2, 2, start=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


# --------------------------------------------------------------------------- wrappers


def test_apply_if_finite_counts_per_parameter():
    """Two parameters of one bucket (same group, dtype, step) with different skip counts: each
    must see its own inner step (warmup here), as in separate optimizers. The skip count used to
    be read from the bucket's first parameter (0.047 off after 8 steps)."""
    def tx():
        return hc.chain(T.apply_if_finite(hc.chain(T.scale_by_adam(), T.scale_by_learning_rate(warmup_steps=5),
                                                   T.apply_updates())))

    def schedule(p, other, opt_steps):
        # p: a non-finite step, then a finite one, while `other` has no gradient; then `other`
        # alone for two steps; from then on both (same step count, different skips)
        return [(p, float("inf")), (p, 1.0), (other, 1.0), (other, 1.0)] + [(None, 1.0)] * opt_steps

    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    together = hc.ChainOptimizer([a, b], tx(), lr=0.1)
    a2, b2 = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    alone = [hc.ChainOptimizer([a2], tx(), lr=0.1), hc.ChainOptimizer([b2], tx(), lr=0.1)]
    for k, (who, value) in enumerate(schedule(a, b, 8)):
        grad = lambda i: torch.full((3,), value) * (1 + 0.1 * i + 0.01 * k)  # noqa: E731
        for opt, ps in ((together, (a, b)), (alone[0], (a2,)), (alone[1], (b2,))):
            for i, p in enumerate(ps):
                mine = (p is a or p is a2) if who is a else (p is b or p is b2) if who is b else True
                p.grad = grad(int(p is b or p is b2)) if mine else None
            opt.step()
    assert together.state[a]["step"] == together.state[b]["step"]
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_multi_steps_keeps_no_derivable_counter():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = hc.ChainOptimizer([p], hc.chain(T.multi_steps(hc.chain(T.scale_by_learning_rate(), T.apply_updates()), 2)),
                            lr=1.0)
    for _ in range(4):
        p.grad = torch.ones(2)
        opt.step()
    assert sorted(opt.state[p]) == ["0/acc", "step"]
    assert torch.equal(p.detach(), torch.full((2,), -2.0))


def test_bf16_seeds_stay_distinct_after_resume_and_add_param_group():
    """The stochastic-rounding seed counter restarted at load, so a parameter added afterwards
    reused the first parameter's seed."""
    model = make_net(dtype=torch.bfloat16)
    opt = hc.ForeachLaProp(model.parameters())
    train(model, opt, 2)
    opt2 = hc.ForeachLaProp(model.parameters())
    opt2.load_state_dict(opt.state_dict())
    extra = torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))
    opt2.add_param_group({"params": [extra]})
    extra.grad = torch.ones(4, dtype=torch.bfloat16)
    opt2.step()
    seeds = [opt2.state[p]["apply/seed"] for g in opt2.param_groups for p in g["params"]]
    assert len(set(seeds)) == len(seeds) == 5


# --------------------------------------------------------------------------- checkpoints


def _trained(cls, steps=3, **kw):
    model = make_net()
    opt = cls(model.parameters(), **kw)
    train(model, opt, steps)
    return model, opt


@pytest.mark.parametrize("saver,loader,match", [
    (hc.ForeachAdamW, hc.ForeachLaProp, "another chain"),
    (hc.ForeachLaProp, hc.ForeachSFAdamW, "another chain"),
    (hc.ForeachSOAP, hc.PaLMForeachSOAP, r"betas\[1\]: the checkpoint has 0.95 where this optimizer has the schedule"),
    (hc.PaLMForeachSOAP, hc.ForeachSOAP, r"betas\[1\]: the checkpoint was saved with the schedule palm_beta2"),
    (hc.ForeachSFAdamW, hc.PaLMForeachSFAdamW, r"betas\[1\]"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_checkpoint_of_another_preset_is_refused(saver, loader, match):
    model, opt = _trained(saver)
    other = loader(model.parameters())
    before = snapshot(other)
    with pytest.raises(ValueError, match=match):
        other.load_state_dict(opt.state_dict())
    assert_same(before, snapshot(other))


def test_torch_optim_checkpoint_is_refused(preset):
    model = make_net()
    ref = torch.optim.AdamW(model.parameters())
    train(model, ref, 2)
    with pytest.raises(ValueError, match="not saved by a heavyball_chain optimizer"):
        preset(model.parameters()).load_state_dict(ref.state_dict())


def _corrupt(sd, how):
    state, group = sd["state"][0], sd["param_groups"][0]
    tensor_key = next(k for k, v in state.items() if torch.is_tensor(v) and v.shape == torch.Size([3, 2, 3, 3]))
    {
        "lr='x'": lambda: group.__setitem__("lr", "x"),
        "lr=-1": lambda: group.__setitem__("lr", -1.0),
        "no eps": lambda: group.pop("eps"),
        "step=-5": lambda: state.__setitem__("step", -5),
        "step=1.5": lambda: state.__setitem__("step", 1.5),
        "missing moment": lambda: state.pop(tensor_key),
        "unknown key": lambda: state.__setitem__("momentum_buffer", torch.zeros(3, 2, 3, 3)),
        "wrong shape": lambda: state.__setitem__(tensor_key, torch.zeros(3, 2, 9)),
        "wrong dtype": lambda: state.__setitem__(tensor_key, state[tensor_key].bfloat16()),
        "state for a parameter nobody lists": lambda: sd["state"].__setitem__(99, {}),
    }[how]()
    return sd


@pytest.mark.parametrize("how", ["lr='x'", "lr=-1", "no eps", "step=-5", "step=1.5", "missing moment", "unknown key",
                                 "wrong shape", "wrong dtype", "state for a parameter nobody lists"])
def test_corrupt_checkpoint_is_refused_at_load(preset, how):
    model, opt = _trained(preset)
    sd = _corrupt(copy.deepcopy(opt.state_dict()), how)
    fresh = preset(model.parameters())
    before = snapshot(fresh)
    with pytest.raises(ValueError, match="state_dict"):
        fresh.load_state_dict(sd)
    assert_same(before, snapshot(fresh))


def test_checkpoint_for_parameters_of_other_shapes_is_refused(preset):
    model, opt = _trained(preset)
    other = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Linear(48, 5))  # same counts
    other[0].weight = torch.nn.Parameter(torch.zeros(3, 2, 1, 9))
    with pytest.raises(ValueError, match="shape"):
        preset(other.parameters()).load_state_dict(opt.state_dict())


def test_schedule_in_a_checkpoint_is_recorded_by_name():
    """betas = (beta, palm_beta2()) keeps its beta1 (set by OneCycleLR, say) across a resume."""
    model, opt = _trained(hc.PaLMForeachSFAdamW)
    opt.param_groups[0]["betas"] = (0.8, opt.param_groups[0]["betas"][1])
    sd = opt.state_dict()
    assert sd["param_groups"][0]["betas"] == (0.8, "<schedule palm_beta2(scale=None)>")
    fresh = hc.PaLMForeachSFAdamW(model.parameters())
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["betas"][0] == 0.8
    assert isinstance(fresh.param_groups[0]["betas"][1], T.palm_beta2)


# --------------------------------------------------------------------------- the drop-ins' checkpoints

# Muon takes only 2-D parameters (helpers' Net has a conv kernel and biases): MuonWithAdamW,
# built from the model, stands for it. SGD keeps state only with momentum.
DROP_INS = [c for c in STANDARD if c is not hc.Muon] + [hc.MuonWithAdamW]
_DROP_IN_KWARGS = {hc.SGD: {"momentum": 0.9}}


def _drop_in(cls, model):
    kw = _DROP_IN_KWARGS.get(cls, {})
    return cls(model, **kw) if cls is hc.MuonWithAdamW else cls(model.parameters(), **kw)


def _drop_in_trained(cls, steps=3):
    model = make_net()
    opt = _drop_in(cls, model)
    train(model, opt, steps)
    return model, opt


def _corrupt_drop_in(sd, how, declared):
    """The corruptions of _corrupt, in terms every drop-in has (its own hyperparameter names, its
    own tensor state of the parameter that has some)."""
    index = next(i for i, s in sd["state"].items() if any(torch.is_tensor(v) and v.dim() for v in s.values()))
    state = sd["state"][index]
    group = next(g for g in sd["param_groups"] if index in g["params"])
    tensor_key = next(k for k, v in state.items() if torch.is_tensor(v) and v.dim())
    hyper = next(k for k in group if k in declared and k != "lr")
    {
        "lr='x'": lambda: group.__setitem__("lr", "x"),
        "lr=-1": lambda: group.__setitem__("lr", -1.0),
        "missing hyperparameter": lambda: group.pop(hyper),
        "step=-5": lambda: state.__setitem__("step", -5),
        "missing state": lambda: state.pop(tensor_key),
        "unknown key": lambda: state.__setitem__("bogus_buffer", torch.zeros(3)),
        "wrong shape": lambda: state.__setitem__(tensor_key, torch.zeros(7, 7, 7)),
        "wrong dtype": lambda: state.__setitem__(tensor_key, state[tensor_key].bfloat16()),
        "state for a parameter nobody lists": lambda: sd["state"].__setitem__(99, {}),
    }[how]()
    return sd


@pytest.mark.parametrize("how", ["lr='x'", "lr=-1", "missing hyperparameter", "step=-5", "missing state",
                                 "unknown key", "wrong shape", "wrong dtype", "state for a parameter nobody lists"])
@pytest.mark.parametrize("cls", DROP_INS, ids=lambda c: c.__name__)
def test_drop_in_corrupt_checkpoint_is_refused_at_load(cls, how):
    if cls is hc.SGD and how == "missing state":
        pytest.skip("SGD creates its momentum buffer at the first step with momentum, as torch does (a "
                    "checkpoint without one restarts the momentum, as torch.optim.SGD's does)")
    model, opt = _drop_in_trained(cls)
    sd = _corrupt_drop_in(copy.deepcopy(opt.state_dict()), how, set(opt.transform.declared()))
    fresh = _drop_in(cls, model)
    before = snapshot(fresh)
    with pytest.raises(ValueError, match="state_dict"):
        fresh.load_state_dict(sd)
    assert_same(before, snapshot(fresh))


@pytest.mark.parametrize("saver,loader", [
    (hc.Adam, hc.AdamW),  # coupled vs decoupled weight decay: another chain
    (hc.AdamW, hc.ForeachAdamW),  # torch's conventions vs HeavyBall's: another chain
    (hc.Adam, hc.NAdam),
    (hc.RMSprop, hc.Adagrad),
    (hc.AdamWScheduleFree, hc.ForeachSFAdamW),  # schedulefree's weights vs HeavyBall's
    (hc.SOAP, hc.ForeachSOAP),
], ids=lambda c: c.__name__)
def test_drop_in_checkpoint_of_another_optimizer_is_refused(saver, loader):
    model, opt = _drop_in_trained(saver)
    other = _drop_in(loader, model)
    before = snapshot(other)
    with pytest.raises(ValueError):
        other.load_state_dict(opt.state_dict())
    assert_same(before, snapshot(other))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adafactor"])
def test_the_references_checkpoint_is_refused_by_its_drop_in(name):
    """A torch.optim.AdamW checkpoint does not load into hc.AdamW: the state keys differ (ours are
    the chain's), and loading it as if they matched would start from zero moments silently."""
    model = make_net()
    ref = getattr(torch.optim, name)(model.parameters(), **({"momentum": 0.9} if name == "SGD" else {}))
    train(model, ref, 2)
    ours = _drop_in(getattr(hc, name), model)
    before = snapshot(ours)
    with pytest.raises(ValueError, match="not saved by a heavyball_chain optimizer"):
        ours.load_state_dict(ref.state_dict())
    assert_same(before, snapshot(ours))


@pytest.mark.parametrize("cls, key, value", [
    (hc.Adam, "maximize", True), (hc.Adam, "amsgrad", True), (hc.Adam, "decoupled_weight_decay", True),
    (hc.SGD, "nesterov", True), (hc.RMSprop, "centered", True), (hc.NAdam, "decoupled_weight_decay", True),
    (hc.PaLMForeachSOAP, "beta", 0.5), (hc.PaLMForeachSFAdamW, "beta", 0.5), (hc.ForeachAdamW, "compile", True),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_a_constructor_option_in_a_param_group_is_refused(cls, key, value):
    """torch.optim reads these flags per group (HeavyBall 0.8.1 PaLM's ``beta`` too); here they shape
    the chain, and a group holding one was kept and silently ignored (Adam with a group's
    ``maximize`` descended: 9.7e-2 from torch after 10 steps)."""
    with pytest.raises(ValueError, match=f"'{key}' in a param group"):
        cls([{"params": [torch.nn.Parameter(torch.ones(3))], key: value}])
    p = torch.nn.Parameter(torch.ones(3))
    opt = cls([p])
    with pytest.raises(ValueError, match=f"'{key}' in a param group"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3))], key: value})
    assert len(opt.param_groups) == 1
    opt.param_groups[0][key] = value  # set later, as a user or a scheduler would
    p.grad = torch.ones(3)
    before = snapshot(opt)
    with pytest.raises(ValueError, match=f"'{key}' in a param group"):
        opt.step()
    assert_same(before, snapshot(opt))


def test_other_group_keys_are_kept_as_torch_keeps_them():
    """Keys that are no constructor argument (a name, a scheduler's ``initial_lr``) are the user's."""
    opt = hc.AdamW([{"params": [torch.nn.Parameter(torch.ones(3))], "name": "decoder", "initial_lr": 1e-3}])
    assert opt.param_groups[0]["name"] == "decoder"


@pytest.mark.parametrize("how", ["constructor", "add_param_group"])
def test_a_group_schedule_with_hyperparameters_of_its_own(how):
    """``betas=(0.9, palm_beta2())`` in one group (palm_beta2 reads ``beta2_scale``): every group
    gets ``beta2_scale``, and the group steps as an optimizer built with those betas does. It
    raised "dictionary changed size during iteration", and with ``beta2_scale`` given, left the
    other groups without it so that no step could run."""
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    group = {"params": [b], "betas": (0.9, T.palm_beta2()), "beta2_scale": 0.5}
    if how == "constructor":
        opt = hc.ForeachAdamW([{"params": [a]}, group])
    else:
        opt = hc.ForeachAdamW([a])
        opt.add_param_group(group)
    assert [g["beta2_scale"] for g in opt.param_groups] == [0.8, 0.5]
    ref_p = torch.nn.Parameter(torch.ones(3))
    ref = hc.ForeachAdamW([{"params": [ref_p], "beta2_scale": 0.5}], betas=(0.9, T.palm_beta2()))
    for t in range(3):
        a.grad, b.grad, ref_p.grad = (torch.tensor([1.0, -2.0, 0.5]) * (t + 1) for _ in range(3))
        opt.step()
        ref.step()
    assert torch.equal(b, ref_p)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))]})
    assert opt.param_groups[-1]["beta2_scale"] == 0.8


@pytest.mark.parametrize("cls", [hc.ForeachAdamW, hc.AdamW, hc.Muon], ids=lambda c: c.__name__)
def test_a_tensor_lr_elsewhere_than_the_parameters_or_the_cpu_is_refused(cls):
    """A ``meta`` lr (or one on another GPU) reached the foreach kernels, which skipped it: the
    parameters moved by +update instead of -lr update. Refused before anything changes."""
    p = torch.nn.Parameter(torch.ones(3, 3))
    opt = cls([p], lr=0.1)
    opt.param_groups[0]["lr"] = torch.tensor(0.1, device="meta")
    p.grad = torch.ones(3, 3)
    before = snapshot(opt)
    with pytest.raises(ValueError, match="lr: a tensor on meta, the parameters are on cpu; create lr on the CPU"):
        opt.step()
    assert_same(before, snapshot(opt))

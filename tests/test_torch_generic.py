"""torch's generic optimizer tests, for every preset and one hand-built chain.

pytorch's ``TestOptimRenewed`` (test/test_optim.py, on ``torch.testing._internal.common_optimizers``)
checks what every ``torch.optim.Optimizer`` must do: go the right way with and without LR
schedulers, tensor lr, complex parameters, state_dict round trips, hooks, deepcopy, missing and
zero gradients, errors. These are our own tests of the same properties, written from what each of
those tests checks (no code of pytorch's is copied), parametrised over ``INFOS``: one entry per
name in ``heavyball_chain.presets.__all__`` plus ``CustomChain``. tests/README.md maps each
``TestOptimRenewed`` test to the tests here, or gives the reason it does not apply.

Plain pytest, not torch's ``@optims``/``instantiate_device_type_tests``: importing
``common_optimizers`` costs seconds and freezes ``torch.backends`` flags for the whole session
(``disable_global_flags``), and we have one device and one implementation to test.

Numbers: every optimizer gets ``info.lr`` (0.03), which makes each of them cut the loss of
torch's 10x5 linear problem by at least 25% in 20 steps, with or without schedulers, contiguous or
not (measured over several seeds); the tests ask for 10%. SOAP's first step and ADOPT's first two
only initialise (``info.skipped``); tests that need updates run past them. Schedule-free optimizers
hold y in the parameters: losses are evaluated between ``opt.eval()`` and ``opt.train()`` (a no-op
for the others). Comparisons are exact (``torch.equal``) wherever both sides run the same
arithmetic on the same numbers; tolerances are given where they do not, with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import math
import os
import re
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch.nn import Parameter
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import heavyball_chain as hc
from heavyball_chain import transforms as T


class CustomChain(hc.ChainOptimizer):
    """A hand-built chain: global-norm clipping -> LaProp -> decoupled weight decay -> -lr -> apply."""

    def __init__(self, params, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, warmup_steps=0,
                 max_norm=1.0):
        tx = hc.chain(T.clip_by_global_norm(1.0), T.scale_by_laprop(), T.add_decayed_weights(),
                      T.scale_by_learning_rate(), T.stochastic_round_apply())
        super().__init__(params, tx, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         warmup_steps=warmup_steps, max_norm=max_norm)


# --------------------------------------------------------------------------- optimizer infos


@dataclass(frozen=True)
class Info:
    """What the generic tests need to know about one optimizer (torch's ``OptimizerInfo``, ours)."""

    cls: type
    lr: float = 0.03            # makes progress in 20 steps on the 10x5 problem (module docstring)
    skipped: int = 0            # initialising steps without a parameter update (SOAP 1, ADOPT 2)
    supports_complex: bool = True  # else complex params are a TypeError at construction
    pointwise: bool = True      # each element's update depends on that element alone
    couples_params: bool = False  # a parameter's update depends on the other parameters (global norm)
    soap: bool = False          # rotates into an eigenbasis of the gradient's second moment
    configs: tuple = ()         # constructor configurations besides the default; () derives HeavyBall's
    torch_style: bool = False   # a drop-in for torch.optim: takes torch's foreach/fused/... flags
    state_kwargs: tuple = ()    # (name, value) pairs that make it keep tensor state (SGD: momentum)
    plateaus: bool = False      # ReduceLROnPlateau cuts its lr in 20 steps on the linear problem

    @property
    def name(self) -> str:
        return self.cls.__name__

    @property
    def signature(self) -> dict:
        return {k: v.default for k, v in inspect.signature(self.cls).parameters.items() if k != "params"}

    def inputs(self) -> list[tuple[str, dict]]:
        """Constructor configurations (torch's ``optim_inputs_func``), built fresh on every call.
        A tensor lr is not among them: its own tests (``test_tensor_lr*``) keep its failures
        apart from those of the properties tested here."""
        if self.configs:
            return [("default", {}), *((desc, copy.deepcopy(kw)) for desc, kw in self.configs)]
        sig = self.signature
        betas = {"beta2_scale": 0.6} if "beta2_scale" in sig else {"betas": (0.8, 0.95)}
        return [
            ("default", {}),
            ("lr, weight_decay, warmup", {"lr": self.lr, "weight_decay": 0.1, "warmup_steps": 2}),
            ("betas", {"lr": self.lr, **betas}),
        ]

    def make(self, params, **kwargs):
        return self.cls(params, **kwargs)


def _info(cls) -> Info:
    name = cls.__name__
    soap = "SOAP" in name
    return Info(
        cls,
        skipped=1 if soap else 2 if "ADOPT" in name else 0,
        supports_complex=not soap,
        pointwise=not soap,
        soap=soap,
    )


def _lr_wd(lr=0.03, **kw):
    return {"lr": lr, "weight_decay": 0.1, **kw}


# The drop-ins (docs/presets.md): each with configurations that exercise what shapes its chain.
# Muon takes only 2-D parameters, which most tests here do not have: tests/test_ref_torch_matrix.py
# has its contract tests, and MuonWithAdamW's (it takes a model).
STANDARD_INFOS = [
    Info(hc.SGD, torch_style=True, state_kwargs=(("momentum", 0.9),),
         configs=(("nesterov, wd", _lr_wd(momentum=0.5, nesterov=True)),)),
    Info(hc.Adam, torch_style=True, configs=(("betas, wd, amsgrad", _lr_wd(betas=(0.8, 0.95), amsgrad=True)),)),
    Info(hc.AdamW, torch_style=True, configs=(("betas, wd, amsgrad", _lr_wd(betas=(0.8, 0.95), amsgrad=True)),)),
    Info(hc.NAdam, torch_style=True, configs=(("decoupled, momentum_decay", _lr_wd(momentum_decay=0.01,
                                                                                    decoupled_weight_decay=True)),)),
    Info(hc.RAdam, torch_style=True, plateaus=True,
         configs=(("betas, decoupled", _lr_wd(betas=(0.8, 0.9), decoupled_weight_decay=True)),)),
    Info(hc.Adamax, torch_style=True, configs=(("betas, wd", _lr_wd(betas=(0.8, 0.95))),)),
    Info(hc.RMSprop, torch_style=True, configs=(("centered, momentum, alpha, wd", _lr_wd(centered=True, momentum=0.5,
                                                                                          alpha=0.9)),)),
    Info(hc.Adagrad, torch_style=True, configs=(("lr_decay, wd, initial accumulator",
                                                  _lr_wd(lr_decay=0.01, initial_accumulator_value=0.1)),)),
    Info(hc.Adafactor, torch_style=True, pointwise=False, supports_complex=False,
         configs=(("wd, beta2_decay, d", _lr_wd(beta2_decay=-0.5, d=2.0)),)),
    Info(hc.Lion, configs=(("betas, decoupled wd", _lr_wd(lr=0.01, betas=(0.8, 0.95), decoupled_weight_decay=True)),)),
    Info(hc.AdamWScheduleFree, torch_style=True, configs=(("wd, warmup, betas, r", _lr_wd(warmup_steps=2, betas=(0.8, 0.95),
                                                                                        r=1.0)),)),
    Info(hc.SOAP, skipped=1, supports_complex=False, pointwise=False, soap=True,
         configs=(("wd, frequency, betas", _lr_wd(precondition_frequency=2, betas=(0.8, 0.95))),)),
    Info(hc.ADOPT, skipped=1, torch_style=True, configs=(("decouple", _lr_wd(decouple=True)),)),
    Info(hc.AdEMAMix, configs=(("wd, warmups, betas", _lr_wd(alpha_warmup=5, beta3_warmup=5, betas=(0.8, 0.95, 0.99))),)),
    Info(hc.MARS, pointwise=False, supports_complex=False,
         configs=(("1-d by MARS, amsgrad, wd", _lr_wd(optimize_1d=True, amsgrad=True)),)),
]
INFOS = [_info(getattr(hc.presets, name)) for name in hc.presets.HEAVYBALL] + [
    Info(CustomChain, pointwise=False, couples_params=True),
] + STANDARD_INFOS
COMPLEX_INFOS = [i for i in INFOS if i.supports_complex]
REAL_ONLY_INFOS = [i for i in INFOS if not i.supports_complex]


def _ids(infos):
    return [i.name for i in infos]


@pytest.fixture(params=INFOS, ids=_ids(INFOS))
def info(request) -> Info:
    return request.param


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


# These tensors are far below torch's parallel grain size, so the thread count changes no result
# (checked: the same outcomes with 1 and 2 threads, TORCH_GENERIC_THREADS=2); but on a busy 2-core
# machine OpenMP's second thread makes every small op wait for a core (measured: BatchNorm2d
# forward+backward 0.15 ms with 1 thread, 13 ms with 2 under load 6). conftest's ``one_thread``
# sets NUM_THREADS threads for each test.
NUM_THREADS = int(os.environ.get("TORCH_GENERIC_THREADS", "1"))
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def evaluating(opt):
    """Parameters in their evaluation form (schedule-free: x) inside the block."""
    opt.eval()
    try:
        yield
    finally:
        opt.train()


def linear_problem(contiguous=True):
    """torch's problem: ``loss = |W x + b|^2`` with W 10x5, b 10, x 5, all random (non-contiguous:
    every other element of a larger tensor). Returns W, b, x and the loss of (W, b)."""
    if contiguous:
        weight = Parameter(torch.randn(10, 5))
        bias = Parameter(torch.randn(10))
    else:
        weight = Parameter(torch.randn(10, 5, 2)[..., 0])
        bias = Parameter(torch.randn(10, 2)[..., 0])
    x = torch.randn(5)
    return weight, bias, x, lambda: linear_loss(weight, bias, x)


def linear_loss(w, b, x):
    return (w.mv(x) + b).pow(2).sum()


def backward_closure(opt, loss_fn):
    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss
    return closure


def scheduler_sets():
    return {
        "none": [],
        "StepLR+ReduceLROnPlateau": [lambda o: StepLR(o, gamma=0.9, step_size=10), lambda o: ReduceLROnPlateau(o)],
    }


def step_schedulers(schedulers, loss):
    for s in schedulers:
        if isinstance(s, ReduceLROnPlateau):
            s.step(loss.item())
        else:
            s.step()


def assert_same(a, b, path="value"):
    """Exact equality of nested state (dtypes and types included)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), f"{path}: {a!r} != {b!r}"


@contextlib.contextmanager
def warns_or_raises(match):
    """A parameter twice in one group: torch warns (UserWarning, "will cause an error" in future);
    an optimizer may already raise a ValueError. Either names the problem; silence does not."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except ValueError as exc:
            assert re.search(match, str(exc)), exc
            return
    assert any(issubclass(w.category, UserWarning) and re.search(match, str(w.message)) for w in caught), \
        [str(w.message) for w in caught]


def without_param_names(sd):
    sd = copy.deepcopy(sd)
    for g in sd["param_groups"]:
        g.pop("param_names", None)
    return sd


def named(params, is_named):
    return [(f"name{i}", p) for i, p in enumerate(params)] if is_named else list(params)


def small_params():
    return [Parameter(torch.randn(2, 3)), Parameter(torch.randn(2))]


def seeded_grads(params, gen):
    """Random gradients for ``params`` from ``gen``, in each parameter's dtype and layout."""
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype).to(memory_format=_format_of(p))


def _format_of(p):
    if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def float_state(opt, p):
    return {k: v for k, v in opt.state[p].items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


# --------------------------------------------------------------------------- global flags


@pytest.mark.parametrize("flag", ["fused", "differentiable", "capturable", "maximize"])
def test_implementation_flags_are_rejected_not_ignored(info, flag):
    """torch's infos never pass foreach/fused/differentiable in their configs; the HeavyBall
    presets have only the foreach implementation and none of these flags: passing one is an error
    naming it, never silently ignored. (The drop-ins take torch's flags: test_torch_flags.)"""
    if flag in info.signature:
        pytest.skip(f"{info.name} takes {flag} (test_torch_flags)")
    for _, kwargs in info.inputs():
        assert not {"foreach", "fused", "differentiable"} & set(kwargs)
    with pytest.raises(TypeError, match=flag):
        info.make(small_params(), **{flag: True})


def test_foreach_false_is_rejected(info):
    """There is no for-loop implementation to fall back to (the drop-ins accept foreach=False:
    torch's for-loop and foreach kernels compute the same numbers)."""
    if info.torch_style:
        pytest.skip("a drop-in for torch.optim: test_torch_flags")
    with pytest.raises((TypeError, ValueError), match="foreach"):
        info.make(small_params(), foreach=False)


def _run_linear(info, steps=6, **kwargs):
    weight, bias, x, loss_fn = linear_problem()
    opt = info.make([weight, bias], lr=info.lr, **kwargs)
    closure = backward_closure(opt, loss_fn)
    initial = closure().item()
    for _ in range(info.skipped + steps):
        opt.step(closure)
    with evaluating(opt):
        return initial, loss_fn().item(), (weight.detach().clone(), bias.detach().clone())


def test_torch_flags(info):
    """A drop-in takes torch.optim's flags: ``foreach`` and ``fused`` (any value: the numbers are
    the same, exactly), ``maximize`` (goes uphill), ``capturable=True`` (the same numbers, for the
    chains that can be captured; refused naming the transform that cannot, for the others), and
    refuses ``differentiable=True`` (not offered) with an error naming it."""
    if not info.torch_style:
        pytest.skip("not a torch.optim drop-in")
    sig = info.signature
    torch.manual_seed(0)
    _, _, plain = _run_linear(info)
    for flag, values in (("foreach", (None, True, False)), ("fused", (None, True, False))):
        for value in values if flag in sig else ():
            torch.manual_seed(0)
            _, _, got = _run_linear(info, **{flag: value})
            assert all(torch.equal(a, b) for a, b in zip(got, plain)), (flag, value)
    if "differentiable" in sig:
        with pytest.raises(ValueError, match="differentiable"):
            info.make(small_params(), differentiable=True)
    if "capturable" in sig and info.name in hc.presets.CAPTURABLE:  # the same numbers, exactly (test_capturable)
        torch.manual_seed(0)
        _, _, got = _run_linear(info, capturable=True)
        assert all(torch.equal(a, b) for a, b in zip(got, plain))
    elif "capturable" in sig:
        with pytest.raises(ValueError, match="capturable=True: "):
            info.make(small_params(), capturable=True)
    if "maximize" in sig:
        torch.manual_seed(0)
        initial, final, _ = _run_linear(info, maximize=True)
        assert final > initial, (initial, final)


# --------------------------------------------------------------------------- errors


_ERROR_CASES = ["negative lr", "nan lr", "2-element tensor lr", "negative tensor lr", "negative eps",
                "negative weight_decay", "negative warmup_steps", "beta1 = 1"]
_CLOSED_BETAS = ("Lion",)  # lion-pytorch takes betas in [0, 1]: beta1 = 1 is valid there


def _hyperparameter_error(info, case):
    """``(kwargs, name)`` of error case ``case``, or None where the signature has no such argument
    (Lion has no eps, the drop-ins of torch.optim no warmup_steps, Adafactor's eps is a pair)."""
    sig = info.signature
    cases = {
        "negative lr": ({"lr": -1e-3}, "lr"),
        "nan lr": ({"lr": float("nan")}, "lr"),
        "2-element tensor lr": ({"lr": torch.tensor([1e-3, 1e-3])}, "lr"),
        "negative tensor lr": ({"lr": torch.tensor(-1e-3)}, "lr"),
        "negative weight_decay": ({"weight_decay": -0.1}, "weight_decay"),
    }
    if isinstance(sig.get("eps"), float):
        cases["negative eps"] = ({"eps": -1e-8}, "eps")
    if "warmup_steps" in sig:
        cases["negative warmup_steps"] = ({"warmup_steps": -1}, "warmup_steps")
    one = 1.5 if info.name in _CLOSED_BETAS else 1.0
    if "beta" in sig:  # PaLM signatures: beta is beta1, beta2 is the schedule
        cases["beta1 = 1"] = ({"beta": one}, "beta")
    elif "betas" in sig:
        cases["beta1 = 1"] = ({"betas": (one, *sig["betas"][1:])}, "betas")
    return cases.get(case)


@pytest.mark.parametrize("case", _ERROR_CASES)
def test_errors_bad_hyperparameter(info, case):
    if _hyperparameter_error(info, case) is None:
        pytest.skip(f"{info.name} has no such argument")
    kwargs, name = _hyperparameter_error(info, case)
    with pytest.raises(ValueError, match=name):
        info.make(small_params(), **kwargs)
    opt = info.make(small_params())  # the same check guards add_param_group (group keys: betas)
    group = {"betas": (kwargs["beta"], 0.99)} if "beta" in kwargs else kwargs  # the group holds betas, not beta
    with pytest.raises(ValueError, match=name):
        opt.add_param_group({"params": [Parameter(torch.randn(2))], **group})


def test_errors_params_argument(info):
    """torch's checks on ``params`` (torch.optim.Optimizer's, which our optimizers keep)."""
    p, q = Parameter(torch.randn(1, 1)), Parameter(torch.randn(1, 1))
    with pytest.raises(TypeError, match="params"):
        info.make(p)  # a tensor, not an iterable of tensors
    with pytest.raises(ValueError, match="empty parameter list"):
        info.make([])
    with warns_or_raises(r"duplicate|twice"):
        info.make([p, p])
    with pytest.raises(ValueError, match="more than one parameter group"):
        info.make([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match="with/without names"):
        info.make([("weight", p), q])
    with pytest.raises(ValueError, match="with/without names"):
        info.make([{"params": [p]}, {"params": [("weight", q)]}])
    with pytest.raises(ValueError, match="non-leaf"):
        info.make([p * 2])


def test_errors_add_param_group_duplicates(info):
    p, q = Parameter(torch.randn(2, 3)), Parameter(torch.randn(3))
    opt = info.make([p])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [q, p]})
    assert len(opt.param_groups) == 1
    with warns_or_raises(r"duplicate|twice"):
        opt.add_param_group({"params": [q, q]})


def test_errors_sparse_grad_at_step(info):
    p = Parameter(torch.randn(5, 3))
    opt = info.make([p])
    p.grad = torch.randn(5, 3).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_errors_non_floating_params(info, dtype):
    """Integer and bool tensors cannot be optimized: TypeError at construction (and in
    add_param_group), not a failure or a silent cast at the first step."""
    bad = torch.zeros(2, 3, dtype=dtype)
    with pytest.raises(TypeError):
        info.make([Parameter(torch.randn(2)), bad])
    opt = info.make([Parameter(torch.randn(2))])
    with pytest.raises(TypeError):
        opt.add_param_group({"params": [bad]})


@pytest.mark.parametrize("info", REAL_ONLY_INFOS, ids=_ids(REAL_ONLY_INFOS))
def test_errors_complex_params_rejected_by_soap(info):
    bad = torch.randn(4, 3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(TypeError, match="complex"):
        info.make([Parameter(torch.randn(2)), bad])
    opt = info.make([Parameter(torch.randn(2))])
    with pytest.raises(TypeError, match="complex"):
        opt.add_param_group({"params": [bad]})


# --------------------------------------------------------------------------- goes the right direction


@pytest.mark.parametrize("scheds", list(scheduler_sets()))
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "noncontiguous"])
def test_goes_right_direction(info, contiguous, scheds):
    weight, bias, x, loss_fn = linear_problem(contiguous)
    opt = info.make([weight, bias], lr=info.lr)
    schedulers = [make(opt) for make in scheduler_sets()[scheds]]
    closure = backward_closure(opt, loss_fn)
    initial = closure().item()
    for _ in range(20):
        loss = closure()
        opt.step()
        step_schedulers(schedulers, loss)
    with evaluating(opt):
        final = loss_fn().item()
    assert final < 0.9 * initial, (initial, final)
    if schedulers:  # the schedulers act through the param group: StepLR's 0.9 twice in 20 steps
        # (RAdam's first, unrectified steps overshoot and the loss stalls for 10 steps, so
        # ReduceLROnPlateau may also cut by 0.1: torch.optim.RAdam does the same, with the same numbers)
        cuts = (1.0, 0.1) if info.plateaus else (1.0,)
        assert any(opt.param_groups[0]["lr"] == pytest.approx(info.lr * 0.9 ** 2 * c) for c in cuts)
    assert weight.is_contiguous() == contiguous  # written in place, not replaced by a copy


def test_param_group_with_lrscheduler_goes_right_direction(info):
    for make_schedulers in scheduler_sets().values():
        weight, bias, x, loss_fn = linear_problem()
        opt = info.make([{"params": [weight]}, {"params": [bias], "lr": info.lr}])  # weight: the class default
        schedulers = [make(opt) for make in make_schedulers]
        closure = backward_closure(opt, loss_fn)
        initial = closure().item()
        for _ in range(20):
            loss = opt.step(closure)
            step_schedulers(schedulers, loss)
        with evaluating(opt):
            assert loss_fn().item() < initial


def test_param_groups_weight_decay(info):
    weight, bias, x, loss_fn = linear_problem()
    opt = info.make([{"params": [weight], "lr": info.lr, "weight_decay": 0.1},
                     {"params": [bias], "lr": info.lr, "weight_decay": 0.0}])
    closure = backward_closure(opt, loss_fn)
    initial = closure().item()
    for _ in range(20):
        opt.step(closure)
    with evaluating(opt):
        assert loss_fn().item() < 0.9 * initial


def test_param_groups_lr(info):
    """A group's lr overrides the default: the default here (1e-28) leaves its group unchanged."""
    if info.name == "MARS":  # the official MARS: the 1-D lr is lr * lr_1d / (constructor lr = 1e-28)
        pytest.skip("MARS's 1-D branch scales by lr_1d / the constructor's lr, so 1e-28 there is 3e25 here")
    weight, bias, x, loss_fn = linear_problem()
    irrelevant = Parameter(torch.randn(2))
    before = irrelevant.detach().clone()
    opt = info.make([{"params": [weight, bias], "lr": info.lr}, {"params": [irrelevant]}], lr=1e-28)
    closure = backward_closure(opt, loss_fn)
    initial = closure().item()
    for _ in range(20):
        opt.zero_grad()
        loss_fn().backward()
        irrelevant.grad = torch.rand_like(irrelevant)
        opt.step()
    with evaluating(opt):
        assert loss_fn().item() < 0.9 * initial
        # updates of ~1e-28 vanish next to values of order 1: exactly unchanged
        assert torch.equal(irrelevant, before), (irrelevant, before)
    assert opt.state[irrelevant]["step"] == 20


# --------------------------------------------------------------------------- tensor lr


@pytest.mark.parametrize("with_scheduler", [False, True], ids=["constant", "StepLR"])
def test_tensor_lr(info, with_scheduler):
    """A 0-d tensor lr gives the numbers of the same float lr. Tolerance: float32's default
    (rtol 1.3e-6, atol 1e-5), as torch's test: the tensor holds float32(lr), not the double."""
    for desc, kwargs in info.inputs():
        lr = kwargs.pop("lr", info.lr)
        weight, bias, x, loss_fn = linear_problem()
        w2, b2 = (Parameter(t.detach().clone()) for t in (weight, bias))
        opt_f = info.make([weight, bias], lr=lr, **kwargs)
        opt_t = info.make([w2, b2], lr=torch.tensor(lr), **kwargs)
        assert isinstance(opt_t.param_groups[0]["lr"], torch.Tensor)
        scheds = [StepLR(o, step_size=2, gamma=0.5) for o in (opt_f, opt_t)] if with_scheduler else []
        start = weight.detach().clone()
        for _ in range(info.skipped + 5):
            for opt, w, b in ((opt_f, weight, bias), (opt_t, w2, b2)):
                opt.zero_grad()
                linear_loss(w, b, x).backward()
                opt.step()
            for s in scheds:
                s.step()
        assert not torch.equal(weight, start), desc  # the comparison is not between two no-ops
        torch.testing.assert_close(w2, weight, msg=desc)
        torch.testing.assert_close(b2, bias, msg=desc)


def test_tensor_lr_state_dict_and_deepcopy(info):
    """A tensor lr survives torch.save/torch.load(weights_only=True) and deepcopy, and the loaded
    or copied optimizer continues exactly as the original."""
    params = small_params()
    opt = info.make(params, lr=torch.tensor(info.lr))
    _prime(info, opt, params, info.skipped + 2)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    params2 = [Parameter(p.detach().clone()) for p in params]
    opt2 = info.make(params2, lr=torch.tensor(info.lr))
    opt2.load_state_dict(loaded)
    params3, opt3 = copy.deepcopy((params, opt))
    for ps, o in ((params, opt), (params2, opt2), (params3, opt3)):
        _prime(info, o, ps, 2, seed=7)
        assert isinstance(o.param_groups[0]["lr"], torch.Tensor)
    for a, b, c in zip(params, params2, params3):
        assert torch.equal(a, b) and torch.equal(a, c)


# --------------------------------------------------------------------------- complex


@pytest.mark.parametrize("mix", ["complex+real", "complex only"])
@pytest.mark.parametrize("info", COMPLEX_INFOS, ids=_ids(COMPLEX_INFOS))
def test_complex(info, mix):
    """A complex parameter behaves bit for bit like its ``torch.view_as_real`` counterpart, at
    every step (torch: "results should be bitwise equivalent"); "complex+real" is torch's case
    (a real parameter in the same optimizer), "complex only" separates the two effects."""
    for desc, kwargs in [info.inputs()[0], info.inputs()[1]]:
        complex_params = [torch.randn(10, 5, dtype=torch.complex64, requires_grad=True),
                          torch.randn(10, dtype=torch.complex64, requires_grad=True)]
        if mix == "complex+real":
            complex_params.append(torch.randn(10, 5, requires_grad=True))
        real_params = [(torch.view_as_real(p) if p.is_complex() else p).detach().clone().requires_grad_()
                       for p in complex_params]
        starts = [p.detach().clone() for p in real_params]
        opt_c = info.make(complex_params, **kwargs)
        opt_r = info.make(real_params, **copy.deepcopy(kwargs))
        gen = torch.Generator().manual_seed(1)
        for step in range(info.skipped + 3):
            for pc, pr in zip(complex_params, real_params):
                assert torch.equal(torch.view_as_real(pc.detach()) if pc.is_complex() else pc, pr), (desc, step)
                g = torch.randn(pr.shape, generator=gen)
                pr.grad = g
                pc.grad = torch.view_as_complex(g.clone()) if pc.is_complex() else g.clone()
            opt_r.step()
            opt_c.step()
        for pc, pr, start in zip(complex_params, real_params, starts):
            assert torch.equal(torch.view_as_real(pc.detach()) if pc.is_complex() else pc, pr), desc
            assert not torch.equal(pr, start), desc  # not a comparison of two no-ops


def _rosenbrock(t):
    x, y = t
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


@pytest.mark.parametrize("info", COMPLEX_INFOS, ids=_ids(COMPLEX_INFOS))
def test_complex_2d(info):
    """A complex parameter against its real and imaginary parts as two real parameters, on
    ``|rosenbrock(z)|``, re-aligned after every step (as torch's test). Tolerance: float32's
    default; the two losses are computed by different complex/real arithmetic."""
    for desc, kwargs in [info.inputs()[0], info.inputs()[1]]:
        a = torch.randn(2, dtype=torch.complex64, requires_grad=True)
        re = a.real.detach().clone().requires_grad_()
        im = a.imag.detach().clone().requires_grad_()
        opt1 = info.make([a], **kwargs)
        opt2 = info.make([re, im], **copy.deepcopy(kwargs))
        for _ in range(info.skipped + 3):
            opt1.zero_grad()
            loss1 = _rosenbrock(a).abs()
            loss1.backward()
            opt2.zero_grad()
            with torch.no_grad():
                torch.testing.assert_close(re, a.real, msg=desc)
                torch.testing.assert_close(im, a.imag, msg=desc)
                re.copy_(a.real)
                im.copy_(a.imag)
            loss2 = _rosenbrock(torch.complex(re, im)).abs()
            loss2.backward()
            torch.testing.assert_close(loss2, loss1, msg=desc)
            torch.testing.assert_close(re.grad, a.grad.real, msg=desc)
            torch.testing.assert_close(im.grad, a.grad.imag, msg=desc)
            with torch.no_grad():
                re.grad.copy_(a.grad.real)
                im.grad.copy_(a.grad.imag)
            opt1.step()
            opt2.step()
            torch.testing.assert_close(re, a.real.detach(), msg=desc)
            torch.testing.assert_close(im, a.imag.detach(), msg=desc)


# --------------------------------------------------------------------------- missing and zero grads


def test_step_is_noop_when_params_have_no_grad(info):
    params = [torch.randn(2, 3), torch.randn(3)]  # requires_grad=False, never a grad
    before = [p.clone() for p in params]
    marker = torch.tensor([1.0])
    for desc, kwargs in info.inputs():
        opt = info.make(params, **kwargs)
        assert opt.step(lambda: marker) is marker
        assert all(torch.equal(p, b) for p, b in zip(params, before)), desc
        assert all(len(opt.state[p]) == 0 for p in params), desc


def test_step_is_noop_for_zero_grads(info):
    """Zero gradients and no weight decay: the parameters do not move (exactly)."""
    for desc, kwargs in info.inputs():
        kwargs["weight_decay"] = 0.0
        p = Parameter(torch.randn(5, 1))
        q = Parameter(torch.randn(4, 3))
        before = [p.detach().clone(), q.detach().clone()]
        opt = info.make([p, q], **kwargs)
        for _ in range(info.skipped + 3):
            p.grad = torch.zeros_like(p)
            q.grad = torch.zeros_like(q)
            opt.step()
        for t, b in zip((p, q), before):
            assert torch.equal(t, b), desc
        with evaluating(opt):
            for t, b in zip((p, q), before):
                assert torch.equal(t, b), desc


def test_none_grads_frozen_layers_and_scalar_param(info):
    """torch's comparison scenario (its foreach-vs-forloop check): a 0-d parameter, a step with
    every gradient None (a no-op), a layer frozen for two steps then unfrozen. The frozen
    parameters keep their values, state and step count; the reference is the same optimizer
    with every parameter in its own param group (param groups are independent optimizers), which
    must match exactly unless the chain couples parameters (global-norm clipping)."""
    x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).reshape(3, 2)
    runs = []
    for per_param_groups in (False, True):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1),
                                    torch.nn.Sigmoid())
        scalar = Parameter(torch.tensor(0.7))
        params = list(model.parameters()) + [scalar]
        groups = [{"params": [p]} for p in params] if per_param_groups else params
        opt = info.make(groups, lr=info.lr)
        start = params[0].detach().clone()
        history = []
        for i in range(7):
            opt.zero_grad()
            if i == 3:
                model[2].requires_grad_(False)
            if i == 5:
                model[2].requires_grad_(True)
            snapshot = [(p.detach().clone(), copy.deepcopy(opt.state[p])) for p in params]
            if i != 2:
                (model(x).sum() + scalar.square()).backward()
            opt.step()
            frozen = list(model[2].parameters()) if i in (3, 4) else []
            for p, (value, state) in zip(params, snapshot):
                if i == 2 or any(p is f for f in frozen):
                    assert torch.equal(p, value), (i, "no grad: the step must not touch it")
                    assert_same(dict(opt.state[p]), state, f"state at step {i}")
            history.append([p.detach().clone() for p in params])
        steps = [opt.state[p]["step"] for p in params]
        frozen_ids = {id(p) for p in model[2].parameters()}
        assert steps == [4 if id(p) in frozen_ids else 6 for p in params]
        with evaluating(opt):
            assert not torch.equal(params[0], start), "the first layer never moved"
        runs.append((history, [float_state(opt, p) for p in params]))
    if not info.couples_params:
        (h1, s1), (h2, s2) = runs
        for i, (a, b) in enumerate(zip(h1, h2)):
            for x1, x2 in zip(a, b):
                assert torch.equal(x1, x2), f"step {i}"
        for a, b in zip(s1, s2):
            assert_same(a, b, "state")


def test_zero_size_params(info):
    empty = [Parameter(torch.randn(0)), Parameter(torch.randn(3, 0))]
    w = Parameter(torch.randn(3, 2))
    opt = info.make(empty + [w], lr=info.lr)
    start = w.detach().clone()
    for _ in range(info.skipped + 2):
        for p in empty + [w]:
            p.grad = torch.randn_like(p)
        opt.step()
    assert [tuple(p.shape) for p in empty] == [(0,), (3, 0)]
    with evaluating(opt):
        assert not torch.equal(w, start)


def test_zero_grad(info):
    weight, bias, x, loss_fn = linear_problem()
    opt = info.make([weight, bias])
    loss_fn().backward()
    opt.step()
    opt.zero_grad()
    assert weight.grad is None and bias.grad is None
    loss_fn().backward()
    opt.zero_grad(set_to_none=False)
    assert torch.count_nonzero(weight.grad) == 0 and torch.count_nonzero(bias.grad) == 0


def test_empty_param_group(info):
    w = Parameter(torch.randn(3, 2))
    opt = info.make([{"params": []}, {"params": [w]}], lr=info.lr)
    opt.add_param_group({"params": []})
    start = w.detach().clone()
    for _ in range(info.skipped + 2):
        w.grad = torch.randn_like(w)
        opt.step()
    with evaluating(opt):
        assert not torch.equal(w, start)
    w2 = Parameter(start.clone())
    opt2 = info.make([{"params": []}, {"params": [w2]}, {"params": []}], lr=info.lr)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[w2]["step"] == opt.state[w]["step"]


def test_non_empty_state(info):
    model = torch.nn.Linear(5, 5)
    for desc, kwargs in info.inputs():
        opt = info.make(model.parameters(), **kwargs)
        opt.zero_grad()
        model(torch.rand(2, 5)).sum().backward()
        opt.step()
        assert all(len(opt.state[p]) > 0 for p in model.parameters()), desc


def test_initialising_steps(info):
    """SOAP's first step and ADOPT's first two create state and leave the parameters alone; the
    next step moves them (the step counts the other tests rely on)."""
    w = Parameter(torch.randn(4, 3))
    start = w.detach().clone()
    opt = info.make([w], lr=info.lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(info.skipped):
        seeded_grads([w], gen)
        opt.step()
        assert torch.equal(w, start)
    seeded_grads([w], gen)
    opt.step()
    assert not torch.equal(w, start)


# --------------------------------------------------------------------------- views, layouts, dtypes


def test_params_that_are_views(info):
    """A parameter that is a strided view of a larger tensor is updated in place: the rest of
    the storage is untouched and the result equals a contiguous copy's: exactly for pointwise
    chains; float32 tolerance for the custom chain (the layout changes the order of the norm's
    sum). Not compared for SOAP: its first update divides rotated gradient components by their
    own magnitude, and the components in the null space of the rank-deficient first factors are
    rounding noise, so a one-ulp difference in a norm (AGC, schedule-free SOAP) flips their signs
    and moves the result by ~lr (measured: 0.034 at lr 0.03)."""
    base = torch.randn(4, 12)
    outside = base[:, 1::2].clone()
    view = Parameter(base[:, ::2])  # shares base's storage
    copy_ = Parameter(view.detach().clone())
    retained = torch.randn(4, 6, requires_grad=True) * 1.0  # a non-leaf that retains its grad
    retained.retain_grad()
    opts = [info.make([view], lr=info.lr), info.make([copy_], lr=info.lr), info.make([retained], lr=info.lr)]
    gen = torch.Generator().manual_seed(0)
    start, view_start = retained.detach().clone(), view.detach().clone()
    for _ in range(info.skipped + 3):
        g = torch.randn(4, 6, generator=gen)
        for p, opt in zip((view, copy_, retained), opts):
            p.grad = g.clone()
            opt.step()
    assert torch.equal(base[:, 1::2], outside)
    assert torch.equal(base[:, ::2], view.detach())
    if info.pointwise:
        assert torch.equal(view, copy_)
    elif not info.soap:
        torch.testing.assert_close(view, copy_)
    with evaluating(opts[0]):
        assert not torch.equal(view, view_start)
    with evaluating(opts[2]):
        assert not torch.equal(retained, start)


def test_channels_last_params_keep_their_layout(info):
    """A channels_last parameter stays channels_last; the state tensors shaped like it follow its
    layout (pointwise chains: torch's zeros_like(preserve_format)); results equal the contiguous
    run's (exactly for pointwise chains, float32 tolerance otherwise)."""
    w0 = torch.randn(4, 3, 3, 3)
    p_cl = Parameter(w0.clone().to(memory_format=torch.channels_last))
    p_c = Parameter(w0.clone())
    strides = p_cl.stride()
    opt_cl, opt_c = info.make([p_cl], lr=info.lr), info.make([p_c], lr=info.lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(info.skipped + 3):
        g = torch.randn(4, 3, 3, 3, generator=gen)
        p_cl.grad = g.to(memory_format=torch.channels_last)
        p_c.grad = g.clone()
        opt_cl.step()
        opt_c.step()
    assert p_cl.stride() == strides and p_cl.is_contiguous(memory_format=torch.channels_last)
    if info.pointwise:
        for k, v in float_state(opt_cl, p_cl).items():
            if v.shape == p_cl.shape:
                assert v.stride() == strides, k
        assert torch.equal(p_cl, p_c)
    else:
        torch.testing.assert_close(p_cl, p_c)


def test_mixed_dtypes_in_one_optimizer(info):
    """float64, float32 and bfloat16 parameters in one param group: each dtype is its own bucket,
    so the result equals one group per parameter, exactly; float64 parameters keep float64 state,
    the others float32 state."""
    dtypes = [torch.float64, torch.float32, torch.bfloat16]
    runs = []
    for separate in (False, True):
        torch.manual_seed(0)
        params = [Parameter(torch.randn(4, 3).to(d)) for d in dtypes]
        opt = info.make([{"params": [p]} for p in params] if separate else params, lr=info.lr,
                        **dict(info.state_kwargs))
        gen = torch.Generator().manual_seed(0)
        for _ in range(info.skipped + 3):
            seeded_grads(params, gen)
            opt.step()
        for p in params:
            state = float_state(opt, p)
            assert state, "no floating-point state"
            expected = torch.float64 if p.dtype == torch.float64 else torch.float32
            assert {v.dtype for v in state.values()} == {expected}, (p.dtype, {k: v.dtype for k, v in state.items()})
        assert [p.dtype for p in params] == dtypes
        runs.append(params)
    for a, b in zip(*runs):
        assert torch.equal(a, b), a.dtype


def test_float64_params_are_computed_in_float64(info):
    """p = pi with zero gradients stays exactly pi (a float32 round trip would not); updates far
    below float32's resolution at 1.0 (lr 1e-9) still reach a float64 parameter."""
    pi = Parameter(torch.full((3, 2), math.pi, dtype=torch.float64))
    opt = info.make([pi], weight_decay=0.0, **dict(info.state_kwargs))
    for _ in range(info.skipped + 2):
        pi.grad = torch.zeros_like(pi)
        opt.step()
    assert torch.equal(pi, torch.full((3, 2), math.pi, dtype=torch.float64))
    assert {v.dtype for v in float_state(opt, pi).values()} == {torch.float64}

    one = Parameter(torch.ones(4, 3, dtype=torch.float64))
    opt = info.make([one], lr=1e-9, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(info.skipped + 3):
        seeded_grads([one], gen)
        opt.step()
    with evaluating(opt):
        moved = (one - 1).abs()
        assert (moved > 0).all() and (moved < 1e-6).all(), moved


@pytest.mark.parametrize("default_dtype", [torch.float64])
def test_default_dtype_does_not_leak_into_state(info, default_dtype):
    """torch's set_default_dtype check (CUDA-only there): under another default dtype, float32
    parameters keep float32 state and the same results (float32 tolerance)."""
    results = []
    for dtype in (torch.float32, default_dtype):
        old = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            torch.manual_seed(0)
            w = Parameter(torch.randn(4, 3, dtype=torch.float32))
            opt = info.make([w], lr=info.lr, **dict(info.state_kwargs))
            gen = torch.Generator().manual_seed(0)
            for _ in range(info.skipped + 3):
                seeded_grads([w], gen)
                opt.step()
            assert {v.dtype for v in float_state(opt, w).values()} == {torch.float32}
            results.append(w.detach().clone())
        finally:
            torch.set_default_dtype(old)
    torch.testing.assert_close(results[1], results[0])


# --------------------------------------------------------------------------- repr, defaults, deepcopy


def test_optimizer_can_be_printed(info):
    params = small_params()
    for _, kwargs in info.inputs():
        text = repr(info.make(params, **kwargs))
        assert info.name in text


# Constructor arguments that choose the chain's transforms (or torch's kernels), not values in the
# param groups: a different value builds another chain, whose signature a checkpoint records.
_CONSTRUCTOR_ONLY = {"compile", "foreach", "fused", "capturable", "differentiable", "maximize", "cautious",
                     "amsgrad", "nesterov", "centered", "decoupled_weight_decay", "decouple", "use_triton",
                     "is_approx", "mars_type", "optimize_1d", "refresh_factors",
                     "lr_1d"}  # MARS: the 1-D branch's lr is lr * lr_1d / (the constructor's lr), as the official code
_GROUP_NAME = {"clip_lambda": "clip"}  # ADOPT: the official argument name, and the group key scale_by_adopt reads


def test_defaults(info):
    """Every hyperparameter the chain reads is in ``opt.defaults`` and in every param group; the
    signature's defaults and the given values are what ``defaults`` holds."""
    p = Parameter(torch.randn(3, 2))
    opt = info.make([p])
    declared = set(opt.transform.declared())
    assert declared <= set(opt.defaults), declared - set(opt.defaults)
    for name, default in info.signature.items():
        if name in _CONSTRUCTOR_ONLY:
            continue  # implementation switches and options that shape the chain, not hyperparameters
        if name == "beta":  # PaLM signatures: beta is beta1, beta2 the schedule
            assert opt.defaults["betas"][0] == default
        elif name == "betas" and "beta" in info.signature:
            assert default == (None, None)
        elif name == "precondition_frequency" and "precond_scheduler" in info.signature:
            assert name not in opt.defaults  # the random schedule replaces it
        else:
            name = _GROUP_NAME.get(name, name)
            assert name in opt.defaults, name
            value = opt.defaults[name]
            assert value == default or value is default or repr(value) == repr(default), (name, value, default)
    opt = info.make([p], lr=0.0123, weight_decay=0.25)
    assert opt.defaults["lr"] == 0.0123 and opt.defaults["weight_decay"] == 0.25
    opt.add_param_group({"params": [Parameter(torch.randn(2))], "lr": 0.5})
    for group in opt.param_groups:
        assert set(opt.defaults) <= set(group)
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["weight_decay"] == 0.25


def test_deepcopy_copies_all_public_attrs(info):
    for desc, kwargs in info.inputs():
        params = small_params()
        opt = info.make(params, **kwargs)
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            seeded_grads(params, gen)
            opt.step()
        public = lambda o: {k for k in o.__dict__ if not k.startswith("_")}  # noqa: E731
        assert public(opt) == public(copy.deepcopy(opt)), desc
        # and the copy (made with its parameters) continues exactly as the original
        params2, opt2 = copy.deepcopy((params, opt))
        for _ in range(info.skipped + 2):
            g = torch.Generator().manual_seed(1)
            seeded_grads(params, g)
            g = torch.Generator().manual_seed(1)
            seeded_grads(params2, g)
            opt.step()
            opt2.step()
        for a, b in zip(params, params2):
            assert torch.equal(a, b), desc


# --------------------------------------------------------------------------- state_dict


def _prime(info, opt, params, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        seeded_grads(params, gen)
        opt.step()


@pytest.mark.parametrize("named1", [False, True], ids=["unnamed1", "named1"])
@pytest.mark.parametrize("named0", [False, True], ids=["unnamed0", "named0"])
def test_state_dict_deterministic(info, named0, named1):
    """A fresh optimizer that loads the state dict continues exactly as the original, and the two
    state dicts stay equal (param_names aside); repeated groups pack identically."""
    inputs = info.inputs() if not (named0 or named1) else info.inputs()[:1]
    for desc, kwargs in inputs:
        weight, bias, x, loss_fn = linear_problem()
        opt = info.make(named([weight, bias], named0), **kwargs)
        closure = backward_closure(opt, loss_fn)
        for _ in range(info.skipped + 4):
            opt.step(closure)
        w2, b2 = (Parameter(t.detach().clone()) for t in (weight, bias))
        opt2 = info.make(named([w2, b2], named1), **copy.deepcopy(kwargs))
        opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
        closure2 = backward_closure(opt2, lambda: linear_loss(w2, b2, x))
        for i in range(5):
            opt.step(closure)
            opt2.step(closure2)
            assert torch.equal(weight, w2) and torch.equal(bias, b2), (desc, i)
        assert_same(without_param_names(opt.state_dict()), without_param_names(opt2.state_dict()))
        opt2.param_groups.extend(opt2.param_groups)
        assert_same(without_param_names(opt.state_dict())["param_groups"][-1],
                    without_param_names(opt2.state_dict())["param_groups"][-1])


def _conv_bn():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(4, 2, 1, stride=2), torch.nn.BatchNorm2d(2, eps=1e-05, momentum=0.1))


def _fwd_bwd(opt, model, x):
    opt.zero_grad()
    loss = model(x).sum()
    loss.backward()
    return loss


# Param-group entries added after the first release (torch's ``not_og_supported_flags``): the
# chain's signature (``"chain"``, written since the state-dict checks) and ADOPT's ``clip``.
def test_can_load_older_state_dict(info):
    """torch's test deletes the group entries added after a release and expects the state dict to
    load. Ours refuse what they cannot check: a state dict of heavyball_chain 0.1.0 has no "chain"
    entry, and loading it is refused (it could be another chain's: AdamW's moments into LaProp)
    with a message that says how to load it; done so, stepping continues exactly as after loading
    the full state dict."""
    for desc, kwargs in info.inputs():
        model = _conv_bn()
        x = torch.rand(1, 4, 16, 16)
        opt = info.make(model.parameters(), **kwargs)
        for _ in range(info.skipped + 2):
            _fwd_bwd(opt, model, x)
            opt.step()
        full = copy.deepcopy(opt.state_dict())
        old = copy.deepcopy(full)
        for group in old["param_groups"]:
            group.pop("chain")
        model2 = copy.deepcopy(model)
        opt2 = info.make(model2.parameters(), **copy.deepcopy(kwargs))
        with pytest.raises(ValueError, match="optimizer.signature"):
            opt2.load_state_dict(old)
        for group in old["param_groups"]:
            group["chain"] = opt2.signature
        opt.load_state_dict(full)
        opt2.load_state_dict(old)
        for k, v in opt.param_groups[0].items():
            if k != "params":
                assert repr(opt2.param_groups[0][k]) == repr(v), k
        for m, o in ((model, opt), (model2, opt2)):
            _fwd_bwd(o, m, x)
            o.step()
        for a, b in zip(model.parameters(), model2.parameters()):
            assert torch.equal(a, b), desc


def test_load_state_dict_refuses_a_missing_hyperparameter(info):
    """The other side of loading older state dicts: a group without a plain-number hyperparameter
    (lr) is refused with a ValueError naming it, and nothing is changed (optimizer.py's
    load_state_dict contract; torch would keep the current value)."""
    params = small_params()
    opt = info.make(params, lr=info.lr)
    _prime(info, opt, params, info.skipped + 1)
    sd = copy.deepcopy(opt.state_dict())
    del sd["param_groups"][0]["lr"]
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict(sd)
    assert_same(opt.state_dict(), before)


@pytest.mark.parametrize("named1", [False, True], ids=["unnamed1", "named1"])
@pytest.mark.parametrize("named0", [False, True], ids=["unnamed0", "named0"])
def test_can_load_from_to_named_state_dict(info, named0, named1):
    model = _conv_bn()
    x = torch.rand(1, 4, 16, 16)
    opt = info.make(model.named_parameters() if named0 else model.parameters())
    for _ in range(3):
        _fwd_bwd(opt, model, x)
        opt.step()
    sd = copy.deepcopy(opt.state_dict())
    opt2 = info.make(model.named_parameters() if named1 else model.parameters())
    opt2.load_state_dict(sd)
    _fwd_bwd(opt2, model, x)
    opt2.step()
    if named0 or named1:
        assert opt2.state_dict()["param_groups"][0]["param_names"] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    else:
        assert "param_names" not in opt2.state_dict()["param_groups"][0]


@pytest.mark.parametrize("is_named", [False, True], ids=["unnamed", "named"])
def test_save_load_equality_with_weights_only(info, is_named):
    """torch.save / torch.load (also weights_only=True) give back an equal state dict, and an
    optimizer that loads the weights_only copy continues exactly as the original."""
    for desc, kwargs in info.inputs():
        params = small_params()
        opt = info.make(named(params, is_named), **kwargs)
        _prime(info, opt, params, info.skipped + 3)
        sd = opt.state_dict()
        buf = io.BytesIO()
        torch.save(sd, buf)
        buf.seek(0)
        assert_same(torch.load(buf, weights_only=False), sd, desc)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)
        assert_same(loaded, sd, desc)
        params2 = [Parameter(p.detach().clone()) for p in params]
        opt2 = info.make(named(params2, is_named), **copy.deepcopy(kwargs))
        opt2.load_state_dict(loaded)
        _prime(info, opt, params, 3, seed=5)
        _prime(info, opt2, params2, 3, seed=5)
        for a, b in zip(params, params2):
            assert torch.equal(a, b), desc


def test_load_nontensor_step(info):
    """A state dict whose ``step`` entries are Python numbers loads and steps (ours are ints)."""
    params = small_params()
    for desc, kwargs in info.inputs():
        opt = info.make(params, **kwargs)
        _prime(info, opt, params, 3)
        sd = copy.deepcopy(opt.state_dict())
        for s in sd["state"].values():
            if isinstance(s.get("step"), torch.Tensor):
                s["step"] = s["step"].item()
        opt.load_state_dict(sd)
        _prime(info, opt, params, 1)
        assert all(opt.state[p]["step"] == 4 for p in params), desc


def test_load_state_dict_does_not_modify_its_argument(info):
    """The CPU part of torch's state-dict-across-devices test: loading leaves the given dict as it
    was and shares no tensor with it (moving to another device is N/A on a CPU-only machine)."""
    params = small_params()
    opt = info.make(params, lr=info.lr)
    _prime(info, opt, params, info.skipped + 2)
    sd = opt.state_dict()
    before = copy.deepcopy(sd)
    params2 = [Parameter(p.detach().clone()) for p in params]
    opt2 = info.make(params2, lr=info.lr)
    opt2.load_state_dict(sd)
    assert_same(sd, before)
    _prime(info, opt2, params2, 2)
    assert_same(sd, before)
    for p in params2:
        for k, v in opt2.state[p].items():
            if isinstance(v, torch.Tensor):
                assert v.device == p.device, k


# --------------------------------------------------------------------------- hooks


def _sd_pre_hook(opt):
    opt.state["test"] = 1


def _sd_post_hook(opt, sd):
    ran = "test" in sd["state"]
    sd["state"].pop("test", None)
    sd["ran_state_dict_pre_hook"] = ran
    return sd


# Sentinel learning rates no optimizer here uses (torch's 0.003 is SOAP's default lr).
LR_HOOK1, LR_HOOK2 = 0.00271, 0.00314


def _load_pre_hook1(opt, sd):
    sd["param_groups"][0]["lr"] = LR_HOOK1


def _load_pre_hook2(opt, sd):
    sd = copy.deepcopy(sd)  # a hook may return a new dict, which is then the one loaded
    sd["param_groups"][0]["lr"] = LR_HOOK2
    return sd


def _load_post_hook(opt):
    opt.state["ran_load_state_dict_pre_hook2"] = opt.param_groups[0]["lr"] == LR_HOOK2
    opt.state["ran_load_state_dict_post_hook"] = True


def _one_param():
    return [torch.rand(2, 3, requires_grad=True)]


def test_state_dict_pre_hook(info):
    for _, kwargs in info.inputs():
        opt = info.make(_one_param(), **kwargs)
        opt.register_state_dict_pre_hook(_sd_pre_hook)
        assert opt.state_dict()["state"]["test"] == 1


def test_state_dict_post_hook(info):
    for _, kwargs in info.inputs():
        opt = info.make(_one_param(), **kwargs)
        opt.register_state_dict_post_hook(_sd_post_hook)
        assert opt.state_dict()["ran_state_dict_pre_hook"] is False


def test_state_dict_pre_post_hook(info):
    for _, kwargs in info.inputs():
        opt = info.make(_one_param(), **kwargs)
        opt.register_state_dict_pre_hook(_sd_pre_hook)
        opt.register_state_dict_post_hook(_sd_post_hook)
        sd = opt.state_dict()
        assert "test" not in sd["state"] and sd["ran_state_dict_pre_hook"] is True


def test_load_state_dict_pre_hook_and_prepend(info):
    for _, kwargs in info.inputs():
        opt = info.make(_one_param(), **kwargs)
        sd = opt.state_dict()
        opt.register_load_state_dict_pre_hook(_load_pre_hook1)
        opt.load_state_dict(sd)
        assert opt.param_groups[0]["lr"] == LR_HOOK1
        opt.register_load_state_dict_pre_hook(_load_pre_hook2, prepend=True)
        opt.load_state_dict(sd)
        assert opt.param_groups[0]["lr"] == LR_HOOK1  # hook2 ran first, then hook1


def test_load_state_dict_post_hook(info):
    for _, kwargs in info.inputs():
        opt = info.make(_one_param(), **kwargs)
        opt.register_load_state_dict_post_hook(_load_post_hook)
        opt.load_state_dict(opt.state_dict())
        assert opt.state["ran_load_state_dict_pre_hook2"] is False
        assert opt.state["ran_load_state_dict_post_hook"] is True


def test_load_state_dict_pre_post_hook(info):
    for _, kwargs in info.inputs():
        opt = info.make(_one_param(), **kwargs)
        opt.register_load_state_dict_pre_hook(_load_pre_hook2)
        opt.register_load_state_dict_post_hook(_load_post_hook)
        opt.load_state_dict(opt.state_dict())
        assert opt.state["ran_load_state_dict_pre_hook2"] is True
        assert opt.state["ran_load_state_dict_post_hook"] is True


@pytest.mark.parametrize("register", ["register_step_pre_hook", "register_step_post_hook"])
def test_step_pre_and_post_hook(info, register):
    for _, kwargs in info.inputs():
        opt = info.make([torch.tensor([1.0, 1.0])], **kwargs)
        calls = []
        handle = getattr(opt, register)(lambda o, args, kw: calls.append(o))
        opt.step()
        opt.step()
        assert calls == [opt, opt]
        handle.remove()
        opt.step()
        assert len(calls) == 2


def test_step_all_hooks(info):
    """Global pre, local pre, (step), local post, global post, for ours and for torch's SGD."""
    params = [torch.tensor([1.0, 1.0])]
    for _, kwargs in info.inputs():
        opt = info.make(params, **kwargs)
        sgd = torch.optim.SGD(params)
        data = []
        handles = [
            register_optimizer_step_pre_hook(lambda o, a, k: data.append(0)),
            register_optimizer_step_post_hook(lambda o, a, k: data.append(5)),
        ]
        try:
            for o in (opt, sgd):
                handles.append(o.register_step_pre_hook(lambda o, a, k: data.append(1)))
                handles.append(o.register_step_post_hook(lambda o, a, k: data.append(2)))
            opt.step()
            assert data == [0, 1, 2, 5]
            sgd.step()
            assert data == [0, 1, 2, 5] * 2
            opt.step()
            assert data == [0, 1, 2, 5] * 3
        finally:
            for h in handles:
                h.remove()
        opt.step()
        sgd.step()
        assert data == [0, 1, 2, 5] * 3


def test_step_hooks_see_the_step(info):
    """A pre hook runs before the parameters change and a post hook after."""
    w = Parameter(torch.randn(3, 2))
    opt = info.make([w], lr=info.lr)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(("pre", w.detach().clone())))
    opt.register_step_post_hook(lambda o, a, k: seen.append(("post", w.detach().clone())))
    start = w.detach().clone()
    for _ in range(info.skipped + 1):
        w.grad = torch.randn_like(w)
        opt.step()
    assert torch.equal(seen[-2][1], start) and not torch.equal(seen[-1][1], start)


"""AdEMAMix (Pagliardini et al. 2024, arXiv 2409.03137) and MARS-AdamW (Yuan et al. 2024, arXiv
2411.10438): drop-in parity, bad arguments, compile=True, exact resume.

References: ``pytorch_optimizer`` 4.1.0 (``AdEMAMix``, ``MARS``) and float64 oracles written
below from the papers' algorithms as the official implementations (github.com/apple/ml-ademamix,
github.com/AGI-Arena/MARS) compute them. Largest relative differences after 50 steps, measured
at 1 and 2 threads (the same to two digits at both; the tests run at 1):

* AdEMAMix vs pytorch_optimizer: 2e-7 (defaults), 9e-7 (warmups 40, weight decay); vs the
  oracle: < 1e-6. Against the official code itself (run outside the repository): 2e-7 without
  warmup; with warmup 7e-6 to 1.2e-5, because it evaluates the beta3 scheduler's
  ``ln(beta + 1e-8)`` where the paper (and pytorch_optimizer, and we) have ``ln(beta)``; with that
  1e-8 removed from the official code, 4e-7. pytorch_optimizer's cautious option masks only the
  fast EMA, before ``alpha m2`` is added (ours masks the whole direction), and it has one
  ``t_alpha_beta3`` for both warmups: those settings are compared with the oracle.
* MARS vs the official code (outside the repository): 1.4e-7 to 2.5e-7 (defaults on the conv
  net and the MLP, optimize_1d, weight decay with other ``_1d`` values, amsgrad; it has no
  cautious option); vs the oracle: < 1e-6.
  pytorch_optimizer differs from it in three ways: (1) it adds eps before the bias correction,
  ``(sqrt(v + 1e-15) + eps) / sqrt(1 - b2^t)`` where the official code (and we) have
  ``sqrt(v) / sqrt(1 - b2^t) + eps``: 4.6e-5 to 2.1e-4 at eps=1e-8, so the comparisons with it
  use eps=0, where they agree to 1e-6 to 5.5e-6 (the rest is its 1e-15 inside the square root,
  which matters where v ~ 1e-10: with it set to 0 in pytorch_optimizer, < 1e-6); (2) it sends
  every ``ndim >= 2`` parameter to MARS where the official code (and we) send only 2-D ones, so
  they use an MLP (or ``optimize_1d=True``), and the oracle covers the conv net; (3) its
  cautious mask is on the bias-corrected momentum before the division by the (positive)
  denominator: the same mask and scale as ours on the Adam direction, up to rounding.
"""

from __future__ import annotations

import math

import pytest
import torch

from helpers import kwargs_id, make_net, step_scheduler, train, train_eager_and_compiled, with_decay
from heavyball_chain.presets.ademamix import AdEMAMix
from heavyball_chain.presets.mars import MARS
from heavyball_chain.transforms.ademamix import ademamix_alpha, ademamix_beta3
from reference import assert_matches, assert_resumes_exactly, relative_diffs

po = pytest.importorskip("pytorch_optimizer")

# The numbers in the module docstring were measured at 1 and 2 threads; the tests run at 1
# (tiny tensors: a second thread only adds synchronisation on a loaded 2-core machine).
pytestmark = pytest.mark.usefixtures("one_thread")


class MLP(torch.nn.Module):
    """Only 1-D and 2-D parameters, where pytorch_optimizer's and the official MARS split agree."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(72, 16)
        self.b = torch.nn.Linear(16, 5)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x.flatten(1))))


def make_mlp(seed=0):
    torch.manual_seed(seed)
    return MLP()


# --------------------------------------------------------------------------- float64 oracles


class _Oracle(torch.optim.Optimizer):
    """float64 master weights and state; the model holds their fp32 rounding (its forward and
    gradients are fp32, as in the runs compared). ``rule`` is one step of the algorithm."""

    def __init__(self, params, **defaults):
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                s = self.state[p]
                if not s:
                    s["t"], s["p"] = 0, p.detach().double().clone()
                s["t"] += 1
                s["p"] = self.rule(s, s["p"], p.grad.double(), s["t"], group)
                p.copy_(s["p"])

    @staticmethod
    def ema(s, name, beta, x):
        s[name] = beta * s.get(name, torch.zeros_like(x)) + (1 - beta) * x
        return s[name]

    @staticmethod
    def cautious(u, g):
        """Liang et al. 2024, arXiv 2411.16085: keep the components agreeing with g, rescaled."""
        phi = (u * g > 0).double()
        return u * phi * (u.numel() / (phi.sum() + 1))


class AdEMAMixOracle(_Oracle):
    """The paper's Algorithm 1 with its schedulers and decoupled weight decay."""

    def rule(self, s, p, g, t, h):
        b1, b2, b3 = h["betas"]
        ta, t3 = h["alpha_warmup"], h["beta3_warmup"]
        alpha = h["alpha"] * min(t / ta, 1.0) if ta else h["alpha"]
        if t3:
            a = min(t / t3, 1.0)
            b3 = min(math.exp(math.log(b1) * math.log(b3) / ((1 - a) * math.log(b3) + a * math.log(b1))), b3)
        m1, m2, v = self.ema(s, "m1", b1, g), self.ema(s, "m2", b3, g), self.ema(s, "v", b2, g * g)
        u = (m1 / (1 - b1**t) + alpha * m2) / ((v / (1 - b2**t)).sqrt() + h["eps"])
        if h["cautious"]:
            u = self.cautious(u, g)
        return p - h["lr"] * (u + h["weight_decay"] * p)


def ademamix_oracle(**kw):
    kw = {"lr": 1e-3, "betas": (0.9, 0.999, 0.9999), "alpha": 2.0, "beta3_warmup": None, "alpha_warmup": None,
          "eps": 1e-8, "weight_decay": 0.0, "cautious": False, **kw}
    return lambda ps: AdEMAMixOracle(ps, **kw)


class MARSOracle(_Oracle):
    """MARS-AdamW (approximate): the paper's Algorithm 1 as the official code runs it: MARS on
    2-D parameters (all with optimize_1d), AdamW with the ``_1d`` values on the others."""

    def rule(self, s, p, g, t, h):
        if h["optimize_1d"] or p.ndim == 2:
            (b1, b2), lr, wd = h["betas"], h["lr"], h["weight_decay"]
            c = g + h["gamma"] * b1 / (1 - b1) * (g - s.get("last", torch.zeros_like(g)))
            norm = c.norm()
            c = c / norm if norm > 1 else c
            s["last"] = g
        else:
            (b1, b2), lr, wd = h["betas_1d"], h["lr"] * h["lr_1d"] / h["lr0"], h["weight_decay_1d"]
            c = g
        m, v = self.ema(s, "m", b1, c), self.ema(s, "v", b2, c * c)
        if h["amsgrad"]:
            v = s["vmax"] = torch.maximum(s.get("vmax", v), v)
        u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + h["eps"])
        if h["cautious"]:
            u = self.cautious(u, g)
        return p - lr * (u + wd * p)


def mars_oracle(**kw):
    kw = {"lr": 3e-3, "betas": (0.95, 0.99), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "gamma": 0.025,
          "optimize_1d": False, "lr_1d": 3e-3, "betas_1d": (0.9, 0.95), "weight_decay_1d": 0.1, "cautious": False,
          **kw}
    kw["lr0"] = kw["lr"]
    return lambda ps: MARSOracle(ps, **kw)


# --------------------------------------------------------------------------- AdEMAMix


ADEMAMIX_PO = [  # ours, and the same settings in pytorch_optimizer's names
    ({}, {"alpha": 2.0}),
    ({"lr": 1e-2, "beta3_warmup": 40, "alpha_warmup": 40, "weight_decay": 0.1},
     {"lr": 1e-2, "alpha": 2.0, "t_alpha_beta3": 40, "weight_decay": 0.1, "weight_decouple": True}),
    ({"lr": 1e-2, "betas": (0.8, 0.99, 0.999), "alpha": 5.0, "beta3_warmup": 45, "alpha_warmup": 45, "eps": 1e-6},
     {"lr": 1e-2, "betas": (0.8, 0.99, 0.999), "alpha": 5.0, "t_alpha_beta3": 45, "eps": 1e-6}),
]


@pytest.mark.parametrize("ours,ref", ADEMAMIX_PO, ids=[kwargs_id(o) for o, _ in ADEMAMIX_PO])
def test_ademamix_matches_pytorch_optimizer(ours, ref):
    assert_matches(lambda ps: AdEMAMix(ps, **ours), lambda ps: po.AdEMAMix(ps, **ref))


def test_ademamix_matches_pytorch_optimizer_under_an_lr_scheduler():
    ours = {"lr": 1e-2, "beta3_warmup": 30, "alpha_warmup": 30, "weight_decay": 0.1}
    ref = {"lr": 1e-2, "alpha": 2.0, "t_alpha_beta3": 30, "weight_decay": 0.1, "weight_decouple": True}
    assert_matches(with_decay(lambda ps: AdEMAMix(ps, **ours)), with_decay(lambda ps: po.AdEMAMix(ps, **ref)),
                   every_step=step_scheduler)


ADEMAMIX_ORACLE = [
    {"lr": 1e-2, "betas": (0.8, 0.99, 0.999), "alpha": 5.0, "beta3_warmup": 45, "alpha_warmup": 20},  # separate warmups
    {"lr": 1e-2, "beta3_warmup": 40, "alpha_warmup": 10, "weight_decay": 0.1, "cautious": True},
]


@pytest.mark.parametrize("kwargs", ADEMAMIX_ORACLE, ids=kwargs_id)
def test_ademamix_matches_the_paper(kwargs):
    ours = {k: v for k, v in kwargs.items() if k != "cautious"}
    assert_matches(lambda ps: AdEMAMix(ps, **ours, cautious=kwargs.get("cautious", False)), ademamix_oracle(**kwargs))


def test_ademamix_schedulers():
    """alpha linear from 0; beta3's half-life linear from beta1's to beta3's (the official code's
    form, which equals the paper's exp/log formula); both constant from the warmup's end."""
    b1, b3, T = 0.9, 0.9999, 100
    half_life = lambda b: math.log(0.5) / math.log(b)  # noqa: E731
    for t in (1, 10, 50, 99):
        assert ademamix_alpha(t, 2.0, T) == pytest.approx(2.0 * t / T, rel=1e-15)
        h = (1 - t / T) * half_life(b1) + t / T * half_life(b3)
        assert ademamix_beta3(t, b1, b3, T) == pytest.approx(0.5 ** (1 / h), rel=1e-14)
    for t in (100, 1000):
        assert ademamix_alpha(t, 2.0, T) == 2.0 and ademamix_beta3(t, b1, b3, T) == b3
    assert ademamix_alpha(3, 2.0, None) == ademamix_alpha(3, 2.0, 0) == 2.0
    assert ademamix_beta3(3, b1, b3, None) == ademamix_beta3(3, b1, b3, 0) == b3
    # beta1 = 0 (the fast EMA is the gradient): half-life 0 at the start, beta3 = b3^(T/t)
    assert ademamix_beta3(25, 0.0, b3, T) == pytest.approx(b3 ** (T / 25), rel=1e-12)
    assert ademamix_beta3(10, 0.99, 0.9, T) == 0.9  # beta1 > beta3: held at beta3 by the min


def test_ademamix_tensor_lr_equals_float_lr():
    a, b = make_net(), make_net()
    kw = {"beta3_warmup": 5, "alpha_warmup": 5, "weight_decay": 0.1}
    train(a, AdEMAMix(a.parameters(), lr=1e-2, **kw), 8)
    train(b, AdEMAMix(b.parameters(), lr=torch.tensor(1e-2), **kw), 8)
    assert max(relative_diffs(a, b).values()) <= 1e-6


@pytest.mark.parametrize("kwargs,error,match", [
    ({"lr": -1e-3}, ValueError, "^lr: "),
    ({"betas": (0.9, 0.999)}, ValueError, "^betas: "),
    ({"betas": (0.9, 0.999, 1.0)}, ValueError, r"^betas\[2\]: "),
    ({"betas": (-0.1, 0.999, 0.9999)}, ValueError, r"^betas\[0\]: "),
    ({"alpha": -1.0}, ValueError, "^alpha: "),
    ({"alpha": float("inf")}, ValueError, "^alpha: "),
    ({"beta3_warmup": -1}, ValueError, "^beta3_warmup: "),
    ({"beta3_warmup": 1.5}, ValueError, "^beta3_warmup: "),
    ({"alpha_warmup": "10"}, ValueError, "^alpha_warmup: "),
    ({"eps": -1e-8}, ValueError, "^eps: "),
    ({"weight_decay": -0.1}, ValueError, "^weight_decay: "),
    ({"compile": "no"}, TypeError, "^compile: "),
    ({"cautious": 1}, TypeError, "^cautious: "),
    ({"t_alpha_beta3": 10}, TypeError, "t_alpha_beta3"),
])
def test_ademamix_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AdEMAMix(make_net().parameters(), **kwargs)


def test_ademamix_signature_is_the_official_one():
    import inspect
    params = inspect.signature(AdEMAMix).parameters
    assert [(n, p.default) for n, p in params.items()][:8] == [
        ("params", inspect.Parameter.empty), ("lr", 1e-3), ("betas", (0.9, 0.999, 0.9999)), ("alpha", 2.0),
        ("beta3_warmup", None), ("alpha_warmup", None), ("eps", 1e-8), ("weight_decay", 0)]
    assert all(params[n].kind is inspect.Parameter.KEYWORD_ONLY for n in ("compile", "cautious"))


def test_ademamix_compiled_equals_eager():
    kw = {"lr": 1e-2, "beta3_warmup": 4, "alpha_warmup": 3, "weight_decay": 0.1}
    a, _, b, ob = train_eager_and_compiled(AdEMAMix, 6, **kw)
    assert ob._fuser._kernels, "nothing was fused"
    assert max(relative_diffs(a, b).values()) <= 1e-6


def test_ademamix_exact_resume():
    assert_resumes_exactly(lambda ps: AdEMAMix(ps, lr=1e-2, beta3_warmup=30, alpha_warmup=25, weight_decay=0.1,
                                               cautious=True), steps=20)


# --------------------------------------------------------------------------- MARS


MARS_PO = [  # (ours, pytorch_optimizer's, model): eps=0, see the module docstring
    ({"eps": 0.0}, {"eps": 0.0}, make_mlp),
    ({"eps": 0.0, "lr": 1e-2, "weight_decay": 0.1, "lr_1d": 3e-2, "betas_1d": (0.8, 0.9), "weight_decay_1d": 0.05},
     {"eps": 0.0, "lr": 1e-2, "weight_decay": 0.1, "lr_1d": 3e-2, "betas_1d": (0.8, 0.9), "weight_decay_1d": 0.05},
     make_mlp),
    ({"eps": 0.0, "optimize_1d": True, "weight_decay": 0.1, "amsgrad": True, "gamma": 0.1},
     {"eps": 0.0, "optimize_1d": True, "weight_decay": 0.1, "ams_bound": True, "gamma": 0.1}, make_net),
    ({"eps": 0.0, "cautious": True}, {"eps": 0.0, "cautious": True}, make_mlp),
]


@pytest.mark.parametrize("ours,ref,model_fn", MARS_PO, ids=[kwargs_id(o) for o, _, _ in MARS_PO])
def test_mars_matches_pytorch_optimizer(ours, ref, model_fn):
    assert_matches(lambda ps: MARS(ps, **ours), lambda ps: po.MARS(ps, mars_type="adamw", **ref), model_fn=model_fn)


def test_mars_matches_pytorch_optimizer_under_an_lr_scheduler():
    """Both rates follow the scheduler: the 1-D one is lr_t * lr_1d / lr (the constructor's lr)."""
    kw = {"eps": 0.0, "lr": 1e-2, "lr_1d": 5e-3, "weight_decay": 0.1}
    assert_matches(with_decay(lambda ps: MARS(ps, **kw)), with_decay(lambda ps: po.MARS(ps, **kw)),
                   model_fn=make_mlp, every_step=step_scheduler)


MARS_ORACLE = [  # the conv net: its 4-D kernel is updated by AdamW unless optimize_1d, as in the official code
    {},
    {"lr": 1e-2, "weight_decay": 0.1, "lr_1d": 3e-2, "betas_1d": (0.8, 0.9), "weight_decay_1d": 0.05, "gamma": 0.1},
    {"amsgrad": True, "cautious": True, "weight_decay": 0.1},
    {"optimize_1d": True, "betas": (0.9, 0.95), "eps": 1e-6},
]


@pytest.mark.parametrize("kwargs", MARS_ORACLE, ids=kwargs_id)
def test_mars_matches_the_paper(kwargs):
    assert_matches(lambda ps: MARS(ps, **kwargs), mars_oracle(**kwargs))


def test_mars_routes_as_the_official_code():
    """2-D parameters get MARS (``last_grad``), the conv kernel and the biases AdamW."""
    model = make_net()
    opt = MARS(model.parameters())
    train(model, opt, 1)
    assert "mars/correction/last_grad" in opt.state[model.fc.weight]
    for p in (model.conv.weight, model.conv.bias, model.fc.bias):
        assert set(opt.state[p]) == {"adamw/moments/exp_avg", "adamw/moments/exp_avg_sq", "step"}
    assert {"betas_1d", "weight_decay_1d", "gamma"} <= set(opt.param_groups[0])
    assert "betas_1d" not in MARS(model.parameters(), optimize_1d=True).param_groups[0]


def test_mars_tensor_lr_equals_float_lr():
    a, b = make_net(), make_net()
    train(a, MARS(a.parameters(), lr=1e-2, weight_decay=0.1), 8)
    train(b, MARS(b.parameters(), lr=torch.tensor(1e-2), weight_decay=0.1), 8)
    assert max(relative_diffs(a, b).values()) <= 1e-6


@pytest.mark.parametrize("kwargs,error,match", [
    ({"lr": -1e-3}, ValueError, "^lr: "),
    ({"lr": 0.0}, ValueError, "^lr: "),  # lr_1d is relative to it
    ({"lr": lambda t: 1e-3}, ValueError, "^lr: "),
    ({"betas": (0.9,)}, ValueError, "^betas: "),
    ({"betas": (0.9, 1.0)}, ValueError, r"^betas\[1\]: "),
    ({"eps": -1e-8}, ValueError, "^eps: "),
    ({"weight_decay": -0.1}, ValueError, "^weight_decay: "),
    ({"amsgrad": "yes"}, TypeError, "^amsgrad: "),
    ({"gamma": -0.1}, ValueError, "^gamma: "),
    ({"gamma": float("nan")}, ValueError, "^gamma: "),
    ({"is_approx": False}, ValueError, "^is_approx: "),
    ({"is_approx": 1}, TypeError, "^is_approx: "),
    ({"mars_type": "mars-lion"}, ValueError, "^mars_type: "),
    ({"mars_type": "adamw"}, ValueError, "^mars_type: "),
    ({"optimize_1d": None}, TypeError, "^optimize_1d: "),
    ({"lr_1d": -1.0}, ValueError, "^lr_1d: "),
    ({"betas_1d": (1.0, 0.9)}, ValueError, r"^betas_1d\[0\]: "),
    ({"weight_decay_1d": -0.1}, ValueError, "^weight_decay_1d: "),
    ({"compile": "no"}, TypeError, "^compile: "),
    ({"cautious": "no"}, TypeError, "^cautious: "),
    ({"ams_bound": True}, TypeError, "ams_bound"),
])
def test_mars_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MARS(make_net().parameters(), **kwargs)


def test_mars_lr_zero_is_fine_when_every_parameter_is_mars():
    MARS(make_net().parameters(), lr=0.0, optimize_1d=True)


def test_mars_signature_is_the_official_one():
    import inspect
    params = inspect.signature(MARS).parameters
    assert [(n, p.default) for n, p in params.items()][:13] == [
        ("params", inspect.Parameter.empty), ("lr", 3e-3), ("betas", (0.95, 0.99)), ("eps", 1e-8),
        ("weight_decay", 0.0), ("amsgrad", False), ("gamma", 0.025), ("is_approx", True),
        ("mars_type", "mars-adamw"), ("optimize_1d", False), ("lr_1d", 3e-3), ("betas_1d", (0.9, 0.95)),
        ("weight_decay_1d", 0.1)]
    assert all(params[n].kind is inspect.Parameter.KEYWORD_ONLY for n in ("compile", "cautious"))


def test_mars_compiled_equals_eager():
    """The correction (a per-tensor norm) runs eagerly, the Adam -> decay -> lr -> apply runs fused."""
    kw = {"lr": 1e-2, "weight_decay": 0.1, "lr_1d": 2e-2, "amsgrad": True}
    a, _, b, ob = train_eager_and_compiled(MARS, 5, **kw)
    assert ob._fuser._kernels, "nothing was fused"
    assert max(relative_diffs(a, b).values()) <= 1e-6


def test_mars_exact_resume():
    assert_resumes_exactly(lambda ps: MARS(ps, lr=1e-2, weight_decay=0.1, lr_1d=2e-2, amsgrad=True, cautious=True),
                           steps=20)

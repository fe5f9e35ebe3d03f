"""Adafactor and Muon against torch.optim (2.13), and MuonWithAdamW against torch.optim.Muon plus
torch.optim.AdamW stepped together.

Muon's Newton–Schulz runs in bf16, which turns a last-bit difference of an fp32 input into a
difference of up to 2^-9 in the output, and a training run then drifts apart by percents (1%
after 50 steps, measured); a 1e-5 match therefore needs the same operations as torch, and ours
are: every Muon comparison here is exact (difference 0.0 at 1 and 2 threads), and so is the
AdamW half of MuonWithAdamW (torch_adam_step). Adafactor is not amplified and matches to
~2e-7 (a different order of the per-tensor scalar multiplications and no host reads).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

from helpers import loss_of, make_net, num_threads
from heavyball_chain.presets.muon_adamw import MuonWithAdamW, is_hidden_matrix
from heavyball_chain.presets.torch_matrix import Adafactor, Muon
from reference import assert_matches, relative_diffs

# Every comparison was measured at 1 and 2 threads, with identical results (Muon's 0.0, Adafactor's
# up to 4.4e-7); the tests run at 1 thread, which for these tiny models is also the fastest.
THREADS = (1,)
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- models


class MLP(torch.nn.Module):
    """Bias-free 2-D parameters only (what torch.optim.Muon takes): tall [32, 16], wide [24, 32]
    and [8, 24], so both branches of the shape rule of the lr run."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32, bias=False)
        self.fc2 = torch.nn.Linear(32, 24, bias=False)
        self.fc3 = torch.nn.Linear(24, 8, bias=False)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def make_mlp(seed=0):
    torch.manual_seed(seed)
    return MLP()


def mlp_loss(model, step):
    g = torch.Generator().manual_seed(2000 + step)
    x, y = torch.randn(8, 16, generator=g), torch.randn(8, 8, generator=g)
    return torch.nn.functional.mse_loss(model(x), y)


class TinyLM(torch.nn.Module):
    """Transformer-like: embedding, a pre-norm MLP block with biases (two Linears, LayerNorm) and
    an output head, tied to the embedding or not."""

    def __init__(self, vocab=16, dim=8, tied=True):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.fc1 = torch.nn.Linear(dim, 4 * dim)
        self.fc2 = torch.nn.Linear(4 * dim, dim)
        self.lm_head = torch.nn.Linear(dim, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.embed.weight

    def forward(self, tokens):
        h = self.embed(tokens)
        h = h + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(h))))
        return self.lm_head(h)


def make_lm(tied, seed=0):
    torch.manual_seed(seed)
    return TinyLM(tied=tied)


def lm_loss(model, step):
    g = torch.Generator().manual_seed(3000 + step)
    tokens = torch.randint(0, 16, (4, 7), generator=g)
    logits = model(tokens[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, 16), tokens[:, 1:].reshape(-1))


def train(model, opts, loss_fn, steps, start=0, schedulers=()):
    for step in range(start, start + steps):
        for o in opts:
            o.zero_grad()
        loss_fn(model, step).backward()
        for o in opts:
            o.step()
        for s in schedulers:
            s.step()
    return model


def schedulers(opts, schedule):
    return [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in opts] if schedule else []


def compare(make_ours, make_refs, model_fn, loss_fn, steps=50, schedule=None):
    """Largest relative difference (reference.relative_diffs) after ``steps`` steps at 1 and 2
    threads; asserts the reference moved."""
    worst = 0.0
    for n in THREADS:
        with num_threads(n):
            ours_model, ref_model = model_fn(), model_fn()
            ours = make_ours(ours_model)
            refs = make_refs(ref_model)
            train(ours_model, [ours], loss_fn, steps, schedulers=schedulers([ours], schedule))
            train(ref_model, refs, loss_fn, steps, schedulers=schedulers(refs, schedule))
            worst = max(worst, max(relative_diffs(ours_model, ref_model).values()))
            moved = max(relative_diffs(ref_model, model_fn()).values())
            assert moved > 1e-3, f"the reference barely moved ({moved:.2e})"
    return worst


def decay_then_warm(step):  # an lr multiplier that goes down and up again
    return 1.0 / (1 + 0.1 * step) if step < 30 else 0.5 + 0.02 * (step - 30)


# --------------------------------------------------------------------------- Muon


MUON_SETTINGS = {
    "defaults": {},
    "lr0.02": {"lr": 0.02},
    "no_nesterov": {"lr": 0.02, "nesterov": False},
    "original": {"lr": 0.02, "adjust_lr_fn": "original", "weight_decay": 0.0},
    "match_rms_adamw": {"lr": 0.01, "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.3},
    "ns_steps3_momentum0.8": {"lr": 0.02, "ns_steps": 3, "momentum": 0.8},
    "coefficients_eps": {"lr": 0.02, "ns_coefficients": (2.0, -1.5, 0.5), "eps": 1e-3},
}


@pytest.mark.parametrize("setting", list(MUON_SETTINGS), ids=str)
def test_muon_matches_torch(setting):
    kw = MUON_SETTINGS[setting]
    worst = compare(lambda m: Muon(m.parameters(), **kw), lambda m: [torch.optim.Muon(m.parameters(), **kw)],
                    make_mlp, mlp_loss)
    assert worst <= 1e-5, worst


def test_muon_matches_torch_with_scheduler_and_tensor_lr():
    worst = compare(lambda m: Muon(m.parameters(), lr=torch.tensor(0.02)),
                    lambda m: [torch.optim.Muon(m.parameters(), lr=torch.tensor(0.02))],
                    make_mlp, mlp_loss, schedule=decay_then_warm)
    assert worst <= 1e-5, worst


def test_muon_param_groups_keep_torch_names():
    model = make_mlp()
    opt = Muon(model.parameters(), lr=0.02)
    ref = torch.optim.Muon(make_mlp().parameters(), lr=0.02)
    for name, value in ref.param_groups[0].items():
        if name != "params":
            assert opt.param_groups[0][name] == value, name


# --------------------------------------------------------------------------- Adafactor


ADAFACTOR_SETTINGS = {
    "defaults": {},
    "weight_decay": {"weight_decay": 0.1},
    "eps_d_beta2_decay": {"eps": (1e-6, 1e-2), "d": 2.0, "beta2_decay": -0.5},
    "eps1_zero": {"eps": (0.0, 1e-3), "beta2_decay": 0.0},
    "maximize": {"maximize": True, "lr": 0.02},
    "foreach_reference": {"foreach": True, "lr": 0.03, "weight_decay": 0.01},
}


@pytest.mark.parametrize("setting", list(ADAFACTOR_SETTINGS), ids=str)
def test_adafactor_matches_torch(setting):
    kw = ADAFACTOR_SETTINGS[setting]
    assert_matches(lambda p: Adafactor(p, **kw), lambda p: torch.optim.Adafactor(p, **kw), rtol=1e-5)


def test_adafactor_scheduler_crosses_the_relative_step_cap():
    """lr = 0.5 then scheduled: rho_t = min(lr_t, 1/sqrt(t)) takes both branches."""
    def every_step(opt, step):
        opt.scheduler.step()

    def with_scheduler(cls):
        def make(params):
            opt = cls(params, lr=0.5, weight_decay=0.02)
            opt.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, decay_then_warm)
            return opt
        return make

    assert_matches(with_scheduler(Adafactor), with_scheduler(torch.optim.Adafactor), rtol=1e-5,
                   every_step=every_step)


# --------------------------------------------------------------------------- MuonWithAdamW


def fresh(kw):
    """A copy with new tensors: schedulers change a tensor lr in place."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in (kw or {}).items()}


def two_torch_optimizers(model, muon_kw=None, adamw_kw=None):
    muon_kw, adamw_kw = fresh(muon_kw), fresh(adamw_kw)
    route = is_hidden_matrix(model)
    muon = [p for n, p in model.named_parameters() if route(n, p)]
    other = [p for n, p in model.named_parameters() if not route(n, p)]
    return [torch.optim.Muon(muon, **{"lr": 0.02, "momentum": 0.95, **(muon_kw or {})}),
            torch.optim.AdamW(other, **{"lr": 3e-4, "weight_decay": 0.01, **(adamw_kw or {})})]


HELPER_SETTINGS = {
    "defaults": ({}, {}),
    "options": ({"nesterov": False, "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.05, "lr": 0.01},
                {"lr": 1e-2, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1}),
    "tensor_lrs": ({"lr": torch.tensor(0.02)}, {"lr": torch.tensor(3e-3)}),
}


@pytest.mark.parametrize("setting, tied", [("defaults", True), ("defaults", False), ("options", True),
                                           ("tensor_lrs", False)], ids=str)
def test_muon_with_adamw_matches_two_torch_optimizers(tied, setting):
    muon_kw, adamw_kw = HELPER_SETTINGS[setting]
    ours_kw = {**muon_kw, **{f"adamw_{k}": v for k, v in adamw_kw.items()}}
    worst = compare(lambda m: MuonWithAdamW(m, **fresh(ours_kw)), lambda m: two_torch_optimizers(m, muon_kw, adamw_kw),
                    lambda: make_lm(tied), lm_loss, schedule=None if setting == "defaults" else decay_then_warm)
    assert worst <= 1e-5, worst


def test_muon_with_adamw_routing():
    model = make_lm(tied=False)
    opt = MuonWithAdamW(model)
    muon_group, adamw_group = opt.param_groups
    assert muon_group["param_names"] == ["fc1.weight", "fc2.weight"]
    assert sorted(adamw_group["param_names"]) == sorted(["embed.weight", "norm.weight", "norm.bias", "fc1.bias",
                                                         "fc2.bias", "lm_head.weight"])
    assert (muon_group["lr"], adamw_group["lr"]) == (0.02, 3e-4)
    assert (muon_group["weight_decay"], adamw_group["weight_decay"]) == (0.1, 0.01)
    tied = MuonWithAdamW(make_lm(tied=True))
    assert tied.param_groups[0]["param_names"] == ["fc1.weight", "fc2.weight"]
    assert "embed.weight" in tied.param_groups[1]["param_names"]
    # an override: fc2 to AdamW as well
    custom = MuonWithAdamW(make_lm(tied=False), muon_filter=lambda name, p: name == "fc1.weight")
    assert custom.param_groups[0]["param_names"] == ["fc1.weight"]
    train(model, [opt], lm_loss, 2)
    assert any(k.startswith("muon/") for k in opt.state[model.fc1.weight])
    assert any(k.startswith("adamw/") for k in opt.state[model.embed.weight])


def test_muon_with_adamw_refuses_bad_routing():
    with pytest.raises(ValueError, match=r"'norm\.weight' has shape \(8,\) and muon_filter routed it to Muon"):
        MuonWithAdamW(make_lm(tied=False), muon_filter=lambda name, p: name.startswith(("fc1", "norm")))
    with pytest.raises(TypeError, match="muon_filter: must return True"):
        MuonWithAdamW(make_lm(tied=False), muon_filter=lambda name, p: 1)
    with pytest.raises(TypeError, match="muon_filter: expected a callable"):
        MuonWithAdamW(make_lm(tied=False), muon_filter="fc1")
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        MuonWithAdamW(make_lm(tied=False).parameters())
    opt = MuonWithAdamW(make_lm(tied=False))
    with pytest.raises(ValueError, match="use_muon"):
        opt.add_param_group({"params": [("m", torch.nn.Parameter(torch.zeros(3, 3)))]})
    with pytest.raises(ValueError, match="'v' has shape \\(3,\\) in a group with use_muon=True"):
        opt.add_param_group({"params": [("v", torch.nn.Parameter(torch.zeros(3)))], "use_muon": True})
    extra = torch.nn.Parameter(torch.ones(3))
    opt.add_param_group({"params": [("extra", extra)], "use_muon": False, "lr": 0.1})
    extra.grad = torch.ones(3)
    opt.step()
    assert "adamw/adam/exp_avg" in opt.state[extra]


@pytest.mark.parametrize("copy_first", [False, True])
def test_muon_with_adamw_added_adamw_group_gets_the_adamw_values(copy_first):
    """A group added with use_muon=False steps as torch.optim.AdamW with the adamw_* arguments
    (not Muon's lr 0.02 / weight_decay 0.1), also on a deep copy of the optimizer."""
    opt = MuonWithAdamW(make_lm(tied=False), adamw_lr=1e-2, adamw_weight_decay=0.05, adamw_betas=(0.8, 0.9))
    if copy_first:
        opt = copy.deepcopy(opt)
    extra = torch.nn.Parameter(torch.linspace(-1, 1, 5))
    ref = torch.nn.Parameter(extra.detach().clone())
    torch_opt = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.05, betas=(0.8, 0.9), eps=1e-8)
    opt.add_param_group({"params": [("extra", extra)], "use_muon": False})
    assert {k: opt.param_groups[-1][k] for k in ("lr", "weight_decay", "betas")} == \
        {"lr": 1e-2, "weight_decay": 0.05, "betas": (0.8, 0.9)}
    for i in range(3):
        extra.grad = torch.sin(torch.arange(5.0) + i)
        ref.grad = extra.grad.clone()
        opt.step()
        torch_opt.step()
    torch.testing.assert_close(extra, ref, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("kw, error, name", [
    ({"lr": -1.0}, ValueError, "lr"),
    ({"momentum": 1.5}, ValueError, "momentum"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay"),
    ({"nesterov": "yes"}, ValueError, "nesterov"),
    ({"ns_coefficients": (1.0, 2.0)}, ValueError, "ns_coefficients"),
    ({"ns_coefficients": (1.0, 2.0, float("nan"))}, ValueError, "ns_coefficients"),
    ({"eps": -1e-7}, ValueError, "eps"),
    ({"ns_steps": 100}, ValueError, "ns_steps"),
    ({"ns_steps": 2.5}, ValueError, "ns_steps"),
    ({"adjust_lr_fn": "sqrt"}, ValueError, "adjust_lr_fn"),
    ({"compile": "yes"}, TypeError, "compile"),
    ({"betas": (0.9, 0.99)}, TypeError, "betas"),
])
def test_muon_refuses_bad_arguments(kw, error, name):
    with pytest.raises(error, match=name):
        Muon(make_mlp().parameters(), **kw)


def test_muon_refuses_non_matrices():
    with pytest.raises(ValueError, match=r"'conv\.weight' has shape \(3, 2, 3, 3\)"):
        Muon(make_net().named_parameters())
    with pytest.raises(ValueError, match=r"at position 0 has shape \(5,\)"):
        Muon([torch.nn.Parameter(torch.zeros(5))])
    opt = Muon(make_mlp().parameters())
    with pytest.raises(ValueError, match=r"has shape \(5,\)"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(5))]})
    with pytest.raises(TypeError, match="complex"):
        Muon([torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.complex64))])


@pytest.mark.parametrize("kw, error, name", [
    ({"lr": -1.0}, ValueError, "lr"),
    ({"beta2_decay": 0.5}, ValueError, "beta2_decay"),
    ({"eps": (-1.0, 1e-3)}, ValueError, r"eps\[0\]"),
    ({"eps": (None, -1e-3)}, ValueError, r"eps\[1\]"),
    ({"eps": 1e-3}, ValueError, "eps"),
    ({"d": 0.5}, ValueError, "d"),
    ({"weight_decay": -1.0}, ValueError, "weight_decay"),
    ({"maximize": "no"}, TypeError, "maximize"),
    ({"foreach": 1}, TypeError, "foreach"),
    ({"momentum": 0.9}, TypeError, "momentum"),
])
def test_adafactor_refuses_bad_arguments(kw, error, name):
    with pytest.raises(error, match=name):
        Adafactor(make_net().parameters(), **kw)


# --------------------------------------------------------------------------- compiled path


def test_muon_compiled_equals_eager():
    """The momentum (elementwise) runs as a compiled kernel; the rest is eager matrix work."""
    eager_model, compiled_model = make_mlp(), make_mlp()
    eager = Muon(eager_model.parameters(), lr=0.02)
    compiled = Muon(compiled_model.parameters(), lr=0.02, compile=True)
    train(eager_model, [eager], mlp_loss, 3)
    train(compiled_model, [compiled], mlp_loss, 3)
    assert max(relative_diffs(compiled_model, eager_model).values()) <= 1e-6


def test_adafactor_compiled_equals_eager():
    """Nothing of Adafactor is elementwise (per-tensor RMS and row/column means), so compile=True
    runs it eagerly: the same numbers, bit for bit, and nothing to compile."""
    runs = []
    for compile_ in (False, True):
        model = make_net()
        train(model, [Adafactor(model.parameters(), compile=compile_)], loss_of, 3)
        runs.append(model)
    for a, b in zip(*(m.parameters() for m in runs)):
        assert torch.equal(a, b)


def test_adafactor_state_is_factored():
    model = make_net()
    opt = Adafactor(model.named_parameters())
    # conv [3, 2, 3, 3]: rows [3, 2, 3, 1] + columns [3, 2, 1, 3]; fc [5, 48]: 5 + 48; biases: 3 + 5
    assert opt.state_bytes() == 4 * (18 + 18 + 5 + 48 + 3 + 5)
    train(model, [opt], loss_of, 1)
    state = opt.state[model.conv.weight]
    assert state["factored_rms/row_var"].shape == (3, 2, 3, 1)
    assert state["factored_rms/col_var"].shape == (3, 2, 1, 3)
    assert opt.state[model.fc.bias]["factored_rms/variance"].shape == (5,)


# --------------------------------------------------------------------------- resume


def _resume_equals_uninterrupted(make_model, make_opt, loss_fn, steps=4):
    full_model = make_model()
    full = make_opt(full_model)
    train(full_model, [full], loss_fn, 2 * steps)

    model = make_model()
    opt = make_opt(model)
    train(model, [opt], loss_fn, steps)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = make_model(seed=1)
    resumed_model.load_state_dict(saved["model"])
    resumed = make_opt(resumed_model)
    resumed.load_state_dict(saved["opt"])
    train(resumed_model, [resumed], loss_fn, steps, start=steps)
    for (name, a), b in zip(full_model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(a, b), name


def test_muon_resumes_bit_for_bit():
    _resume_equals_uninterrupted(make_mlp, lambda m: Muon(m.parameters(), lr=0.02), mlp_loss)


def test_adafactor_resumes_bit_for_bit():
    _resume_equals_uninterrupted(make_net, lambda m: Adafactor(m.parameters(), weight_decay=0.1), loss_of)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_muon_with_adamw_resumes_bit_for_bit(tied):
    _resume_equals_uninterrupted(lambda seed=0: make_lm(tied, seed), lambda m: MuonWithAdamW(m), lm_loss)

"""Schedule-free presets: parity with heavyball 0.8.1, train()/eval(), resume, r, bf16."""

import copy
import io

import pytest
import torch

import heavyball_chain as hc
from helpers import make_net, train

heavyball = pytest.importorskip("heavyball")

# Same arithmetic as 0.8.1 op for op (div, add wd*y, lerp, add, sub). Over 50 steps, in train
# mode and after eval(), we measured a difference of exactly 0.0; 1e-6 (8 ulps at |p| ~ 1) leaves
# room for kernel-level rounding differences across torch builds and is far below one step's
# movement (~lr = 2.5e-3), so a wrong equation cannot pass.
ATOL = 1e-6
SF = [("ForeachSFAdamW", {}), ("PaLMForeachSFAdamW", {}),
      ("ForeachSFAdamW", {"weight_decay": 0.1, "lr": 1e-2, "warmup_steps": 5}),
      ("PaLMForeachSFAdamW", {"weight_decay": 0.1, "beta2_scale": 0.6, "warmup_steps": 5})]


def _close(a_model, b_model):
    for (n, a), b in zip(a_model.named_parameters(), b_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("name,kwargs", SF)
def test_matches_heavyball_081_train_and_eval(name, kwargs):
    kw = {"warmup_steps": 1, **kwargs}
    ours_m, ref_m = make_net(), make_net()
    ours = getattr(hc, name)(ours_m.parameters(), **kw)
    ref = getattr(heavyball, name)(ref_m.parameters(), **kw)
    for step in range(50):
        train(ours_m, ours, 1, start=step)
        train(ref_m, ref, 1, start=step)
        _close(ours_m, ref_m)
        if step % 10 == 9:  # x during eval, y back for training
            ours.eval()
            ref.eval()
            _close(ours_m, ref_m)
            ours.train()
            ref.train()
            _close(ours_m, ref_m)
    assert max((a - b).abs().max().item() for a, b in zip(ours_m.parameters(), make_net().parameters())) > 0.02


def test_eval_then_train_restores_parameters():
    model = make_net()
    opt = hc.ForeachSFAdamW(model.parameters(), lr=1e-2)
    train(model, opt, 10)
    y = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    x = [p.detach().clone() for p in model.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(x, y))
    opt.eval()  # idempotent
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), x))
    opt.train()
    for a, b in zip(model.parameters(), y):
        # x -> y is lerp(x, z, 1 - b1) after y -> x = lerp(y, z, 1 - 1/b1): two fp32 roundings
        # of values ~1 amplified by 1/b1 ~ 1.1: within a few ulps
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_eval_gives_closed_form_average():
    """x = (y - (1 - b1) z) / b1 (the inverse of y = (1 - b1) z + b1 x)."""
    p = torch.nn.Parameter(torch.randn(5))
    opt = hc.ForeachSFAdamW([p], lr=0.1, betas=(0.8, 0.99))
    for _ in range(3):
        p.grad = torch.randn(5)
        opt.step()
    y, z = p.detach().clone(), opt.state[p]["schedule_free/z"].clone()
    opt.eval()
    torch.testing.assert_close(p.detach(), (y - 0.2 * z) / 0.8, rtol=0, atol=1e-6)


def test_step_in_eval_mode_raises_and_saved_model_holds_x():
    model = make_net()
    opt = hc.ForeachSFAdamW(model.parameters())
    train(model, opt, 5)
    opt.eval()
    saved = copy.deepcopy(model.state_dict())
    x = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(saved[n], v) for (n, _), v in zip(model.named_parameters(), x))
    with pytest.raises(RuntimeError, match="train\\(\\)"):
        train(model, opt, 1, start=5)


def test_step_after_eval_before_any_step_raises_until_train():
    """eval() before the first step (an evaluation before training) leaves the optimizer in eval
    mode although no parameter has state yet: step() is refused, as after later eval() calls, and
    changes nothing; after train() it is the step of an optimizer that never saw eval()."""
    model, twin = make_net(), make_net()
    opt, twin_opt = hc.ForeachSFAdamW(model.parameters()), hc.ForeachSFAdamW(twin.parameters())
    opt.eval()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="train\\(\\)"):
        train(model, opt, 1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))
    assert not any(opt.state.values())
    copied = copy.deepcopy((model, opt))  # the mode travels with the optimizer
    with pytest.raises(RuntimeError, match="train\\(\\)"):
        train(*copied, 1)
    opt.train()
    train(model, opt, 3)
    train(twin, twin_opt, 3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_eval_with_b1_zero_is_refused_and_changes_nothing():
    """With b1 = 0, y = z and the average x is not kept: eval() cannot give x, so it raises
    instead of leaving z in the parameters; training goes on unchanged."""
    model = make_net()
    opt = hc.ForeachSFAdamW(model.parameters(), betas=(0.0, 0.999))
    train(model, opt, 3)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="betas\\[0\\] > 0"):
        opt.eval()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))
    train(model, opt, 1, start=3)
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), before))


def test_non_schedule_free_train_eval_are_noops():
    model = make_net()
    opt = hc.ForeachLaProp(model.parameters())
    train(model, opt, 2)
    before = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    opt.train()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_exact_resume_with_weight_sum_and_mode(mode, dtype):
    model = make_net(dtype=dtype)
    opt = hc.PaLMForeachSFAdamW(model.parameters(), lr=1e-2, warmup_steps=4, r=0.5)
    train(model, opt, 12)
    if mode == "eval":
        opt.eval()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    fresh = make_net(seed=9, dtype=dtype)
    fresh.load_state_dict(ckpt["model"])
    fresh_opt = hc.PaLMForeachSFAdamW(fresh.parameters())
    fresh_opt.load_state_dict(ckpt["opt"])
    assert fresh_opt.state[fresh.fc.weight]["schedule_free/weight_sum"] == opt.state[model.fc.weight]["schedule_free/weight_sum"] > 0
    for m, o in ((model, opt), (fresh, fresh_opt)):
        o.train()
        train(m, o, 12, start=12)
        o.eval()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))


def test_r_takes_effect_as_in_the_paper():
    """c_t = w_t / sum w_k with w_t = t^r lr^p; 0.8.1 accepts r and ignores it."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = hc.ForeachSFAdamW([p], lr=0.1, r=1.0, betas=(0.9, 0.99))
    for _ in range(4):
        p.grad = torch.ones(3)
        opt.step()
    assert opt.state[p]["schedule_free/weight_sum"] == pytest.approx(0.01 * (1 + 2 + 3 + 4))
    runs = []
    for r in (0.0, 2.0):
        q = torch.nn.Parameter(torch.zeros(3))
        o = hc.ForeachSFAdamW([q], lr=0.1, r=r)
        for k in range(6):
            q.grad = torch.full((3,), float(k % 3 - 1))
            o.step()
        runs.append(q.detach().clone())
    assert not torch.equal(*runs)


def test_bf16_z_moves_and_tracks_fp32():
    """0.8.1 restores bf16 z from its pre-update fp32 copy, so z never moves. Ours keeps z in fp32."""
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    w_true = torch.randn(8, 1)
    y = x @ w_true
    finals = {}
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.nn.Parameter(torch.zeros(8, 1, dtype=dtype))
        opt = hc.ForeachSFAdamW([w], lr=0.05)
        z0 = None
        for i in range(150):
            opt.zero_grad()
            loss = ((x.to(dtype) @ w).float() - y).pow(2).mean()
            loss.backward()
            opt.step()
            if z0 is None:
                z0 = opt.state[w]["schedule_free/z"].clone()
        assert not torch.equal(opt.state[w]["schedule_free/z"], z0)
        opt.eval()
        finals[dtype] = ((x @ w.detach().float()) - y).pow(2).mean().item()
    assert finals[torch.float32] < 0.05
    assert finals[torch.bfloat16] < 2 * finals[torch.float32] + 0.02
    # the 0.8.1 bug, shown on the oracle: its z does not move with bf16 parameters
    w = torch.nn.Parameter(torch.zeros(8, 1, dtype=torch.bfloat16))
    ref = heavyball.ForeachSFAdamW([w], lr=0.05, warmup_steps=1)
    for _ in range(3):
        w.grad = torch.ones_like(w)
        ref.step()
    assert torch.equal(ref.state[w]["z"], torch.zeros_like(w))

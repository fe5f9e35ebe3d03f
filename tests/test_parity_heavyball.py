"""Parity with heavyball==0.8.1 (test-only oracle) in fp32 on CPU.

Tolerance: both sides do the same fp32 operations in the same order except where our chain splits
HeavyBall's fused ``p + lr * m`` into ``u = -lr * m`` then ``p + u`` (one extra rounding, at most
half an ulp of the update per step) and where the update passes through the decay transform. Over
50 steps at lr 2.5e-3 the parameters (|p| < 1) differ by at most a few fp32 ulps: we measured
< 1e-7 and assert 1e-6 absolute (about 8 ulps at |p| ~ 1), far below one step's update (~2.5e-3),
so a real math error (wrong beta, wrong eps placement, wrong step order) cannot pass.
"""

import pytest
import torch

import heavyball_chain as hc
from helpers import make_net, train

heavyball = pytest.importorskip("heavyball")

ATOL = 1e-6
# HeavyBall 0.8.1's ADOPT does not clip the normalised gradient; ours does by default (docs/presets.md)
OURS = {"ForeachADOPT": {"clip": None}}


@pytest.mark.parametrize("name,kwargs", [
    ("ForeachLaProp", {}),
    ("ForeachADOPT", {}),
    ("ForeachLaProp", {"betas": (0.8, 0.95), "eps": 1e-6, "lr": 1e-2}),
    ("ForeachADOPT", {"betas": (0.8, 0.95), "eps": 1e-6, "lr": 1e-2}),
])
def test_matches_heavyball_081(name, kwargs):
    ours_model, ref_model = make_net(), make_net()
    kw = dict(warmup_steps=1, weight_decay=0, **kwargs)
    ours = getattr(hc, name)(ours_model.parameters(), **kw, **OURS.get(name, {}))
    ref = getattr(heavyball, name)(ref_model.parameters(), **kw)
    for step in range(50):
        train(ours_model, ours, 1, start=step)
        train(ref_model, ref, 1, start=step)
        for (n, a), b in zip(ours_model.named_parameters(), ref_model.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=ATOL, msg=lambda m: f"step {step} {n}: {m}")
    moved = max((a - b).abs().max().item() for a, b in zip(ours_model.parameters(), make_net().parameters()))
    assert moved > 0.05  # the trajectory went somewhere: parity is not trivially 0 == 0


@pytest.mark.parametrize("name", ["ForeachLaProp", "ForeachADOPT"])
def test_warmup_matches_heavyball(name):
    """warmup_steps > 1. ADOPT's first update is at step 3 and 0.8.1 warms it up from 1: our
    chain counts the updates that reach scale_by_learning_rate, which gives the same factor."""
    a_model, b_model = make_net(), make_net()
    a = getattr(hc, name)(a_model.parameters(), warmup_steps=7, **OURS.get(name, {}))
    b = getattr(heavyball, name)(b_model.parameters(), warmup_steps=7)
    train(a_model, a, 12)
    train(b_model, b, 12)
    for x, y in zip(a_model.parameters(), b_model.parameters()):
        torch.testing.assert_close(x, y, rtol=0, atol=ATOL)


def _zero_grad_decay(opt_cls, **kw):
    p = torch.nn.Parameter(torch.ones(4))
    opt = opt_cls([p], lr=0.1, weight_decay=0.5, **kw)
    for _ in range(3):
        p.grad = torch.zeros_like(p)
        opt.step()
    return p.detach()


def test_heavyball_081_weight_decay_grows_weights_ours_decays():
    """0.8.1 multiplies by (1 + lr wd) per step: 1.0 -> 1.158 in three steps. Ours: (1 - lr wd)^3."""
    theirs = _zero_grad_decay(heavyball.ForeachLaProp, warmup_steps=1)
    torch.testing.assert_close(theirs, torch.full((4,), 1.05**3))
    for cls in (hc.ForeachLaProp, hc.ForeachAdamW):
        torch.testing.assert_close(_zero_grad_decay(cls), torch.full((4,), 0.95**3))
    # ADOPT's first update (and decay) is at step 3
    torch.testing.assert_close(_zero_grad_decay(hc.ForeachADOPT), torch.full((4,), 0.95))


def test_runs_at_heavyball_defaults_where_081_crashes():
    x, y = torch.randn(32, 2, 6, 6), torch.randn(32, 5)
    for cls in (hc.ForeachAdamW, hc.ForeachLaProp, hc.ForeachADOPT):
        model = make_net()
        opt = cls(model.parameters())
        losses = []
        for _ in range(40):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.9 * losses[0], (cls.__name__, losses)
    with pytest.raises(ZeroDivisionError):
        model = make_net()
        train(model, heavyball.ForeachLaProp(model.parameters()), 1)

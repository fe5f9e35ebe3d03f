"""Each transform against a closed form computed independently in float64."""

import math

import pytest
import torch

import heavyball_chain as hc
from heavyball_chain import transforms as T


def run_chain(tx, grads_seq, p0, **hp):
    """Apply ``tx`` (ending in apply_updates) to one parameter over a sequence of gradients."""
    p = torch.nn.Parameter(p0.clone())
    opt = hc.ChainOptimizer([p], tx, **hp)
    out = []
    for g in grads_seq:
        p.grad = g.clone()
        opt.step()
        out.append(p.detach().clone())
    return out, opt


def grads(n, shape=(5,), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n)]


def adam_reference(gs, p, lr, b1, b2, eps):
    """Textbook Adam with bias correction, eps clamped (float64)."""
    p = p.double()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    out = []
    for t, g in enumerate(gs, 1):
        g = g.double()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * mh / vh.sqrt().clamp_min(eps)
        out.append(p)
    return out


def test_beta_debias_is_bias_correction():
    b, t = 0.9, 5
    # EMA with debiased beta from 0 equals the bias-corrected EMA
    xs = [1.0, 2.0, -1.0, 0.5, 3.0]
    m_hat = 0.0
    m = 0.0
    for k, x in enumerate(xs, 1):
        bh = T.beta_debias(b, k)
        m_hat = bh * m_hat + (1 - bh) * x
        m = b * m + (1 - b) * x
    assert m_hat == pytest.approx(m / (1 - b**t), rel=1e-12)
    assert T.beta_debias(0.99, 1) == 0


def test_scale_by_adam_matches_textbook_adam():
    gs = grads(10)
    p0 = torch.randn(5)
    tx = hc.chain(T.scale_by_adam(), T.scale_by_learning_rate(), T.apply_updates())
    ours, _ = run_chain(tx, gs, p0, lr=0.01, betas=(0.8, 0.95), eps=1e-3)
    ref = adam_reference(gs, p0, 0.01, 0.8, 0.95, 1e-3)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=1e-6)


def test_scale_by_laprop_closed_form():
    gs = grads(8)
    p0 = torch.randn(5)
    tx = hc.chain(T.scale_by_laprop(), T.scale_by_learning_rate(), T.apply_updates())
    ours, _ = run_chain(tx, gs, p0, lr=0.01, betas=(0.8, 0.95), eps=1e-8)
    p, m, v = p0.double(), torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    for t, (g, got) in enumerate(zip(gs, ours), 1):
        g = g.double()
        v = 0.95 * v + 0.05 * g * g
        vh = v / (1 - 0.95**t)
        m = 0.8 * m + 0.2 * g / vh.sqrt()
        p = p - 0.01 * m / (1 - 0.8**t)
        torch.testing.assert_close(got.double(), p, rtol=0, atol=1e-6)


@pytest.mark.parametrize("clip", ["default", None, 0.7], ids=["k^0.25", "none", "0.7"])
def test_scale_by_adopt_closed_form(clip):
    """HeavyBall's timing with the paper's clipping: the k-th momentum update (k = t - 1) clips
    the normalised gradient to +-k^0.25 (default), a constant, or not at all."""
    gs = grads(8)
    p0 = torch.randn(5)
    tx = hc.chain(T.scale_by_adopt(), T.scale_by_learning_rate(), T.apply_updates())
    kw = {} if clip == "default" else {"clip": clip}
    ours, _ = run_chain(tx, gs, p0, lr=0.01, betas=(0.8, 0.95), eps=1e-8, **kw)
    bound = {"default": lambda k: k**0.25, None: lambda k: math.inf, 0.7: lambda k: 0.7}[clip]
    b1h = lambda t: T.beta_debias(0.8, t)  # noqa: E731
    b2h = lambda t: T.beta_debias(0.95, t)  # noqa: E731
    p, m, v = p0.double(), torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    clipped = False
    for t, (g, got) in enumerate(zip(gs, ours), 1):
        g = g.double()
        if t >= 3:
            p = p - 0.01 * m
        if t >= 2:
            n = g / v.sqrt()
            clipped |= bool((n.abs() > bound(t - 1)).any())
            m = b1h(t - 1) * m + (1 - b1h(t - 1)) * n.clamp(-bound(t - 1), bound(t - 1))
        v = b2h(t) * v + (1 - b2h(t)) * g * g
        torch.testing.assert_close(got.double(), p, rtol=0, atol=1e-6)
    assert torch.equal(ours[0], p0) and torch.equal(ours[1], p0)
    assert clipped == (clip is not None)  # the clip was active in this run


def test_weight_decay_and_warmup_closed_form():
    """Zero gradients through LaProp: p_t = p_{t-1} (1 - lr_t wd), lr_t = lr min(t / W, 1)."""
    p0 = torch.ones(3)
    ours, _ = run_chain(hc.ForeachLaProp([torch.zeros(1, requires_grad=True)]).transform,
                        [torch.zeros(3)] * 6, p0, lr=0.1, weight_decay=0.5, warmup_steps=4)
    expected = 1.0
    for t, got in enumerate(ours, 1):
        expected *= 1 - 0.1 * min(t / 4, 1) * 0.5
        torch.testing.assert_close(got, torch.full((3,), expected))


def test_palm_beta2_schedule():
    s = T.palm_beta2(0.8)
    assert s(1) == 0.0
    assert s(100) == pytest.approx(1 - 100**-0.8)
    assert T.palm_beta2()(10) == pytest.approx(1 - 10**-0.8)  # default beta2_scale
    assert T.palm_beta2().at(10, {"beta2_scale": 0.5}) == pytest.approx(1 - 10**-0.5)


def test_palm_beta2_as_second_beta_declares_beta2_scale():
    tx = hc.chain(T.scale_by_laprop(betas=(0.9, T.palm_beta2())), T.scale_by_learning_rate(),
                  T.apply_updates())
    p = torch.nn.Parameter(torch.zeros(4))
    opt = hc.ChainOptimizer([p], tx, beta2_scale=0.6)
    assert opt.param_groups[0]["beta2_scale"] == 0.6
    gs = grads(5, (4,))
    for g in gs:
        p.grad = g
        opt.step()
    # closed form: v uses b2_t = 1 - t^-0.6, debiased
    v = torch.zeros(4, dtype=torch.float64)
    m = torch.zeros(4, dtype=torch.float64)
    q = torch.zeros(4, dtype=torch.float64)
    for t, g in enumerate(gs, 1):
        g = g.double()
        b2 = T.beta_debias(1 - t**-0.6, t)
        b1 = T.beta_debias(0.9, t)
        v = b2 * v + (1 - b2) * g * g
        m = b1 * m + (1 - b1) * g / v.sqrt()
        q = q - 1e-3 * m
    torch.testing.assert_close(p.detach().double(), q, rtol=0, atol=1e-6)


def test_schedule_accepted_where_a_number_is():
    tx = hc.chain(T.scale_by_learning_rate(), T.apply_updates())
    p = torch.nn.Parameter(torch.zeros(2))
    opt = hc.ChainOptimizer([p], tx, lr=lambda t: 0.1 * t)
    for _ in range(3):
        p.grad = torch.ones(2)
        opt.step()
    torch.testing.assert_close(p.detach(), torch.full((2,), -0.6))  # 0.1 + 0.2 + 0.3
    saved = opt.state_dict()["param_groups"][0]["lr"]  # code is not saved, only its name
    assert saved == "<schedule test_schedule_accepted_where_a_number_is.<locals>.<lambda>>"


def test_stochastic_round_is_unbiased_and_brackets():
    x = torch.full((200_000,), 1.0 + 2**-10, dtype=torch.float32)  # 1/8 of a bf16 ulp above 1
    out = torch.empty_like(x, dtype=torch.bfloat16)
    T.stochastic_round_(out, x, torch.Generator().manual_seed(0))
    lo, hi = torch.tensor(1.0, dtype=torch.bfloat16), torch.tensor(1.0 + 2**-7, dtype=torch.bfloat16)
    assert bool(((out == lo) | (out == hi)).all())
    frac_up = (out == hi).double().mean().item()
    # P(up) = 1/8; binomial std at n = 2e5 is 7.4e-4, so 5 std is 0.0037
    assert abs(frac_up - 0.125) < 0.0037
    assert out.double().mean().item() == pytest.approx(1.0 + 2**-10, abs=5 * 2**-7 * 7.4e-4)


def test_stochastic_round_apply_keeps_small_updates_in_expectation():
    """A bf16 parameter at 1.0 with updates of 1/8 ulp: round-to-nearest never moves,
    stochastic rounding moves by the right amount on average."""
    n, steps, du = 4096, 64, 2**-10
    tx_sr = hc.chain(T.scale_by_learning_rate(), T.stochastic_round_apply())
    tx_rn = hc.chain(T.scale_by_learning_rate(), T.apply_updates())
    results = []
    for tx in (tx_sr, tx_rn):
        p = torch.nn.Parameter(torch.ones(n, dtype=torch.bfloat16))
        opt = hc.ChainOptimizer([p], tx, lr=1.0)
        for _ in range(steps):
            p.grad = torch.full((n,), -du, dtype=torch.bfloat16)
            opt.step()
        results.append(p.detach().double().mean().item())
    assert results[1] == 1.0
    assert results[0] == pytest.approx(1.0 + steps * du, rel=5e-3)


def test_fp32_apply_is_plain_add():
    p = torch.nn.Parameter(torch.randn(7))
    before = p.detach().clone()
    opt = hc.ChainOptimizer([p], hc.chain(T.scale_by_learning_rate(), T.stochastic_round_apply()), lr=0.5)
    g = torch.randn(7)
    p.grad = g.clone()
    opt.step()
    assert torch.equal(p.detach(), before + g * -0.5)
    assert torch.equal(p.grad, g)  # gradients are never modified


def test_adamw_matches_torch_adamw():
    """ForeachAdamW vs torch.optim.AdamW: same math except eps (clamped vs added to sqrt(v̂)).
    With eps=1e-8 and |g| ~ 1, the relative difference per step is ~eps / sqrt(v̂) ~ 1e-8,
    below fp32 rounding, so 1e-5 over 30 steps bounds the accumulated rounding."""
    torch.manual_seed(0)
    p0 = torch.randn(6, 4)
    a, b = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    ours = hc.ForeachAdamW([a], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    ref = torch.optim.AdamW([b], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for g in grads(30, (6, 4)):
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert (a - p0).abs().max() > 0.1
    # where eps dominates (tiny gradients) the placement shows: ours clamps, torch adds
    x, y = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    o1 = hc.ForeachAdamW([x], lr=1.0, eps=1e-3)
    o2 = torch.optim.AdamW([y], lr=1.0, eps=1e-3, weight_decay=0)
    x.grad, y.grad = torch.full((1,), 1e-3), torch.full((1,), 1e-3)
    o1.step()
    o2.step()
    assert x.item() == pytest.approx(-1.0) and y.item() == pytest.approx(-0.5)


def test_transforms_do_not_touch_incoming_updates():
    u = [torch.randn(3), torch.randn(2, 2)]
    copies = [t.clone() for t in u]
    params = [torch.zeros(3), torch.zeros(2, 2)]
    for t in (T.scale_by_adam(), T.scale_by_laprop(), T.scale_by_adopt(), T.add_decayed_weights(0.1),
              T.scale_by_learning_rate(0.1)):
        states = [{}, {}]
        bucket = hc.Bucket(params=params, grads=u, states=states,
                           group={k: h.default for k, h in t.declared().items()}, step=1)
        t.init(bucket)
        for step in (1, 2, 3):
            bucket.step = step
            t.update(u, bucket)
        assert all(torch.equal(a, b) for a, b in zip(u, copies)), t.name


def test_conflicting_defaults_rejected_at_construction():
    with pytest.raises(ValueError, match="eps"):
        hc.chain(T.scale_by_adam(eps=1e-8), T.scale_by_laprop(eps=1e-6))
    hc.chain(T.scale_by_adam(eps=1e-8), T.scale_by_laprop(eps=1e-8))  # equal defaults are fine


def test_chain_state_keys_are_namespaced():
    p = torch.nn.Parameter(torch.zeros(3))
    tx = hc.chain(T.scale_by_adam(), T.scale_by_adam(), T.scale_by_learning_rate(), T.apply_updates())
    opt = hc.ChainOptimizer([p], tx)
    p.grad = torch.ones(3)
    opt.step()
    assert {"0/exp_avg", "1/exp_avg", "0/exp_avg_sq", "1/exp_avg_sq", "step"} <= set(opt.state[p])
    assert math.isfinite(p.sum().item())

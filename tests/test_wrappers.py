"""Wrappers and gradient utilities against oracles: torch.optim, closed forms, separate optimizers."""

import math

import pytest
import torch

import heavyball_chain as hc
from heavyball_chain import transforms as T
from helpers import make_net, train


def params(*shapes, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]


def set_grads(ps, seed):
    gen = torch.Generator().manual_seed(100 + seed)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)


# --------------------------------------------------------------------------- gradient utilities


@pytest.mark.parametrize("nesterov", [False, True])
def test_trace_is_torch_sgd_momentum(nesterov):
    ours, ref = params((5, 3), (4,)), params((5, 3), (4,))
    opt = hc.ChainOptimizer(ours, hc.chain(T.trace(nesterov=nesterov), T.scale_by_learning_rate(), T.apply_updates()),
                            lr=0.1, momentum=0.8)
    torch_opt = torch.optim.SGD(ref, lr=0.1, momentum=0.8, nesterov=nesterov, foreach=True)
    for t in range(10):
        set_grads(ours, t)
        set_grads(ref, t)
        opt.step()
        torch_opt.step()
    for a, b in zip(ours, ref):
        # same operations in a different order: p - lr*m vs p + (-lr)*m, a few ulps
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_clip_by_global_norm_closed_form():
    ps = params((3, 4), (5,))
    before = [p.detach().clone() for p in ps]
    opt = hc.ChainOptimizer(ps, hc.chain(T.clip_by_global_norm(), T.apply_updates()), max_norm=0.5)
    set_grads(ps, 0)
    grads = [p.grad.clone() for p in ps]
    total = math.sqrt(sum(float(g.square().sum()) for g in grads))
    opt.step()
    assert total > 0.5
    for p, b, g in zip(ps, before, grads):
        torch.testing.assert_close(p.detach(), b + g * (0.5 / total), rtol=1e-6, atol=1e-7)
    # below the threshold nothing changes
    opt.param_groups[0]["max_norm"] = 100.0
    set_grads(ps, 1)
    grads = [p.grad.clone() for p in ps]
    before = [p.detach().clone() for p in ps]
    opt.step()
    for p, b, g in zip(ps, before, grads):
        assert torch.equal(p.detach(), b + g)


def test_clip_by_value_sign_and_scale():
    ps = params((50,))
    for tx, f in [(T.clip_by_value(0.3), lambda g: g.clamp(-0.3, 0.3)), (T.scale_by_sign(), torch.sign),
                  (T.scale(-0.25), lambda g: -0.25 * g)]:
        before = ps[0].detach().clone()
        opt = hc.ChainOptimizer(ps, hc.chain(tx, T.apply_updates()))
        set_grads(ps, 0)
        opt.step()
        assert torch.equal(ps[0].detach(), before + f(ps[0].grad))


def test_cautious_closed_form():
    p = torch.nn.Parameter(torch.zeros(4))
    u = torch.tensor([1.0, -2.0, 3.0, -4.0])
    g = torch.tensor([1.0, 1.0, -1.0, -1.0])  # agree on 0 and 3
    opt = hc.ChainOptimizer([p], hc.chain(T.cautious(), T.apply_updates()))
    bucket = hc.Bucket(params=[p.detach()], grads=[g], states=[{}], group=opt.param_groups[0], step=1)
    (out,) = T.cautious().update([u], bucket)
    assert torch.equal(out, torch.tensor([1.0, 0.0, 0.0, -4.0]) * (4 / 3))


def test_cautious_laprop_masks_disagreeing_components():
    torch.manual_seed(0)
    model = make_net()
    opt = hc.ChainOptimizer(model.parameters(), hc.chain(T.scale_by_laprop(), T.cautious(), T.scale_by_learning_rate(),
                                                         T.apply_updates()), lr=0.01)
    train(model, opt, 3)
    x = [p.detach().clone() for p in model.parameters()]
    train(model, opt, 1, start=3)
    for p, before in zip(model.parameters(), x):
        moved = p.detach() - before
        # every component that moved went against its gradient (descent), never with it
        assert (moved * p.grad <= 0).all()


def test_add_noise_statistics_schedule_and_resume():
    ps = [torch.nn.Parameter(torch.zeros(20000))]
    opt = hc.ChainOptimizer(ps, hc.chain(T.add_noise(eta=0.5, gamma=1.0), T.apply_updates()))
    for t in (1, 2):
        before = ps[0].detach().clone()
        ps[0].grad = torch.zeros(20000)
        opt.step()
        noise = ps[0].detach() - before
        var = 0.5 / (1 + (t - 1)) ** 1.0  # optax's count starts at 0
        assert abs(noise.mean()) < 4 * math.sqrt(var / 20000)
        assert noise.var().item() == pytest.approx(var, rel=0.05)
    saved = opt.state_dict()
    ps2 = [torch.nn.Parameter(ps[0].detach().clone())]
    opt2 = hc.ChainOptimizer(ps2, hc.chain(T.add_noise(eta=0.5, gamma=1.0), T.apply_updates()))
    opt2.load_state_dict(saved)
    for o, q in ((opt, ps), (opt2, ps2)):
        q[0].grad = torch.zeros(20000)
        o.step()
    assert torch.equal(ps[0], ps2[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ema_params_closed_form_and_exact_swap(dtype):
    ps = params((6, 2), dtype=dtype)
    start = ps[0].detach().float().clone()
    opt = hc.ChainOptimizer(ps, hc.chain(T.scale_by_learning_rate(), T.apply_updates(), T.ema_params(0.5)), lr=1.0)
    trajectory = []
    for t in range(3):
        ps[0].grad = torch.full((6, 2), -1.0, dtype=dtype)  # p += 1 each step
        opt.step()
        trajectory.append(ps[0].detach().float().clone())
    ema = start
    for w in trajectory:
        ema = 0.5 * ema + 0.5 * w
    training = ps[0].detach().clone()
    with T.ema_weights(opt):
        torch.testing.assert_close(ps[0].detach().float(), ema.to(dtype).float())
        with pytest.raises(RuntimeError, match="inside ema_weights"):
            ps[0].grad = torch.zeros_like(ps[0])
            opt.step()
    assert torch.equal(ps[0].detach(), training)  # exact, also in bf16


# --------------------------------------------------------------------------- wrappers


def test_partition_equals_separate_optimizers():
    """SOAP for matrices and LaProp for vectors in one optimizer = two optimizers on the subsets."""
    def tail():
        return (T.add_decayed_weights(), T.scale_by_learning_rate(), T.apply_updates())

    shapes = [(3, 2, 3, 3), (3,), (5, 48), (5,)]
    one, separate = params(*shapes), params(*shapes)
    is_matrix = lambda p: p.ndim >= 2  # noqa: E731
    opt = hc.ChainOptimizer(one, hc.chain(
        T.partition({"matrix": T.soap_precondition(betas=(0.9, 0.95)), "vector": T.scale_by_laprop((0.9, 0.95))},
                    lambda p: "matrix" if is_matrix(p) else "vector"), *tail()), lr=0.01, weight_decay=0.1)
    mats = hc.ChainOptimizer([p for p in separate if is_matrix(p)],
                             hc.chain(T.soap_precondition(betas=(0.9, 0.95)), *tail()), lr=0.01, weight_decay=0.1)
    vecs = hc.ChainOptimizer([p for p in separate if not is_matrix(p)],
                             hc.chain(T.scale_by_laprop((0.9, 0.95)), *tail()), lr=0.01, weight_decay=0.1)
    for t in range(6):
        set_grads(one, t)
        set_grads(separate, t)
        opt.step()
        mats.step()
        vecs.step()
    for p, q in zip(one, separate):
        assert torch.equal(p, q), p.shape


def test_masked_by_name_and_by_list():
    model = torch.nn.Linear(3, 2)
    names = [n for n, _ in model.named_parameters()]
    for mask in (lambda name, p: name == "bias", [n == "bias" for n in names]):
        w, b = (p.detach().clone() for p in model.parameters())
        opt = hc.ChainOptimizer(model.named_parameters(), hc.chain(T.masked(T.scale(0.0), mask), T.apply_updates()))
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        assert torch.equal(model.bias.detach(), b)  # masked: zero update
        assert torch.equal(model.weight.detach(), w + model.weight.grad)  # passes through
        model.zero_grad()


def test_apply_if_finite_raises_after_max_consecutive_errors():
    ps = params((3,))
    opt = hc.ChainOptimizer(ps, T.apply_if_finite(T.apply_updates(), max_consecutive_errors=2))
    for _ in range(2):
        ps[0].grad = torch.tensor([1.0, float("inf"), 0.0])
        opt.step()
    ps[0].grad = torch.tensor([float("nan"), 0.0, 0.0])
    with pytest.raises(FloatingPointError, match="3 consecutive steps"):
        opt.step()


def test_multi_steps_is_adam_on_the_mean_gradient():
    k = 3
    acc, ref = params((4, 5)), params((4, 5))
    adam = lambda: hc.chain(T.scale_by_adam(), T.scale_by_learning_rate(warmup_steps=2), T.apply_updates())  # noqa: E731
    opt = hc.ChainOptimizer(acc, T.multi_steps(adam(), k), lr=0.1)
    ref_opt = hc.ChainOptimizer(ref, adam(), lr=0.1)
    for outer in range(4):
        grads = []
        for micro in range(k):
            set_grads(acc, 10 * outer + micro)
            grads.append(acc[0].grad.clone())
            before = acc[0].detach().clone()
            opt.step()
            if micro < k - 1:
                assert torch.equal(acc[0].detach(), before)  # no update between accumulation boundaries
        ref[0].grad = sum(grads[1:], grads[0]) / k
        ref_opt.step()
        torch.testing.assert_close(acc[0], ref[0], rtol=0, atol=1e-6)  # (g1+g2+g3)/3 summed in another order


@pytest.mark.parametrize("build, message", [
    (lambda: T.partition({"a": T.identity(), "b": T.apply_updates()}, lambda p: "a"),
     "either every branch writes the parameters or none does"),
    (lambda: T.partition({"a/b": T.identity()}, lambda p: "a/b"), "labels must be non-empty strings without '/'"),
    (lambda: T.partition({}, lambda p: "a"), "non-empty dict"),
    (lambda: T.partition({"a": 3}, lambda p: "a"), "partition\\['a'\\]: expected a heavyball_chain Transform"),
    (lambda: T.masked(T.apply_updates(), [True]), "must not write the parameters"),
    (lambda: T.multi_steps(T.identity(), 0), "k must be an integer >= 1, got 0"),
    (lambda: T.apply_if_finite(T.identity(), -1), "max_consecutive_errors must be an integer >= 0"),
    (lambda: T.scale("2"), "factor must be a number"),
])
def test_construction_errors(build, message):
    with pytest.raises((TypeError, ValueError), match=message):
        build()


def test_selection_errors():
    ps = params((2,), (3,))
    for p in ps:
        p.grad = torch.ones_like(p)
    cases = [
        (T.partition({"a": T.identity()}, lambda p: "b"), "labeler returned 'b'; expected one of \\['a'\\]"),
        (T.masked(T.identity(), [True]), "one entry per parameter of the optimizer; got 1 entries"),
        (T.masked(T.identity(), lambda name, p: True), "build the optimizer from model.named_parameters"),
    ]
    for tx, message in cases:
        opt = hc.ChainOptimizer(ps, hc.chain(tx, T.apply_updates()))
        with pytest.raises(ValueError, match=message):
            opt.step()


def test_params_must_be_tensors_or_named_pairs():
    with pytest.raises(TypeError, match="expected tensors or \\(name, tensor\\) pairs, got int at position 0"):
        hc.ChainOptimizer([3], T.apply_updates())

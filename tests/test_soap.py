"""SOAP: parity with heavyball 0.8.1, schedules, shapes, options, and the presets' structure."""

import inspect
import math

import pytest
import torch

import heavyball_chain as hc
from heavyball_chain import transforms as T
from heavyball_chain.presets.soap import soap_chain
from heavyball_chain.transforms.soap import merged_shape, precond_schedule

heavyball = pytest.importorskip("heavyball")

SOAPS = ["ForeachSOAP", "PaLMForeachSOAP", "PrecondScheduleForeachSOAP", "PrecondSchedulePaLMForeachSOAP"]
# a conv weight (merged to 6x6), two square matrices (batched together), a matrix with a
# dimension above max_precond_dim=32 (only its 5x5 factor exists), and vectors
SHAPES = [(6, 3, 1, 2), (8, 8), (8, 8), (5, 40), (7,), (8,)]


def well_posed(shape, gen):
    """Full-rank matrices with singular values spread over [1, 3]: every factor built from one
    gradient is full rank and its eigenvalues are well separated, so eigh/QR are stable."""
    if len(shape) == 1:
        return torch.randn(shape, generator=gen)
    rows, cols = shape[0], math.prod(shape[1:])
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=gen))
    k = min(rows, cols)
    return (u[:, :k] @ torch.diag(torch.linspace(1.0, 3.0, k)) @ v[:, :k].T).reshape(shape)


def gradient_stream():
    """A loss linear in the parameters, cycling through 3 fixed gradients. A single repeated
    gradient would be ill-posed: its own singular vectors diagonalise it, so the rotated gradient
    has exact zeros whose sign (SOAP's first steps are sign-like) is rounding noise."""
    gen = torch.Generator().manual_seed(0)
    cycle = [[well_posed(s, gen) for s in SHAPES] for _ in range(3)]
    start = [torch.randn(s, generator=gen) * 0.1 for s in SHAPES]
    return cycle, start


def run(make_opt, steps=30, cycle=None, start=None):
    if cycle is None:
        cycle, start = gradient_stream()
    params = [torch.nn.Parameter(p.clone()) for p in start]
    opt = make_opt(params)
    history = []
    for t in range(steps):
        for p, g in zip(params, cycle[t % 3]):
            p.grad = g.clone()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history, opt


@pytest.fixture
def oracle_with_sorted_refresh(monkeypatch):
    """heavyball 0.8.1 with its refresh ordering fixed. 0.8.1 sorts the new basis by
    einsum('ij,ij->i', Q, GG Q) = diag(GG Q Q^T) = diag(GG) (row sums), not by the estimated
    eigenvalues diag(Q^T GG Q) (column sums, 'ij,ij->j', as the SOAP reference and later
    HeavyBall releases do). We implement the latter; to compare everything else op for op, the
    oracle gets the one-character fix for the duration of a test."""
    import heavyball.utils as hu

    class _Torch:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def einsum(spec, *args):
            return torch.einsum("ij,ij->j" if spec == "ij,ij->i" else spec, *args)

    monkeypatch.setattr(hu, "torch", _Torch())
    return heavyball


# Same fp32 operations as 0.8.1 except the contraction order of the rotations (sequential
# batched matmuls vs one einsum) and the stacking of equal shapes. Over 30 steps we measured
# <= 1.7e-7 (about 1 ulp of |p| ~ 0.2); 2e-6 leaves room for BLAS differences and is 1e-4 of the
# distance the parameters move (~0.13), far below the 5e-2 the ordering bug alone causes.
ATOL = 2e-6


@pytest.mark.parametrize("name", SOAPS + ["PrecondScheduleSFPaLMSOAP"])
def test_matches_heavyball_081(oracle_with_sorted_refresh, name):
    kw = dict(weight_decay=0, max_precond_dim=32)
    ours, _ = run(lambda ps: getattr(hc, name)(ps, **kw))
    ref, ref_opt = run(lambda ps: getattr(oracle_with_sorted_refresh, name)(ps, **kw))
    for t, (a, b) in enumerate(zip(ours, ref)):
        for i, (x, y) in enumerate(zip(a, b)):
            torch.testing.assert_close(x, y, rtol=0, atol=ATOL, msg=lambda m: f"step {t} shape {SHAPES[i]}: {m}")
    assert max((x - y).abs().max() for x, y in zip(ours[-1], gradient_stream()[1])) > 0.05


def test_heavyball_081_refresh_order_is_not_by_eigenvalue():
    """A refresh from an exact eigenbasis given in ascending order: ours re-orders it by
    eigenvalue (descending), 0.8.1 by the diagonal of GG, which is not the eigenvalue order; and
    the trajectories differ by far more than rounding."""
    from heavyball.utils import get_orthogonal_matrix_QR
    from heavyball_chain.transforms.soap import _refresh_

    gen = torch.Generator().manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen))
    eig = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    gg = basis @ torch.diag(eig) @ basis.T
    ours = basis[None].clone()
    order = _refresh_(gg[None], ours)
    assert order[0].tolist() == [4, 3, 2, 1, 0]
    torch.testing.assert_close(torch.diag(ours[0].T @ gg @ ours[0]), eig.flip(0), rtol=0, atol=1e-5)
    q = basis.clone()
    get_orthogonal_matrix_QR([gg], [q], torch.zeros(5, 5))
    assert not torch.allclose(torch.diag(q.T @ gg @ q), eig.flip(0), atol=1e-3)
    ours, _ = run(lambda ps: hc.ForeachSOAP(ps, weight_decay=0, max_precond_dim=32), steps=10)
    ref, _ = run(lambda ps: heavyball.ForeachSOAP(ps, weight_decay=0, max_precond_dim=32), steps=10)
    assert max((x - y).abs().max() for x, y in zip(ours[-1], ref[-1])) > 1e-3


def test_precond_schedule_reproduces_heavyball_table():
    """HeavyBall's README: interval 1/p(t) and expected refreshes sum_{k<=t} p(k)."""
    p = precond_schedule.probability
    table = {10: (1.00005, 10), 100: (1.026, 99), 1_000: (2.0, 738), 10_000: (14.3, 2168),
             100_000: (100.2, 4049), 1_000_000: (513, 7245)}
    total, done = 0.0, 0
    for t, (interval, count) in sorted(table.items()):
        total += sum(p(k) for k in range(done + 1, t + 1))
        done = t
        assert 1 / p(t) == pytest.approx(interval, rel=0.01)
        assert total == pytest.approx(count, rel=0.01)


def test_precond_schedule_draws_heavyballs_sequence():
    import random
    s = T.precond_schedule()
    rng = random.Random(0x120983109)
    expected = [rng.random() < precond_schedule.probability(t) for t in range(1, 300)]
    group = {"precond_scheduler": (1 / 3, 9)}
    assert [s.at(t, group) for t in range(1, 300)] == expected
    assert s.at(5, group) == expected[4]  # going back re-draws the same sequence
    assert [s.at(t, group) for t in range(5, 10)] == expected[4:9]


def test_every():
    assert [T.every(3).at(t, {}) for t in range(1, 8)] == [False, False, True, False, False, True, False]
    assert T.every().at(4, {"precondition_frequency": 2})


def test_presets_differ_only_in_their_schedules():
    """PaLMForeachSOAP == PrecondSchedulePaLMForeachSOAP with the schedule replaced by every(2);
    SFPaLMForeachSOAP == PrecondScheduleSFPaLMForeachSOAP likewise; ForeachSOAP == the chain with
    fixed betas."""
    kw = dict(max_precond_dim=32, weight_decay=0.01, lr=3e-3, eps=1e-8, warmup_steps=1)
    palm = dict(kw, beta2_scale=0.8, betas=(0.9, T.palm_beta2()))
    pairs = [
        (lambda ps: hc.PaLMForeachSOAP(ps, max_precond_dim=32),
         lambda ps: hc.ChainOptimizer(ps, soap_chain((0.9, T.palm_beta2()), T.every(2)), **palm)),
        (lambda ps: hc.PrecondSchedulePaLMForeachSOAP(ps, max_precond_dim=32),
         lambda ps: hc.ChainOptimizer(ps, soap_chain((0.9, T.palm_beta2()), T.precond_schedule()), **palm)),
        (lambda ps: hc.SFPaLMForeachSOAP(ps, max_precond_dim=32),
         lambda ps: hc.ChainOptimizer(ps, soap_chain((0.9, T.palm_beta2()), T.every(2), True), **palm)),
        (lambda ps: hc.PrecondScheduleSFPaLMForeachSOAP(ps, max_precond_dim=32),
         lambda ps: hc.ChainOptimizer(ps, soap_chain((0.9, T.palm_beta2()), T.precond_schedule(), True), **palm)),
        (lambda ps: hc.ForeachSOAP(ps, max_precond_dim=32),
         lambda ps: hc.ChainOptimizer(ps, soap_chain((0.9, 0.95), T.every(2)), **dict(kw, betas=(0.9, 0.95)))),
    ]
    for preset, composed in pairs:
        a, _ = run(preset, steps=12)
        b, _ = run(composed, steps=12)
        assert all(torch.equal(x, y) for x, y in zip(a[-1], b[-1]))
    # and the two families really differ (the schedule matters)
    a, _ = run(lambda ps: hc.PaLMForeachSOAP(ps, max_precond_dim=32), steps=12)
    b, _ = run(lambda ps: hc.PrecondSchedulePaLMForeachSOAP(ps, max_precond_dim=32), steps=12)
    assert not all(torch.equal(x, y) for x, y in zip(a[-1], b[-1]))


def test_sfpalm_soap_fixes_081():
    """0.8.1's SFPaLMForeachSOAP takes v from the unprojected gradient and weights its factor
    average with b̂2 (its siblings use 1 - b̂2), and both schedule-free SOAPs drop weight decay.
    Ours differs from 0.8.1 there, and its decay acts."""
    kw = dict(weight_decay=0, max_precond_dim=32)
    ours, _ = run(lambda ps: hc.SFPaLMForeachSOAP(ps, **kw), steps=10)
    ref, _ = run(lambda ps: heavyball.SFPaLMForeachSOAP(ps, **kw), steps=10)
    assert max((x - y).abs().max() for x, y in zip(ours[-1], ref[-1])) > 1e-3
    for cls, decays in ((hc.SFPaLMForeachSOAP, True), (hc.PrecondScheduleSFPaLMSOAP, True),
                        (heavyball.SFPaLMForeachSOAP, False), (heavyball.PrecondScheduleSFPaLMSOAP, False)):
        p = torch.nn.Parameter(torch.ones(4, 4))
        opt = cls([p], weight_decay=0.5, lr=0.1)
        for _ in range(4):
            p.grad = torch.zeros(4, 4)
            opt.step()
        assert (p.detach().abs().max() < 0.99) == decays, cls


def test_shampoo_beta_explicit_value_takes_effect():
    """None (default): factors average with 1 - b̂2, as 0.8.1 does whatever it is given;
    a number s: GG = lerp(GG, G G^T, 1 - s)."""
    g1, g2 = torch.randn(4, 4), torch.randn(4, 4)
    for beta, weight in ((0.5, 0.5), (None, 1 - T.beta_debias(0.95, 1))):
        p = torch.nn.Parameter(torch.zeros(4, 4))
        opt = hc.ForeachSOAP([p], shampoo_beta=beta, weight_decay=0)
        for g in (g1, g2):
            p.grad = g.clone()
            opt.step()
        expected = torch.lerp(g1 @ g1.T, g2 @ g2.T, weight)
        torch.testing.assert_close(opt.state[p]["soap/GG0"], expected, rtol=1e-5, atol=1e-5)


def test_merged_shape():
    assert merged_shape((128, 64, 3, 3), 2048, True) == (128, 576)
    assert merged_shape((128, 64, 3, 3), 2048, False) == (128, 64, 3, 3)
    assert merged_shape((10, 3000, 4), 2048, True) == (10, 3000, 4)  # order kept (0.8.1: (10, 4, 3000))
    assert merged_shape((7,), 4, True) == (7,)
    assert merged_shape((4, 5, 6, 7), 32, True) == (4, 30, 7)
    assert merged_shape((4, 2, 3, 5), 32, True) == (4, 30)


def test_options_normalize_grads_correct_bias_data_format():
    p = torch.nn.Parameter(torch.zeros(6, 6))
    tx = hc.chain(T.soap_precondition(normalize_grads=True), T.apply_updates())
    opt = hc.ChainOptimizer([p], tx)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        before = p.detach().clone()
        p.grad = torch.randn(6, 6, generator=gen)
        opt.step()
    assert (p.detach() - before).pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4)
    # correct_bias=False uses raw betas: at SOAP step 1, m = (1 - b1) g instead of g
    q = torch.nn.Parameter(torch.zeros(3))
    opt = hc.ChainOptimizer([q], hc.chain(T.soap_precondition(correct_bias=False), T.apply_updates()))
    for g in (torch.ones(3), torch.full((3,), 2.0)):
        q.grad = g
        opt.step()
    torch.testing.assert_close(opt.state[q]["0/exp_avg"], torch.full((3,), 0.2))
    with pytest.raises(ValueError, match="data_format"):
        hc.ForeachSOAP([torch.nn.Parameter(torch.zeros(2, 2))], data_format="channels_last")
    with pytest.raises(ValueError, match="precondition_frequency"):
        hc.PrecondSchedulePaLMForeachSOAP([torch.nn.Parameter(torch.zeros(2, 2))], precondition_frequency=5)


def test_bf16_trains_close_to_fp32():
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    w_true = torch.randn(16, 4)
    y = x @ w_true
    finals = {}
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.nn.Parameter(torch.zeros(16, 4, dtype=dtype))
        opt = hc.PrecondSchedulePaLMForeachSOAP([w], lr=3e-2, weight_decay=0)
        for _ in range(150):
            opt.zero_grad()
            loss = ((x.to(dtype) @ w).float() - y).pow(2).mean()
            loss.backward()
            opt.step()
        assert bool(torch.isfinite(w).all())
        finals[dtype] = ((x @ w.detach().float()) - y).pow(2).mean().item()
    assert finals[torch.float32] < 0.05 * y.pow(2).mean().item()
    assert finals[torch.bfloat16] < 2 * finals[torch.float32] + 0.05


# --------------------------------------------------------------------------- range: huge and zero gradients


def _finite_state(opt):
    return all(bool(torch.isfinite(v).all()) for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


def test_huge_first_gradient_gives_the_basis_of_the_scaled_one():
    """Entries ~1e19 (fp32): G G^T overflows to inf and eigh raised. The gradient is scaled by a
    power of two first, so the basis is that of G itself and the first update is unchanged."""
    gen = torch.Generator().manual_seed(5)
    grads = [well_posed((7, 7), gen) for _ in range(2)]  # full rank: a basis without arbitrary columns
    runs = {}
    for scale in (1.0, 2.0 ** 64):
        p = torch.nn.Parameter(torch.zeros(7, 7))
        opt = hc.ForeachSOAP([p], weight_decay=0)
        for g in grads:
            p.grad = g * scale
            opt.step()
            assert _finite_state(opt)
        runs[scale] = (p.detach().clone(), opt.state[p])
    (p1, s1), (p2, s2) = runs[1.0], runs[2.0 ** 64]
    for k in ("soap/Q0", "soap/Q1"):
        torch.testing.assert_close(s2[k].abs(), s1[k].abs(), rtol=0, atol=1e-4)  # columns up to sign
    torch.testing.assert_close(p2, p1, rtol=0, atol=1e-6)
    assert p1.abs().max() > 1e-3


@pytest.mark.parametrize("value", [1e19, 3e38])
def test_huge_gradients_keep_soap_finite(value):
    """Every step huge (factor updates, refreshes at t = 2, 4, 6, a 3-D tensor and a
    preconditioned vector included), then a huge spike after ordinary steps: state, parameters
    and updates stay finite and the updates bounded (sign-like, as Adam's)."""
    torch.manual_seed(0)
    shapes = [(8, 8), (4, 3, 5), (6,)]
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    opt = hc.ForeachSOAP(params, lr=0.1, weight_decay=0, precondition_1d=True, merge_dims=False)
    for step in range(12):
        before = [p.detach().clone() for p in params]
        huge = step < 7 or step == 10
        for p in params:
            p.grad = torch.randn(p.shape).sign() * value if huge else torch.randn(p.shape)
        opt.step()
        assert _finite_state(opt), step
        assert max((p.detach() - b).abs().max().item() for p, b in zip(params, before)) < 1.0
        for p in params:
            for k, q in opt.state[p].items():
                if k.startswith("soap/Q"):
                    torch.testing.assert_close(q.T @ q, torch.eye(q.shape[0]), rtol=0, atol=1e-4)
    assert max(p.detach().abs().max().item() for p in params) > 0.1


def test_zero_first_gradient_starts_from_the_identity_basis():
    """An exactly zero first gradient: GG = 0, Q = I (the QR of zero), finite; training then
    proceeds and the first refresh after a nonzero gradient leaves the identity."""
    p = torch.nn.Parameter(torch.zeros(5, 4))
    opt = hc.ForeachSOAP([p], weight_decay=0)
    p.grad = torch.zeros(5, 4)
    opt.step()
    assert torch.equal(opt.state[p]["soap/GG0"], torch.zeros(5, 5))
    assert torch.equal(opt.state[p]["soap/Q0"], torch.eye(5)) and torch.equal(opt.state[p]["soap/Q1"], torch.eye(4))
    gen = torch.Generator().manual_seed(2)
    for _ in range(2):
        p.grad = well_posed((5, 4), gen)
        opt.step()
    assert _finite_state(opt) and p.detach().abs().max() > 0
    assert not torch.allclose(opt.state[p]["soap/Q0"].abs(), torch.eye(5), atol=1e-2)


# --------------------------------------------------------------------------- hyperparameters


def test_schedules_are_evaluated_at_soaps_step():
    """eps, shampoo_beta, correct_bias, normalize_grads, precondition_frequency and the elements
    of precond_scheduler may be schedules, evaluated at SOAP's step t (optimizer step - 1)."""
    g = [torch.randn(4, 4, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    p = torch.nn.Parameter(torch.zeros(4, 4))
    opt = hc.ForeachSOAP([p], weight_decay=0, shampoo_beta=lambda t: 0.5 if t == 1 else 0.25)
    for x in g:
        p.grad = x.clone()
        opt.step()
    expected = torch.lerp(torch.lerp(g[0] @ g[0].T, g[1] @ g[1].T, 0.5), g[2] @ g[2].T, 0.75)
    torch.testing.assert_close(opt.state[p]["soap/GG0"], expected, rtol=1e-5, atol=1e-5)

    const = dict(eps=1e-8, correct_bias=True, normalize_grads=False, precondition_frequency=3, shampoo_beta=0.9)
    scheduled = {k: (lambda v: lambda t: v)(v) for k, v in const.items()}
    a, _ = run(lambda ps: hc.ForeachSOAP(ps, max_precond_dim=32, **const), steps=8)
    b, _ = run(lambda ps: hc.ForeachSOAP(ps, max_precond_dim=32, **scheduled), steps=8)
    assert all(torch.equal(x, y) for x, y in zip(a[-1], b[-1]))
    a, _ = run(lambda ps: hc.PrecondScheduleForeachSOAP(ps, max_precond_dim=32, precond_scheduler=(0.5, 9)), steps=8)
    b, _ = run(lambda ps: hc.PrecondScheduleForeachSOAP(ps, max_precond_dim=32,
                                                         precond_scheduler=(lambda t: 0.5, 9)), steps=8)
    assert all(torch.equal(x, y) for x, y in zip(a[-1], b[-1]))


@pytest.mark.parametrize("name,value", [("max_precond_dim", 8), ("merge_dims", True), ("precondition_1d", False),
                                        ("data_format", "channels_first")])
def test_layout_hyperparameters_cannot_be_schedules(name, value):
    """They decide which factors exist and their shapes: a schedule is refused at construction
    (and in add_param_group), not at some later step."""
    schedule = lambda t: value  # noqa: E731
    with pytest.raises(ValueError, match=f"^{name}: .*schedule"):
        hc.ForeachSOAP([torch.nn.Parameter(torch.zeros(4, 4))], **{name: schedule})
    opt = hc.ForeachSOAP([torch.nn.Parameter(torch.zeros(4, 4))])
    with pytest.raises(ValueError, match=f"^{name}: .*schedule"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))], name: schedule})


@pytest.mark.parametrize("kwargs,match", [
    ({"max_precond_dim": 0}, "max_precond_dim: expected an integer >= 1 .*ForeachAdamW or ForeachLaProp"),
    ({"max_precond_dim": -1}, "max_precond_dim"),
    ({"max_precond_dim": 2.5}, "max_precond_dim"),
    ({"max_precond_dim": True}, "max_precond_dim"),
    ({"shampoo_beta": 1.0}, "shampoo_beta"),
    ({"shampoo_beta": False}, "shampoo_beta"),
    ({"shampoo_beta": float("nan")}, "shampoo_beta"),
    ({"precondition_frequency": 0}, "precondition_frequency"),
    ({"precondition_frequency": True}, "precondition_frequency"),
    ({"merge_dims": 1}, "merge_dims"),
    ({"precondition_1d": "yes"}, "precondition_1d"),
    ({"normalize_grads": None}, "normalize_grads"),
    ({"correct_bias": 0}, "correct_bias"),
])
def test_bad_soap_hyperparameters_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match="^" + match):
        hc.ForeachSOAP([torch.nn.Parameter(torch.zeros(4, 4))], **kwargs)
    with pytest.raises(ValueError, match="^" + match.split(":")[0]):  # the transform in a hand-built chain
        hc.ChainOptimizer([torch.nn.Parameter(torch.zeros(4, 4))],
                          hc.chain(T.soap_precondition(), T.apply_updates()), **kwargs)


def test_every_and_precond_scheduler_elements_are_checked():
    for n in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="^every: n"):
            T.every(n)
    for bad in ((1 / 3, 0), (math.inf, 9), (True, 9), (1 / 3,), 5, (lambda t: 1 / 3, 0.0)):
        with pytest.raises(ValueError, match="^precond_scheduler"):
            hc.PrecondScheduleForeachSOAP([torch.nn.Parameter(torch.zeros(4, 4))], precond_scheduler=bad)


def _bad_values(preset):
    palm = "beta" in inspect.signature(preset).parameters
    return {
        "lr": [-1.0], "beta": [1.5], "eps": [0.0], "weight_decay": [-1.0],
        "betas": [(1.5, None), (0.9, 0.95), 0.9] if palm else [(0.9, 1.5), (0.9,), 0.9],
        "shampoo_beta": [1.0, False], "precondition_frequency": [0, True], "max_precond_dim": [0, True],
        "merge_dims": [1], "precondition_1d": [1], "normalize_grads": [None], "correct_bias": [0],
        "data_format": ["channels_last"], "warmup_steps": [-1], "beta2_scale": [-1.0],
        "precond_scheduler": [(1 / 3, 0), (math.inf, 9), 5, (lambda t: 1 / 3, 0.0)],
        "r": [float("nan")], "weight_lr_power": [-1.0], "gradient_clip_val": [-1.0], "refresh_factors": ["half", None],
    }


@pytest.mark.parametrize("name", [
    "ForeachSOAP", "PaLMForeachSOAP", "PrecondScheduleForeachSOAP", "PrecondSchedulePaLMForeachSOAP",
    "SFPaLMForeachSOAP", "PrecondScheduleSFPaLMForeachSOAP"])
def test_every_preset_argument_is_validated(name):
    """Each argument of each SOAP preset (tuple elements included, and a non-tuple where a tuple
    is expected) is refused with a ValueError whose message starts with its name; lists work."""
    preset = getattr(hc, name)
    bad = _bad_values(preset)
    arguments = set(inspect.signature(preset).parameters) - {"params", "compile"}
    assert arguments <= set(bad), sorted(arguments - set(bad))
    for arg in sorted(arguments):
        for value in bad[arg]:
            with pytest.raises(ValueError, match=f"^{arg}"):
                preset([torch.nn.Parameter(torch.zeros(4, 4))], **{arg: value})
    lists = {k: v for k, v in (("betas", [0.9, 0.95] if "beta" not in arguments else [0.8, None]),
                               ("precond_scheduler", [0.5, 9])) if k in arguments}
    opt = preset([torch.nn.Parameter(torch.zeros(4, 4))], **lists)
    assert all(isinstance(opt.param_groups[0][k], tuple) for k in lists)


def _bases(opt):
    return {(id(p), k): v.clone() for p, s in opt.state.items() for k, v in s.items() if k.split("/")[-1] in ("Q0", "Q1")}


def test_refresh_factors_one_refreshes_one_basis_per_refresh_in_turn():
    """refresh_factors="one": at each refresh only Q0 (then Q1, then Q0 ...) of a matrix changes;
    every factor GG is still updated every step; "all" changes both bases at once."""
    torch.manual_seed(0)
    for mode, expected in (("all", [{"Q0", "Q1"}] * 3), ("one", [{"Q0"}, {"Q1"}, {"Q0"}])):
        p = torch.nn.Parameter(torch.randn(6, 5))
        opt = hc.ForeachSOAP([p], lr=1e-2, precondition_frequency=1, refresh_factors=mode)
        gen = torch.Generator().manual_seed(1)
        changed = []
        for step in range(4):
            before = _bases(opt)
            p.grad = torch.randn(6, 5, generator=gen)
            opt.step()
            if step:  # step 1 only initialises
                after = _bases(opt)
                changed.append({k[1].split("/")[-1] for k in before if not torch.equal(before[k], after[k])})
        assert changed == expected, mode
        if mode == "one":
            assert [v for k, v in opt.state[p].items() if k.endswith("refreshes")] == [3]


def test_refresh_factors_one_trains_close_to_all_and_resumes_exactly():
    """Not HeavyBall's math, but the same optimizer: on the shared problem both reach a loss within
    a few percent (benchmarks/soap_refresh.py measures it on the bench's charlm), and a
    checkpoint (with the refresh count) resumes bit for bit; "all" refuses its checkpoint."""
    from helpers import make_net, train
    from reference import assert_resumes_exactly

    losses = {}
    for mode in ("all", "one"):
        model = make_net(0)
        opt = hc.PrecondSchedulePaLMForeachSOAP(model.parameters(), lr=3e-3, refresh_factors=mode)
        losses[mode] = train(model, opt, 40)
    assert abs(losses["one"] - losses["all"]) <= 0.05 * losses["all"], losses
    make = lambda ps: hc.PaLMForeachSOAP(ps, lr=1e-2, precondition_frequency=1, refresh_factors="one")  # noqa: E731
    assert_resumes_exactly(make, steps=3)
    model = make_net(0)
    one = make(model.parameters())
    train(model, one, 3)
    with pytest.raises(ValueError):
        hc.PaLMForeachSOAP(model.parameters(), precondition_frequency=1).load_state_dict(one.state_dict())


def test_refresh_factors_is_checked():
    with pytest.raises(ValueError, match="^refresh_factors: expected one of"):
        hc.ForeachSOAP([torch.nn.Parameter(torch.randn(3, 3))], refresh_factors="half")

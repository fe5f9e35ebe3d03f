"""Hypothesis properties of the wrappers over randomly drawn chains of the library's transforms:
composition never changes the math of what it wraps. Every comparison is bit for bit."""

import copy

import torch
from hypothesis import given
from hypothesis import strategies as st

import heavyball_chain as hc
from heavyball_chain import transforms as T

BETAS = (0.9, 0.99)  # one default for every transform that reads betas, so any two can share a chain
POOL = {
    "adam": lambda: T.scale_by_adam(BETAS),
    "laprop": lambda: T.scale_by_laprop(BETAS),
    "adopt": lambda: T.scale_by_adopt(BETAS),
    "rms": lambda: T.scale_by_rms(BETAS),
    "soap": lambda: T.soap_precondition(betas=BETAS),
    "decay": lambda: T.add_decayed_weights(),
    "lr": lambda: T.scale_by_learning_rate(warmup_steps=2),
    "trace": lambda: T.trace(),
    "nesterov": lambda: T.trace(nesterov=True),
    "sign": lambda: T.scale_by_sign(),
    "global_norm": lambda: T.clip_by_global_norm(0.5),
    "value": lambda: T.clip_by_value(0.3),
    "cautious": lambda: T.cautious(),
    "agc": lambda: T.clip_by_adaptive_norm(),
    "noise": lambda: T.add_noise(),
    "identity": lambda: T.identity(),
    "scale": lambda: T.scale(0.5),
    "accumulate": lambda: T.multi_steps(T.scale_by_adam(BETAS), 2),
}

shapes = st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), min_size=1, max_size=4)
names = st.lists(st.sampled_from(sorted(POOL)), min_size=1, max_size=4)
dtypes = st.sampled_from([torch.float32, torch.bfloat16])
ORDER_FREE = sorted(set(POOL) - {"noise"})  # noise seeds follow the parameter's position, by design
order_free_names = st.lists(st.sampled_from(ORDER_FREE), min_size=1, max_size=4)
STEPS = 5


def build(ns):
    return hc.chain(*(POOL[n]() for n in ns))


def grads_for(shapes, dtype, steps=STEPS, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen).to(dtype) for s in shapes] for _ in range(steps)]


def make(tx, shapes, dtype, groups=None):
    """Parameters and an optimizer over ``chain(tx, stochastic_round_apply())``; ``groups`` lists
    parameter indices per param group (all equal hyperparameters)."""
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]
    full = hc.chain(tx, T.stochastic_round_apply())
    hp = {k: v for k, v in {"lr": 0.05, "weight_decay": 0.1}.items() if k in full.declared()}
    spec = ps if groups is None else [{"params": [ps[i] for i in g]} for g in groups]
    return ps, hc.ChainOptimizer(spec, full, **hp)


def step(ps, opt, grads):
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    opt.step()


def run(tx, shapes, dtype, grads=None, groups=None):
    ps, opt = make(tx, shapes, dtype, groups)
    for gs in grads if grads is not None else grads_for(shapes, dtype):
        step(ps, opt, gs)
    return [p.detach().clone() for p in ps], opt


def equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@given(names, shapes, dtypes)
def test_identity_is_neutral(ns, shapes, dtype):
    bare = run(build(ns), shapes, dtype)[0]
    assert equal(run(hc.chain(T.identity(), build(ns)), shapes, dtype)[0], bare)
    assert equal(run(hc.chain(build(ns), T.identity()), shapes, dtype)[0], bare)


@given(names, names, names, shapes, dtypes)
def test_chain_is_associative(a, b, c, shapes, dtype):
    left = run(hc.chain(build(a), hc.chain(build(b), build(c))), shapes, dtype)
    right = run(hc.chain(hc.chain(build(a), build(b)), build(c)), shapes, dtype)
    assert equal(left[0], right[0])


@given(names, shapes, dtypes)
def test_masked_all_false_is_identity_and_all_true_is_the_transform(ns, shapes, dtype):
    n = len(shapes)
    assert equal(run(T.masked(build(ns), [False] * n), shapes, dtype)[0], run(T.identity(), shapes, dtype)[0])
    assert equal(run(T.masked(build(ns), lambda p: True), shapes, dtype)[0], run(build(ns), shapes, dtype)[0])


@given(names, shapes, dtypes)
def test_partition_with_one_label_is_the_transform(ns, shapes, dtype):
    part = T.partition({"only": build(ns)}, lambda p: "only")
    assert equal(run(part, shapes, dtype)[0], run(build(ns), shapes, dtype)[0])


@given(order_free_names, st.data())
def test_masked_equals_the_transform_on_the_selected_parameters_alone(ns, data):
    """masked(t, mask) on all parameters = t on the selected ones and plain updates on the rest."""
    shp = data.draw(shapes)
    mask = data.draw(st.lists(st.booleans(), min_size=len(shp), max_size=len(shp)))
    grads = grads_for(shp, torch.float32)
    got = run(T.masked(build(ns), mask), shp, torch.float32, grads)[0]
    sel = [i for i, m in enumerate(mask) if m]
    rest = [i for i, m in enumerate(mask) if not m]
    for idx, tx in ((sel, build(ns)), (rest, T.identity())):
        if not idx:
            continue
        alone = _run_subset(tx, shp, idx, grads)
        assert equal([got[i] for i in idx], alone)


def _run_subset(tx, shapes, idx, grads):
    gen = torch.Generator().manual_seed(0)
    every = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    ps = [every[i] for i in idx]
    full = hc.chain(tx, T.stochastic_round_apply())
    hp = {k: v for k, v in {"lr": 0.05, "weight_decay": 0.1}.items() if k in full.declared()}
    opt = hc.ChainOptimizer(ps, full, **hp)
    for gs in grads:
        step(ps, opt, [gs[i] for i in idx])
    return [p.detach().clone() for p in ps]


@given(names, shapes, dtypes, st.integers(0, STEPS - 1))
def test_apply_if_finite(ns, shapes, dtype, bad):
    grads = grads_for(shapes, dtype)
    assert equal(run(T.apply_if_finite(build(ns)), shapes, dtype, grads)[0], run(build(ns), shapes, dtype, grads)[0])

    # a NaN at step `bad`: parameters and the inner state are untouched, the skip is counted, and
    # afterwards the run continues as if that step had never happened
    ps, opt = make(T.apply_if_finite(build(ns)), shapes, dtype)
    for gs in grads[:bad]:
        step(ps, opt, gs)
    before = [p.detach().clone() for p in ps]
    inner_before = copy.deepcopy({k: v for k, v in opt.state_dict()["state"].items()})
    poisoned = [g.clone() for g in grads[bad]]
    poisoned[0].view(-1)[0] = float("nan")
    step(ps, opt, poisoned)
    assert equal([p.detach() for p in ps], before)
    after = opt.state_dict()["state"]
    for i, s in after.items():
        assert s["0/total_notfinite"] == 1 and s["0/notfinite_count"] == 1
        for key, value in inner_before.get(i, {}).items():
            if key.startswith("0/inner/"):
                assert torch.equal(value, s[key]) if isinstance(value, torch.Tensor) else value == s[key]
    for gs in grads[bad + 1:]:
        step(ps, opt, gs)
    clean = grads[:bad] + grads[bad + 1:]
    assert equal([p.detach() for p in ps], run(build(ns), shapes, dtype, clean)[0])


@given(names, shapes, dtypes)
def test_multi_steps_of_one_is_the_transform(ns, shapes, dtype):
    assert equal(run(T.multi_steps(build(ns), 1), shapes, dtype)[0], run(build(ns), shapes, dtype)[0])


@given(order_free_names, shapes, st.randoms(use_true_random=False))
def test_independent_of_parameter_order_and_group_split(ns, shapes, rnd):
    """fp32 (bf16 stochastic rounding draws one stream per bucket, so it depends on the bucket)."""
    grads = grads_for(shapes, torch.float32)
    ref = run(build(ns), shapes, torch.float32, grads)[0]
    order = list(range(len(shapes)))
    rnd.shuffle(order)
    cut = rnd.randint(0, len(order))
    groups = [g for g in (order[:cut], order[cut:]) if g]
    if "global_norm" in ns:
        groups = [order]  # clip_by_global_norm's norm is per param group (documented): one group, shuffled
    got = run(build(ns), shapes, torch.float32, grads, groups=groups)[0]
    assert equal(got, ref)


@given(names, shapes, dtypes, st.integers(1, STEPS - 1))
def test_state_dict_round_trip_continues_bit_for_bit(ns, shapes, dtype, cut):
    grads = grads_for(shapes, dtype)
    ref = run(build(ns), shapes, dtype, grads)[0]
    ps, opt = make(build(ns), shapes, dtype)
    for gs in grads[:cut]:
        step(ps, opt, gs)
    saved = copy.deepcopy(opt.state_dict())
    weights = [p.detach().clone() for p in ps]
    ps2, opt2 = make(build(ns), shapes, dtype)  # a fresh optimizer (fresh transform objects)
    with torch.no_grad():
        for p, w in zip(ps2, weights):
            p.copy_(w)
    opt2.load_state_dict(saved)
    for gs in grads[cut:]:
        step(ps2, opt2, gs)
    assert equal([p.detach() for p in ps2], ref)

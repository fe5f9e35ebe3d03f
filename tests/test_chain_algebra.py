"""Hypothesis properties of chain: identity, associativity, a chain of one transform."""

import torch
from hypothesis import given
from hypothesis import strategies as st

import heavyball_chain as hc
from heavyball_chain import transforms as T

ELEMENTARY = {
    "adam": lambda: T.scale_by_adam(),
    "laprop": lambda: T.scale_by_laprop(),
    "adopt": lambda: T.scale_by_adopt(),
    "decay": lambda: T.add_decayed_weights(),
    "lr": lambda: T.scale_by_learning_rate(),
}

shapes = st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), min_size=1, max_size=3)
names = st.lists(st.sampled_from(sorted(ELEMENTARY)), min_size=0, max_size=4)
dtypes = st.sampled_from([torch.float32, torch.bfloat16])


def run(tx, shapes, dtype, steps=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]
    tx = hc.chain(tx, T.stochastic_round_apply())
    hp = {k: v for k, v in {"lr": 0.01, "weight_decay": 0.1}.items() if k in tx.declared()}
    opt = hc.ChainOptimizer(ps, tx, **hp)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        opt.step()
    return [p.detach() for p in ps], opt


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a[0], b[0]))


@given(shapes, dtypes)
def test_empty_chain_is_identity(shapes, dtype):
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]
    before = [p.detach().clone() for p in ps]
    opt = hc.ChainOptimizer(ps, hc.chain(hc.chain(), T.apply_updates(), hc.chain()))
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen).to(dtype)
    opt.step()
    for p, b in zip(ps, before):  # identity on updates: p + g
        assert torch.equal(p.detach(), (b.float() + p.grad.float()).to(dtype))


@given(names, names, names, shapes, dtypes)
def test_chain_is_associative(a, b, c, shapes, dtype):
    mk = lambda ns: hc.chain(*(ELEMENTARY[n]() for n in ns))  # noqa: E731
    left = hc.chain(mk(a), hc.chain(mk(b), mk(c)))
    right = hc.chain(hc.chain(mk(a), mk(b)), mk(c))
    ra, rb = run(left, shapes, dtype), run(right, shapes, dtype)
    assert same(ra, rb)
    assert ra[1].state_dict()["state"].keys() == rb[1].state_dict()["state"].keys()


@given(st.sampled_from(sorted(ELEMENTARY)), shapes, dtypes)
def test_chain_of_one_is_the_transform(name, shapes, dtype):
    assert same(run(hc.chain(ELEMENTARY[name]()), shapes, dtype),
                run(ELEMENTARY[name](), shapes, dtype))


@given(names, shapes)
def test_named_chain_equals_chain(ns, shapes):
    positional = hc.chain(*(ELEMENTARY[n]() for n in ns))
    named = hc.named_chain(*((f"t{i}", ELEMENTARY[n]()) for i, n in enumerate(ns)))
    assert same(run(positional, shapes, torch.float32), run(named, shapes, torch.float32))

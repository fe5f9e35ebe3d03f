"""The compiled path (``compile=True``): same results as eager up to fp32 rounding, no recompiles.

Tolerance: a fused kernel may round differently from the eager foreach ops (fma contraction,
another evaluation order), so each step's update can differ by a few ulp of the update, and a
parameter by about one ulp of itself (|p| < 4 here: 2.4e-7) whenever the rounding of p + u
flips. Over 12 steps that stays far below 2e-6; a real difference in the math (a wrong beta, a
missed term) moves parameters by ~lr * |u| ≈ 1e-2.
"""

import copy
import pickle

import pytest
import torch
import torch._dynamo
from helpers import PRESETS, batch, make_net, train

import heavyball_chain as hc
from heavyball_chain import transforms as T

STEPS = 12
ATOL = 2e-6


def _run(make, steps=STEPS, dtype=torch.float32, seed=0):
    model = make_net(seed, dtype)
    opt = make(model.parameters())
    train(model, opt, steps)
    return model, opt


def _assert_params_close(a, b, atol=ATOL, rtol=0.0):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.float(), q.float(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def _kwargs(preset):
    kw = {"lr": 1e-2, "weight_decay": 0.1}
    if "SOAP" in preset.__name__:
        kw["precondition_frequency"] = 2
    if "PrecondSchedule" in preset.__name__:
        kw.pop("precondition_frequency")
    return kw


@pytest.mark.parametrize("preset", PRESETS, ids=lambda c: c.__name__)
def test_compiled_step_equals_eager_step(preset):
    """Every preset, one step at a time from the same parameters and state (SOAP's eigenbases
    amplify rounding differences chaotically over many steps, so a run is compared step by step)."""
    kw = _kwargs(preset)
    model, twin = make_net(0), make_net(0)
    opt, twin_opt = preset(model.parameters(), **kw), preset(twin.parameters(), compile=True, **kw)
    for i in range(STEPS):
        twin.load_state_dict(model.state_dict())
        twin_opt.load_state_dict(opt.state_dict())
        train(model, opt, 1, start=i)
        train(twin, twin_opt, 1, start=i)
        _assert_params_close(model, twin)
    assert twin_opt._fuser._kernels  # something was compiled (at least decay -> lr -> apply)


@pytest.mark.parametrize("preset", [p for p in PRESETS if "SOAP" not in p.__name__], ids=lambda c: c.__name__)
def test_compiled_run_equals_eager_run(preset):
    kw = _kwargs(preset)
    eager, _ = _run(lambda ps: preset(ps, **kw))
    compiled, _ = _run(lambda ps: preset(ps, compile=True, **kw))
    _assert_params_close(eager, compiled)
    moved = max((p - q).abs().max().item() for p, q in zip(eager.parameters(), make_net(0).parameters()))
    assert moved > 1e-3  # the comparison is not between two untouched models


@pytest.mark.parametrize("name", ["ForeachAdamW", "ForeachSFAdamW", "ForeachADOPT"])
def test_compiled_float64_computes_in_float64(name):
    """fp64 parameters: the kernel's state and scalars are fp64, so compiled equals eager to fp64
    rounding (a kernel computing in fp32 would be ~1e-8 off)."""
    eager, _ = _run(lambda ps: getattr(hc, name)(ps, lr=1e-2), dtype=torch.float64)
    compiled, opt = _run(lambda ps: getattr(hc, name)(ps, lr=1e-2, compile=True), dtype=torch.float64)
    for p, q in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-13)
    assert {v.dtype for s in opt.state.values() for v in s.values() if torch.is_tensor(v)} == {torch.float64}


@pytest.mark.parametrize("name", ["ForeachLaProp", "ForeachSFAdamW"])
def test_compiled_tensor_lr_equals_eager_and_does_not_recompile(name):
    """A 0-d tensor lr reaches the kernel as a tensor: a scheduler changing it in place every step
    never recompiles, and the run equals the eager one."""
    models = []
    for compile in (False, True):
        model = make_net(0)
        lr = torch.tensor(1e-2)
        opt = getattr(hc, name)(model.parameters(), lr=lr, compile=compile)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.8**e)
        for i in range(STEPS):
            with torch._dynamo.config.patch(error_on_recompile=compile and i >= 3):
                train(model, opt, 1, start=i)
            sched.step()
        assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(1e-2 * 0.8**STEPS)
        models.append(model)
    _assert_params_close(*models)


@pytest.mark.parametrize("name", ["ForeachAdamW", "ForeachSFAdamW"])
def test_compiled_bf16_matches_eager(name):
    """bf16 parameters: moments, decay and lr fuse; the stochastic-rounding write stays eager with
    the same random bits, so results agree up to a rare one-ulp flip of the rounding."""
    eager, _ = _run(lambda ps: getattr(hc, name)(ps, lr=1e-2), dtype=torch.bfloat16)
    compiled, _ = _run(lambda ps: getattr(hc, name)(ps, lr=1e-2, compile=True), dtype=torch.bfloat16)
    _assert_params_close(eager, compiled, atol=0.0, rtol=2 ** -7)


def test_no_recompiles_under_one_cycle_lr_and_palm_beta2():
    """lr changes every step (OneCycleLR) and beta2 follows PaLM's schedule: both reach the kernel
    as tensor values, so after the first steps (which compile) nothing is compiled again."""
    for make in (lambda ps: hc.ForeachLaProp(ps, compile=True, warmup_steps=3),
                 lambda ps: hc.ForeachADOPT(ps, compile=True),
                 lambda ps: hc.PaLMForeachSFAdamW(ps, compile=True, weight_decay=0.01)):
        model = make_net(0)
        opt = make(model.parameters())
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=40)
        for i in range(40):
            if i == 4:  # ADOPT fuses from its third step; every kernel exists by now
                graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
                guard = torch._dynamo.config.patch(error_on_recompile=True)
                guard.__enter__()
            train(model, opt, 1, start=i)
            sched.step()
        guard.__exit__(None, None, None)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_many_compiled_optimizers_each_get_kernels():
    """dynamo caches per code object (limit 8); each kernel has its own, so a dozen optimizers in
    one process all run compiled instead of silently falling back to eager."""
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for seed in range(12):
            _run(lambda ps: hc.ForeachAdamW(ps, lr=1e-2, compile=True), steps=2, seed=seed)


def test_custom_chain_breaks_runs_at_unfusable_transforms():
    """clip_by_global_norm (a reduction over the bucket) and cautious run eagerly between two
    fused runs; masked and partition run their inner chains fused."""
    def make_chain():
        decay = T.masked(T.add_decayed_weights(0.1), lambda p: p.dim() > 1)
        branches = T.partition({"w": hc.chain(T.scale_by_adam(), T.cautious()),
                                "b": hc.chain(T.trace(0.9), T.scale_by_sign())},
                               lambda p: "w" if p.dim() > 1 else "b")
        return hc.chain(T.clip_by_global_norm(1.0), branches, decay, T.scale_by_learning_rate(),
                        T.apply_updates())

    eager, _ = _run(lambda ps: hc.ChainOptimizer(ps, make_chain(), lr=1e-2))
    compiled, _ = _run(lambda ps: hc.ChainOptimizer(ps, make_chain(), lr=1e-2, compile=True))
    _assert_params_close(eager, compiled)


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_utilities_equal_eager(nesterov):
    """trace, clip_by_value, scale, identity and scale_by_sign in one fused run."""
    def make_chain():
        return hc.chain(T.clip_by_value(0.05), T.trace(0.9, nesterov=nesterov), T.identity(), T.scale(0.5),
                        T.scale_by_learning_rate(), T.apply_updates())

    eager, _ = _run(lambda ps: hc.ChainOptimizer(ps, make_chain(), lr=1e-2))
    compiled, opt = _run(lambda ps: hc.ChainOptimizer(ps, make_chain(), lr=1e-2, compile=True))
    _assert_params_close(eager, compiled)
    assert len(opt._fuser._kernels) == 1  # the whole chain is one run
    signs, _ = _run(lambda ps: hc.ChainOptimizer(ps, hc.chain(T.scale_by_sign(), T.scale_by_learning_rate(),
                                                              T.apply_updates()), lr=1e-3, compile=True))
    reference, _ = _run(lambda ps: hc.ChainOptimizer(ps, hc.chain(T.scale_by_sign(), T.scale_by_learning_rate(),
                                                                  T.apply_updates()), lr=1e-3))
    _assert_params_close(reference, signs)


def test_resume_across_paths_and_pickle():
    """State is the same whichever path wrote it: eager -> compiled resume equals eager all along;
    a compiled optimizer deep-copies and pickles (kernels are rebuilt)."""
    reference, _ = _run(lambda ps: hc.ForeachLaProp(ps, lr=1e-2), steps=8)
    model, opt = _run(lambda ps: hc.ForeachLaProp(ps, lr=1e-2), steps=4)
    resumed = hc.ForeachLaProp(model.parameters(), lr=1e-2, compile=True)
    resumed.load_state_dict(opt.state_dict())
    train(model, resumed, 4, start=4)
    _assert_params_close(reference, model)
    clone = copy.deepcopy(resumed)
    assert clone.compile and clone._fuser is not None and clone._fuser is not resumed._fuser
    assert pickle.loads(pickle.dumps(resumed)).compile


def test_schedule_free_eval_train_compiled():
    eager, e_opt = _run(lambda ps: hc.ForeachSFAdamW(ps, lr=1e-2))
    compiled, c_opt = _run(lambda ps: hc.ForeachSFAdamW(ps, lr=1e-2, compile=True))
    e_opt.eval()
    c_opt.eval()
    _assert_params_close(eager, compiled)
    with pytest.raises(RuntimeError, match="eval mode"):
        x, y = batch(0)
        torch.nn.functional.mse_loss(compiled(x), y).backward()
        c_opt.step()


def test_chunks_padding_one_element_and_non_contiguous_parameters():
    """More tensors than a chunk (the last chunk padded), equal sizes in one chunk (no duck
    shaping), a 1-element and non-contiguous tensors (through copies): all equal eager, and every
    chunk runs one graph."""
    from heavyball_chain.compiled import CHUNK

    def params():
        torch.manual_seed(0)
        return ([torch.nn.Parameter(torch.randn(1)), torch.nn.Parameter(torch.randn(6, 4).t()),
                 torch.nn.Parameter(torch.randn(300, 40).t())]
                + [torch.nn.Parameter(torch.randn(7 + (k % 3), 5)) for k in range(2 * CHUNK)])

    results = []
    for compile in (False, True):
        ps = params()
        opt = hc.ForeachAdamW(ps, lr=1e-2, weight_decay=0.1, compile=compile)
        gen = torch.Generator().manual_seed(3)
        for step in range(5):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen)
            with torch._dynamo.config.patch(error_on_recompile=compile and step > 0):
                opt.step()
        results.append(ps)
    assert not results[1][1].is_contiguous() and not results[1][2].is_contiguous()
    for p, q in zip(*results):
        torch.testing.assert_close(p, q, atol=ATOL, rtol=0)
    assert len(opt._fuser._kernels) == 1  # one run, one graph for all three chunks


class _Untraceable(T.scale):
    """A fused form dynamo cannot trace as one graph."""

    name = "untraceable"

    def fused(self, u, p, state, s):
        torch._dynamo.graph_break()
        return u * s[0]


def test_a_failing_compile_names_the_run_and_the_way_out():
    model = make_net(0)
    opt = hc.ChainOptimizer(model.parameters(), hc.chain(_Untraceable(1.0), T.apply_updates()), compile=True)
    with pytest.raises(RuntimeError, match=r"compile=True: torch.compile failed on the fused run "
                                           r"untraceable -> apply_updates .*pass compile=False"):
        train(model, opt, 1)


def test_compile_argument_is_checked():
    with pytest.raises(TypeError, match="compile: expected True or False"):
        hc.ForeachAdamW([torch.nn.Parameter(torch.zeros(2))], compile="yes")

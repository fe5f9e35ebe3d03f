"""Every preset under DDP and FSDP2 (2 gloo processes on CPU) against a single process on the
concatenated batch, and torch.distributed.checkpoint round trips (see docs/distributed.md)."""

import os
import socket
import subprocess
import sys

import pytest
import torch

import heavyball_chain as hc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "distributed"))
import common  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed")
PRESETS = hc.presets.__all__

# A 2-process run differs from one process only in how gradients are summed (two half-batch
# means averaged vs one mean: a few fp32 roundings, ~1e-7 relative). Adaptive optimizers divide
# by sqrt(v), which amplifies a relative gradient error only where |g| ~ eps, and 6 steps of
# lr 2.5e-3 move parameters by ~1e-2: we measured <= 3e-8 and assert 1e-5. SOAP amplifies
# gradient differences where its factors are ill-conditioned; on common.Model they are full rank
# and we measured <= 1.4e-6 (DDP and FSDP2).
# ADOPT is the exception: after one step its v is g_1², so step 2 divides by |g_1| itself; where
# the full-batch gradient nearly cancels (|g| << the half-batch gradients), the reduction's
# rounding (~1e-7 of the halves) becomes a large relative error of |g_1|. Measured 4.8e-6.
ATOL = 1e-5
ATOL_BY_PRESET = {"ForeachADOPT": 1e-4}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    root = os.path.dirname(HERE)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for attempt in range(2):  # a free port can be taken between the probe and the rendezvous: retry once
        proc = subprocess.run([sys.executable, os.path.join(HERE, "distributed", "worker.py"), str(out),
                               str(_free_port())], cwd=root, env=env, capture_output=True, text=True, timeout=240)
        if proc.returncode == 0:
            break
        print(f"distributed worker attempt {attempt + 1} failed:\n{proc.stderr[-4000:]}", file=sys.stderr)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out / "results.pt", weights_only=False), out


def reference(name, steps=common.STEPS, evaluate=False):
    model = common.make_model()
    opt = getattr(hc, name)(model.parameters(), **common.KWARGS.get(name, {}))
    common.train(model, opt, steps)
    if evaluate:
        opt.eval()
    return {n: p.detach() for n, p in model.named_parameters()}


def assert_params_close(got, expected, name):
    atol = ATOL_BY_PRESET.get(name, ATOL)
    assert got.keys() == expected.keys()
    for n in got:
        torch.testing.assert_close(got[n], expected[n], rtol=0, atol=atol, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("name", PRESETS)
def test_ddp_equals_single_process(results, name):
    assert_params_close(results[0]["ddp"][name], reference(name), name)


@pytest.mark.parametrize("name", PRESETS)
def test_fsdp2_equals_single_process(results, name):
    ref = reference(name)
    assert_params_close(results[0]["fsdp"][name], ref, name)
    assert max((ref[n] - common.make_model().state_dict()[n]).abs().max() for n in ref) > 1e-3


@pytest.mark.parametrize("name", ["ForeachAdamW", "ForeachSFAdamW", "PaLMForeachSOAP"])
def test_fsdp2_compiled_equals_single_process(results, name):
    """compile=True on sharded parameters: the kernels run on the local shards (SOAP's tail after
    the owner's whole-matrix step); same tolerance as eager."""
    assert_params_close(results[0]["fsdp_compiled"][name], reference(name), name)


@pytest.mark.parametrize("name", [n for n in PRESETS if "SOAP" in n])
def test_fsdp2_soap_state_lives_on_one_owner_per_matrix(results, name):
    """Each of the 6 parameters' SOAP state is on exactly one rank, and both ranks own some."""
    counts = results[0]["soap_owned"][name]
    assert sum(counts) == 6 and min(counts) > 0


@pytest.mark.parametrize("name", [n for n in PRESETS if "SF" in n])
def test_fsdp2_schedule_free_eval(results, name):
    assert_params_close(results[0]["fsdp_eval"][name], reference(name, evaluate=True), name)


@pytest.mark.parametrize("name", PRESETS)
def test_fsdp2_bf16_tracks_fp32(results, name):
    """bf16 sharded parameters (stochastic rounding on the local shards) against the fp32
    single-process run. bf16 gradients differ from fp32 ones by ~0.4% (more where a component
    nearly cancels), and a sign-like adaptive step can flip there, so each step may differ by up
    to ~lr: the bound is 2 * steps * lr plus 4 bf16 ulps at |p| < 0.5 (4 * 2^-9). Measured:
    <= 1.2e-2 (bound 3.8e-2). ADOPT is only checked for finiteness: its step 2 divides by
    |g_1| itself (no clipping in HeavyBall 0.8.1's ADOPT), so a tiny bf16 gradient component
    can give an arbitrarily different step (measured 0.86)."""
    got, ref = results[0]["fsdp_bf16"][name], reference(name)
    bound = 2 * common.STEPS * 2.5e-3 + 4 * 2**-9
    for n in ref:
        assert got[n].dtype == torch.bfloat16 and bool(torch.isfinite(got[n]).all())
        if name != "ForeachADOPT":
            torch.testing.assert_close(got[n].float(), ref[n], rtol=0, atol=bound, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("name", PRESETS)
def test_dcp_resume_equals_uninterrupted(results, name):
    uninterrupted, resumed = results[0]["dcp"][name]
    for n in uninterrupted:
        assert torch.equal(uninterrupted[n], resumed[n]), n


@pytest.mark.parametrize("name", PRESETS)
def test_two_rank_checkpoint_loads_into_one_process(results, name):
    """Resharding: the 2-rank checkpoint (step 3) loads into a plain single-process model and
    optimizer, which then continues as the 2-rank run did (to the tolerance above)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict)

    model = common.make_model(seed=3)
    opt = getattr(hc, name)(model.parameters(), **common.KWARGS.get(name, {}))
    sd = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(sd, checkpoint_id=str(results[1] / f"ckpt-{name}"))
    set_model_state_dict(model, sd["model"])
    set_optimizer_state_dict(model, opt, sd["optim"])
    common.train(model, opt, 3, start=3)
    uninterrupted, _ = results[0]["dcp"][name]
    assert_params_close({n: p.detach() for n, p in model.named_parameters()}, uninterrupted, name)

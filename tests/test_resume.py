"""Exact resume: 20 steps, state_dict, 20 more == a fresh model + optimizer loaded from it."""

import copy
import io

import pytest
import torch

from helpers import make_net, train


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_exact_resume(preset, dtype):
    model = make_net(dtype=dtype)
    opt = preset(model.parameters(), lr=0.01, warmup_steps=3)
    train(model, opt, 20)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    train(model, opt, 20, start=20)

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    fresh = make_net(seed=123, dtype=dtype)
    fresh.load_state_dict(ckpt["model"])
    fresh_opt = preset(fresh.parameters(), lr=0.5)  # hyperparameters come from the checkpoint
    fresh_opt.load_state_dict(ckpt["opt"])
    assert fresh_opt.param_groups[0]["lr"] == 0.01
    train(fresh, fresh_opt, 20, start=20)
    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name


def test_bf16_state_stays_fp32_after_load(preset):
    """torch's load_state_dict would cast fp32 state to the bf16 parameter dtype."""
    model = make_net(dtype=torch.bfloat16)
    opt = preset(model.parameters())
    train(model, opt, 3)
    opt2 = preset(copy.deepcopy(model).parameters())
    opt2.load_state_dict(opt.state_dict())
    dtypes = {v.dtype for s in opt2.state.values() for v in s.values() if isinstance(v, torch.Tensor)}
    assert dtypes == {torch.float32}

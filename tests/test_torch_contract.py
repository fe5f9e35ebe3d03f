"""The torch.optim.Optimizer contract, for every preset."""

import copy
import io
import pickle

import pytest
import torch

import heavyball_chain as hc
from helpers import batch, make_net, train


def _params_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_closure_runs_with_grad_and_returns_loss(preset):
    model = make_net()
    opt = preset(model.parameters())
    x, y = batch(0)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()  # fails if step ran the closure under no_grad (HeavyBall 0.8.1)
        return loss

    for _ in range(3):
        loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad


def test_params_without_grad_are_skipped(preset):
    model = make_net()
    opt = preset(model.parameters())
    model.conv.weight.requires_grad_(False)
    before = model.conv.weight.detach().clone()
    train(model, opt, 4)
    assert torch.equal(model.conv.weight, before)
    assert len(opt.state[model.conv.weight]) == 0
    assert opt.state[model.fc.weight]["step"] == 4


def test_zero_grad(preset):
    model = make_net()
    opt = preset(model.parameters())
    train(model, opt, 1)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    train(model, opt, 1)
    opt.zero_grad(set_to_none=False)
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_param_groups_have_their_own_hyperparameters(preset):
    model = make_net()
    opt = preset([{"params": model.conv.parameters(), "lr": 0.0},
                  {"params": model.fc.parameters()}], lr=0.01)
    assert opt.param_groups[0]["lr"] == 0.0 and opt.param_groups[1]["lr"] == 0.01
    conv_before = [p.detach().clone() for p in model.conv.parameters()]
    fc_before = [p.detach().clone() for p in model.fc.parameters()]
    train(model, opt, 4)
    assert all(torch.equal(a, b) for a, b in zip(model.conv.parameters(), conv_before))
    assert not any(torch.equal(a, b) for a, b in zip(model.fc.parameters(), fc_before))


def test_add_param_group(preset):
    model = make_net()
    opt = preset(model.conv.parameters())
    train(model, opt, 2)
    opt.add_param_group({"params": model.fc.parameters(), "lr": 0.05})
    assert opt.param_groups[1]["lr"] == 0.05
    assert opt.param_groups[1]["eps"] == opt.param_groups[0]["eps"]  # defaults filled in
    fc_before = model.fc.weight.detach().clone()
    train(model, opt, 3, start=2)
    assert not torch.equal(model.fc.weight, fc_before)
    assert opt.state[model.fc.weight]["step"] == 3 and opt.state[model.conv.weight]["step"] == 5
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": -1.0})


def test_state_dict_survives_torch_save_weights_only(preset, tmp_path):
    model = make_net()
    opt = preset(model.parameters())
    train(model, opt, 5)
    sd = opt.state_dict()
    assert set(sd["state"]) == set(range(len(list(model.parameters()))))  # integer keys, torch's format
    path = tmp_path / "opt.pt"
    torch.save(sd, path)
    loaded = torch.load(path, weights_only=True)
    model2 = copy.deepcopy(model)
    opt2 = preset(model2.parameters())
    opt2.load_state_dict(loaded)
    train(model, opt, 3, start=5)
    train(model2, opt2, 3, start=5)
    assert _params_equal(model, model2)


def test_load_state_dict_does_not_share_tensors(preset):
    model = make_net()
    opt = preset(model.parameters())
    train(model, opt, 3)
    model2 = copy.deepcopy(model)
    opt2 = preset(model2.parameters())
    opt2.load_state_dict(opt.state_dict())
    for p, q in zip(model.parameters(), model2.parameters()):
        for k, v in opt.state[p].items():
            if isinstance(v, torch.Tensor):
                assert v.data_ptr() != opt2.state[q][k].data_ptr()


def test_load_state_dict_rejects_mismatched_groups(preset):
    model = make_net()
    opt = preset(model.parameters())
    train(model, opt, 1)
    other = preset([{"params": model.conv.parameters()}, {"params": model.fc.parameters()}])
    with pytest.raises(ValueError, match="parameter groups"):
        other.load_state_dict(opt.state_dict())
    small = preset(model.conv.parameters())
    with pytest.raises(ValueError, match="parameters"):
        small.load_state_dict(opt.state_dict())


@pytest.mark.parametrize("make_scheduler", [
    lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=6),
    lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e)),
], ids=["StepLR", "CosineAnnealingLR", "LambdaLR"])
def test_lr_schedulers_act_through_param_groups(preset, make_scheduler):
    """Our groups see the same lr sequence as torch.optim.SGD under the same scheduler."""
    model = make_net()
    opt = preset(model.parameters(), lr=0.01)
    sched = make_scheduler(opt)
    ref_opt = torch.optim.SGD(make_net().parameters(), lr=0.01)
    ref_sched = make_scheduler(ref_opt)
    seen, expected = [], []
    for i in range(6):
        train(model, opt, 1, start=i)
        ref_opt.step()
        sched.step()
        ref_sched.step()
        seen.append(opt.param_groups[0]["lr"])
        expected.append(ref_opt.param_groups[0]["lr"])
    assert seen == pytest.approx(expected)
    assert len(set(seen)) > 1


def test_lr_from_scheduler_reaches_the_update():
    """lr = 0 from a scheduler freezes the parameters: the group value is what the chain reads."""
    model = make_net()
    opt = hc.ForeachLaProp(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.0 if e >= 1 else 1.0)
    train(model, opt, 1)
    sched.step()
    before = [p.detach().clone() for p in model.parameters()]
    train(model, opt, 2, start=1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))


def test_one_cycle_lr_cycles_betas(preset):
    model = make_net()
    opt = preset(model.parameters())
    beta2 = opt.param_groups[0]["betas"][1]  # a number, or PaLM's schedule: left alone
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=10,
                                                base_momentum=0.8, max_momentum=0.95)
    beta1s = []
    for i in range(9):
        train(model, opt, 1, start=i)
        sched.step()
        beta1s.append(opt.param_groups[0]["betas"][0])
        assert opt.param_groups[0]["betas"][1] == beta2
    assert min(beta1s) < 0.82 and max(beta1s) > 0.9


def test_one_cycle_betas_reach_the_update():
    """The chain reads group['betas'] at every step: changing beta1 changes the trajectory."""
    runs = []
    for b1 in (0.9, 0.5):
        model = make_net()
        opt = hc.ForeachLaProp(model.parameters(), lr=0.01)
        train(model, opt, 2)
        opt.param_groups[0]["betas"] = (b1, 0.99)
        train(model, opt, 2, start=2)
        runs.append(model.fc.weight.detach().clone())
    assert not torch.equal(*runs)


def test_step_hooks(preset):
    model = make_net()
    opt = preset(model.parameters())
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    train(model, opt, 2)
    assert calls == ["pre", "post", "pre", "post"]


def test_deepcopy_and_pickle(preset):
    model = make_net()
    opt = preset(model.parameters())
    train(model, opt, 3)
    model_b = copy.deepcopy(model)
    # deepcopy of (model, optimizer) together keeps the parameter identity mapping
    model_c, opt_c = copy.deepcopy((model, opt))
    train(model, opt, 3, start=3)
    train(model_c, opt_c, 3, start=3)
    assert _params_equal(model, model_c)
    buf = io.BytesIO()
    pickle.dump((model_b, opt), buf)
    buf.seek(0)
    m2, o2 = pickle.load(buf)
    assert type(o2) is preset and repr(o2.transform) == repr(opt.transform)


def test_repr_shows_chain(preset):
    opt = preset(make_net().parameters())
    text = repr(opt)
    assert preset.__name__ in text and repr(opt.transform) in text and "lr: " in text
    assert "chain(" in repr(opt.transform)


def test_state_bytes_known_before_first_step(preset):
    model = make_net()
    opt = preset(model.parameters())
    predicted = opt.state_bytes()
    train(model, opt, 3)
    actual = sum(v.numel() * v.element_size() for s in opt.state.values()
                 for v in s.values() if isinstance(v, torch.Tensor))
    assert predicted == actual > 0

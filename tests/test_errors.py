"""Bad input: a ValueError/TypeError that names the argument, at construction when possible."""

import pytest
import torch

import heavyball_chain as hc
from heavyball_chain import transforms as T


def params():
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize("kwargs,match", [
    ({"lr": -1e-3}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"betas": (1.0, 0.99)}, "betas"),
    ({"betas": (0.9, -0.1)}, "betas"),
    ({"betas": (0.9,)}, "betas"),
    ({"eps": 0.0}, "eps"),
    ({"eps": -1e-8}, "eps"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"warmup_steps": 1.5}, "warmup_steps"),
])
def test_bad_hyperparameter_value(preset, kwargs, match):
    with pytest.raises(ValueError, match=match):
        preset(params(), **kwargs)


def test_unknown_keyword(preset):
    with pytest.raises(TypeError, match="lrr"):
        preset(params(), lrr=1e-3)


def test_unknown_hyperparameter_for_a_chain():
    tx = hc.chain(T.scale_by_learning_rate(), T.apply_updates())
    with pytest.raises(TypeError, match="'momentum'.*reads \\['lr', 'warmup_steps'\\]"):
        hc.ChainOptimizer(params(), tx, momentum=0.9)


def test_non_tensor_param(preset):
    with pytest.raises(TypeError, match="params"):
        preset([torch.nn.Parameter(torch.zeros(2)), 3.0])


def test_sparse_gradient(preset):
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = preset(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()


def test_chain_without_apply():
    with pytest.raises(ValueError, match="apply"):
        hc.ChainOptimizer(params(), hc.chain(T.scale_by_adam()))


def test_not_a_transform():
    with pytest.raises(TypeError, match="transform"):
        hc.ChainOptimizer(params(), lambda g: g)
    with pytest.raises(TypeError, match="Transform"):
        hc.chain(T.scale_by_adam(), "adam")


def test_bad_group_value_in_param_group(preset):
    with pytest.raises(ValueError, match="eps"):
        preset([{"params": params(), "eps": -1.0}])


@pytest.mark.parametrize("make, match", [
    (lambda: T.clip_by_adaptive_norm(minimum=-1e-3), "minimum: expected a finite number >= 0"),
    (lambda: T.clip_by_adaptive_norm(minimum=float("nan")), "minimum"),
    (lambda: T.clip_by_adaptive_norm(eps=0.0), "eps: expected a finite number > 0"),
    (lambda: T.clip_by_adaptive_norm(eps=float("inf")), "eps"),
    (lambda: T.palm_beta2(scale=-0.8), "scale must be a finite number >= 0"),
    (lambda: T.palm_beta2(scale=float("nan")), "scale"),
])
def test_transform_options_are_checked_at_construction(make, match):
    """Options that are not hyperparameters (read by every step, never checked there) are
    refused when the transform is built."""
    with pytest.raises(ValueError, match=match):
        make()

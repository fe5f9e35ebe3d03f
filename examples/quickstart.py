"""Train a small MLP with a preset and with a hand-built chain; print the losses."""

import torch

import heavyball_chain as hc
from heavyball_chain import transforms as T


def train(make_optimizer, steps: int = 200) -> float:
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
    opt = make_optimizer(model.parameters())
    x = torch.randn(512, 16)
    with torch.no_grad():
        y = teacher(x)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


if __name__ == "__main__":
    print(f"ForeachLaProp   final loss {train(lambda p: hc.ForeachLaProp(p, lr=3e-3)):.5f}")
    print(f"ForeachAdamW    final loss {train(lambda p: hc.ForeachAdamW(p, lr=3e-3, weight_decay=1e-4)):.5f}")
    custom = hc.chain(
        T.scale_by_laprop(betas=(0.9, T.palm_beta2(0.8))),
        T.add_decayed_weights(),
        T.scale_by_learning_rate(warmup_steps=20),
        T.stochastic_round_apply(),
    )
    print(f"custom chain    final loss {train(lambda p: hc.ChainOptimizer(p, custom, lr=3e-3)):.5f}")

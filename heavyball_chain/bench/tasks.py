"""Built-in benchmark tasks: each builds a model and gives a training loss per step and a held-out loss.

- ``charlm``: a small causal transformer predicting the next byte of Python's standard-library
  source (a fixed list of files, first 90% train, last 10% held out), or of ``--text PATH``.
- ``mlp``: teacher-student regression; a random tanh MLP labels Gaussian inputs; held out: a fixed
  fresh sample.
- ``quadratic``: consistent least squares ``||A x - b||² / n`` (``b = A x*``, so the optimum is 0)
  with the singular values of A spread over three decades (Hessian condition number 1e6),
  minibatched rows; held out: the full objective.
- ``rosenbrock``: ``sum (1 - x_i)^2 + 100 (x_{i+1} - x_i^2)^2`` in 8 dimensions from 0,
  deterministic; held out: the same function (there is nothing to generalise to).

Default learning rates are tuned for networks; the two toy problems run at ``lr_scale`` = 10 times
each optimizer's default (the table's lr column shows the value used).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["Task", "TASKS", "make_task", "stdlib_text"]


@dataclass
class Task:
    name: str
    model: torch.nn.Module
    train_loss: Callable[[int], torch.Tensor]  # the loss of step i (a minibatch), with grad
    heldout_loss: Callable[[], float]  # evaluated under no_grad
    describe: str
    lr_scale: float = 1.0  # multiplies each optimizer's default learning rate


# --------------------------------------------------------------------------- text


def stdlib_text(max_bytes: int = 400_000) -> bytes:
    """Python's own standard-library sources: the ``.py`` files directly in the stdlib folder,
    sorted by name, concatenated up to ``max_bytes`` (deterministic for a given Python)."""
    root = os.path.dirname(os.__file__)
    out = bytearray()
    for name in sorted(f for f in os.listdir(root) if f.endswith(".py")):
        with open(os.path.join(root, name), "rb") as fh:
            out += fh.read()
        if len(out) >= max_bytes:
            break
    return bytes(out[:max_bytes])


class TinyGPT(torch.nn.Module):
    """A 2-layer causal transformer over bytes (vocab 256)."""

    def __init__(self, width: int = 64, layers: int = 2, heads: int = 4, context: int = 64):
        super().__init__()
        self.embed = torch.nn.Embedding(256, width)
        self.pos = torch.nn.Parameter(torch.zeros(context, width))
        layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True,
                                                 norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, 256)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    mask: torch.Tensor  # a buffer

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        h = self.embed(idx) + self.pos[:t]
        h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))


def charlm(seed: int, text: bytes | None = None, batch: int = 16, context: int = 64) -> Task:
    data = torch.frombuffer(bytearray(text if text is not None else stdlib_text()), dtype=torch.uint8).long()
    if data.numel() < 4 * (context + 1):
        raise ValueError(f"--text: need at least {4 * (context + 1)} bytes of text, got {data.numel()}")
    split = int(0.9 * data.numel())
    train, held = data[:split], data[split:]
    torch.manual_seed(seed)
    model = TinyGPT(context=context)

    def windows(source: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.stack([source[s:s + context + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    def train_loss(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x, y = windows(train, torch.randint(0, train.numel() - context - 1, (batch,), generator=g))
        return F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))

    starts = torch.linspace(0, held.numel() - context - 2, 32).long()
    hx, hy = windows(held, starts)

    def heldout() -> float:
        return F.cross_entropy(model(hx).reshape(-1, 256), hy.reshape(-1)).item()

    n = sum(p.numel() for p in model.parameters())
    return Task("charlm", model, train_loss, heldout,
                f"byte-level transformer ({n / 1e3:.0f}K params), cross-entropy in nats per byte")


# --------------------------------------------------------------------------- synthetic


def mlp(seed: int, batch: int = 64, dim: int = 32, hidden: int = 64) -> Task:
    torch.manual_seed(10_000 + seed)
    teacher = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                                torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    g = torch.Generator().manual_seed(20_000 + seed)
    hx = torch.randn(1024, dim, generator=g)
    with torch.no_grad():
        hy = teacher(hx)

    def train_loss(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(batch, dim, generator=gen)
        with torch.no_grad():
            y = teacher(x)
        return F.mse_loss(model(x), y)

    def heldout() -> float:
        return F.mse_loss(model(hx), hy).item()

    return Task("mlp", model, train_loss, heldout, "teacher-student tanh MLP regression, mean squared error")


class _Vector(torch.nn.Module):
    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.x = torch.nn.Parameter(x)


def quadratic(seed: int, dim: int = 64, rows: int = 256, batch: int = 32) -> Task:
    g = torch.Generator().manual_seed(30_000 + seed)
    u, _ = torch.linalg.qr(torch.randn(rows, dim, generator=g))
    v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    # rows of A have norm ~1 in the stiff directions: the Hessian 2 A^T A / n has eigenvalues in [2e-6, 2]
    a = u @ torch.diag(torch.logspace(0, -3, dim)) @ v.T * math.sqrt(rows)
    b = a @ torch.randn(dim, generator=g)
    model = _Vector(torch.zeros(dim))

    def train_loss(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, rows, (batch,), generator=gen)
        return ((a[idx] @ model.x - b[idx]) ** 2).mean()

    def heldout() -> float:
        return ((a @ model.x - b) ** 2).mean().item()

    return Task("quadratic", model, train_loss, heldout,
                "ill-conditioned least squares (Hessian condition 1e6, optimum 0)", lr_scale=10.0)


def rosenbrock(seed: int, dim: int = 8) -> Task:
    model = _Vector(torch.zeros(dim))

    def f() -> torch.Tensor:
        x = model.x
        return ((1 - x[:-1]) ** 2 + 100 * (x[1:] - x[:-1] ** 2) ** 2).sum()

    def heldout() -> float:
        return f().item()

    return Task("rosenbrock", model, lambda step: f(), heldout, f"{dim}-D Rosenbrock function from 0 (minimum 0 at 1)",
                lr_scale=10.0)


TASKS: dict[str, Callable[..., Task]] = {"charlm": charlm, "mlp": mlp, "quadratic": quadratic,
                                         "rosenbrock": rosenbrock}


def make_task(name: str, seed: int, text: bytes | None = None) -> Task:
    if name == "charlm":
        return charlm(seed, text)
    return TASKS[name](seed)

"""SOAP step time: our presets against heavyball 0.8.1 on the same transformer-shaped parameters.

    python benchmarks/soap_step_time.py [--layers 4] [--width 256] [--steps 8] [--threads 2]

Both optimizers get identical settings (weight_decay=0 aside, defaults) and identical gradients;
the precond-schedule presets draw the same refresh decisions (same seeded generator), so the
rows compare the same work. Prints median seconds per step (after 2 warm-up steps: the first
step of SOAP only initialises) and the ratio ours / 0.8.1 measured in this run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import heavyball_chain as hc

NAMES = ["ForeachSOAP", "PaLMForeachSOAP", "PrecondScheduleForeachSOAP", "PrecondSchedulePaLMForeachSOAP",
         "PrecondScheduleSFPaLMSOAP"]


def transformer_shapes(layers: int, width: int, vocab: int = 512) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(vocab, width)]
    for _ in range(layers):
        shapes += [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width),
                   (width,), (width,), (width,), (width,)]
    return shapes


def time_optimizer(make, shapes, steps: int) -> float:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(2)]
    opt = make(params)
    times = []
    for t in range(steps + 2):
        for p, g in zip(params, grads[t % 2]):
            p.grad = g.clone()
        start = time.perf_counter()
        opt.step()
        if t >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes = transformer_shapes(args.layers, args.width)
    n = sum(torch.Size(s).numel() for s in shapes)
    try:
        import heavyball
    except ImportError:
        heavyball = None
    print(f"{len(shapes)} tensors, {n / 1e6:.2f}M parameters, torch {torch.__version__}, "
          f"{args.threads} threads, median of {args.steps} steps")
    print(f"{'preset':34s} {'ours s/step':>12s} {'0.8.1 s/step':>13s} {'ratio':>7s}")
    for name in NAMES:
        ours = time_optimizer(lambda ps: getattr(hc, name)(ps, weight_decay=0), shapes, args.steps)
        ref = float("nan")
        if heavyball is not None and hasattr(heavyball, name):
            ref = time_optimizer(lambda ps: getattr(heavyball, name)(ps, weight_decay=0), shapes, args.steps)
        print(f"{name:34s} {ours:12.4f} {ref:13.4f} {ours / ref:7.2f}")


if __name__ == "__main__":
    main()

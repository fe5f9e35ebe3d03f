"""Optimizer step time of the elementwise presets against torch.optim.AdamW and HeavyBall 0.8.1.

    python benchmarks/step_time.py [--sizes 4,15] [--repeats 20] [--threads 2]

A transformer-shaped parameter set (embedding, per layer qkv/out/mlp matrices and four vectors)
at about 4M and 15M fp32 parameters; every optimizer gets the same gradients; the median of
``--repeats`` steps after 3 warm-up steps. One table per size: seconds per step, the ratio to
``torch.optim.AdamW(foreach=True)`` measured in the same run, ns per parameter, and
optimizer-state bytes per parameter against the minimum the math needs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import heavyball_chain as hc

PRESETS = {  # name: (fp32 buffers the math needs per parameter)
    "ForeachAdamW": 2,
    "ForeachLaProp": 2,
    "ForeachADOPT": 2,
    "ForeachSFAdamW": 2,
    "PaLMForeachSFAdamW": 2,
}


def shapes_for(millions: float) -> list[tuple[int, ...]]:
    """4 layers of width w and a 4w x w embedding (16 w² + 16 w parameters), w the smallest multiple
    of 32 reaching the target."""
    layers = 4
    width = 64
    while True:
        n = 4 * width * width + layers * (12 * width * width + 4 * width)
        if n >= millions * 1e6:
            break
        width += 32
    shapes: list[tuple[int, ...]] = [(4 * width, width)]
    for _ in range(layers):
        shapes += [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width)] + [(width,)] * 4
    return shapes


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
               if isinstance(v, torch.Tensor) and v.dim() > 0)


def time_steps(make, shapes, repeats: int) -> tuple[float, int]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt = make(params)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times), state_bytes(opt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4,15", help="millions of parameters, comma-separated")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import heavyball
    except ImportError:
        heavyball = None
    rows = {
        "torch.AdamW(foreach)": (lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True), 2),
        "torch.AdamW(fused)": (lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True), 2),
    }
    for name, need in PRESETS.items():
        rows[name] = (lambda ps, name=name: getattr(hc, name)(ps), need)
        if heavyball is not None and hasattr(heavyball, name):
            rows[f"heavyball {heavyball.__version__ if hasattr(heavyball, '__version__') else '0.8.1'} {name}"] = (
                lambda ps, name=name: getattr(heavyball, name)(ps, warmup_steps=1), need)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} steps after 3 warm-up")
    for size in (float(s) for s in args.sizes.split(",")):
        shapes = shapes_for(size)
        n = sum(torch.Size(s).numel() for s in shapes)
        print(f"\n{len(shapes)} tensors, {n / 1e6:.2f}M fp32 parameters")
        print(f"{'optimizer':40s} {'ms/step':>9s} {'x foreach':>10s} {'ns/param':>9s} {'state B/p':>10s} {'needs':>6s}")
        base = None
        for label, (make, need) in rows.items():
            seconds, nbytes = time_steps(make, shapes, args.repeats)
            base = base or seconds
            print(f"{label:40s} {seconds * 1e3:9.2f} {seconds / base:10.2f} {seconds / n * 1e9:9.2f} "
                  f"{nbytes / n:10.2f} {4 * need:6d}")


if __name__ == "__main__":
    main()

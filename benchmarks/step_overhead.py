"""Per-step overhead: eager step time on tiny tensors, where the arithmetic is negligible and what
is left is Python and dispatch (bucketing, the checks before a step, the chain), against
torch.optim.AdamW(foreach=True) in the same run.

    python benchmarks/step_overhead.py [--tensors 2,90] [--threads 1] [--steps 300]

Prints a table: median over 5 repeats of the mean step time over ``--steps`` steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import heavyball_chain as hc

PRESETS = ["ForeachAdamW", "ForeachLaProp", "ForeachSFAdamW", "PaLMForeachSOAP"]


def step_time(make, tensors: int, steps: int) -> float:
    params = [torch.nn.Parameter(torch.randn(4)) for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = make(params)
    for _ in range(10):
        opt.step()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(steps):
            opt.step()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", default="2,90")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    counts = [int(n) for n in args.tensors.split(",")]
    print(f"torch {torch.__version__}, {args.threads} thread(s); tensors of 4 elements; us per step "
          f"(x torch.optim.AdamW(foreach=True))")
    print(f"{'optimizer':22s}" + "".join(f"{f'{n} tensors':>22s}" for n in counts))
    base = {n: step_time(lambda ps: torch.optim.AdamW(ps, foreach=True), n, args.steps) for n in counts}
    print(f"{'torch AdamW foreach':22s}" + "".join(f"{base[n] * 1e6:15.0f} (1.00)" for n in counts))
    for name in PRESETS:
        cls = getattr(hc, name)
        cells = [step_time(cls, n, args.steps) for n in counts]
        print(f"{name:22s}" + "".join(f"{t * 1e6:15.0f} ({t / base[n]:.2f})" for t, n in zip(cells, counts)))


if __name__ == "__main__":
    main()

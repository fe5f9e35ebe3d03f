"""Optimizer step time and memory: every preset, eager and compiled, against torch.optim.AdamW and HeavyBall.

    python benchmarks/step_time.py [--sizes 4,15] [--soap-sizes 4] [--rounds 10] [--threads 2]
                                   [--only REGEX] [--heavyball-new DIR]

A transformer-shaped parameter set (a 4w x w embedding and 4 layers of qkv/out/mlp matrices and
four w-vectors, w a multiple of 32) at about 4M and 15M fp32 parameters. Every optimizer gets its
own copy of the same parameters and gradients (gradients are re-attached before every step, as
HeavyBall 3 clears them). Elementwise rows are timed interleaved, ``--rounds`` rounds of 3 steps
each, so drifts of this noisy machine hit every row alike; SOAP rows (seconds per step) run
``--soap-steps`` steps each, after 3 warm-up steps (the first SOAP step only initialises). The
table shows the median step time (SOAP: the mean, as refresh and plain steps alternate), ratios
measured in this run, the first three steps (they include compilation), state bytes per
parameter against what the math needs, and the peak growth of allocated memory during one step
(torch's profiler allocation events).

``--heavyball-new DIR``: time the newest HeavyBall installed in DIR (``pip install --target DIR
heavyball``; it cannot share an environment with heavyball 0.8.1) in a subprocess, same shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

from heavyball_chain.bench.optimizers import state_bytes

SOAP = ["ForeachSOAP", "PaLMForeachSOAP", "PrecondScheduleForeachSOAP", "PrecondSchedulePaLMForeachSOAP",
        "SFPaLMForeachSOAP", "PrecondScheduleSFPaLMForeachSOAP"]
ELEMENTWISE = ["ForeachAdamW", "ForeachLaProp", "ForeachADOPT", "ForeachSFAdamW", "PaLMForeachSFAdamW"]
NEWEST = {  # our preset -> (heavyball >= 1 class, arguments)
    "ForeachAdamW": ("AdamW", {}),
    "ForeachLaProp": ("LaProp", {}),
    "ForeachADOPT": ("ADOPT", {}),
    "ForeachSFAdamW": ("SFAdamW", {"eps": 1e-8}),
    "PaLMForeachSFAdamW": ("SFAdamW", {"eps": 1e-8, "palm": True}),
    "ForeachSOAP": ("SOAP", {}),
    "PaLMForeachSOAP": ("SOAP", {"palm": True}),
    "PrecondScheduleForeachSOAP": ("SOAP", {"use_precond_schedule": True}),
    "PrecondSchedulePaLMForeachSOAP": ("SOAP", {"palm": True, "use_precond_schedule": True}),
}
WARMUP = 3


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


def needs_bytes(name: str, shapes, max_precond_dim: int = 2048) -> int:
    """State the math needs: two fp32 buffers per parameter (m, v; SF: v or nothing, z), plus for
    SOAP a factor and a basis (d x d fp32) per matrix dimension <= max_precond_dim."""
    n = sum(torch.Size(s).numel() for s in shapes)
    total = 8 * n
    if "SOAP" in name:
        total += sum(8 * d * d for s in shapes if len(s) > 1 for d in s if d <= max_precond_dim)
    return total


def peak_growth(step: Callable[[], None]) -> int:
    """Peak of allocated memory during ``step()`` above its level at the start (bytes): the
    running sum of the allocation and free events torch's profiler records."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.typed[0] == _EventType.Allocation:
            events.append((e.start_time_ns, e.typed[1].alloc_size))
        stack.extend(e.children)
    current = peak = 0
    for _, size in sorted(events):
        current += size
        peak = max(peak, current)
    return peak


class Run:
    """One optimizer on its own copy of the parameters, with its own gradients."""

    def __init__(self, make: Callable, shapes):
        gen = torch.Generator().manual_seed(0)
        self.params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
        self.grads = [torch.randn(s, generator=gen) * 1e-3 for s in shapes]
        self.opt = make(self.params)
        self.times: list[float] = []
        start = time.perf_counter()
        for _ in range(WARMUP):
            self.step()
        self.first = time.perf_counter() - start

    def step(self) -> None:
        for p, g in zip(self.params, self.grads):
            p.grad = g
        self.opt.step()

    def timed(self, steps: int) -> None:
        for _ in range(steps):
            for p, g in zip(self.params, self.grads):
                p.grad = g
            start = time.perf_counter()
            self.opt.step()
            self.times.append(time.perf_counter() - start)

    def result(self, memory: bool, mean: bool = False) -> dict:
        """Median step time; ``mean`` for SOAP, whose steps are of two kinds (with and without a
        refresh): the mean is the cost per step, a median would pick one kind."""
        peak = peak_growth(self.step) if memory else float("nan")
        seconds = (statistics.mean if mean else statistics.median)(self.times)
        return {"seconds": seconds, "first": self.first, "state": state_bytes(self.opt),
                "peak": peak}


def factories(heavyball) -> dict[str, tuple[Callable, str]]:
    """label -> (make(params), preset name or '' for torch's)."""
    import heavyball_chain as hc

    rows: dict[str, tuple[Callable, str]] = {
        "torch.AdamW(foreach)": (lambda ps: torch.optim.AdamW(ps, foreach=True), ""),
        "torch.AdamW(fused)": (lambda ps: torch.optim.AdamW(ps, fused=True), ""),
    }
    for name in ELEMENTWISE + SOAP:
        rows[name] = (lambda ps, name=name: getattr(hc, name)(ps), name)
        rows[f"{name} compile"] = (lambda ps, name=name: getattr(hc, name)(ps, compile=True), name)
        if name in ELEMENTWISE:  # a step a CUDA graph can capture: the numbers computed on the device
            rows[f"{name} capturable"] = (lambda ps, name=name: getattr(hc, name)(ps, capturable=True), name)
        if name in ("ForeachAdamW", "ForeachLaProp"):
            rows[f"{name} compile capturable"] = (
                lambda ps, name=name: getattr(hc, name)(ps, compile=True, capturable=True), name)
        old = {"PrecondScheduleSFPaLMForeachSOAP": "PrecondScheduleSFPaLMSOAP"}.get(name, name)
        if heavyball is not None and hasattr(heavyball, old):
            # warmup_steps=1: 0.8.1 divides by warmup_steps (0 is its elementwise presets' default)
            rows[f"heavyball 0.8.1 {name}"] = (lambda ps, old=old: getattr(heavyball, old)(ps, warmup_steps=1), name)
    return rows


def newest(directory: str, name: str, size: float, steps: int, memory: bool) -> dict | None:
    """Time heavyball (newest, installed in ``directory``) on ``name``'s counterpart in a subprocess."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([directory, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, __file__, "--worker", name, "--sizes", str(size), "--soap-steps", str(steps),
           "--threads", str(torch.get_num_threads())] + ([] if memory else ["--no-memory"])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"  (heavyball newest {name}: failed: {proc.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def worker(name: str, size: float, steps: int, memory: bool) -> None:
    from importlib.metadata import version

    import heavyball

    cls, kwargs = NEWEST[name]
    run = Run(lambda ps: getattr(heavyball, cls)(ps, **kwargs), shapes_for(size))
    run.timed(steps)
    print(json.dumps({**run.result(memory, mean="SOAP" in name), "version": version("heavyball"),
                      "label": f"{cls}{'(' + ', '.join(kwargs) + ')' if kwargs else ''}"}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4,15", help="millions of parameters, comma-separated")
    ap.add_argument("--soap-sizes", default="4", help="sizes at which the SOAP rows run (seconds per step)")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds of 3 steps (elementwise rows)")
    ap.add_argument("--soap-steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="regex: keep rows whose label matches (torch rows always run)")
    ap.add_argument("--heavyball-new", default="", metavar="DIR", help="directory with the newest heavyball")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    memory = not args.no_memory
    if args.worker:
        worker(args.worker, float(args.sizes), args.soap_steps if "SOAP" in args.worker else 3 * args.rounds, memory)
        return
    try:
        import heavyball
    except ImportError:
        heavyball = None
    rows = factories(heavyball)
    only = re.compile(args.only)
    rows = {k: v for k, v in rows.items() if not v[1] or only.search(k)}
    print(f"torch {torch.__version__}, {args.threads} threads; elementwise rows: median of {3 * args.rounds} "
          f"interleaved steps; SOAP rows: mean of {args.soap_steps} steps; after {WARMUP} warm-up steps")
    soap_sizes = {float(s) for s in args.soap_sizes.split(",") if s}
    for size in (float(s) for s in args.sizes.split(",")):
        shapes = shapes_for(size)
        n = sum(torch.Size(s).numel() for s in shapes)
        here = {k: v for k, v in rows.items() if "SOAP" not in v[1] or size in soap_sizes}
        runs = {label: Run(make, shapes) for label, (make, name) in here.items() if "SOAP" not in name}
        for _ in range(args.rounds):
            for run in runs.values():
                run.timed(3)
        results = {label: run.result(memory) for label, run in runs.items()}
        del runs
        for label, (make, name) in here.items():
            if "SOAP" in name:
                run = Run(make, shapes)
                run.timed(args.soap_steps)
                results[label] = run.result(memory, mean=True)
                del run
        if args.heavyball_new:
            for name in ELEMENTWISE + SOAP:
                if name in NEWEST and any(v[1] == name for v in here.values()):
                    steps = args.soap_steps if "SOAP" in name else 3 * args.rounds
                    r = newest(args.heavyball_new, name, size, steps, memory)
                    if r is not None:
                        results[f"heavyball {r['version']} {r['label']}"] = {**r, "name": name}
        print_table(results, here, shapes, n)


def print_table(results: dict, rows: dict, shapes, n: int) -> None:
    foreach = results["torch.AdamW(foreach)"]["seconds"]
    fused = results["torch.AdamW(fused)"]["seconds"]
    print(f"\n{len(shapes)} tensors, {n / 1e6:.2f}M fp32 parameters")
    print(f"{'optimizer':48s} {'ms/step':>9s} {'x foreach':>9s} {'x fused':>8s} {'x 0.8.1':>8s} {'ns/param':>8s} "
          f"{'first 3 s':>9s} {'state B/p':>9s} {'needs':>6s} {'peak +B/p':>9s}")
    for label, r in results.items():
        name = r.get("name") or rows.get(label, (None, ""))[1]
        ref = results.get(f"heavyball 0.8.1 {name}") if name and not label.startswith("heavyball") else None
        vs = f"{r['seconds'] / ref['seconds']:8.2f}" if ref else f"{'':8s}"
        need = f"{needs_bytes(name, shapes) / n:6.2f}" if name else f"{8:6.2f}"
        print(f"{label:48s} {r['seconds'] * 1e3:9.2f} {r['seconds'] / foreach:9.2f} {r['seconds'] / fused:8.2f} "
              f"{vs} {r['seconds'] / n * 1e9:8.2f} {r['first']:9.2f} {r['state'] / n:9.2f} {need} "
              f"{r['peak'] / n:9.2f}")


if __name__ == "__main__":
    main()

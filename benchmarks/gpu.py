"""Optimizer step time and peak memory at GPT shapes, against torch's fused AdamW, on one GPU.

    python benchmarks/gpu.py                          # cuda: 125M and 1.3B, fp32 and bf16
    python benchmarks/gpu.py --device cpu --small     # a 0.2M-parameter stand-in (the tests run it)

Shapes: GPT-2 small (d=768, 12 layers, 50257-token embedding; 124M parameters) and GPT-3 XL
(d=2048, 24 layers; 1.3B), as parameter lists with fixed random gradients: qkv, attention out,
MLP in/out matrices and two LayerNorms per layer, the embedding, the final norm. Each row is a
fresh optimizer over its own copy; its first ``--warmup`` steps (compilation, SOAP's first
preconditioner) are timed apart ("first s"), then ``--steps`` steps (CUDA events on a GPU).
Rows: torch.optim.AdamW fused (the baseline of ``x fused``) and foreach; our ForeachAdamW,
ForeachLaProp and AdamW, eager and compiled; MuonWithAdamW (Muon on the hidden matrices); SOAP
(``precondition_frequency=1``: its most expensive phase) at the first size only; the
``graph`` rows (torch's AdamW and our ForeachAdamW/AdamW with ``capturable=True``) capture one
step in a CUDA graph after the warm-up and time its replays (on the CPU they step eagerly,
capturable, so the path is known to work; our bf16 rows refuse, as stochastic rounding seeds on
the host); and, when
``heavyball`` is importable, its AdamW and SOAP classes (0.8: ForeachLaProp, ForeachSOAP). ``peak MB`` is the growth of allocated
memory during one step (``torch.cuda.max_memory_allocated``; on the CPU torch's profiler).
Optimizers a size does not fit are reported as failed rows, and the run goes on.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_time import peak_growth  # noqa: E402

import heavyball_chain as hc  # noqa: E402

SIZES = {"125M": (768, 12, 50257), "1.3B": (2048, 24, 50257)}
SMALL = {"small": (64, 2, 256)}


class GPTParams(torch.nn.Module):
    """A GPT's parameters under the names MuonWithAdamW routes by (no forward: gradients are given)."""

    def __init__(self, width: int, layers: int, vocab: int, device, dtype):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, width, device=device, dtype=dtype)
        self.h = torch.nn.ModuleList()
        for _ in range(layers):
            block = torch.nn.Module()
            block.qkv = torch.nn.Linear(width, 3 * width, device=device, dtype=dtype)
            block.proj = torch.nn.Linear(width, width, device=device, dtype=dtype)
            block.fc = torch.nn.Linear(width, 4 * width, device=device, dtype=dtype)
            block.out = torch.nn.Linear(4 * width, width, device=device, dtype=dtype)
            block.ln1, block.ln2 = torch.nn.LayerNorm(width, device=device, dtype=dtype), \
                torch.nn.LayerNorm(width, device=device, dtype=dtype)
            self.h.append(block)
        self.ln_f = torch.nn.LayerNorm(width, device=device, dtype=dtype)
        self.lm_head = torch.nn.Linear(width, vocab, bias=False, device=device, dtype=dtype)
        self.lm_head.weight = self.wte.weight  # tied, as GPT-2
        gen = torch.Generator(device=device).manual_seed(0)
        self.grads = [torch.randn(p.shape, device=device, dtype=dtype, generator=gen) * 1e-3
                      for p in self.parameters()]

    def stepper(self, opt: torch.optim.Optimizer) -> Callable[[], None]:
        """One step on the fixed gradients, re-attached first (HeavyBall clears them)."""
        params = list(self.parameters())

        def step():
            for p, g in zip(params, self.grads):
                p.grad = g
            opt.step()
        return step


def rows(args) -> dict[str, Callable[[torch.nn.Module], torch.optim.Optimizer]]:
    out = {
        "torch.AdamW(fused)": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True),
        "torch.AdamW(foreach)": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, foreach=True),
    }
    for name in ("ForeachAdamW", "ForeachLaProp", "AdamW"):
        cls = getattr(hc, name)
        out[name] = lambda m, cls=cls: cls(m.parameters(), lr=1e-3)
        out[f"{name} compile"] = lambda m, cls=cls: cls(m.parameters(), lr=1e-3, compile=True)
    out["torch.AdamW(capturable) graph"] = lambda m: torch.optim.AdamW(
        m.parameters(), lr=1e-3, capturable=m.grads[0].is_cuda, foreach=True)
    for name in ("ForeachAdamW", "AdamW"):
        cls = getattr(hc, name)
        out[f"{name} capturable graph"] = lambda m, cls=cls: cls(m.parameters(), lr=1e-3, capturable=True)
    out["MuonWithAdamW"] = lambda m: hc.MuonWithAdamW(m)
    out["ForeachSOAP"] = lambda m: hc.ForeachSOAP(m.parameters(), lr=1e-3, precondition_frequency=1)
    try:
        import heavyball
    except ImportError:
        return out
    from importlib.metadata import version as installed

    version = installed("heavyball")
    for candidates in (("AdamW", "ForeachLaProp"), ("SOAP", "ForeachSOAP")):  # heavyball >= 1, then 0.8
        name = next((c for c in candidates if hasattr(heavyball, c)), None)
        if name is None:
            continue
        cls = getattr(heavyball, name)
        extra = {"precondition_frequency": 1} if "SOAP" in name else {}
        if not hasattr(heavyball, "AdamW"):
            extra["warmup_steps"] = 1  # 0.8 divides by warmup_steps (0 is its default)
        out[f"heavyball {version} {name}"] = lambda m, cls=cls, extra=extra: cls(m.parameters(), lr=1e-3, **extra)
    return out


def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` steps."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / steps
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    if device.type != "cuda":
        return peak_growth(step)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def graphed(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` captured once in a CUDA graph (after the warm-up steps, on a side stream as torch's
    documentation asks); the returned function replays it."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def measure(make, size, dtype, args, device, graph: bool = False) -> dict:
    model = GPTParams(*size, device=device, dtype=dtype)
    step = model.stepper(make(model))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.warmup):
        step()
    if graph and device.type == "cuda":
        step = graphed(step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    first = time.perf_counter() - t
    seconds = timed(step, args.steps, device)
    peak = peak_bytes(step, device)
    n = sum(p.numel() for p in model.parameters())
    return {"ms": seconds * 1e3, "first": first, "peak": peak / 2**20, "params": n}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="one tiny shape instead of 125M and 1.3B")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", default="", help="substring: keep the rows whose name contains it (and the baseline)")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend of the compiled rows "
                                                            "(the tests use aot_eager: no C++ build)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no GPU is available here (use --device cpu --small)")
    if args.backend != "inductor":  # trace the fused runs, run them with another backend
        from heavyball_chain.compiled import Fuser
        init = Fuser.__init__

        def other_backend(self, *a, **kw):
            init(self, *a, **kw)
            self.compile_options = {"fullgraph": True, "dynamic": True, "backend": args.backend}

        Fuser.__init__ = other_backend
    sizes = SMALL if args.small else SIZES
    table = rows(args)
    names = [n for n in table if not args.only or args.only in n or n == "torch.AdamW(fused)"]
    print(f"torch {torch.__version__}, {device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    for label, size in sizes.items():
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            print(f"\n{label} ({dtype_name}), {args.steps} steps after {args.warmup}")
            print(f"{'optimizer':36} {'ms/step':>9} {'x fused':>8} {'first s':>8} {'peak MB':>9}")
            base = None
            for name in names:
                if "SOAP" in name and label != next(iter(sizes)):
                    continue  # SOAP at 1.3B: minutes per refresh-every-step run
                try:
                    r = measure(table[name], size, dtype, args, device, graph=name.endswith(" graph"))
                except Exception as exc:  # noqa: BLE001 - a row that cannot run is reported, the rest run
                    print(f"{name:36} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
                    continue
                finally:
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                base = r["ms"] if name == "torch.AdamW(fused)" else base
                ratio = r["ms"] / base if base else float("nan")
                print(f"{name:36} {r['ms']:9.2f} {ratio:8.2f} {r['first']:8.2f} {r['peak']:9.1f}")


if __name__ == "__main__":
    main()

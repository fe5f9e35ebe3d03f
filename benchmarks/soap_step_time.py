"""SOAP step time against HeavyBall 0.8.1 and against the time its matrix work needs.

    python benchmarks/soap_step_time.py [--layers 4] [--width 256] [--steps 8] [--threads 2]

Transformer-shaped parameters (a 512 x w embedding, per layer w x 3w ... matrices and four
w-vectors), identical settings (weight_decay=0, defaults otherwise) and gradients for both
libraries. Three tables:

1. Every SOAP preset over steps 3..steps+2 (the first step only initialises; early in the
   preconditioner schedule nearly every step refreshes the eigenbases). Ours and 0.8.1 step in
   alternation, so the machine's drift hits both alike; mean seconds per step (refresh and plain
   steps mix, so the mean, not the median, is the cost per step) and the ratio.
2. The same later in training, where refreshes are rare: the fixed-interval presets refreshing
   every 10 steps.
3. One plain step (no refresh) and one refresh step of PaLMForeachSOAP, against the time of the
   same matrix products (and, for the refresh, QR factorisations) run back to back on this machine:
   what the step cannot go below. FLOPs per step are counted from the shapes.
4. The preconditioner-schedule presets with ``refresh_factors="one"``, as table 1.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import heavyball_chain as hc
from heavyball_chain.transforms.soap import merged_shape

NAMES = ["ForeachSOAP", "PaLMForeachSOAP", "PrecondScheduleForeachSOAP", "PrecondSchedulePaLMForeachSOAP",
         "SFPaLMForeachSOAP", "PrecondScheduleSFPaLMForeachSOAP"]
OLD_NAMES = {"PrecondScheduleSFPaLMForeachSOAP": "PrecondScheduleSFPaLMSOAP"}


def transformer_shapes(layers: int, width: int, vocab: int = 512) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(vocab, width)]
    for _ in range(layers):
        shapes += [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width),
                   (width,), (width,), (width,), (width,)]
    return shapes


class Stepper:
    def __init__(self, make, shapes, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
        self.grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(2)]
        self.opt = make(self.params)
        self.t = 0
        self.times: list[float] = []

    def step(self, record: bool = True) -> float:
        for p, g in zip(self.params, self.grads[self.t % 2]):
            p.grad = g.clone()
        start = time.perf_counter()
        self.opt.step()
        elapsed = time.perf_counter() - start
        self.t += 1
        if record:
            self.times.append(elapsed)
        return elapsed


def matmul_floor(shapes, refresh: bool, first_moment: bool = True, max_dim: int = 2048) -> tuple[float, float, float]:
    """(matmul GFLOP, seconds for those matmuls, seconds for the QRs) of one step on ``shapes``:
    per matrix (a, b), rotating g and the update back (2ab(a+b) FLOPs each) and the two factor
    updates (together 2ab(a+b)); a refresh adds GG Q (2d³) and a QR per factor, and moves the
    momentum (kept in the eigenbasis) to the new basis: two more rotations. Each product is run
    as one bmm over the matrices of its shape, as ours does."""
    classes: dict[tuple[int, ...], int] = {}
    for s in shapes:
        if len(s) > 1:
            m = merged_shape(s, max_dim, True)
            classes[m] = classes.get(m, 0) + 1
    products: list[tuple[int, int, int, int]] = []  # batch, m, k, n
    factors: list[tuple[int, int]] = []  # batch, d
    for (a, b), batch in classes.items():
        rotations = 2 + (2 if refresh and first_moment else 0)
        products += [(batch, a, b, b), (batch, a, a, b)] * rotations  # x Q_1, Q_0^T x
        products += [(batch, a, b, a), (batch, b, a, b)]  # G G^T, G^T G
        if refresh:
            products += [(batch, d, d, d) for d in (a, b)]
            factors += [(batch, d) for d in (a, b)]
    flops = sum(2 * bt * m * k * n for bt, m, k, n in products)

    def run_products():
        for bt, m, k, n in products:
            torch.bmm(mats[(bt, m, k)], mats[(bt, k, n)])

    def run_qr():
        for bt, d in factors:
            for x in qr_in[(bt, d)]:
                h, tau = torch.geqrf(x)
                torch.linalg.householder_product(h, tau)

    mats = {}
    for bt, m, k, n in products:
        mats.setdefault((bt, m, k), torch.randn(bt, m, k))
        mats.setdefault((bt, k, n), torch.randn(bt, k, n))
    qr_in = {(bt, d): torch.randn(bt, d, d).unbind(0) for bt, d in factors}
    best = []
    for fn in (run_products, run_qr):
        fn()
        best.append(min(_timed(fn) for _ in range(3)))
    return flops / 1e9, best[0], best[1]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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
    print(f"{len(shapes)} tensors, {n / 1e6:.2f}M parameters, torch {torch.__version__}, {args.threads} threads")

    def alternate(name: str, old: str, steps: int, average, ours_kwargs=None, **kwargs) -> tuple[float, float]:
        """``name`` (ours, also given ``ours_kwargs``) and ``old`` (0.8.1) stepping in alternation;
        average seconds per step of each after 2 warm-up steps (nan for 0.8.1 when it is not installed)."""
        ours = Stepper(lambda ps: getattr(hc, name)(ps, weight_decay=0, **kwargs, **(ours_kwargs or {})), shapes)
        ref = Stepper(lambda ps: getattr(heavyball, old)(ps, weight_decay=0, **kwargs), shapes) if heavyball else None
        for t in range(steps + 2):
            ours.step(record=t >= 2)
            if ref is not None:
                ref.step(record=t >= 2)
        return average(ours.times), average(ref.times) if ref is not None else float("nan")

    header = f"{'preset':34s} {'ours s/step':>12s} {'0.8.1 s/step':>13s} {'ratio':>7s}"
    print(f"\n1. mean of steps 3..{args.steps + 2}, ours and 0.8.1 alternating\n{header}")
    for name in NAMES:
        mine, theirs = alternate(name, OLD_NAMES.get(name, name), args.steps, statistics.mean)
        print(f"{name:34s} {mine:12.3f} {theirs:13.3f} {mine / theirs:7.2f}")

    print(f"\n2. later in training: the fixed-interval presets with precondition_frequency=10, mean of "
          f"{2 * args.steps} steps\n{header}")
    for name in ("ForeachSOAP", "PaLMForeachSOAP", "SFPaLMForeachSOAP"):
        mine, theirs = alternate(name, name, 2 * args.steps, statistics.mean, precondition_frequency=10)
        print(f"{name:34s} {mine:12.3f} {theirs:13.3f} {mine / theirs:7.2f}")

    print("\n3. PaLMForeachSOAP, one kind of step at a time (median of the kind), against its matrix work")
    print(f"{'step':10s} {'GFLOP':>7s} {'ours s':>8s} {'0.8.1 s':>8s} {'ratio':>6s} {'bmm s':>7s} {'QR s':>7s} "
          f"{'ours / (bmm + QR)':>18s}")
    for kind, frequency in (("plain", 10**9), ("refresh", 1)):
        mine, theirs = alternate("PaLMForeachSOAP", "PaLMForeachSOAP", args.steps, statistics.median,
                                 precondition_frequency=frequency)
        gflop, bmm, qr = matmul_floor(shapes, refresh=kind == "refresh")
        print(f"{kind:10s} {gflop:7.1f} {mine:8.3f} {theirs:8.3f} {mine / theirs:6.2f} {bmm:7.3f} {qr:7.3f} "
              f"{mine / (bmm + qr):18.2f}")

    print(f"\n4. refresh_factors='one' (one factor's basis per refresh, in turn; not HeavyBall's math: "
          f"benchmarks/soap_refresh.py), as table 1\n{header}")
    for name in NAMES:
        if "PrecondSchedule" not in name:
            continue
        mine, theirs = alternate(name, OLD_NAMES.get(name, name), args.steps, statistics.mean,
                                 ours_kwargs={"refresh_factors": "one"})
        print(f"{name:34s} {mine:12.3f} {theirs:13.3f} {mine / theirs:7.2f}")

if __name__ == "__main__":
    main()

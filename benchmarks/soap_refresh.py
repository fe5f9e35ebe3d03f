"""Does refreshing one factor's eigenbasis per refresh (``refresh_factors="one"``) train as well?

    python benchmarks/soap_refresh.py [--steps 300] [--seeds 0,1,2] [--task charlm]

Trains the bench's task (``heavyball_chain.bench``: charlm is a small character-level transformer
on text from the Python standard library) with each SOAP preset named below, at its default lr,
refreshing every factor at each refresh (HeavyBall's math, the default) and one factor in turn,
the same seeds and batches. Prints the train loss over the last 10% of steps and the held-out
loss (mean over seeds, and the worst seed's difference), and the median step time.
Step times at transformer shapes, in the refresh-every-step phase: ``soap_step_time.py``
(table 4).
"""

from __future__ import annotations

import argparse
import statistics

import torch

import heavyball_chain as hc
from heavyball_chain.bench import optimizers, runner

PRESETS = ["PrecondSchedulePaLMForeachSOAP", "PaLMForeachSOAP", "PrecondScheduleSFPaLMForeachSOAP"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--task", default="charlm")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{args.task}, {args.steps} steps, seeds {seeds}, torch {torch.__version__}, {args.threads} threads")
    print(f"{'preset':34s} {'refresh':>8s} {'train':>8s} {'held-out':>9s} {'worst d(held-out)':>18s} {'ms/step':>8s}")
    original = optimizers.make_optimizer
    for name in PRESETS:
        results = {}
        for mode in ("all", "one"):
            def make(opt_name, model, lr, compile=False, mode=mode):
                return getattr(hc, opt_name)(model.parameters(), lr=lr, refresh_factors=mode)
            runner.make_optimizer = make
            try:
                results[mode] = [runner.run(args.task, name, args.steps, None, seed) for seed in seeds]
            finally:
                runner.make_optimizer = original
        for mode, runs in results.items():
            train = statistics.mean(r["final_train"] for r in runs)
            held = statistics.mean(r["heldout"] for r in runs)
            worst = max(r["heldout"] - a["heldout"] for r, a in zip(runs, results["all"]))
            ms = statistics.median(r["median_step_ms"] for r in runs)
            print(f"{name:34s} {mode:>8s} {train:8.4f} {held:9.4f} {worst:18.4f} {ms:8.1f}")


if __name__ == "__main__":
    main()

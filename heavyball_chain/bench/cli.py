"""``heavyball-chain`` command line: ``bench`` (the shoot-out) and ``list`` (presets and their chains)."""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
import time
from typing import NoReturn

import torch

from .. import presets
from .optimizers import OPTIMIZERS, supports_compile
from .tasks import TASKS

__all__ = ["main"]

DEFAULT_OPTIMIZERS = ["ForeachAdamW", "ForeachLaProp", "ForeachADOPT", "ForeachSFAdamW",
                      "PrecondSchedulePaLMForeachSOAP", "torch.AdamW", "torch.SGD"]
QUICK_OPTIMIZERS = ["ForeachLaProp", "PrecondSchedulePaLMForeachSOAP", "torch.AdamW"]
DEFAULT_STEPS, QUICK_STEPS = 500, 100
TUNE_FACTORS = (1 / 3, 1.0, 3.0)
MAX_STEPS = 1_000_000  # every logged point is kept in memory and written to bench.json and bench.csv
MAX_SEED = 2**32 - 1  # the tasks derive 64-bit generator seeds from it
MAX_THREADS = 1024  # far more make OpenMP fail to create threads, or crash
MIN_TEXT_BYTES, MAX_TEXT_BYTES = 4 * 65, 128 * 2**20  # charlm: 4 windows of context + 1


class UsageError(Exception):
    """A bad option: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, no usage dump
        raise UsageError(message)


def _names(value: str, known: list[str], what: str, aliases: dict[str, str] | None = None) -> list[str]:
    """The canonical names in a comma-separated list ('all' for every one): case-insensitive,
    ``aliases`` resolved, duplicates dropped; an unknown name suggests the closest known one."""
    lookup = {n.lower(): n for n in known} | {a.lower(): n for a, n in (aliases or {}).items()}
    choices = f"choose from {', '.join(known)} or 'all'"
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise UsageError(f"--{what}: empty list; {choices}")
    if [n.lower() for n in names] == ["all"]:
        return list(known)
    if "all" in (n.lower() for n in names):
        raise UsageError(f"--{what}: 'all' cannot be combined with other names")
    unknown = []
    for n in names:
        if n.lower() not in lookup:
            close = difflib.get_close_matches(n.lower(), lookup, n=1)
            unknown.append(repr(n) + (f" (did you mean {lookup[close[0]]}?)" if close else ""))
    if unknown:
        raise UsageError(f"--{what}: unknown {', '.join(unknown)}; {choices}")
    return list(dict.fromkeys(lookup[n.lower()] for n in names))


def _preset_aliases() -> dict[str, str]:
    """HeavyBall's alternative spellings of preset names: alias -> canonical name."""
    canonical = {getattr(presets, n): n for n in presets.__all__}
    return {name: canonical[obj] for name, obj in vars(presets).items()
            if name not in presets.__all__ and isinstance(obj, type) and obj in canonical}


def _check_int(value: int, what: str, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UsageError(f"--{what}: expected an integer from {low} to {high}, got {value}")


def _check_out(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise UsageError(f"--out: cannot write to {out!r} ({exc.strerror or exc})") from None


class _Progress:
    """A text progress bar on stderr (one line rewritten on a terminal, a line per run otherwise)."""

    def __init__(self, total_runs: int):
        self.total, self.done, self.tty = total_runs, 0, sys.stderr.isatty()

    def start(self, label: str, steps: int) -> None:
        self.label, self.steps, self.t0 = label, steps, time.perf_counter()

    def step(self, i: int) -> None:
        if self.tty and (i == self.steps or i % max(1, self.steps // 50) == 0):
            filled = int(30 * i / self.steps)
            sys.stderr.write(f"\r[{self.done + 1}/{self.total}] {self.label:45s} "
                             f"[{'#' * filled}{'.' * (30 - filled)}] {i}/{self.steps}")
            sys.stderr.flush()

    def finish(self) -> None:
        self.done += 1
        if self.tty:  # end the rewritten bar line
            sys.stderr.write("\n")
        else:
            sys.stderr.write(f"[{self.done}/{self.total}] {self.label} done in "
                             f"{time.perf_counter() - self.t0:.2f}s\n")
        sys.stderr.flush()


def bench(args: argparse.Namespace) -> int:
    from .report import table, write_files
    from .runner import run

    tasks = _names(args.tasks, list(TASKS), "tasks")
    default = ",".join(QUICK_OPTIMIZERS if args.quick else DEFAULT_OPTIMIZERS)
    optimizers = _names(default if args.optimizers is None else args.optimizers, OPTIMIZERS, "optimizers",
                        _preset_aliases())
    steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    _check_int(steps, "steps", 1, MAX_STEPS)
    _check_int(args.seed, "seed", 0, MAX_SEED)
    _check_int(args.threads, "threads", 1, MAX_THREADS)
    factors = TUNE_FACTORS if args.tune else (1.0,)
    if args.lr is not None and not all(0 < args.lr * f < math.inf for f in factors):
        tried = " (and, for --tune, 1/3 and 3 times it)" if args.tune else ""
        raise UsageError(f"--lr: expected a positive finite number{tried}, got {args.lr}")
    text = None
    if args.text is not None:
        try:
            with open(args.text, "rb") as fh:
                text = fh.read(MAX_TEXT_BYTES + 1)  # bounded: the path may be a device or a pipe
        except OSError as exc:
            raise UsageError(f"--text: cannot read {args.text!r} ({exc.strerror or exc})") from None
        if len(text) < MIN_TEXT_BYTES:
            raise UsageError(f"--text: need at least {MIN_TEXT_BYTES} bytes of text, got {len(text)}")
        if len(text) > MAX_TEXT_BYTES:
            raise UsageError(f"--text: expected at most {MAX_TEXT_BYTES // 2**20} MiB of text, {args.text!r} has more")
    _check_out(args.out)
    torch.set_num_threads(args.threads)
    if args.compile:
        unsupported = [o for o in optimizers if not supports_compile(o)]
        if unsupported:
            print(f"note: --compile not supported by {', '.join(unsupported)}; they run eagerly", file=sys.stderr)

    progress = _Progress(len(tasks) * len(optimizers) * len(factors))
    results = []
    for task in tasks:
        for name in optimizers:
            candidates = []
            for f in factors:
                progress.start(f"{task} {name}" + (f" lr x{f:.2g}" if args.tune else ""), steps)
                candidates.append(run(task, name, steps, args.lr, args.seed, args.compile, text, progress.step, f))
                progress.finish()
            best = min(candidates, key=lambda r: (r["diverged"], r["final_train"]
                                                  if r["final_train"] == r["final_train"] else float("inf")))
            if args.tune:
                best["tuned_over"] = [c["lr"] for c in candidates]
            results.append(best)
    print(table(results))
    config = {"tasks": tasks, "optimizers": optimizers, "steps": steps, "seed": args.seed, "tune": args.tune,
              "lr": args.lr, "compile": args.compile, "threads": args.threads, "torch": torch.__version__,
              "text": args.text}
    for path in write_files(results, config, args.out):
        print(f"wrote {path}")
    return 0


def _state_bytes_per_element(name: str, p: torch.nn.Parameter) -> str:
    """State bytes per element of ``p`` under preset ``name``; '-' where it refuses ``p`` (Muon: 2-D only)."""
    cls = getattr(presets, name)
    try:
        if name == "MuonWithAdamW":  # takes a model: the matrix is a hidden layer, the vector its bias
            model = torch.nn.Linear(512, 512)
            opt = cls(model)
            p = model.weight if p.dim() == 2 else model.bias  # type: ignore[assignment]
        else:
            opt = cls([p])
    except (TypeError, ValueError):
        return "-"
    group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
    return f"{opt.transform.state_bytes(p, group) / p.numel():.2f}"


def list_presets(args: argparse.Namespace) -> int:
    matrix = torch.nn.Parameter(torch.zeros(512, 512))
    vector = torch.nn.Parameter(torch.zeros(512))
    print(f"{'preset':34s} {'B/param 512x512':>16s} {'B/param vector':>15s}")
    for family, names in (("HeavyBall 0.8.1's optimizers", presets.HEAVYBALL),
                          ("drop-ins for their references", [*presets.STANDARD, "MuonWithAdamW"])):
        print(f"# {family}")
        for name in names:
            print(f"{name:34s} {_state_bytes_per_element(name, matrix):>16s} "
                  f"{_state_bytes_per_element(name, vector):>15s}")
            opt = getattr(presets, name)(torch.nn.Linear(2, 2) if name == "MuonWithAdamW" else [matrix])
            print("  " + repr(opt.transform).replace("\n", "\n  "))
    return 0


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="heavyball-chain", description="Optimizer shoot-out on built-in tasks.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    b = sub.add_parser("bench", help="train each optimizer on each task and compare")
    b.add_argument("--tasks", default="all", help=f"comma-separated: {', '.join(TASKS)} (default: all)")
    b.add_argument("--optimizers", default=None,
                   help=f"comma-separated preset names (any case; HeavyBall's aliases too), torch.AdamW, torch.SGD "
                        f"(default: {','.join(DEFAULT_OPTIMIZERS)})")
    b.add_argument("--steps", type=int, default=None,
                   help=f"steps per run, 1 to {MAX_STEPS} (default {DEFAULT_STEPS}, --quick {QUICK_STEPS})")
    b.add_argument("--lr", type=float, default=None, help="one learning rate for every optimizer (default: each its own)")
    b.add_argument("--tune", action="store_true", help="try lr x 1/3, 1, 3 per optimizer and keep the best final loss")
    b.add_argument("--seed", type=int, default=0, help=f"0 to {MAX_SEED} (default 0)")
    b.add_argument("--out", default="bench-out", help="folder for bench.json, bench.csv, bench.png")
    b.add_argument("--compile", action="store_true", help="compiled optimizer steps where supported")
    b.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, {len(QUICK_OPTIMIZERS)} optimizers")
    b.add_argument("--text", default=None, help="train the charlm task on this file instead of Python's sources")
    b.add_argument("--threads", type=int, default=2,
                   help=f"torch threads, 1 to {MAX_THREADS} (default 2; fixed, so runs are repeatable)")
    b.set_defaults(fn=bench)
    lst = sub.add_parser("list", help="every preset with its chain and state bytes per parameter")
    lst.set_defaults(fn=list_presets)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: bench or list (see heavyball-chain --help)")
        status = args.fn(args)
        sys.stdout.flush()  # a closed pipe (`heavyball-chain list | head`) raises here, not at exit
        return status
    except BrokenPipeError:  # the reader has gone: stop quietly (the recipe in Python's signal docs)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except UsageError as exc:
        print(f"heavyball-chain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("heavyball-chain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

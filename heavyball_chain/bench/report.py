"""The table, the JSON/CSV of every logged point, and (with matplotlib) the plot."""

from __future__ import annotations

import csv
import json
import math
import os

from .runner import CHECKPOINTS

__all__ = ["table", "write_files"]


def _num(x: float, width: int, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return f"{'-':>{width}}"
    return f"{x:>{width}.{digits}g}"


def table(results: list[dict]) -> str:
    """One block per task; rows are optimizers, loss columns are means over the last 10% of steps
    before each checkpoint."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in results):
        rows = [r for r in results if r["task"] == task]
        first = rows[0]
        lines.append(f"{task}: {first['task_description']}; {first['steps']} steps, seed {first['seed']}")
        head = f"  {'optimizer':32s} {'lr':>8s}" + "".join(f" {'@' + str(int(c * 100)) + '%':>9s}" for c in CHECKPOINTS)
        head += f" {'final':>9s} {'held-out':>9s} {'step ms':>8s} {'state B/p':>9s}"
        lines.append(head)
        for r in rows:
            cps = "".join(f" {_num(r['checkpoints'][f'{int(c * 100)}%'], 9)}" for c in CHECKPOINTS)
            name = r["optimizer"] + (" (diverged)" if r["diverged"] else "")
            lines.append(f"  {name:32s} {r['lr']:>8.3g}{cps} {_num(r['final_train'], 9)} {_num(r['heldout'], 9)}"
                         f" {r['median_step_ms']:>8.2f} {r['state_bytes_per_param']:>9.1f}")
        lines.append("")
    return "\n".join(lines)


def write_files(results: list[dict], config: dict, out: str) -> list[str]:
    os.makedirs(out, exist_ok=True)
    written = []
    path = os.path.join(out, "bench.json")
    with open(path, "w") as fh:
        json.dump({"config": config, "runs": results}, fh, indent=1)
    written.append(path)
    path = os.path.join(out, "bench.csv")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["task", "optimizer", "lr", "step", "loss", "seconds"])
        for r in results:
            for p in r["points"]:
                w.writerow([r["task"], r["optimizer"], r["lr"], p["step"], p["loss"], p["seconds"]])
    written.append(path)
    png = plot(results, os.path.join(out, "bench.png"))
    if png:
        written.append(png)
    return written


def plot(results: list[dict], path: str) -> str | None:
    """Loss against step and against wall-clock seconds, one line per optimizer, a row per task."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    tasks = list(dict.fromkeys(r["task"] for r in results))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.2 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        for r in (r for r in results if r["task"] == task):
            steps = [p["step"] for p in r["points"]]
            losses = [p["loss"] for p in r["points"]]
            secs = [p["seconds"] for p in r["points"]]
            axes[row][0].plot(steps, losses, label=r["optimizer"], linewidth=1)
            axes[row][1].plot(secs, losses, label=r["optimizer"], linewidth=1)
        # a diverging run should not flatten the others: cap the axis at twice the largest first loss
        firsts = [r["points"][0]["loss"] for r in results if r["task"] == task and r["points"]]
        top = 2 * max((f for f in firsts if math.isfinite(f)), default=1.0)
        for col, xlabel in enumerate(("step", "seconds")):
            ax = axes[row][col]
            ax.set_title(task)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("train loss")
            ax.set_yscale("log")
            ax.set_ylim(top=top)
        axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

"""benchmarks/gpu.py runs end to end on the CPU (``--device cpu --small``), so it is known to
work before anyone runs it on a GPU: every row of ours prints a time (fp32; bf16 for one preset)."""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_benchmark_runs_on_cpu_small(capsys):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import gpu
    finally:
        sys.path.pop(0)
    small = ["--device", "cpu", "--small", "--backend", "aot_eager", "--steps", "1", "--warmup", "3"]
    gpu.main(small + ["--dtypes", "float32"])
    gpu.main(small + ["--dtypes", "bfloat16", "--only", "ForeachAdamW"])  # bf16: one preset, eager and compiled
    out = capsys.readouterr().out
    ours = {"float32": ["ForeachAdamW", "ForeachAdamW compile", "ForeachLaProp", "ForeachLaProp compile", "AdamW",
                        "AdamW compile", "MuonWithAdamW", "ForeachSOAP", "torch.AdamW(fused)",
                        "torch.AdamW(capturable) graph", "ForeachAdamW capturable graph", "AdamW capturable graph"],
            "bfloat16": ["ForeachAdamW", "ForeachAdamW compile", "torch.AdamW(fused)"]}
    for dtype, names in ours.items():
        section = out.split(f"({dtype})")[1].split("\nsmall (")[0]
        for name in names:
            row = re.search(rf"^{re.escape(name)} +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+)$", section, re.M)
            assert row, f"{dtype}: no timed row for {name}:\n{section}"
            assert float(row.group(1)) > 0
    # bf16 parameters under stochastic rounding cannot be captured: the row says why
    assert re.search(r"^ForeachAdamW capturable graph +failed: ValueError: capturable=True: bf16", out, re.M)

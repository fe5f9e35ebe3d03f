"""Each drop-in preset against its reference, side by side: the worst relative difference
``max|p - p_ref| / max|p_ref|`` over the parameter tensors after 50 steps on the tests' model
(tests/helpers.py's Net; a bias-free MLP for Muon), at 1 and 2 threads. The tests
(tests/test_ref_*.py) assert 1e-5 over more settings; this prints the table of docs/presets.md.

    python benchmarks/reference_diffs.py            # every reference that is installed

References not installed (schedulefree, lion-pytorch, pytorch_optimizer) are left out; SOAP's
(not installable) is the float64 oracle of tests/test_ref_soap.py.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import heavyball_chain as hc  # noqa: E402
from helpers import num_threads  # noqa: E402
from reference import relative_diffs, run  # noqa: E402


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(72, 16, bias=False), torch.nn.Tanh(),
                               torch.nn.Linear(16, 5, bias=False))


def _training(opt):
    """schedulefree's optimizers start in eval mode and refuse a step until train()."""
    opt.train()
    return opt


def cases():
    """(preset, setting, ours(params), reference(params), model or None)."""
    t = torch.optim
    out = []
    for name, kw in [("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
                     ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
                     ("Adam", {}), ("Adam", {"weight_decay": 0.1, "amsgrad": True}),
                     ("AdamW", {}), ("AdamW", {"weight_decay": 0.1, "amsgrad": True}),
                     ("NAdam", {}), ("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
                     ("RAdam", {}), ("RAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
                     ("Adamax", {}), ("Adamax", {"weight_decay": 0.1}),
                     ("RMSprop", {}), ("RMSprop", {"centered": True, "momentum": 0.9, "weight_decay": 0.01}),
                     ("Adagrad", {}), ("Adagrad", {"lr_decay": 0.05, "initial_accumulator_value": 0.1}),
                     ("Adafactor", {}), ("Adafactor", {"weight_decay": 0.1}),
                     ("Muon", {}), ("Muon", {"adjust_lr_fn": "match_rms_adamw", "nesterov": False})]:
        model = mlp if name == "Muon" else None
        out.append((name, kw, lambda p, n=name, k=kw: getattr(hc, n)(p, **k),
                    lambda p, n=name, k=kw: getattr(t, n)(p, **k), model))
    if importlib.util.find_spec("lion_pytorch"):
        from lion_pytorch import Lion
        for kw in ({}, {"lr": 3e-4, "weight_decay": 0.1}):
            out.append(("Lion", kw, lambda p, k=kw: hc.Lion(p, **k), lambda p, k=kw: Lion(p, **k), None))
    if importlib.util.find_spec("schedulefree"):
        from schedulefree import AdamWScheduleFree
        for kw in ({}, {"weight_decay": 0.1, "warmup_steps": 10}):
            out.append(("AdamWScheduleFree", kw, lambda p, k=kw: hc.AdamWScheduleFree(p, **k),
                        lambda p, k=kw: _training(AdamWScheduleFree(p, **k)), None))
    if importlib.util.find_spec("pytorch_optimizer"):
        import pytorch_optimizer as po
        # pytorch_optimizer calls clip_lambda with the optimizer step, one more than the paper's code
        out.append(("ADOPT", {}, lambda p: hc.ADOPT(p),
                    lambda p: po.ADOPT(p, clip_lambda=lambda s: (s - 1) ** 0.25), None))
        for kw in ({}, {"alpha_warmup": 40, "beta3_warmup": 40, "weight_decay": 0.1}):
            # pytorch_optimizer's default alpha is 5 (the official code's 2); one t_alpha_beta3 for both warmups
            ref_kw = {"alpha": 2.0, **{k: v for k, v in kw.items() if not k.endswith("_warmup")}}
            if kw:
                ref_kw.update(t_alpha_beta3=40, weight_decouple=True)
            out.append(("AdEMAMix", kw, lambda p, k=kw: hc.AdEMAMix(p, **k),
                        lambda p, k=ref_kw: po.AdEMAMix(p, **k), None))
        # pytorch_optimizer's MARS puts eps inside (sqrt(v + 1e-15) + eps) / sqrt(1 - b2^t): eps=0
        out.append(("MARS", {"eps": 0}, lambda p: hc.MARS(p, eps=0.0),
                    lambda p: po.MARS(p, eps=0.0, mars_type="adamw"), mlp))
    from test_ref_soap import OracleSOAP, well_posed
    for kw in ({"precondition_frequency": 3}, {"precondition_frequency": 3, "weight_decay": 0.1, "lr": 1e-2}):
        out.append(("SOAP", kw, lambda p, k=kw: hc.SOAP(p, **k),
                    lambda p, k=kw: OracleSOAP(p, **k), well_posed()))
    return out


def main() -> None:
    print(f"{'preset':18s} {'setting':62s} {'1 thread':>9s} {'2 threads':>9s}")
    for name, kw, ours, ref, model in cases():
        diffs = []
        for threads in (1, 2):
            with num_threads(threads):
                torch.manual_seed(0)
                a, _ = run(ours, 50, model() if model else None)
                torch.manual_seed(0)
                b, _ = run(ref, 50, model() if model else None)
            diffs.append(max(relative_diffs(a, b).values()))
        setting = ", ".join(f"{k}={v}" for k, v in kw.items()) or "defaults"
        print(f"{name:18s} {setting:62s} {diffs[0]:9.1e} {diffs[1]:9.1e}")


if __name__ == "__main__":
    main()

"""Shared helpers for the tests against reference implementations (torch.optim, schedulefree,
lion-pytorch, pytorch_optimizer, float64 oracles written in the tests).

The criterion of issue 14: after ``steps`` steps on the same batches, every parameter tensor of
our model is within ``rtol`` of the reference's, relative to that tensor's largest entry:
``max|p - p_ref| <= rtol * max|p_ref|``. Both runs must also have moved the weights well beyond
that difference, so a test cannot pass because nothing happened.
"""

from __future__ import annotations

import io

import torch

from helpers import make_net, train

__all__ = ["RTOL", "assert_matches", "assert_resumes_exactly", "relative_diffs", "run"]

RTOL = 1e-5


def run(make_opt, steps=50, model=None, closure_loss=False, every_step=None):
    """Train a fresh ``helpers.Net`` (or ``model``) with ``make_opt(params)`` on the shared
    batches; return ``(model, opt)``. ``every_step(opt, step)`` runs after each step (lr schedules,
    train/eval switches)."""
    model = make_net() if model is None else model
    opt = make_opt(model.parameters())
    for step in range(steps):
        train(model, opt, 1, start=step)
        if every_step is not None:
            every_step(opt, step)
    return model, opt


def relative_diffs(model, ref_model) -> dict[str, float]:
    """``max|p - p_ref| / max|p_ref|`` for every parameter tensor."""
    ref = dict(ref_model.named_parameters())
    return {n: ((p.detach().double() - ref[n].detach().double()).abs().max()
                / ref[n].detach().double().abs().max().clamp_min(1e-30)).item()
            for n, p in model.named_parameters()}


def assert_matches(make_ours, make_ref, steps=50, rtol=RTOL, model_fn=make_net, every_step=None,
                   min_moved=1e-3) -> float:
    """Run ours and the reference side by side; assert every tensor within ``rtol`` (relative, as
    above) and that the weights moved by more than ``min_moved`` (relative). Returns the largest
    relative difference (so a test can print or record it)."""
    ours, _ = run(make_ours, steps, model_fn(), every_step=every_step)
    ref, _ = run(make_ref, steps, model_fn(), every_step=every_step)
    diffs = relative_diffs(ours, ref)
    worst = max(diffs.values())
    assert worst <= rtol, f"relative differences after {steps} steps: {diffs} (tolerance {rtol})"
    moved = max(relative_diffs(ref, model_fn()).values())
    assert moved > min_moved, f"the reference run barely moved ({moved:.2e}): the comparison says nothing"
    return worst


def assert_resumes_exactly(make_opt, steps=4, model_fn=make_net, make_fresh=None, before=None, save_in_eval=False,
                           train_mode_calls=False):
    """``steps`` steps, a save through ``torch.save``/``torch.load(weights_only=True)``, ``steps``
    more, against a fresh model (another seed) and a fresh optimizer (``make_fresh``, e.g. with
    another lr the checkpoint must override; default ``make_opt``) loaded from the save: the
    same parameters, bit for bit. Schedule-free runs: ``before(opt)`` runs on the first optimizer
    before its first step (hooks), ``save_in_eval`` saves it after ``opt.eval()``, and
    ``train_mode_calls`` wraps each run after the save in ``train()`` ... ``eval()``. Returns
    ``(opt, fresh_opt)``."""
    model, fresh = model_fn(), model_fn(seed=5)
    opt = make_opt(model.parameters())
    if before is not None:
        before(opt)
    train(model, opt, steps)
    if save_in_eval:
        opt.eval()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    fresh.load_state_dict(ckpt["model"])
    fresh_opt = (make_fresh or make_opt)(fresh.parameters())
    fresh_opt.load_state_dict(ckpt["opt"])
    for a, b in ((model, opt), (fresh, fresh_opt)):
        if train_mode_calls:
            b.train()
        train(a, b, steps, start=steps)
        if train_mode_calls:
            b.eval()
    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name
    return opt, fresh_opt

"""The compiled path: a run of elementwise transforms as one ``torch.compile``d kernel per tensor.

An eager step runs each transform as a few ``torch._foreach_*`` calls, and each call reads and
writes whole parameter-sized buffers: an AdamW step makes ~18 passes over memory. A transform
that is elementwise per parameter also states its math on one tensor (``Transform.fused``);
:class:`Fuser` compiles a run of consecutive such transforms into one function of
``(update, param, states, scalars)``, so each byte of gradient, parameter and state is read and
written once (28 bytes per fp32 parameter for AdamW).

What keeps it from recompiling:

* Every number that may change between steps (lr from a scheduler, debiased betas, the
  schedule-free weight) is computed by ``Transform.fuse`` (in Python, or as 0-d tensors when
  ``lr`` is a tensor) and passed in one tensor of the bucket's compute dtype, so dynamo never
  specialises on it. (A Python float is a constant to dynamo unless it
  chooses to trace it symbolically, as torch 2.13 does under ``dynamic=True`` and older releases
  in our supported range do not; a tensor is safe on all of them.)
* Tensors are flattened to 1-D and compiled with dynamic shapes: one graph serves every
  parameter size (torch specialises sizes 0 and 1, so a 1-element tensor adds one graph).
* Each run composition gets its own copy of the kernel's code object. dynamo caches compiled
  graphs per code object, with a limit of 8; separate copies keep many optimizers (or many run
  compositions) in one process from sharing, and exhausting, one cache.

Each compiled call costs ~25-45 us of dynamo and Python overhead, so tensors below ``SMALL``
elements (biases, norms) are concatenated, run as one call and copied back; ``fused`` is
elementwise, so where an element sits does not change its result.

A run ends where a transform has no fused form or declines this step (``fuse`` returns
``None``: ADOPT's first two steps, bf16 parameters in the transforms that write them); those run
eagerly, so a step's results do not depend on where the runs break, up to fp32 rounding.
"""

from __future__ import annotations

import types
from typing import Any, Sequence

import torch

__all__ = ["Fuser", "FusedPart"]

# Tensors below this many elements are concatenated and run as one: a compiled call costs ~45 us
# of Python and guard overhead (about what 90k elements take), the concatenation ~1 ns/element.
SMALL = 1 << 15


class FusedPart:
    """One transform of a run, with the bucket view it sees and this step's scalars."""

    __slots__ = ("transform", "bucket", "scalars")

    def __init__(self, transform, bucket, scalars: Sequence[Any]):
        self.transform = transform
        self.bucket = bucket
        self.scalars = tuple(s if isinstance(s, torch.Tensor) else float(s) for s in scalars)


def _kernel(u, p, states, scalars, parts, returns):
    """The body every compiled kernel runs: each transform's ``fused`` in turn, on one tensor."""
    k = 0
    j = 0
    for transform, n_states, n_scalars in parts:
        u = transform.fused(u, p, states[k:k + n_states], scalars[j:j + n_scalars])
        k += n_states
        j += n_scalars
    if returns:
        return u.clone()  # a new buffer even when u aliases state (LaProp's m): callers may overwrite it
    return None


class Fuser:
    """Compiles and runs fused runs of transforms; one per optimizer (``compile=True``).

    ``run(parts, updates, returns)`` applies the run to every tensor of the bucket and returns
    the new updates (fresh tensors), or ``None`` when ``returns`` is false (the run ends the
    root chain by writing the parameters, and nobody reads its output: skipping it saves a
    write of 4 bytes per parameter).
    """

    def __init__(self, **compile_options: Any):
        # dynamic_threads: without it inductor emits no OpenMP loop for a dynamic-size kernel (1 core)
        self.compile_options = {"fullgraph": True, "dynamic": True, "options": {"cpp.dynamic_threads": True},
                                **compile_options}
        self._kernels: dict[tuple, Any] = {}

    def _compiled(self, key: tuple, returns: bool):
        fn = self._kernels.get((key, returns))
        if fn is None:
            code = _kernel.__code__.replace(co_name=f"fused_{len(self._kernels)}")
            body = types.FunctionType(code, _kernel.__globals__, code.co_name)
            fn = torch.compile(body, **self.compile_options)
            self._kernels[(key, returns)] = fn
        return fn

    def run(self, parts: Sequence[FusedPart], updates: list[torch.Tensor], returns: bool):
        try:
            return self._run(parts, updates, returns)
        except torch._dynamo.exc.TorchDynamoException as exc:
            names = " -> ".join(part.transform.name for part in parts)
            raise RuntimeError(f"compile=True: torch.compile failed on the fused run {names} ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}); pass compile=False to run "
                               f"eagerly") from exc

    def _run(self, parts: Sequence[FusedPart], updates: list[torch.Tensor], returns: bool):
        first = parts[0].bucket
        layout = tuple((part.transform, len(part.transform.fused_state), len(part.scalars)) for part in parts)
        kernel = self._compiled(tuple((id(t), n, m) for t, n, m in layout), returns)
        values = [s for part in parts for s in part.scalars] or [0.0]
        device, dtype = first.params[0].device, first.dtype
        if any(isinstance(v, torch.Tensor) for v in values):  # a tensor lr: no host synchronisation
            scalars = torch.stack([v.to(device, dtype).reshape(()) if isinstance(v, torch.Tensor)
                                   else torch.tensor(v, dtype=dtype, device=device) for v in values])
        else:
            scalars = torch.tensor(values, dtype=dtype, device=device)
        states = [part.bucket.state(name) for part in parts for name in part.transform.fused_state]
        params = first.params
        out: list = [None] * len(updates)

        small = [i for i, u in enumerate(updates) if u.numel() < SMALL]
        if len(small) > 1:  # one call on their concatenation, then copy parameters and state back
            pieces = [u.numel() for u in (updates[i] for i in small)]
            cat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
            u, p = cat([updates[i] for i in small]), cat([params[i] for i in small])
            st = [cat([s[i] for i in small]) for s in states]
            result = kernel(u, p, st, scalars, layout, returns)
            written = [(p, params)] if any(part.transform.writes_params for part in parts) else []
            for flat, targets in written + list(zip(st, states)):
                torch._foreach_copy_([targets[i] for i in small],
                                     [x.view(targets[i].shape) for i, x in zip(small, flat.split(pieces))])
            if returns:
                for i, x in zip(small, result.split(pieces)):
                    out[i] = x.view(updates[i].shape)
        packed = set(small) if len(small) > 1 else set()
        for i, (u, p) in enumerate(zip(updates, params)):
            if i in packed:
                continue
            flat = u.is_contiguous() and p.is_contiguous() and all(s[i].is_contiguous() for s in states)
            view = (lambda t: t.view(-1)) if flat else (lambda t: t)  # noqa: E731
            result = kernel(view(u), view(p), [view(s[i]) for s in states], scalars, layout, returns)
            if returns:
                out[i] = result.view(u.shape) if flat else result
        return out if returns else None

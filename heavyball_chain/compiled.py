"""The compiled path: a run of elementwise transforms as one ``torch.compile``d graph per chunk of tensors.

An eager step runs each transform as a few ``torch._foreach_*`` calls, and each call reads and
writes whole parameter-sized buffers: an AdamW step makes ~18 passes over memory. A transform
that is elementwise per parameter also states its math on one tensor (``Transform.fused``);
:class:`Fuser` compiles a run of consecutive such transforms into one function over lists of
``(update, param, states)`` of ``CHUNK`` tensors and one tensor of scalars, so each byte of
gradient, parameter and state is read and written once (28 bytes per fp32 parameter for AdamW)
and a step makes one compiled call per ``CHUNK`` tensors (inductor emits one kernel call per
graph on CPU; on CUDA its horizontal fusion may combine the chunk's kernels).

What keeps it from recompiling, and from synchronising with the host:

* Every number that may change between steps (lr from a scheduler, debiased betas, the
  schedule-free weight) is computed by ``Transform.fuse`` (in Python, or as 0-d tensors when
  ``lr`` is a tensor) and written in place into one device tensor of the bucket's compute dtype,
  kept across steps: Python numbers travel as kernel arguments of ``_foreach_add_``, tensors by a
  device copy. dynamo never specialises on a value, and a step makes no host-to-device copy.
* Tensors are flattened to 1-D views without a base and compiled with dynamic shapes and no duck
  shaping: one graph serves every chunk of every bucket of that run (the last chunk is padded with
  2-element stand-ins; tensors of 0 or 1 elements, which dynamo specialises, and non-contiguous
  ones run through contiguous copies).
* Each run composition gets its own copy of the graph's code object. dynamo caches compiled
  graphs per code object, with a limit of 8; separate copies keep many optimizers (or many run
  compositions) in one process from sharing, and exhausting, one cache.

``CHUNK`` bounds compilation: one graph of ``CHUNK`` tensors per run composition, whatever the
model's size (7.4-9 s for AdamW's graph on a cold inductor cache here, plus inductor's one-time
set-up of ~10 s on an empty cache; one graph over a 33-tensor bucket took 13 s, and grows with
the model).

A run ends where a transform has no fused form or declines this step (``fuse`` returns
``None``: ADOPT's first two steps, bf16 parameters in the transforms that write them); those run
eagerly, so a step's results do not depend on where the runs break, up to fp32 rounding.
"""

from __future__ import annotations

import contextlib
import types
from typing import TYPE_CHECKING, Any, ContextManager, Sequence

import torch

if TYPE_CHECKING:
    from .core import Bucket, Transform

__all__ = ["Fuser", "FusedPart"]

# Tensors per compiled call. Inductor's compile time grows with the tensors in a graph (~0.45 s
# each on a cold cache here) and the step time falls with fewer calls (each costs ~60-110 us of
# dynamo, guards and waking the OpenMP threads). ForeachAdamW, 33 tensors, 2 cores: at 12M
# parameters a graph of 4 / 8 / 16 tensors compiles in 2.1 / 3.8 / 7.4 s and steps in 7.0 / 6.3 /
# 6.6 ms (torch's fused AdamW 6.2-6.6 ms); at 4.3M a whole step takes 2.45 / 2.28 / 2.0 ms with
# chunks of 8 / 16 / 33 (fused: 1.56 ms). 16 bounds the first step to ~7 s for any model.
CHUNK = 16


class FusedPart:
    """One transform of a run, with the bucket view it sees and this step's scalars."""

    __slots__ = ("transform", "bucket", "scalars")

    def __init__(self, transform: Transform, bucket: Bucket, scalars: Sequence[Any]):
        self.transform = transform
        self.bucket = bucket
        self.scalars = tuple(s if isinstance(s, torch.Tensor) else float(s) for s in scalars)


def _kernel(us: list[torch.Tensor], ps: list[torch.Tensor], states: list[list[torch.Tensor]], scalars: torch.Tensor,
            parts: tuple[tuple[Transform, int, int], ...], returns: bool) -> list[torch.Tensor] | None:
    """The body every compiled graph runs: each transform's ``fused`` in turn, on every tensor of
    a chunk (dynamo unrolls the loop; inductor emits one kernel call for the whole chunk)."""
    outs = []
    for i in range(len(us)):
        u, p = us[i], ps[i]
        k = 0
        j = 0
        for transform, n_states, n_scalars in parts:
            u = transform.fused(u, p, [states[k + a][i] for a in range(n_states)], scalars[j:j + n_scalars])
            k += n_states
            j += n_scalars
        if returns:
            outs.append(u.clone())  # a new buffer even when u aliases state (LaProp's m): callers may overwrite it
    return outs if returns else None


class Fuser:
    """Compiles and runs fused runs of transforms; one per optimizer (``compile=True``).

    ``run(parts, updates, returns)`` applies the run to every tensor of the bucket, ``CHUNK``
    tensors per compiled call, and returns the new updates (fresh tensors), or ``None`` when
    ``returns`` is false (the run ends the root chain by writing the parameters, and nobody reads
    its output: skipping it saves a write of 4 bytes per parameter).
    """

    def __init__(self, chunk: int = CHUNK, **compile_options: Any):
        # dynamic_threads: without it inductor emits no OpenMP loop for a dynamic-size kernel (1 core)
        # size_asserts: inductor re-checks every input's size and stride per call (65 checks a chunk), which
        # dynamo's guards have already checked; off saves ~3% of a 4.3M-parameter step
        self.compile_options = {"fullgraph": True, "dynamic": True,
                                "options": {"cpp.dynamic_threads": True, "size_asserts": False},
                                **compile_options}
        self.chunk = chunk
        self._kernels: dict[tuple, Any] = {}
        self._scalars: dict[tuple, tuple[torch.Tensor, list[torch.Tensor]]] = {}
        self._pads: dict[tuple, list[list[torch.Tensor]]] = {}
        self._flat: dict[tuple, tuple[list, list]] = {}

    def _compiled(self, key: tuple, returns: bool) -> Any:
        fn = self._kernels.get((key, returns))
        if fn is None:
            code = _kernel.__code__.replace(co_name=f"fused_{len(self._kernels)}")
            body = types.FunctionType(code, _kernel.__globals__, code.co_name)
            fn = torch.compile(body, **self.compile_options)
            self._kernels[(key, returns)] = fn
        return fn

    def run(self, parts: Sequence[FusedPart], updates: list[torch.Tensor], returns: bool) -> list[torch.Tensor] | None:
        try:
            with _no_duck_shapes():
                return self._run(parts, updates, returns)
        except torch._dynamo.exc.TorchDynamoException as exc:
            names = " -> ".join(part.transform.name for part in parts)
            raise RuntimeError(f"compile=True: torch.compile failed on the fused run {names} ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}); pass compile=False to run "
                               f"eagerly") from exc

    def _scalar_buffer(self, key: tuple, values: list, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """This step's numbers, written in place into a device tensor kept across steps: Python
        numbers as kernel arguments of two multi-tensor ops, tensors (a tensor lr) by a device copy;
        no host-to-device copy, no synchronisation, the same graph input every step."""
        entry = self._scalars.get((key, device, dtype))
        if entry is None or len(entry[1]) != len(values):
            buffer = torch.zeros(len(values), dtype=dtype, device=device)
            entry = self._scalars[(key, device, dtype)] = (buffer, list(buffer.unbind()))
        buffer, cells = entry
        numbers = [(c, v) for c, v in zip(cells, values) if not isinstance(v, torch.Tensor)]
        tensors = [(c, v) for c, v in zip(cells, values) if isinstance(v, torch.Tensor)]
        if numbers:
            torch._foreach_zero_([c for c, _ in numbers])
            torch._foreach_add_([c for c, _ in numbers], [v for _, v in numbers])
        if tensors:
            torch._foreach_copy_([c for c, _ in tensors], [v.reshape(()) for _, v in tensors])
        return buffer

    def _padding(self, like: list[torch.Tensor], count: int) -> list[list[torch.Tensor]]:
        """``count`` distinct 2-element stand-ins for each role (update, parameter, each state),
        filling a chunk's empty places so every chunk has the same graph."""
        key = tuple((t.dtype, t.device) for t in like)
        pads = self._pads.setdefault(key, [])
        while len(pads) < count:
            pads.append([torch.zeros(2, dtype=t.dtype, device=t.device) for t in like])
        return pads[:count]

    def _held(self, key: tuple, params: list, states: list) -> list:
        """Flat views of the parameters and states (``None`` where one is not contiguous), kept
        from the last step while they are the same tensors (a checkpoint load replaces states)."""
        sources = [params, *states]
        entry = self._flat.get(key)
        if entry is not None and len(entry[0][0]) == len(params) and all(
                a is b for old, new in zip(entry[0], sources) for a, b in zip(old, new)):
            return entry[1]
        held = []
        for i, p in enumerate(params):
            row = [p, *(s[i] for s in states)]
            held.append([t.view(-1).detach() for t in row] if all(t.is_contiguous() for t in row) else None)
        self._flat[key] = ([list(s) for s in sources], held)
        return held

    def _run(self, parts: Sequence[FusedPart], updates: list[torch.Tensor], returns: bool) -> list[torch.Tensor] | None:
        first = parts[0].bucket
        names = [part.transform.fused_state(part.bucket) for part in parts]
        layout = tuple((part.transform, len(n), len(part.scalars)) for part, n in zip(parts, names))
        key = tuple((id(t), n, m) for t, n, m in layout)
        values = [s for part in parts for s in part.scalars] or [0.0]
        scalars = self._scalar_buffer(key, values, first.params[0].device, first.dtype)
        states = [part.bucket.state(name) for part, n in zip(parts, names) for name in n]
        writes_params = any(part.transform.writes_params for part in parts)
        # one row per tensor: (update, parameter, *states), each flat (no view base: dynamo guards
        # a view's base, whose shape differs between parameters); non-contiguous tensors and
        # tensors of fewer than 2 elements (dynamo specialises sizes 0 and 1) go through copies
        held = self._held(key + (id(first.params[0]),), first.params, states)
        rows, staged = [], []
        for i, u in enumerate(updates):
            fixed = held[i]
            if fixed is not None and u.numel() >= 2 and u.is_contiguous():
                rows.append([u.view(-1).detach(), *fixed])
            else:
                row = [u, first.params[i], *(s[i] for s in states)]
                staged.append((i, row))
                rows.append([_flat_copy(t) for t in row])
        n = len(rows)
        size = min(self.chunk, n)
        kernel = self._compiled(key + (size,), returns)
        out: list = []
        for start in range(0, n, size):
            chunk = rows[start:start + size]
            if len(chunk) < size:
                chunk = chunk + self._padding(chunk[0], size - len(chunk))
            columns = list(zip(*chunk))
            result = kernel(list(columns[0]), list(columns[1]), [list(c) for c in columns[2:]], scalars, layout,
                            returns)
            if returns:
                out.extend(result[:min(size, n - start)])
        for i, row in staged:  # copy what the kernel wrote back into the real tensors
            targets = ([1] if writes_params else []) + list(range(2, len(row)))
            for r in targets:
                row[r].copy_(rows[i][r][:row[r].numel()].view(row[r].shape))
        if not returns:
            return None
        return [x.view(u.shape) if x.numel() == u.numel() else x[:u.numel()].view(u.shape)
                for x, u in zip(out, updates)]


def _flat_copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous 1-D copy of ``t`` with at least 2 elements (zeros after its own)."""
    flat = t.reshape(-1).clone()
    if flat.numel() < 2:
        flat = torch.cat([flat, flat.new_zeros(2 - flat.numel())])
    return flat


def _no_duck_shapes() -> ContextManager[Any]:
    """Tensors of one chunk that happen to have equal sizes must not share a size symbol (dynamo's
    duck shaping): the graph would then guard on the equality and recompile for the next chunk."""
    config = getattr(torch.fx.experimental, "_config", None)
    if config is None or not hasattr(config, "use_duck_shape"):
        return contextlib.nullcontext()
    return config.patch(use_duck_shape=False)

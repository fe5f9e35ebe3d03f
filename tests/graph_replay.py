"""A CPU stand-in for CUDA-graph capture and replay, to test capturable steps without a GPU.

``torch.cuda.graph`` records the kernels a step launches with their arguments frozen: tensors by
address, numbers by value; ``replay()`` launches them again on the same memory, and no Python
runs. Here :func:`capture` records every aten op of one call (a ``TorchDispatchMode``) with its
arguments, and :meth:`Graph.replay` runs the recorded ops again in order: on the same tensors
where they existed before the capture (parameters, gradients, state, a tensor lr: their current
values, as a replay reads them) and on the replayed results of earlier ops where the capture
made them (temporaries). Numbers a step computes on the host, branches it takes and state it
replaces by new tensors are frozen as they were at the capture, as on CUDA, so a step that is
not capturable replays the captured step's numbers and departs from an eager run.

The op is not run under CUDA's restrictions: reading a tensor on the host (``.item()``) is
checked by tests/test_host_sync.py, not here. Ops inside a ``torch.compile``d kernel are not
aten ops, so only eager steps can be replayed.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))  # holds every tensor: ids stay unique
        return out


class Graph:
    """The ops of one captured call; :meth:`replay` runs them again."""

    def __init__(self, ops: list):
        self.ops = ops
        self._made: dict[int, tuple[int, int]] = {}  # id of a tensor the capture made -> (op, output)
        external: set[int] = set()
        for i, (_, args, kwargs, out) in enumerate(ops):
            for t in tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor) and id(t) not in self._made:
                    external.add(id(t))
            for j, t in enumerate(tree_leaves(out)):
                if isinstance(t, torch.Tensor) and id(t) not in external:
                    self._made.setdefault(id(t), (i, j))

    @property
    def op_names(self) -> list[str]:
        return [str(f) for f, *_ in self.ops]

    def replay(self) -> None:
        results: list[list] = []

        def current(x):
            if isinstance(x, torch.Tensor) and id(x) in self._made:
                i, j = self._made[id(x)]
                return results[i][j]
            return x

        with torch.no_grad():
            for func, args, kwargs, _ in self.ops:
                out = func(*tree_map(current, args), **tree_map(current, kwargs))
                results.append(tree_leaves(out))


def capture(fn) -> Graph:
    """Run ``fn()`` once, recording its ops (the captured call takes effect, as one step)."""
    recorder = _Recorder()
    with torch.no_grad(), recorder:
        fn()
    return Graph(recorder.ops)

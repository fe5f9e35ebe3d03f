"""The transform contract: hyperparameters, schedules, buckets, ``chain`` and ``named_chain``.

A :class:`Transform` turns a list of update tensors into another list of update tensors for one
*bucket*: the parameters of one param group that share device, dtype and step count, so every
inner loop is one ``torch._foreach_*`` call. It declares the hyperparameters it reads (they live
in ``optimizer.param_groups``) and keeps per-parameter state in ``optimizer.state[p]`` under
keys prefixed with its place in the chain.

Contract of ``update(updates, bucket)``:

* ``updates`` are fp32 tensors, one per parameter of the bucket. They may be the user's gradients
  or another transform's state, so a transform never modifies them in place: it returns new
  tensors (or the same list unchanged). A transform may return its own state tensors; whoever
  receives them reads them only.
* Returning ``None`` means "no parameter update this step": the rest of the chain is skipped
  (ADOPT's first two steps, gradient accumulation, a skipped non-finite step). A list with
  ``None`` in some places skips the rest of the chain for those parameters only (one branch of
  a ``partition`` initialising). Transforms never receive ``None`` entries.
* Only transforms whose job it is (``*_apply``, ``schedule_free``) write the parameters.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch

from .compiled import FusedPart

try:  # FSDP2 parameters are DTensors; transforms see their local shards
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - torch built without distributed
    DTensor = ()  # type: ignore[assignment,misc]

__all__ = [
    "Fresh",
    "Hyper",
    "Schedule",
    "Bucket",
    "Transform",
    "Chain",
    "chain",
    "named_chain",
    "resolve",
    "schedule_hyperparams",
]


# --------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter a transform reads from its param group: a default and a validity check.

    ``check(value)`` returns ``None`` when the value is valid and otherwise a short description of
    what was expected (it is only applied to numbers; schedules are checked when evaluated).
    """

    default: Any
    check: Callable[[Any], str | None] | None = None

    def validate(self, name: str, value: Any) -> None:
        if self.check is None or _has_schedule(value):
            return
        expected = self.check(value)
        if expected is not None:
            raise ValueError(f"{name}: expected {expected}, got {value!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def non_negative(v: Any) -> str | None:
    return None if _is_number(v) and v >= 0 else "a finite number >= 0"


def positive(v: Any) -> str | None:
    return None if _is_number(v) and v > 0 else "a finite number > 0"


def non_negative_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "an integer >= 0"


def positive_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else "an integer >= 1"


def unit_interval(v: Any) -> str | None:
    return None if _is_number(v) and 0 <= v < 1 else "a number in [0, 1)"


def betas_pair(v: Any) -> str | None:
    expected = "a pair (beta1, beta2) of numbers in [0, 1)"
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        return expected
    ok = all(isinstance(b, Schedule) or callable(b) or unit_interval(b) is None for b in v)
    return None if ok else expected


# --------------------------------------------------------------------------- schedules


class Schedule:
    """A hyperparameter value that is a function of the step (``t`` counts from 1).

    Any callable ``f(t)`` is accepted wherever a number is; subclass ``Schedule`` when the value
    also depends on other hyperparameters of the group, and declare those in ``hyperparams`` so
    they appear in ``param_groups`` (e.g. :func:`palm_beta2` reads ``beta2_scale``).
    """

    hyperparams: dict[str, Hyper] = {}

    def at(self, step: int, group: dict) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, step: int) -> Any:
        return self.at(step, {k: h.default for k, h in self.hyperparams.items()})


def _has_schedule(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_has_schedule(v) for v in value)
    return isinstance(value, Schedule) or callable(value)


def resolve(value: Any, step: int, group: dict) -> Any:
    """Evaluate ``value`` at ``step``: numbers pass through, schedules are called, tuples recurse."""
    if isinstance(value, Schedule):
        return value.at(step, group)
    if isinstance(value, (tuple, list)):
        return type(value)(resolve(v, step, group) for v in value)
    if callable(value):
        return value(step)
    return value


def schedule_hyperparams(value: Any) -> dict[str, Hyper]:
    """The hyperparameters declared by the schedules inside ``value`` (a number, schedule or tuple)."""
    if isinstance(value, (tuple, list)):
        out: dict[str, Hyper] = {}
        for v in value:
            _merge_into(out, schedule_hyperparams(v), "a schedule")
        return out
    if isinstance(value, Schedule):
        return dict(value.hyperparams)
    return {}


def _merge_into(into: dict[str, Hyper], new: dict[str, Hyper], who: str) -> None:
    for name, hyper in new.items():
        old = into.get(name)
        if old is not None and not _same_default(old.default, hyper.default):
            raise ValueError(
                f"hyperparameter {name!r} is declared with default {old.default!r} and, by {who}, "
                f"with default {hyper.default!r}; give both transforms the same default"
            )
        into.setdefault(name, hyper)


def _same_default(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_default(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # e.g. tensors: only the same object is the same default
        return a is b


# --------------------------------------------------------------------------- buckets


@dataclass
class Bucket:
    """The parameters of one param group that share device, dtype and step, seen by one transform.

    ``states[i]`` is ``optimizer.state[params[i]]``; a transform reaches its own entries through
    :meth:`state` / :meth:`init_state`, which prefix field names with the transform's place in the
    chain (``prefix``), so two transforms never collide.

    Sharded parameters (FSDP2 DTensors): ``params`` and ``grads`` are the local shards and
    ``sharded`` the DTensors. State tensors shaped like the shard are stored as DTensors with the
    parameter's placement (so ``torch.distributed.checkpoint`` can reshard them) and handed to
    transforms as local tensors: elementwise transforms need not know about sharding.
    """

    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    states: list[dict]
    group: dict
    step: int
    prefix: str = ""
    extra: dict = field(default_factory=dict)  # per-step scratch shared along the chain
    sharded: list[torch.Tensor] | None = None
    names: list[str | None] | None = None  # from ``param_names`` (optimizers built from named_parameters)
    positions: list[int] | None = None  # each parameter's position in the optimizer (over all groups)
    fuser: Any = None  # a compiled.Fuser when the optimizer runs compiled (``compile=True``)

    def child(self, name: str) -> "Bucket":
        return dataclasses.replace(self, prefix=f"{self.prefix}{name}/")

    def subset(self, indices: Sequence[int]) -> "Bucket":
        """The same bucket restricted to ``params[i] for i in indices`` (wrappers such as ``masked``)."""
        pick = lambda xs: None if xs is None else [xs[i] for i in indices]  # noqa: E731
        return dataclasses.replace(self, params=pick(self.params), grads=pick(self.grads), states=pick(self.states),
                                   sharded=pick(self.sharded), names=pick(self.names),
                                   positions=pick(self.positions))

    def key(self, name: str) -> str:
        return self.prefix + name

    def hp(self, name: str, step: int | None = None) -> Any:
        """The value of hyperparameter ``name`` for this group, schedules evaluated at ``step``."""
        return resolve(self.group[name], self.step if step is None else step, self.group)

    def state(self, name: str) -> list[torch.Tensor]:
        key = self.prefix + name
        return [local(s[key]) for s in self.states]

    def set_state(self, name: str, values: Sequence[Any]) -> None:
        key = self.prefix + name
        for i, (s, v) in enumerate(zip(self.states, values)):
            s[key] = self._wrap(i, v)

    def init_state(self, name: str, make: Callable[[torch.Tensor], Any]) -> None:
        """Create ``name`` for every parameter that does not have it yet: ``make(param)``."""
        key = self.prefix + name
        for i, (p, s) in enumerate(zip(self.params, self.states)):
            if key not in s:
                s[key] = self._wrap(i, make(p))

    def _wrap(self, i: int, value: Any) -> Any:
        """A shard-shaped state tensor of a sharded parameter becomes a DTensor like the parameter."""
        if self.sharded is None or not isinstance(value, torch.Tensor) or isinstance(value, DTensor):
            return value
        if value.shape != self.params[i].shape:
            return value
        p = self.sharded[i]
        return DTensor.from_local(value, p.device_mesh, p.placements, shape=p.shape, stride=p.stride(),
                                  run_check=False)

    def norms(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-tensor 2-norms (0-d tensors). For sharded parameters ``tensors`` are local shards
        and the norms are of the whole tensors: squared local norms are summed over the mesh."""
        norms = torch._foreach_norm(tensors)
        if self.sharded is None or not norms:
            return norms
        squares = torch.stack(norms).square()
        torch.distributed.all_reduce(squares, group=self.sharded[0].device_mesh.get_group())
        return list(squares.sqrt().unbind())

    def params_fp32(self) -> list[torch.Tensor]:
        """The parameters as fp32 tensors (the parameters themselves when they are fp32)."""
        return [p if p.dtype == torch.float32 else p.float() for p in self.params]


def local(t: Any) -> Any:
    """The local shard of a DTensor; anything else unchanged."""
    return t.to_local() if isinstance(t, DTensor) else t


def zeros_fp32(p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)


# --------------------------------------------------------------------------- transforms


class Fresh(list):
    """Updates nobody else references: temporaries the returning transform just allocated.

    A transform that receives a ``Fresh`` list may overwrite its tensors in place (and return it)
    instead of allocating new ones; a plain list may hold the user's gradients or another
    transform's state and is never modified. On CPU each avoided full-size temporary saves its
    page faults, which cost as much as the arithmetic of an Adam step (docs/performance.md).
    """


class Transform:
    """Base class of every transform. Subclasses set ``hyperparams`` and override what they need.

    * ``hyperparams``: names read from the param group, with defaults and checks.
    * ``init(bucket)``: create per-parameter state (called once, before a parameter's first update).
    * ``update(updates, bucket)``: return the new updates, or ``None`` to skip the rest of the chain.
    * ``state_bytes(p, group)``: bytes of state this transform keeps for parameter ``p`` in ``group``.
    * ``writes_params``: True for the transforms that write parameters.

    Elementwise transforms also state their math on one tensor, for the compiled path
    (:mod:`heavyball_chain.compiled`), where a run of them becomes one kernel:

    * ``fused_state``: names of the parameter-shaped fp32 state tensors ``fused`` reads and writes.
    * ``fuse(bucket)``: this step's numbers for ``fused`` (a tuple of floats, always the same
      length), or ``None`` to run this step eagerly. It is called once per fused step, before
      ``fused``, and does the step's non-tensor bookkeeping (as ``update`` would).
    * ``fused(u, p, state, s)``: the new update for one tensor ``u`` (fp32) of parameter ``p``
      (its own dtype), with ``state`` the tensors named by ``fused_state`` (update them in place)
      and ``s`` the numbers from ``fuse`` as 0-d fp32 tensors. Never modify ``u``. It must agree
      with ``update`` up to fp32 rounding (tests/test_compiled.py checks every preset).
    """

    name: str = "transform"
    hyperparams: dict[str, Hyper] = {}
    writes_params: bool = False
    fused_state: tuple[str, ...] = ()

    def fuse(self, bucket: Bucket) -> tuple[float, ...] | None:
        return None

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def declared(self) -> dict[str, Hyper]:
        """Own hyperparameters plus those of schedules used as defaults."""
        out = dict(self.hyperparams)
        for h in self.hyperparams.values():
            _merge_into(out, schedule_hyperparams(h.default), self.name)
        return out

    def init(self, bucket: Bucket) -> None:
        pass

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> list[torch.Tensor] | None:
        raise NotImplementedError

    def state_bytes(self, p: torch.Tensor, group: dict) -> int:
        return 0

    def children(self) -> list[tuple[str, "Transform"]]:
        return []

    def walk(self, bucket: Bucket) -> Iterable[tuple["Transform", Bucket]]:
        """This transform and every transform inside it, each with the bucket it sees.

        Wrappers that give an inner transform a different view (a subset of the parameters, a
        prefix) override this so that whole-optimizer operations (``train()``/``eval()``,
        swapping in averaged weights) reach the inner transform with the right state keys.
        """
        yield self, bucket

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(self.hyperparams)})"


class Chain(Transform):
    """Transforms applied in order; each child's state lives under its name (position or given)."""

    name = "chain"

    def __init__(self, named: Iterable[tuple[str, Transform]]):
        self._children = list(named)
        names = [n for n, _ in self._children]
        if len(set(names)) != len(names):
            raise ValueError(f"named_chain: names must be unique, got {names}")
        for n, t in self._children:
            if not isinstance(t, Transform):
                raise TypeError(f"chain: expected Transform instances, got {type(t).__name__} for {n!r}")
            if "/" in n:
                raise ValueError(f"named_chain: a name may not contain '/', got {n!r}")
        declared: dict[str, Hyper] = {}
        for n, t in self._children:
            _merge_into(declared, t.declared(), f"{t.name} ({n!r})")
        self.hyperparams = declared
        self.writes_params = any(t.writes_params for _, t in self._children)

    def declared(self) -> dict[str, Hyper]:
        return dict(self.hyperparams)

    def children(self) -> list[tuple[str, Transform]]:
        return list(self._children)

    def init(self, bucket: Bucket) -> None:
        for n, t in self._children:
            t.init(bucket.child(n))

    # A transform counts the updates that reached it: when a child returns None (no update this
    # step) for some or all parameters, the children after it do not run for those parameters,
    # and from then on see ``bucket.step`` minus the number of steps skipped before them
    # (``<name>/#skipped`` in each parameter's state). So warmup and bias correction after ADOPT's
    # or SOAP's initialising steps, or inside gradient accumulation, count real updates (as optax
    # does). Parameters of one bucket that skipped different numbers of steps (one branch of a
    # ``partition`` initialising) run as separate sub-buckets, each at its own step.
    _SKIPPED = "#skipped"

    def _by_lag(self, bucket: Bucket, name: str) -> list[tuple[list[int] | None, Bucket]]:
        """The child's view of the bucket: ``[(None, bucket)]`` when every parameter has the same
        lag, else one ``(indices, sub-bucket)`` per lag."""
        child = bucket.child(name)
        key = child.key(self._SKIPPED)
        lags = [s.get(key, 0) for s in bucket.states]
        if len(set(lags)) <= 1:
            lag = lags[0] if lags else 0
            return [(None, dataclasses.replace(child, step=child.step - lag) if lag else child)]
        out = []
        for lag in sorted(set(lags)):
            idx = [i for i, x in enumerate(lags) if x == lag]
            sub = child.subset(idx)
            out.append((idx, dataclasses.replace(sub, step=sub.step - lag)))
        return out

    def walk(self, bucket):
        yield self, bucket
        for n, t in self._children:
            for _, view in self._by_lag(bucket, n):
                yield from t.walk(view)

    def _run(self, t: Transform, name: str, updates: list, bucket: Bucket) -> list | None:
        views = self._by_lag(bucket, name)
        if views[0][0] is None:
            return t.update(updates, views[0][1])
        out: list = [None] * len(updates)
        for idx, view in views:
            result = t.update([updates[i] for i in idx], view)
            if result is not None:
                for i, u in zip(idx, result):
                    out[i] = u
        return out

    def _fusable(self, start: int, bucket: Bucket) -> list:
        """The longest run of children from ``start`` that can be fused this step (compiled path)."""
        run = []
        for n, t in self._children[start:]:
            if type(t).fused is Transform.fused:
                break
            views = self._by_lag(bucket, n)
            if views[0][0] is not None:  # parameters at different steps: eager sub-buckets
                break
            scalars = t.fuse(views[0][1])
            if scalars is None:
                break
            run.append(FusedPart(t, views[0][1], scalars))
        return run

    def update(self, updates, bucket):
        live = list(range(len(updates)))  # positions in the original bucket still being updated
        view = bucket
        i = 0
        while i < len(self._children):
            run = self._fusable(i, view) if view.fuser is not None else []
            if run:
                i += len(run)
                # the root chain's output is unused once its last transform has written the parameters
                tail = i == len(self._children) and not bucket.prefix and run[-1].transform.writes_params
                result = view.fuser.run(run, updates, returns=not tail)
                updates = updates if tail else Fresh(result)
                continue
            n, t = self._children[i]
            i += 1
            result = self._run(t, n, updates, view)
            done = range(len(updates)) if result is None else [j for j, u in enumerate(result) if u is None]
            if done:
                for later, _ in self._children[i:]:
                    key = bucket.child(later).key(self._SKIPPED)
                    for j in done:
                        s = view.states[j]
                        s[key] = s.get(key, 0) + 1
            if result is None or len(done) == len(updates):
                return None
            if done:
                keep = [j for j, u in enumerate(result) if u is not None]
                live = [live[j] for j in keep]
                view = view.subset(keep)
                result = [result[j] for j in keep]
            updates = result
        if len(live) == len(bucket.params):
            return updates
        out: list = [None] * len(bucket.params)
        for j, u in zip(live, updates):
            out[j] = u
        return out

    def state_bytes(self, p: torch.Tensor, group: dict) -> int:
        return sum(t.state_bytes(p, group) for _, t in self._children)

    def __repr__(self) -> str:
        if not self._children:
            return "chain()"
        lines = [f"  {n}: {t!r}".replace("\n", "\n  ") for n, t in self._children]
        return "chain(\n" + "\n".join(lines) + "\n)"


def chain(*transforms: Transform) -> Chain:
    """Compose transforms left to right: ``chain(a, b)(g) = b(a(g))``.

    ``chain()`` is the identity. Unnamed nested chains are flattened, so
    ``chain(a, chain(b, c))`` and ``chain(chain(a, b), c)`` are the same chain, state keys included.
    """
    flat: list[Transform] = []
    for t in transforms:
        if type(t) is _PositionalChain:
            flat.extend(c for _, c in t.children())
        else:
            flat.append(t)
    return _PositionalChain((str(i), t) for i, t in enumerate(flat))


class _PositionalChain(Chain):
    """A chain built by :func:`chain`: children are keyed by position."""


def named_chain(*named: tuple[str, Transform]) -> Chain:
    """Like :func:`chain`, with each transform's state stored under the given name."""
    return Chain(named)

"""The transform contract: hyperparameters, schedules, buckets, ``chain`` and ``named_chain``.

A :class:`Transform` turns a list of update tensors into another list of update tensors for one
*bucket*: the parameters of one param group that share device, dtype and step count, so every
inner loop is one ``torch._foreach_*`` call. It declares the hyperparameters it reads (they live
in ``optimizer.param_groups``) and keeps per-parameter state in ``optimizer.state[p]`` under
keys prefixed with its place in the chain.

Contract of ``update(updates, bucket)``:

* ``updates`` are tensors in the bucket's compute dtype (fp32, or fp64 for fp64 parameters), one
  per parameter of the bucket. They may be the user's gradients
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

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, Union

import torch

from .compiled import FusedPart

try:  # FSDP2 parameters are DTensors; transforms see their local shards
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - torch built without distributed
    DTensor = ()  # type: ignore[assignment,misc]

__all__ = [
    "AllOf",
    "Count",
    "Flag",
    "LR",
    "Scalar",
    "Elements",
    "Fresh",
    "Borrowed",
    "write_target",
    "Hyper",
    "Slot",
    "Schedule",
    "Bucket",
    "Transform",
    "Chain",
    "chain",
    "named_chain",
    "compute_dtype",
    "copy_state",
    "as_tuple",
    "has_schedule",
    "merge_hyperparams",
    "resolve",
    "run_at_steps",
    "schedule_hyperparams",
    "transforms_in",
    "zeros_state",
]


# --------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter a transform reads from its param group: a default and a validity check.

    ``check(value)`` returns ``None`` when the value is valid and otherwise a short description of
    what was expected. A schedule is checked when it is evaluated (:meth:`validate_evaluated`);
    inside a tuple checked by :class:`Elements`, the elements that are numbers are checked at once.
    ``tensor=True`` also admits a one-element floating-point tensor (``lr``, as torch.optim does:
    compiled and CUDA-graph training change it in place); its value is checked where reading it
    costs no device synchronisation (on the CPU, or outside a step). ``fixed=True`` refuses a
    schedule, for a value that decides the state built at a parameter's first step (its shapes,
    SOAP's ``max_precond_dim``, or its initial value, Adagrad's ``initial_accumulator_value``), so
    it cannot change, or that chooses between formulas (Muon's ``adjust_lr_fn``).
    """

    default: Any
    check: Callable[[Any], str | None] | None = None
    tensor: bool = False
    fixed: bool = False

    def validate(self, name: str, value: Any, in_step: bool = False) -> None:
        """Raise ``ValueError`` (naming ``name``) unless ``value`` is valid."""
        if self.fixed and has_schedule(value):
            raise ValueError(f"{name}: expected a fixed value, got the schedule {value!r}; {name} decides the "
                             f"state built at a parameter's first step or chooses between formulas, so it "
                             f"cannot change")
        if self.check is None:
            return
        if isinstance(value, torch.Tensor):
            value = self._tensor_value(name, value, in_step)
            if value is None:
                return
        if isinstance(self.check, Elements) and isinstance(value, (tuple, list)):
            self.check.validate(name, value)
        elif not has_schedule(value):
            expected = self.check(value)
            if expected is not None:
                raise ValueError(f"{name}: expected {expected}, got {value!r}")

    def validate_evaluated(self, name: str, value: Any, step: int) -> None:
        """Check the value a schedule gave at ``step``."""
        if self.check is None:
            return
        expected = self.check(value)
        if expected is not None:
            raise ValueError(f"{name}: the schedule gave {value!r} at step {step}; expected {expected}")

    def _tensor_value(self, name: str, value: torch.Tensor, in_step: bool) -> Any:
        if not self.tensor:
            raise ValueError(f"{name}: expected a Python number or a schedule, got a tensor"
                             f"{'' if name != 'betas' else ' (tensor betas are not supported)'}")
        if value.numel() != 1 or not value.dtype.is_floating_point or value.requires_grad:
            raise ValueError(f"{name}: a tensor {name} must be a one-element floating-point tensor without grad, "
                             f"got shape {tuple(value.shape)}, {value.dtype}")
        if in_step and value.device.type not in HOST_DEVICES:
            return None  # reading a device tensor would synchronise every step; checked at construction
        return value.item()


# Devices whose tensors a step may read as Python numbers: reading a CPU tensor synchronises with
# nothing, reading a CUDA tensor waits for the device. tests/test_host_sync.py empties it to run a
# CPU step as it runs on CUDA and check that nothing else reads a tensor's value.
HOST_DEVICES = frozenset({"cpu"})


class Elements:
    """A check for a fixed-length tuple whose elements have checks of their own (``betas``).

    An element that is a schedule is checked when evaluated, the others at once, so
    ``betas=(1.5, palm_beta2())`` is refused at construction.
    """

    def __init__(self, what: str, *checks: Callable[[Any], str | None]):
        self.what, self.checks = what, checks

    def __call__(self, value: Any) -> str | None:
        if not isinstance(value, (tuple, list)) or len(value) != len(self.checks):
            return self.what
        for i, (check, v) in enumerate(zip(self.checks, value)):
            expected = None if has_schedule(v) else check(v)
            if expected is not None:
                return f"{self.what}, element {i} {expected}"
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Elements) and (self.what, self.checks) == (other.what, other.checks)

    def __hash__(self) -> int:
        return hash((self.what, self.checks))

    def validate(self, name: str, value: Sequence) -> None:
        if len(value) != len(self.checks):
            raise ValueError(f"{name}: expected {self.what}, got {value!r}")
        for i, (check, v) in enumerate(zip(self.checks, value)):
            expected = None if has_schedule(v) else check(v)
            if expected is not None:
                raise ValueError(f"{name}[{i}]: expected {expected}, got {v!r} (in {name}={value!r})")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def finite(v: Any) -> str | None:
    return None if _is_number(v) else "a finite number"


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


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "True or False"


def as_tuple(value: Any) -> Any:
    """A list given for a tuple-valued hyperparameter (``betas``, ``eps``: configs loaded from JSON
    or YAML hold lists) as a tuple; anything else unchanged."""
    return tuple(value) if isinstance(value, list) else value


betas_pair = Elements("a pair (beta1, beta2) of numbers in [0, 1)", unit_interval, unit_interval)


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


# What a hyperparameter argument accepts, for annotations: a value, or a schedule ``f(t)`` of the
# step giving one (every hyperparameter not declared ``fixed``); ``lr`` may also be a tensor.
Scalar = Union[float, Callable[[int], float]]
Count = Union[int, Callable[[int], int]]
Flag = Union[bool, Callable[[int], bool]]
LR = Union[float, torch.Tensor, Callable[[int], float]]


def has_schedule(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(has_schedule(v) for v in value)
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
            merge_hyperparams(out, schedule_hyperparams(v), "a schedule")
        return out
    if isinstance(value, Schedule):
        return dict(value.hyperparams)
    return {}


def merge_hyperparams(into: dict[str, Hyper], new: dict[str, Hyper], who: str) -> None:
    for name, hyper in new.items():
        old = into.get(name)
        if old is not None and not _same_default(old.default, hyper.default):
            raise ValueError(
                f"hyperparameter {name!r} is declared with default {old.default!r} and, by {who}, "
                f"with default {hyper.default!r}; give both transforms the same default"
            )
        into[name] = hyper if old is None else _both(old, hyper)


def _both(a: Hyper, b: Hyper) -> Hyper:
    """One declaration for a hyperparameter two transforms read: a value must pass both checks, a
    tensor is admitted only if both admit it, and it is fixed if either needs it fixed."""
    if a == b:
        return a
    check = b.check if a.check is None else a.check if b.check is None else _all_checks(a.check, b.check)
    return Hyper(a.default, check, a.tensor and b.tensor, a.fixed or b.fixed)


def _all_checks(a: Callable[[Any], str | None], b: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    if a == b:
        return a
    if isinstance(a, Elements) and isinstance(b, Elements) and len(a.checks) == len(b.checks):
        what = a.what if a.what == b.what else f"a tuple of {len(a.checks)} numbers"
        return Elements(what, *(_all_checks(x, y) for x, y in zip(a.checks, b.checks)))
    return AllOf(a, b)


class AllOf:
    """A check passed by the values that pass every one of ``checks``; it reports the first failure."""

    def __init__(self, *checks: Callable[[Any], str | None]):
        self.checks = checks

    def __call__(self, value: Any) -> str | None:
        for check in self.checks:
            expected = check(value)
            if expected is not None:
                return expected
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AllOf) and self.checks == other.checks

    def __hash__(self) -> int:
        return hash(self.checks)


def _same_default(a: Any, b: Any) -> bool:
    if a is b:  # also the same NaN
        return True
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_default(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # e.g. tensors: only the same object is the same default
        return a is b


# --------------------------------------------------------------------------- buckets


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype updates and state are computed in for parameters of ``dtype``: float64 for
    float64 parameters (complex128 ones are seen as their float64 real view), float32 for the
    rest (bf16 and fp16 parameters are updated in fp32 and rounded back)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass
class Bucket:
    """The parameters of one param group that share device, dtype and step, seen by one transform.

    ``states[i]`` is ``optimizer.state[params[i]]``; a transform reaches its own entries through
    :meth:`state` / :meth:`init_state`, which prefix field names with the transform's place in the
    chain (``prefix``), so two transforms never collide.

    Complex parameters are seen as their real view (``torch.view_as_real``: real and imaginary
    parts as a trailing dimension of 2), as torch.optim does; ``dtype`` is the compute dtype
    (:func:`compute_dtype`): updates and state tensors are in it.

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
    sharded: list[torch.Tensor] | None = None
    names: list[str | None] | None = None  # from ``param_names`` (optimizers built from named_parameters)
    positions: list[int] | None = None  # each parameter's position in the optimizer (over all groups)
    fuser: Any = None  # a compiled.Fuser when the optimizer runs compiled (``compile=True``)
    hypers: dict[str, Hyper] | None = None  # the optimizer's declarations: evaluated schedules are checked
    capturable: bool = False  # the optimizer was built with ``capturable=True`` (CUDA-graph capture)
    clock: torch.Tensor | None = None  # capturable: the optimizer's step as a 0-d float64 device tensor...
    clock_step: int = 0  # ...which equals ``step`` when the view sees no lag (:attr:`t`)

    @property
    def t(self) -> Any:
        """The step to compute numbers with: ``step`` (an int), or in a capturable optimizer the
        device tensor that counts the same steps (minus this view's lag), so that a replayed CUDA
        graph computes this step's numbers rather than the captured ones. Decisions (``if``) use
        ``step``; arithmetic uses ``t``."""
        if self.clock is None:
            return self.step
        lag = self.clock_step - self.step
        return self.clock if lag == 0 else self.clock - lag

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of this bucket's updates and state."""
        return compute_dtype(self.params[0].dtype) if self.params else torch.float32

    def replace(self, **changes: Any) -> "Bucket":
        """A copy with ``changes`` (``dataclasses.replace`` without its per-call cost: views are
        made several times per transform per step)."""
        new = object.__new__(Bucket)
        new.__dict__.update(self.__dict__, **changes)
        return new

    def child(self, name: str) -> "Bucket":
        return self.replace(prefix=f"{self.prefix}{name}/")

    def subset(self, indices: Sequence[int]) -> "Bucket":
        """The same bucket restricted to ``params[i] for i in indices`` (wrappers such as ``masked``)."""
        pick = lambda xs: None if xs is None else [xs[i] for i in indices]  # noqa: E731
        return self.replace(params=pick(self.params), grads=pick(self.grads), states=pick(self.states),
                                   sharded=pick(self.sharded), names=pick(self.names),
                                   positions=pick(self.positions))

    def at_steps(self, steps: Sequence[int]) -> list[tuple[list[int] | None, "Bucket"]]:
        """The bucket seen at per-parameter ``steps``: ``[(None, view)]`` when all are equal, else one
        ``(indices, sub-bucket)`` per distinct step. Wrappers whose inner transform counts its own
        steps (``chain`` after a skip, ``apply_if_finite``) run it once per view (:func:`run_at_steps`)."""
        distinct = sorted(set(steps))
        if len(distinct) <= 1:
            step = distinct[0] if distinct else self.step
            return [(None, self if step == self.step else self.replace(step=step))]
        out: list[tuple[list[int] | None, Bucket]] = []
        for step in distinct:
            idx = [i for i, s in enumerate(steps) if s == step]
            out.append((idx, self.subset(idx).replace(step=step)))
        return out

    def key(self, name: str) -> str:
        return self.prefix + name

    def hp(self, name: str, step: Any = None) -> Any:
        """The value of hyperparameter ``name`` for this group, schedules evaluated at ``step``
        (default: :attr:`t`) and the value they give checked. At a tensor step (capturable) a
        schedule gives tensors, which are not read here: the optimizer checks every schedule at
        the step's host count before the step."""
        raw = self.group[name]
        step = self.t if step is None else step
        if not has_schedule(raw):
            return raw
        value = resolve(raw, step, self.group)
        hyper = self.hypers.get(name) if self.hypers is not None else None
        if hyper is not None and not isinstance(step, torch.Tensor):
            hyper.validate_evaluated(name, value, step)
        return value

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
        p: Any = self.sharded[i]  # a DTensor
        shape, stride = tuple(p.shape), p.stride()
        if p.is_complex():  # the state is of the real view
            shape, stride = (*shape, 2), (*(2 * s for s in stride), 1)
        return DTensor.from_local(value, p.device_mesh, p.placements, shape=torch.Size(shape), stride=stride,
                                  run_check=False)

    def norms(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Per-tensor 2-norms (0-d tensors). For sharded parameters ``tensors`` are local shards
        and the norms are of the whole tensors: squared local norms are summed over the mesh."""
        norms = list(torch._foreach_norm(tensors))
        if self.sharded is None or not norms:
            return norms
        squares = torch.stack(norms).square()
        mesh = self.sharded[0].device_mesh  # type: ignore[attr-defined]  # a DTensor
        torch.distributed.all_reduce(squares, group=mesh.get_group())
        return list(squares.sqrt().unbind())

    def params_compute(self) -> list[torch.Tensor]:
        """The parameters in the compute dtype: the parameters themselves when they are fp32 or
        fp64 (update them in place), fp32 copies of bf16/fp16 ones (write them back with
        :class:`~heavyball_chain.transforms.StochasticWriter`)."""
        return [p if p.dtype == compute_dtype(p.dtype) else p.float() for p in self.params]


def run_at_steps(fn: Callable[[Any, "Bucket"], Sequence | None], updates: Sequence,
                 views: Sequence[tuple[list[int] | None, "Bucket"]]) -> Sequence | None:
    """``fn(updates, view)`` on each view of :meth:`Bucket.at_steps`, merged back into one list
    (``None`` for the parameters whose view returned ``None``; ``None`` if all did)."""
    if views[0][0] is None:
        return fn(updates, views[0][1])
    out: list = [None] * len(updates)
    for idx, view in views:
        assert idx is not None  # only a single view covering the whole bucket has no indices
        result = fn([updates[i] for i in idx], view)
        if result is not None:
            for i, u in zip(idx, result):
                out[i] = u
    return None if all(u is None for u in out) else out


def local(t: Any) -> Any:
    """The local shard of a DTensor; anything else unchanged."""
    return t.to_local() if isinstance(t, DTensor) else t


def zeros_state(p: torch.Tensor) -> torch.Tensor:
    """A state buffer shaped like ``p``, zero, in ``p``'s compute dtype (:func:`compute_dtype`)."""
    return torch.zeros_like(p, dtype=compute_dtype(p.dtype), memory_format=torch.preserve_format)


def copy_state(p: torch.Tensor) -> torch.Tensor:
    """A state buffer holding a copy of ``p`` in its compute dtype (schedule-free's z, an EMA)."""
    return p.detach().to(compute_dtype(p.dtype), memory_format=torch.preserve_format, copy=True)


# --------------------------------------------------------------------------- state slots


@dataclass(frozen=True)
class Slot:
    """One per-parameter state entry a transform keeps, declared once (:meth:`Transform.slots`).

    From the declarations the library derives what ``init`` creates, ``state_bytes`` and the
    checks of ``load_state_dict`` (keys, types, shapes, dtypes).

    * ``kind``: ``torch.Tensor`` (in the parameter's compute dtype), or a Python type (``int``,
      ``float``, ``bool``), or a tuple of them.
    * ``shape``: for tensors; ``None`` is the parameter's shape (its real view for complex ones).
    * ``dtype``: for tensors; ``None`` is the parameter's compute dtype.
    * ``init``: how :meth:`Transform.init` creates it: ``zeros_state``, ``copy_state`` or any
      ``f(param)``; ``None`` for entries the transform creates itself (lazily, or from more than
      the parameter) and which may therefore be missing from a checkpoint.
    """

    kind: Any = torch.Tensor
    shape: tuple[int, ...] | None = None
    init: Callable[[torch.Tensor], Any] | None = zeros_state
    dtype: torch.dtype | None = None  # tensors: None is the parameter's compute dtype

    def nbytes(self, p: torch.Tensor) -> int:
        if self.kind is not torch.Tensor:
            return 0
        shape = p.shape if self.shape is None else self.shape
        return math.prod(shape) * (self.dtype or compute_dtype(p.dtype)).itemsize

    def problem(self, value: Any, p: torch.Tensor) -> str | None:
        """Why ``value`` cannot be this slot's value for parameter ``p`` (shape/dtype of the real
        view, global for DTensors), or ``None``."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if isinstance(value, torch.Tensor):
            if torch.Tensor not in kinds:
                return f"a tensor where {_kind_names(kinds)} was expected"
            shape = tuple(p.shape if self.shape is None else self.shape)
            if tuple(value.shape) != shape:
                return f"shape {tuple(value.shape)}, expected {shape}"
            dtype = self.dtype or compute_dtype(p.dtype)
            if value.dtype != dtype:
                return f"dtype {value.dtype}, expected {dtype}"
            return None
        if isinstance(value, bool) and bool not in kinds:
            return f"{value!r}, expected {_kind_names(kinds)}"
        if not isinstance(value, kinds) or isinstance(value, float) and not math.isfinite(value):
            return f"{value!r}, expected {_kind_names(kinds)}"
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            return f"{value!r}, expected an integer >= 0"
        return None


def _kind_names(kinds: tuple) -> str:
    return " or ".join("a tensor" if k is torch.Tensor else f"a Python {k.__name__}" for k in kinds)


# --------------------------------------------------------------------------- transforms


class Fresh(list):
    """Updates nobody else references: temporaries the returning transform just allocated.

    A transform that receives a ``Fresh`` list may overwrite its tensors in place (and return it)
    instead of allocating new ones; a plain list may hold the user's gradients or another
    transform's state and is never modified. On CPU each avoided full-size temporary saves its
    page faults, which cost as much as the arithmetic of an Adam step (docs/performance.md).
    """


class Borrowed(list):
    """Updates that are another transform's state (read them, never write them), handed on with
    ``spare``: temporaries of the same shapes nobody references. The next transform writes its
    result into ``spare`` (``out=``) instead of allocating, and returns ``Fresh(spare)``. LaProp's
    update is its momentum: this saves the copy of m per step."""

    def __init__(self, tensors: Iterable[torch.Tensor], spare: list):
        super().__init__(tensors)
        self.spare = spare


def write_target(updates: list) -> list | None:
    """Where a transform may write its new updates without allocating: ``updates`` itself when
    ``Fresh``, a ``Borrowed`` list's ``spare``, else ``None`` (allocate)."""
    if isinstance(updates, Fresh):
        return updates
    return updates.spare if isinstance(updates, Borrowed) else None


class Transform:
    """Base class of every transform. Subclasses set ``hyperparams`` and override what they need.

    * ``hyperparams``: names read from the param group, with defaults and checks.
    * ``slots(view)``: the per-parameter state it keeps (:class:`Slot`), declared once: ``init``
      creates the slots that have an ``init``, ``state_bytes`` adds up the tensors and
      ``load_state_dict`` checks a checkpoint against them.
    * ``init(bucket)``: create per-parameter state (called once, before a parameter's first update).
    * ``update(updates, bucket)``: return the new updates, or ``None`` to skip the rest of the chain.
    * ``check_step(bucket)``: raise if this step cannot run (called for every transform, on every
      bucket, before any transform of the step runs: a refused step changes nothing).
    * ``writes_params``: True for the transforms that write parameters.
    * ``supports_complex``: False for transforms whose math is not elementwise over the real view
      of a complex parameter (SOAP's matrices); optimizers then refuse complex parameters.
    * ``capturable``: True for transforms whose step a CUDA graph can capture and replay: every
      number that changes is computed on the device from :attr:`Bucket.t` (use the helpers of
      :mod:`heavyball_chain.transforms.foreach`), the state is updated in place (never replaced by new
      tensors), and its branches depend only on ``bucket.step`` in ways that stop changing after the
      first steps. ``ChainOptimizer(capturable=True)`` refuses chains with other transforms.

    Elementwise transforms also state their math on one tensor, for the compiled path
    (:mod:`heavyball_chain.compiled`), where a run of them becomes one kernel:

    * ``fused_state(view)``: the names of the state tensors ``fused`` reads and writes, derived
      from ``slots``: the tensor slots shaped like the parameter, in their declared order.
    * ``fuse(bucket)``: this step's numbers for ``fused`` (a tuple of floats or one-element
      tensors, always the same length), or ``None`` to run this step eagerly. It is called once per
      fused step, before ``fused``, and does the step's non-tensor bookkeeping (as ``update`` would).
    * ``fused(u, p, state, s)``: the new update for one tensor ``u`` (compute dtype) of parameter
      ``p`` (its own dtype), with ``state`` the tensors ``fused_state`` names (update them in
      place) and ``s`` the numbers from ``fuse`` as 0-d tensors. Never modify ``u``. It must agree
      with ``update`` up to rounding (tests/test_compiled.py checks every preset).
    """

    name: str = "transform"
    hyperparams: dict[str, Hyper] = {}
    writes_params: bool = False
    capturable: bool = False
    supports_complex: bool = True

    def __init__(self) -> None:
        """No options (subclasses with options define their own); an explicit signature, so
        ``inspect.signature`` of an option-less transform is ``()`` rather than object's
        ``(*args, **kwargs)``."""

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return None

    def fused_state(self, bucket: Bucket) -> tuple[str, ...]:
        """The state ``fused`` receives: this transform's parameter-shaped tensor slots, in order."""
        return tuple(k for k, s in self.slots(bucket).items() if s.kind is torch.Tensor and s.shape is None)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def declared(self) -> dict[str, Hyper]:
        """Own hyperparameters plus those of schedules used as defaults."""
        out = dict(self.hyperparams)
        for h in self.hyperparams.values():
            merge_hyperparams(out, schedule_hyperparams(h.default), self.name)
        return out

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        """The state kept for ``bucket.params[0]`` (a one-parameter view), by unprefixed name."""
        return {}

    def state_layout(self, bucket: Bucket) -> dict[str, Slot]:
        """Every state entry (full keys) this transform and those inside it keep for
        ``bucket.params[0]``; composite transforms add their children's."""
        return {bucket.key(name): slot for name, slot in self.slots(bucket).items()}

    def init(self, bucket: Bucket) -> None:
        for i in range(len(bucket.params)):
            view = bucket.subset([i])
            for name, slot in self.slots(view).items():
                if slot.init is not None:
                    view.init_state(name, slot.init)

    def check_step(self, bucket: Bucket) -> None:
        pass

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        raise NotImplementedError

    def state_bytes(self, p: torch.Tensor, group: dict) -> int:
        view = Bucket(params=[p], grads=[], states=[{}], group=group, step=0)
        return sum(slot.nbytes(p) for slot in self.slots(view).values())

    def children(self) -> list[tuple[str, "Transform"]]:
        return []

    def walk(self, bucket: Bucket) -> Iterable[tuple["Transform", Bucket]]:
        """This transform and every transform inside it, each with the bucket it sees.

        Wrappers that give an inner transform a different view (a subset of the parameters, a
        prefix) override this so that whole-optimizer operations (``train()``/``eval()``,
        swapping in averaged weights, the checks before a step) reach the inner transform with the
        right state keys.
        """
        yield self, bucket

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(self.hyperparams)})"


def transforms_in(t: Transform) -> Iterable[Transform]:
    """``t`` and every transform inside it."""
    yield t
    for _, child in t.children():
        yield from transforms_in(child)


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
            merge_hyperparams(declared, t.declared(), f"{t.name} ({n!r})")
        self.hyperparams = declared
        self.writes_params = any(t.writes_params for _, t in self._children)
        self.capturable = all(t.capturable for _, t in self._children)

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
        return child.at_steps([child.step - s.get(key, 0) for s in bucket.states])

    def walk(self, bucket: Bucket) -> Iterable[tuple[Transform, Bucket]]:
        yield self, bucket
        for n, t in self._children:
            for _, view in self._by_lag(bucket, n):
                yield from t.walk(view)

    def state_layout(self, bucket: Bucket) -> dict[str, Slot]:
        out: dict[str, Slot] = {}
        for k, (n, t) in enumerate(self._children):
            child = bucket.child(n)
            if k > 0:  # how many steps skipped before this child (present once a skip happened)
                out[child.key(self._SKIPPED)] = Slot(int, init=None)
            out.update(t.state_layout(child))
        return out

    def _run(self, t: Transform, name: str, updates: list, bucket: Bucket) -> Sequence | None:
        return run_at_steps(t.update, updates, self._by_lag(bucket, name))

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

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
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

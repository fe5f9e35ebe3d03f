"""``ChainOptimizer``: a ``torch.optim.Optimizer`` that runs one :class:`~heavyball_chain.core.Transform`.

One step: the parameters with a gradient are split into buckets (same param group, device, dtype
and step count); every hyperparameter and every transform's ``check_step`` is checked on every
bucket *before* anything changes (a refused step changes nothing); then, per bucket, a new
bucket's state is created by ``transform.init`` and ``transform.update`` turns the gradients (in
the compute dtype) into updates and writes the parameters through the chain's apply transform.
Everything else is torch's: ``param_groups`` hold the hyperparameters, ``state[p]`` the
per-parameter state, so LR schedulers, hooks, ``add_param_group`` and ``state_dict`` work as with
any torch optimizer.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from itertools import chain as iter_chain
from typing import Any, Callable, Iterable, cast, overload

import torch

from .compiled import Fuser
from .core import (Bucket, DTensor, Hyper, Schedule, Slot, Transform, has_schedule, merge_hyperparams, local,
                   schedule_hyperparams, transforms_in)

__all__ = ["ChainOptimizer"]

CHAIN_KEY = "chain"  # in every saved param group: the signature of the chain that wrote the state
_STEP = Slot((int, torch.Tensor), shape=(), dtype=torch.float64, init=None)  # a tensor when capturable
_SAFE_SCALARS = (int, float, bool, str, type(None), torch.Tensor)


def _weights_only_safe(value: Any) -> bool:
    """True when ``torch.load(weights_only=True)`` can read ``value`` back."""
    if isinstance(value, (tuple, list)):
        return all(_weights_only_safe(v) for v in value)
    if isinstance(value, dict):
        return all(_weights_only_safe(k) and _weights_only_safe(v) for k, v in value.items())
    return isinstance(value, _SAFE_SCALARS)


def _schedule_marker(value: Any) -> str:
    """How a schedule (code, which a checkpoint does not hold) is recorded in a state dict."""
    name = repr(value) if isinstance(value, Schedule) else getattr(value, "__qualname__", type(value).__qualname__)
    return f"<schedule {name}>"


def _saved(value: Any) -> Any:
    """A group value as saved: numbers as they are, schedules as markers, tuples element-wise
    (``betas=(0.9, palm_beta2())`` keeps its 0.9); ``_MISSING`` for what cannot be saved."""
    if isinstance(value, (tuple, list)) and not _weights_only_safe(value):
        items = [_saved(v) for v in value]
        return _MISSING if any(v is _MISSING for v in items) else type(value)(items)
    if has_schedule(value):
        return _schedule_marker(value)
    return value if _weights_only_safe(value) else _MISSING


_MISSING = object()


def _restored(name: str, saved: Any, current: Any) -> Any:
    """The value to use for ``name`` after loading ``saved`` into a group that holds ``current``:
    a schedule marker must meet the same schedule, a number must not replace a schedule."""
    if isinstance(saved, (tuple, list)) and isinstance(current, (tuple, list)) and len(saved) == len(current):
        return type(current)(_restored(f"{name}[{i}]", s, c) for i, (s, c) in enumerate(zip(saved, current)))
    if isinstance(saved, str) and saved.startswith("<schedule "):
        if not has_schedule(current) or _schedule_marker(current) != saved:
            raise ValueError(f"{name}: the checkpoint was saved with the {saved[1:-1]}, this optimizer has "
                             f"{'the ' + _schedule_marker(current)[1:-1] if has_schedule(current) else repr(current)}")
        return current
    if has_schedule(current):
        raise ValueError(f"{name}: the checkpoint has {saved!r} where this optimizer has the "
                         f"{_schedule_marker(current)[1:-1]} (saved by another optimizer?)")
    return saved


_OPTIONS: dict[type, frozenset[str]] = {}


def _constructor_options(cls: type) -> frozenset[str]:
    """The named arguments of an optimizer class's constructor, but ``params``."""
    if cls not in _OPTIONS:
        parameters = inspect.signature(cls).parameters.values()
        _OPTIONS[cls] = frozenset(p.name for p in parameters
                                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)) - {"params"}
    return _OPTIONS[cls]


@overload
def _real(t: torch.Tensor) -> torch.Tensor: ...
@overload
def _real(t: None) -> None: ...
def _real(t: torch.Tensor | None) -> torch.Tensor | None:  # noqa: E302
    """Complex tensors as their real view (a trailing dimension of 2), as torch.optim does."""
    return torch.view_as_real(t) if t is not None and t.is_complex() else t


class ChainOptimizer(torch.optim.Optimizer):
    """A torch optimizer over a chain of transforms.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer: floating-point
            tensors (fp32, bf16, fp16 are computed in fp32; fp64 in fp64) or complex ones (as
            their real view, when every transform of the chain is elementwise over it).
        transform: the chain; it must write the parameters (end it with ``stochastic_round_apply``
            or ``apply_updates``).
        compile: run each run of elementwise transforms as one ``torch.compile``d graph per 16
            tensors (:mod:`heavyball_chain.compiled`): one pass over memory instead of ~18, no
            recompiles when hyperparameters change. The first steps pay the compilation (seconds;
            inductor needs a C++ compiler on CPU). Results equal the eager path up to rounding.
        capturable: make the step capturable by a CUDA graph (``torch.cuda.graph``), as torch's
            ``capturable=True``: each parameter's ``state["step"]`` is a 0-d float64 tensor on its
            device and every number that changes with it (debiased betas, warmup, PaLM's beta2,
            the schedule-free weights) is computed from it on the device, so a replay computes
            its own step's numbers. Use a tensor ``lr`` to change it between replays (a Python
            number is frozen into the graph, as in torch). Capture after the first steps (state
            is created at a parameter's first step; ADOPT and SOAP initialise for one or two).
            Only chains of capturable transforms are accepted (``Transform.capturable``).
        **hyperparameters: values for the hyperparameters the chain declares (numbers or
            schedules; ``lr`` may be a one-element tensor); the rest take the chain's defaults.
            Unknown names are a ``TypeError``.
    """

    def __init__(self, params: Iterable[Any], transform: Transform, *, compile: bool = False,
                 capturable: bool = False, **hyperparameters: Any):
        if not isinstance(transform, Transform):
            raise TypeError(f"transform: expected a heavyball_chain Transform, got {type(transform).__name__}")
        if not transform.writes_params:
            raise ValueError(
                "transform: the chain never writes the parameters; end it with "
                "stochastic_round_apply() or apply_updates()"
            )
        declared = transform.declared()
        for name, value in hyperparameters.items():  # schedules given as values may read more names
            merge_hyperparams(declared, schedule_hyperparams(value), f"the schedule given for {name!r}")
        unknown = sorted(set(hyperparameters) - set(declared))
        if unknown:
            raise TypeError(
                f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"this chain reads {sorted(declared)}"
            )
        if CHAIN_KEY in declared:
            raise ValueError(f"transform: the hyperparameter name {CHAIN_KEY!r} is reserved (state dicts record the "
                             f"chain under it)")
        if not isinstance(compile, bool):
            raise TypeError(f"compile: expected True or False, got {compile!r}")
        if not isinstance(capturable, bool):
            raise TypeError(f"capturable: expected True or False, got {capturable!r}")
        if capturable and not transform.capturable:
            blocking = sorted({t.name for t in transforms_in(transform) if not t.capturable and not t.children()})
            raise ValueError(f"capturable=True: {', '.join(blocking)} cannot be captured by a CUDA graph (it decides "
                             f"on the host from the step or from tensor values, or replaces its state each step); "
                             f"build this optimizer with capturable=False")
        self.transform = transform
        self.compile = compile
        self.capturable = capturable
        self._host_steps: dict[torch.Tensor, int] = {}  # capturable: the steps this process ran, per parameter
        self._fuser = Fuser() if compile else None
        self._hyperparams: dict[str, Hyper] = declared
        defaults = {name: h.default for name, h in declared.items()}
        defaults.update(hyperparameters)
        super().__init__(params, defaults)

    @property
    def signature(self) -> str:
        """The chain's structure in one line; state dicts record it, ``load_state_dict`` compares it."""
        return " ".join(repr(self.transform).split())

    # ------------------------------------------------------------------ param groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``, refusing (before changing anything) parameters that are not
        floating-point or supported complex tensors, repeated parameters and invalid values."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        params = param_group.get("params")
        if isinstance(params, torch.Tensor):
            params = [params]
        elif params is not None and not isinstance(params, (list, tuple, set)):
            params = list(params)
        tensors = []
        for i, p in enumerate(params or []):
            named = isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
            tensor = p[1] if named else p
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"params: expected tensors or (name, tensor) pairs, got {type(p).__name__} "
                                f"at position {i}")
            self._check_param_dtype(tensor, i)
            tensors.append(tensor)
        if len({id(t) for t in tensors}) != len(tensors):
            raise ValueError("params: a parameter appears twice in one param group (it would be stepped twice)")
        self._refuse_options(param_group)
        candidate = {**self.defaults, **param_group}
        # schedules given in this group may read names of their own (palm_beta2 reads beta2_scale)
        extras: dict[str, Hyper] = {}
        for name, value in list(candidate.items()):
            merge_hyperparams(extras, schedule_hyperparams(value), f"the schedule given for {name!r}")
        extras = {k: h for k, h in extras.items() if k not in self._hyperparams}
        for extra, hyper in extras.items():
            candidate.setdefault(extra, hyper.default)
        for name, hyper in {**extras, **self._hyperparams}.items():
            hyper.validate(name, candidate[name])
        super().add_param_group({**param_group, "params": params} if params is not None else param_group)
        for extra, hyper in extras.items():  # every group holds every hyperparameter
            self._hyperparams[extra] = hyper
            self.defaults.setdefault(extra, hyper.default)
            for group in self.param_groups:
                group.setdefault(extra, hyper.default)

    def _refuse_options(self, group: dict) -> None:
        """A param-group key that is one of the optimizer's constructor arguments but no
        hyperparameter (``maximize``, ``amsgrad``, ``nesterov``: they shape the chain; HeavyBall's
        PaLM ``beta``) would be kept and silently ignored, where torch.optim and HeavyBall read it
        per group: refused, naming it."""
        options = _constructor_options(type(self))
        found = sorted(k for k in group if k in options and k not in self._hyperparams)
        if found:
            raise ValueError(
                f"{found[0]!r} in a param group: it is an argument of {type(self).__name__}(...) that shapes the "
                f"whole optimizer, not a per-group value (the groups hold {sorted(self._hyperparams)}); "
                f"pass it to the constructor, or build a second optimizer for these parameters"
                + (f" (or set the group's {found[0] + 's'!r})" if found[0] + "s" in self._hyperparams else ""))

    def _check_param_dtype(self, p: torch.Tensor, i: int) -> None:
        if p.is_complex():
            unsupported = sorted({t.name for t in transforms_in(self.transform) if not t.supports_complex})
            if unsupported:
                raise TypeError(f"params: complex parameter at position {i} ({p.dtype}), but "
                                f"{', '.join(unsupported)} is not elementwise over a complex parameter's real "
                                f"and imaginary parts; optimise real tensors instead")
        elif not p.is_floating_point():
            raise TypeError(f"params: expected floating-point or complex tensors, got {p.dtype} at position {i} "
                            f"(an update would be truncated to an integer)")

    def _validate_group(self, group: dict, in_step: bool = False, known: dict | None = None) -> dict:
        """Check every value of ``group`` but those in ``known`` (values checked before: the same
        object, immutable; a scheduler sets new ones); tensors, lists and dicts always are (they
        change in place). Returns the values now known to be valid."""
        known = {} if known is None else known
        self._refuse_options(group)
        for name, hyper in self._hyperparams.items():
            if name not in group:
                raise ValueError(f"{name}: missing from a param group (every group holds every hyperparameter)")
            value = group[name]
            if known.get(name, _MISSING) is value and not isinstance(value, (torch.Tensor, list, dict)):
                continue  # the same immutable object as last time
            hyper.validate(name, value, in_step=in_step)
            known[name] = value
        return known

    # ------------------------------------------------------------------ step

    def _buckets(self, group: dict, offset: int, stepping: bool = True) -> Iterable[Bucket]:
        """Buckets of the group: with ``stepping``, the parameters with a gradient, at their next
        step; otherwise the parameters that have state, at their last step. ``offset`` is the
        position of the group's first parameter in the optimizer."""
        split: dict[tuple, list[int]] = defaultdict(list)
        params = group["params"]
        for i, p in enumerate(params):
            if stepping:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("params: sparse gradients are not supported; use a dense embedding")
            elif "step" not in self.state.get(p, ()):
                continue
            # complex parameters are computed as their real views: with the real ones of that dtype
            dtype = p.dtype.to_real() if p.is_complex() else p.dtype
            split[(p.device, dtype, isinstance(p, DTensor), self._host_step(p))].append(i)
        names = group.get("param_names")
        for (_, _, sharded, step), idx in split.items():
            ps = [params[i] for i in idx]
            if sharded:
                ps_local, grads = [local(p) for p in ps], [local(p.grad) for p in ps]
            else:
                ps_local, grads = ps, [p.grad for p in ps]
            if any(p.is_complex() for p in ps_local):
                ps_local, grads = [_real(p) for p in ps_local], [_real(g) for g in grads]
            states = [self.state[p] for p in ps]
            yield Bucket(
                params=ps_local,
                grads=grads,
                states=states,
                group=group,
                step=step + 1 if stepping else step,
                sharded=ps if sharded else None,
                names=[names[i] for i in idx] if names is not None else [None] * len(idx),
                positions=[offset + i for i in idx],
                fuser=self._fuser if stepping else None,
                hypers=self._hyperparams,
                capturable=self.capturable,
                clock=states[0]["step"] if self.capturable and not stepping else None,  # set by step()
                clock_step=step,
            )

    def _host_step(self, p: torch.Tensor) -> int:
        """The steps ``p`` has taken as this process counts them (the state's int, or when
        capturable the host's count beside the device tensor: replays of a captured graph advance
        only the tensor, and every decision that depends on the step is made by then)."""
        step = self.state[p].get("step", 0) if p in self.state else 0
        return self._host_steps[p] if isinstance(step, torch.Tensor) else step

    def _groups(self) -> Iterable[tuple[dict, int]]:
        """Each param group with the position of its first parameter in the optimizer."""
        offset = 0
        for group in self.param_groups:
            yield group, offset
            offset += len(group["params"])

    @torch.no_grad()
    def visit(self, method: str, *args: Any) -> None:
        """Call ``transform.<method>(bucket, *args)`` on every transform of the chain that defines
        it, for every bucket of parameters that have state (at their last step). This is how
        whole-optimizer operations such as ``train()``/``eval()`` reach the transforms."""
        for group, offset in self._groups():
            for root in self._buckets(group, offset, stepping=False):
                for t, bucket in self.transform.walk(root):
                    fn = getattr(t, method, None)
                    if callable(fn):
                        fn(bucket, *args)

    def _check_step(self, buckets: list[Bucket]) -> None:
        """Everything that can refuse a step, before anything changes: every group's values (a
        scheduler or the user may have set them), schedules evaluated at each bucket's step, and
        every transform's ``check_step``."""
        previous, checked = self.__dict__.get("_checked_values", {}), {}
        for group in self.param_groups:
            entry = previous.get(id(group))
            known = entry[1] if entry is not None and entry[0] is group else None
            checked[id(group)] = (group, self._validate_group(group, in_step=True, known=known))
        self._checked_values = checked
        if self.__dict__.get("_eval_mode", False) and any(callable(getattr(t, "eval", None))
                                                          for t in transforms_in(self.transform)):
            raise RuntimeError("step() called in eval mode: call optimizer.train() before training")
        checking = any(type(t).check_step is not Transform.check_step for t in transforms_in(self.transform))
        for bucket in buckets:
            self._check_devices(bucket)
            for name in self._hyperparams:
                if has_schedule(bucket.group[name]):
                    bucket.hp(name, step=bucket.step)  # the host's count: checked as numbers
            if checking:
                for t, view in self.transform.walk(bucket):
                    t.check_step(view)

    def _check_devices(self, bucket: Bucket) -> None:
        """A tensor hyperparameter is on the parameters' device or, unless capturable, the CPU (a
        0-d CPU tensor is a scalar to a GPU kernel). Elsewhere (the ``meta`` device, another GPU) a
        foreach kernel may silently skip it. Capturable: a CPU lr would be copied to the GPU by
        every step, and a captured graph keeps the value copied at capture."""
        device = bucket.params[0].device
        for name in self._hyperparams:
            value = bucket.group[name]
            if not isinstance(value, torch.Tensor) or value.device == device:
                continue
            if self.capturable:
                raise ValueError(f"capturable=True: {name} is a tensor on {value.device}, the parameters are on "
                                 f"{device}; a captured graph would keep the value it copied at the capture. Create "
                                 f"{name} on {device}")
            if value.device.type != "cpu":
                raise ValueError(f"{name}: a tensor on {value.device}, the parameters are on {device}; create "
                                 f"{name} on {'the CPU' if device.type == 'cpu' else f'{device} or the CPU'}")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimizer step; ``closure`` (if given) runs first, with gradients enabled."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        buckets = [b for group, offset in self._groups() for b in self._buckets(group, offset)]
        self._check_step(buckets)
        for bucket in buckets:
            if bucket.step == 1:
                self.transform.init(bucket)
            if self.capturable:
                self._tick(bucket)
            dtype = bucket.dtype
            self.transform.update([g if g.dtype == dtype else g.to(dtype) for g in bucket.grads], bucket)
            if not self.capturable:
                for s in bucket.states:
                    s["step"] = bucket.step
        return loss

    def _tick(self, bucket: Bucket) -> None:
        """Capturable: advance the device step tensors (one kernel) and hand the bucket its clock."""
        if bucket.step == 1:
            for p, s in zip(bucket.params, bucket.states):
                s["step"] = torch.zeros((), dtype=torch.float64, device=p.device)
        steps = [s["step"] for s in bucket.states]
        torch._foreach_add_(steps, 1.0)
        bucket.clock, bucket.clock_step = steps[0], bucket.step
        params = [p for g in self.param_groups for p in g["params"]]
        assert bucket.positions is not None  # the optimizer's buckets have them
        for i in bucket.positions:
            self._host_steps[params[i]] = bucket.step

    def train(self, mode: bool = True) -> "ChainOptimizer":
        """Parameters in their training form (schedule-free: y). A no-op for chains whose
        transforms have no train/eval forms. ``train(False)`` is ``eval()``."""
        self.visit("train" if mode else "eval")
        self._eval_mode = not mode  # parameters without state yet have no mode of their own
        return self

    def eval(self) -> "ChainOptimizer":
        """Parameters in their evaluation form (schedule-free: the average x); ``step()`` then
        raises until ``train()``. Save a model in eval mode to keep x."""
        return self.train(False)

    # ------------------------------------------------------------------ state

    def state_bytes(self) -> int:
        """Bytes of optimizer state for the current parameters, known before the first step."""
        return sum(self.transform.state_bytes(_real(p), g) for g in self.param_groups for p in g["params"])

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict; each param group also records the chain (``"chain"``), and
        schedules (code, which ``torch.load(weights_only=True)`` cannot read) are recorded by
        name: on load they must meet the same schedule."""
        sd = super().state_dict()
        groups = []
        for g in sd["param_groups"]:
            saved = {k: _saved(v) for k, v in g.items()}
            groups.append({**{k: v for k, v in saved.items() if v is not _MISSING}, CHAIN_KEY: self.signature})
        sd["param_groups"] = groups
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict saved by an optimizer with the same chain, checking everything first.

        Refused with a ``ValueError`` that names what does not match, before anything changes: a
        state dict of another chain or of a torch.optim optimizer, other group or parameter
        counts, invalid or missing hyperparameter values, a number where this optimizer has a
        schedule (or another schedule), and per-parameter state whose entries, shapes or dtypes
        are not those the chain keeps (:meth:`Transform.state_layout`). Unlike torch, state
        tensors keep their own dtype (torch casts fp32 moments of bf16 parameters to bf16) and are
        copied to the parameter's device, never shared with ``state_dict``. A tensor ``lr`` is
        loaded in place, so a captured graph that reads it stays valid.
        """
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict: expected a dict with 'state' and 'param_groups' (optimizer.state_dict())")
        groups = self.param_groups
        saved_groups = [dict(g) for g in state_dict["param_groups"]]
        if len(groups) != len(saved_groups):
            raise ValueError(
                f"state_dict: has {len(saved_groups)} parameter groups, the optimizer has {len(groups)}"
            )
        new_groups = []
        for i, (g, s) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(
                    f"state_dict: parameter group {i} has {len(s['params'])} parameters, "
                    f"the optimizer's has {len(g['params'])}"
                )
            new_groups.append(self._loaded_group(i, g, s))
        id_map = dict(zip(iter_chain.from_iterable(s["params"] for s in saved_groups),
                          iter_chain.from_iterable(g["params"] for g in groups)))
        for k in state_dict["state"]:
            if k not in id_map:
                raise ValueError(f"state_dict: has state for parameter {k!r}, which none of its param groups lists")
        layouts = self._layouts(new_groups)
        for k, v in state_dict["state"].items():
            self._check_param_state(v, *layouts[id_map[k]])

        def to_device(value: Any, device: torch.device) -> Any:
            if isinstance(value, torch.Tensor):
                return value.to(device=device, copy=True)
            if isinstance(value, dict):
                return {k: to_device(v, device) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return type(value)(to_device(v, device) for v in value)
            return value

        state: defaultdict[Any, dict] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            state[id_map[k]] = to_device(v, id_map[k].device)
            if "step" in state[id_map[k]]:  # an int, or a device tensor when capturable (either loads into either)
                state[id_map[k]]["step"] = self._step_entry(state[id_map[k]]["step"], id_map[k])
        for g, new in zip(groups, new_groups):  # a tensor lr is loaded into the optimizer's own tensor
            for name, value in new.items():
                if name == "params" or value is g.get(name):
                    continue
                if isinstance(g.get(name), torch.Tensor):
                    new[name] = g[name].copy_(value) if isinstance(value, torch.Tensor) else g[name].fill_(value)
                elif isinstance(value, torch.Tensor):
                    new[name] = value.detach().clone()
        self.__setstate__({"state": state, "param_groups": new_groups})
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _loaded_group(self, i: int, group: dict, saved: dict) -> dict:
        """The group after loading ``saved`` into ``group`` (checked; nothing is changed yet)."""
        where = f"state_dict: param group {i}"
        signature = saved.pop(CHAIN_KEY, None)
        if signature is None:
            raise ValueError(f"{where} has no {CHAIN_KEY!r} entry: the state dict was not saved by a heavyball_chain "
                             f"optimizer (a torch.optim checkpoint?), or by heavyball_chain 0.1.0, before state dicts "
                             f"recorded their chain. For the latter, once you know it was saved by this same "
                             f"optimizer, set every group's {CHAIN_KEY!r} to optimizer.signature and load again")
        if signature != self.signature:
            raise ValueError(f"{where} was saved by an optimizer with another chain; its state does not belong to "
                             f"this one.\n  saved:  {signature}\n  this:   {self.signature}")
        merged = {**group}
        for name, value in saved.items():
            if name == "params":
                continue
            if name not in self._hyperparams:
                merged[name] = value  # not ours (e.g. a scheduler's initial_lr): torch keeps it
                continue
            try:
                value = _restored(name, value, group[name])
                self._hyperparams[name].validate(name, value)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            merged[name] = value
        missing = [n for n in self._hyperparams if n not in saved and not has_schedule(group[n])]
        if missing:
            raise ValueError(f"{where} has no value for {', '.join(map(repr, missing))}")
        return merged

    def _layouts(self, groups: list[dict]) -> dict[torch.Tensor, tuple]:
        """Per parameter: (where, what the chain keeps for it, the parameter as transforms see it)."""
        out = {}
        offset = 0
        for gi, group in enumerate(groups):
            names = group.get("param_names")
            for i, p in enumerate(group["params"]):
                seen = _real(p)
                view = Bucket(params=[seen], grads=cast(list, [None]), states=[{}], group=group, step=0,
                              sharded=[p] if isinstance(p, DTensor) else None,
                              names=[names[i] if names else None], positions=[offset + i], hypers=self._hyperparams)
                label = f"parameter {offset + i}" + (f" ({names[i]})" if names else "")
                out[p] = (label, {"step": _STEP, **self.transform.state_layout(view)}, seen)
            offset += len(group["params"])
        return out

    def _step_entry(self, step: Any, p: torch.Tensor) -> Any:
        """A checked ``step`` in this optimizer's kind: a 0-d float64 tensor on ``p``'s device when
        capturable, else an int."""
        if self.capturable:
            return torch.tensor(float(step), dtype=torch.float64, device=p.device) if isinstance(step, int) else step
        return int(step.item()) if isinstance(step, torch.Tensor) else step

    @staticmethod
    def _check_param_state(saved: Any, where: str, layout: dict[str, Slot], p: torch.Tensor) -> None:
        if not isinstance(saved, dict):
            raise ValueError(f"state_dict: the state of {where} is a {type(saved).__name__}, expected a dict")
        if not saved:
            return
        unknown = sorted(set(saved) - set(layout))
        if unknown:
            raise ValueError(f"state_dict: the state of {where} has {', '.join(map(repr, unknown))}, which this "
                             f"chain does not keep (saved by another optimizer or chain? A transform of your own "
                             f"declares its state in slots())")
        missing = sorted(k for k, slot in layout.items() if k not in saved and (slot.init is not None or k == "step"))
        if missing:
            raise ValueError(f"state_dict: the state of {where} lacks {', '.join(map(repr, missing))}")
        for key, value in saved.items():
            problem = layout[key].problem(value, p)
            if problem is None and key == "step" and isinstance(value, torch.Tensor):
                count = value.item()  # a load may read the device: it is not part of a step
                problem = None if math.isfinite(count) and count >= 0 and count == int(count) else \
                    f"{count!r}, expected a whole number >= 0"
            if problem is not None:
                raise ValueError(f"state_dict: the state of {where}: {key!r} is {problem}")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for name, value in self.__dict__.items():  # the chain, compile, and a preset's own attributes
            if not name.startswith("_"):
                state.setdefault(name, value)
        state["_hyperparams"] = self._hyperparams
        if "_eval_mode" in self.__dict__:  # eval() called before parameters had state to record it
            state["_eval_mode"] = self._eval_mode
        state.pop("_fuser", None)  # compiled kernels are rebuilt, not pickled
        state.pop("_checked_values", None)  # keyed by object ids: not valid in another process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_fuser" not in self.__dict__:  # unpickled (load_state_dict also calls this; it keeps the fuser)
            self._fuser = Fuser() if self.__dict__.setdefault("compile", False) else None
        self.__dict__.setdefault("capturable", False)
        # the host's step counts: read from the device tensors once here, never in a step
        self._host_steps = {p: int(s["step"].item()) for p, s in self.state.items()
                            if isinstance(s.get("step"), torch.Tensor)}

    def __repr__(self) -> str:
        head, _, groups = super().__repr__().partition(" (\n")
        return f"{head} (\ntransform: {self.transform!r}\n{groups}"

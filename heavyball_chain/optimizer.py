"""``ChainOptimizer``: a ``torch.optim.Optimizer`` that runs one :class:`~heavyball_chain.core.Transform`.

One step, per param group: the parameters with a gradient are split into buckets (same device,
dtype and step count), a new bucket's state is created by ``transform.init``, and
``transform.update`` turns the fp32 gradients into updates and writes the parameters through the
chain's apply transform. Everything else is torch's: ``param_groups`` hold the hyperparameters,
``state[p]`` the per-parameter state, so LR schedulers, hooks, ``add_param_group`` and
``state_dict`` work as with any torch optimizer.
"""

from __future__ import annotations

from collections import defaultdict
from copy import deepcopy
from itertools import chain as iter_chain
from typing import Any, Callable, Iterable

import torch

from .compiled import Fuser
from .core import Bucket, DTensor, Hyper, Transform, _merge_into, local, schedule_hyperparams

__all__ = ["ChainOptimizer"]

_SAFE_SCALARS = (int, float, bool, str, type(None), torch.Tensor)


def _weights_only_safe(value: Any) -> bool:
    """True when ``torch.load(weights_only=True)`` can read ``value`` back."""
    if isinstance(value, (tuple, list)):
        return all(_weights_only_safe(v) for v in value)
    if isinstance(value, dict):
        return all(_weights_only_safe(k) and _weights_only_safe(v) for k, v in value.items())
    return isinstance(value, _SAFE_SCALARS)


class ChainOptimizer(torch.optim.Optimizer):
    """A torch optimizer over a chain of transforms.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer.
        transform: the chain; it must write the parameters (end it with ``stochastic_round_apply``
            or ``apply_updates``).
        compile: run each run of elementwise transforms as one ``torch.compile``d kernel per
            tensor (:mod:`heavyball_chain.compiled`): one pass over memory instead of ~18, no
            recompiles when hyperparameters change. The first steps pay the compilation (seconds;
            inductor needs a C++ compiler on CPU). Results equal the eager path up to fp32 rounding.
        **hyperparameters: values for the hyperparameters the chain declares (numbers or
            schedules); the rest take the chain's defaults. Unknown names are a ``TypeError``.
    """

    def __init__(self, params: Iterable[Any], transform: Transform, *, compile: bool = False,
                 **hyperparameters: Any):
        if not isinstance(transform, Transform):
            raise TypeError(f"transform: expected a heavyball_chain Transform, got {type(transform).__name__}")
        if not transform.writes_params:
            raise ValueError(
                "transform: the chain never writes the parameters; end it with "
                "stochastic_round_apply() or apply_updates()"
            )
        declared = transform.declared()
        for name, value in hyperparameters.items():  # schedules given as values may read more names
            _merge_into(declared, schedule_hyperparams(value), f"the schedule given for {name!r}")
        unknown = sorted(set(hyperparameters) - set(declared))
        if unknown:
            raise TypeError(
                f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"this chain reads {sorted(declared)}"
            )
        if not isinstance(compile, bool):
            raise TypeError(f"compile: expected True or False, got {compile!r}")
        self.transform = transform
        self.compile = compile
        self._fuser = Fuser() if compile else None
        self._hyperparams: dict[str, Hyper] = declared
        defaults = {name: h.default for name, h in declared.items()}
        defaults.update(hyperparameters)
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ param groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group.get("params")
        if isinstance(params, torch.Tensor):
            params = [params]
        elif params is not None and not isinstance(params, (list, tuple, set)):
            params = list(params)
        for i, p in enumerate(params or []):
            named = isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
            if not isinstance(p, torch.Tensor) and not (named and isinstance(p[1], torch.Tensor)):
                raise TypeError(f"params: expected tensors or (name, tensor) pairs, got {type(p).__name__} "
                                f"at position {i}")
        if params is not None:
            param_group = {**param_group, "params": params}
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for name, value in list(group.items()):
            for extra, hyper in schedule_hyperparams(value).items():
                group.setdefault(extra, hyper.default)
                self._hyperparams.setdefault(extra, hyper)
        for name, hyper in self._hyperparams.items():
            hyper.validate(name, group[name])

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
            split[(p.device, p.dtype, isinstance(p, DTensor), self.state[p].get("step", 0))].append(i)
        names = group.get("param_names")
        for (_, _, sharded, step), idx in split.items():
            ps = [params[i] for i in idx]
            yield Bucket(
                params=[local(p) for p in ps],
                grads=[local(p.grad) for p in ps],
                states=[self.state[p] for p in ps],
                group=group,
                step=step + 1 if stepping else step,
                sharded=ps if sharded else None,
                names=[names[i] for i in idx] if names is not None else [None] * len(idx),
                positions=[offset + i for i in idx],
                fuser=self._fuser if stepping else None,
            )

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

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimizer step; ``closure`` (if given) runs first, with gradients enabled."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, offset in self._groups():
            for bucket in self._buckets(group, offset):
                if bucket.step == 1:
                    self.transform.init(bucket)
                self.transform.update([g.float() for g in bucket.grads], bucket)
                for s in bucket.states:
                    s["step"] = bucket.step
        return loss

    def train(self, mode: bool = True) -> "ChainOptimizer":
        """Parameters in their training form (schedule-free: y). A no-op for chains whose
        transforms have no train/eval forms. ``train(False)`` is ``eval()``."""
        self.visit("train" if mode else "eval")
        return self

    def eval(self) -> "ChainOptimizer":
        """Parameters in their evaluation form (schedule-free: the average x); ``step()`` then
        raises until ``train()``. Save a model in eval mode to keep x."""
        return self.train(False)

    # ------------------------------------------------------------------ state

    def state_bytes(self) -> int:
        """Bytes of optimizer state for the current parameters, known before the first step."""
        return sum(self.transform.state_bytes(p, g) for g in self.param_groups for p in g["params"])

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict; group values ``torch.load(weights_only=True)`` cannot read
        (schedules, i.e. code) are left out and keep their current value on load."""
        sd = super().state_dict()
        sd["param_groups"] = [
            {k: v for k, v in g.items() if _weights_only_safe(v)} for g in sd["param_groups"]
        ]
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, except that state tensors keep their own dtype.

        torch casts floating-point state to the parameter's dtype, which turns fp32 moments of
        bf16 parameters into bf16 (HeavyBall 0.8.1's SOAP then fails on the next step). Tensors
        are copied to the parameter's device, never shared with ``state_dict``. Group values
        missing from ``state_dict`` (schedules) keep their current value.
        """
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError(
                f"state_dict: has {len(saved_groups)} parameter groups, the optimizer has {len(groups)}"
            )
        for i, (g, s) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(
                    f"state_dict: parameter group {i} has {len(s['params'])} parameters, "
                    f"the optimizer's has {len(g['params'])}"
                )
        id_map = dict(zip(iter_chain.from_iterable(s["params"] for s in saved_groups),
                          iter_chain.from_iterable(g["params"] for g in groups)))

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
            if k in id_map:
                state[id_map[k]] = to_device(v, id_map[k].device)
            else:
                state[k] = v
        new_groups = []
        for g, s in zip(groups, saved_groups):
            merged = {**g, **s}
            merged["params"] = g["params"]
            new_groups.append(merged)
        self.__setstate__({"state": state, "param_groups": new_groups})
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["transform"] = self.transform
        state["_hyperparams"] = self._hyperparams
        state["compile"] = self.compile
        state.pop("_fuser", None)  # compiled kernels are rebuilt, not pickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_fuser" not in self.__dict__:  # unpickled (load_state_dict also calls this; it keeps the fuser)
            self._fuser = Fuser() if self.__dict__.setdefault("compile", False) else None

    def __repr__(self) -> str:
        head, _, groups = super().__repr__().partition(" (\n")
        return f"{head} (\ntransform: {self.transform!r}\n{groups}"

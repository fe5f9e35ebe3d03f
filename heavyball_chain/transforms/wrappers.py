"""Wrappers and combinators: transforms that run other transforms on some parameters or some steps.

``identity``, ``scale``, ``masked``, ``partition``, ``apply_if_finite``, ``multi_steps`` (after
optax's combinators of the same names). A wrapper keeps its inner transforms' state under its own
prefix and shows them to whole-optimizer operations (``train()``/``eval()``, ``ema_weights``)
through :meth:`~heavyball_chain.core.Transform.walk`.

Selecting parameters: a *mask* or *labeler* is either a callable, given the parameter (``f(p)``)
or its name and the parameter (``f(name, p)``, names come from building the optimizer from
``model.named_parameters()``), or a sequence indexed by the parameter's position in the optimizer
(over all param groups, in order).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from ..core import Bucket, Hyper, Slot, Transform, merge_hyperparams, non_negative_int, run_at_steps

__all__ = ["identity", "scale", "masked", "partition", "apply_if_finite", "multi_steps", "renamed"]


class identity(Transform):  # noqa: N801 - optax-style transform name
    """``u = u``: the neutral element of ``chain``.

    It takes no arguments and reads no hyperparameter; ``partition`` and ``masked`` use it for
    the parameters left alone.

    Examples:
        ``chain(identity(), apply_updates())`` is ``apply_updates()``: ``p = p + g``.

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> opt = hc.ChainOptimizer([p], hc.chain(T.identity(), T.apply_updates()))
        >>> p.grad = torch.tensor([0.5, -1.0])
        >>> opt.step()
        >>> p.data
        tensor([1.5000, 1.0000])
    """

    name = "identity"

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        return updates

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return ()

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        return u


class scale(Transform):  # noqa: N801
    """``u = c u`` for a constant ``c`` (use ``scale_by_learning_rate`` for a hyperparameter).

    Args:
        factor: ``c``, a Python int or float (not a bool, not a tensor), fixed at construction;
            not a hyperparameter (no param-group value, no schedule). Negative to descend.

    Examples:
        ``scale(-0.1)`` is plain SGD with a constant learning rate of 0.1:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> opt = hc.ChainOptimizer([p], hc.chain(T.scale(-0.1), T.apply_updates()))
        >>> p.grad = torch.tensor([0.5, -1.0])
        >>> opt.step()
        >>> p.data
        tensor([0.9500, 2.1000])
    """

    name = "scale"
    capturable = True

    def __init__(self, factor: float):
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise TypeError(f"scale: factor must be a number, got {type(factor).__name__}")
        self.factor = float(factor)

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        return torch._foreach_mul(updates, self.factor)

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return (self.factor,)

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        return u * s[0]

    def __repr__(self) -> str:
        return f"scale({self.factor:g})"


# --------------------------------------------------------------------------- selecting parameters


def _takes_name(fn: Callable) -> bool:
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):  # builtins without a signature: f(p)
        return False
    return len(params) >= 2


def _per_param(selector: Callable | Sequence, bucket: Bucket, who: str) -> list[Any]:
    """The selector's value for each parameter of the bucket."""
    if callable(selector):
        tensors = bucket.sharded if bucket.sharded is not None else bucket.params
        if _takes_name(selector):
            if bucket.names is None or any(n is None for n in bucket.names):
                raise ValueError(f"{who}: the callable takes a parameter name, but the optimizer's parameters "
                                 f"have none; build the optimizer from model.named_parameters()")
            return [selector(n, p) for n, p in zip(bucket.names, tensors)]
        return [selector(p) for p in tensors]
    assert bucket.positions is not None  # an optimizer's bucket
    try:
        return [selector[i] for i in bucket.positions]
    except IndexError:
        raise ValueError(f"{who}: a sequence needs one entry per parameter of the optimizer; got {len(selector)} "
                         f"entries, but a parameter is at position {max(bucket.positions)}") from None


def _check_transform(t: Any, who: str) -> None:
    if not isinstance(t, Transform):
        raise TypeError(f"{who}: expected a heavyball_chain Transform, got {type(t).__name__}")


class partition(Transform):  # noqa: N801
    """Different transforms for different parameters: ``labeler`` gives each parameter a label and
    ``transforms[label]`` updates it (e.g. SOAP for matrices and LaProp for vectors).

    Each transform sees only its parameters and keeps its state under ``<label>/``. Branches
    share the param group's hyperparameters by name (two branches declaring one name must agree
    on its default); put parameters in separate param groups to give them different values.
    Either every branch writes the parameters (each ends with an apply) or none does. A branch
    that skips the step (returns ``None``, e.g. SOAP's initialising step) skips the rest of the
    chain for its parameters only, so ``partition`` equals separate optimizers on the subsets.

    Args:
        transforms: a non-empty mapping ``{label: transform}``; labels are non-empty strings
            without ``"/"``, and either every transform writes the parameters or none does.
        labeler: each parameter's label (module docstring): a callable ``f(p)`` or
            ``f(name, p)``, or a sequence indexed by the parameter's position in the optimizer.
            A label outside ``transforms`` raises ``ValueError`` at the first step.

    Examples:
        signSGD for the matrix, clipped SGD for the vector, in one optimizer:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> w, b = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
        >>> split = T.partition({"matrix": T.scale_by_sign(), "vector": T.clip_by_value()},
        ...                     lambda p: "matrix" if p.ndim >= 2 else "vector")
        >>> opt = hc.ChainOptimizer([w, b], hc.chain(split, T.scale_by_learning_rate(), T.apply_updates()),
        ...                         lr=0.1, max_delta=0.5)
        >>> w.grad, b.grad = torch.tensor([[3.0, -0.2], [3.0, -0.2]]), torch.tensor([3.0, -0.2])
        >>> opt.step()
        >>> w.data[0], b.data  # -0.1 sign(g); -0.1 clamp(g, -0.5, 0.5)
        (tensor([-0.1000,  0.1000]), tensor([-0.0500,  0.0200]))
    """

    name = "partition"

    def __init__(self, transforms: Mapping[str, Transform], labeler: Callable | Sequence):
        if not isinstance(transforms, Mapping) or not transforms:
            raise TypeError("partition: transforms must be a non-empty dict {label: transform}")
        for label, t in transforms.items():
            _check_transform(t, f"partition[{label!r}]")
            if not isinstance(label, str) or not label or "/" in label:
                raise ValueError(f"partition: labels must be non-empty strings without '/', got {label!r}")
        writes = {label: t.writes_params for label, t in transforms.items()}
        if len(set(writes.values())) > 1:
            raise ValueError(f"partition: either every branch writes the parameters or none does; got {writes}")
        self.transforms = dict(transforms)
        self.labeler = labeler
        self.writes_params = any(writes.values())
        declared: dict[str, Hyper] = {}
        for label, t in self.transforms.items():
            merge_hyperparams(declared, t.declared(), f"partition[{label!r}]")
        self.hyperparams = declared

    def declared(self) -> dict[str, Hyper]:
        return dict(self.hyperparams)

    def children(self) -> list[tuple[str, Transform]]:
        return list(self.transforms.items())

    def _split(self, bucket: Bucket) -> list[tuple[str, list[int]]]:
        labels = _per_param(self.labeler, bucket, "partition: labeler")
        unknown = sorted({repr(x) for x in labels if x not in self.transforms})
        if unknown:
            raise ValueError(f"partition: labeler returned {', '.join(unknown)}; expected one of "
                             f"{sorted(self.transforms)}")
        out = []
        for label in self.transforms:
            idx = [i for i, x in enumerate(labels) if x == label]
            if idx:
                out.append((label, idx))
        return out

    def init(self, bucket: Bucket) -> None:
        for label, idx in self._split(bucket):
            self.transforms[label].init(bucket.subset(idx).child(label))

    def walk(self, bucket: Bucket) -> Iterable[tuple[Transform, Bucket]]:
        yield self, bucket
        for label, idx in self._split(bucket):
            yield from self.transforms[label].walk(bucket.subset(idx).child(label))

    def state_layout(self, bucket: Bucket) -> dict[str, Slot]:
        out = {}
        for label, _ in self._split(bucket):  # one parameter: one label
            out.update(self.transforms[label].state_layout(bucket.child(label)))
        return out

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        out: list[torch.Tensor | None] = [None] * len(updates)
        for label, idx in self._split(bucket):
            result = self.transforms[label].update([updates[i] for i in idx], bucket.subset(idx).child(label))
            if result is not None:
                for i, u in zip(idx, result):
                    out[i] = u
        return None if all(u is None for u in out) else out

    def state_bytes(self, p: torch.Tensor, group: dict) -> int:
        # the label is not known without the optimizer's view of p: count the largest branch
        return max(t.state_bytes(p, group) for t in self.transforms.values())

    def __repr__(self) -> str:
        inner = "\n".join(f"  {label}: {t!r}".replace("\n", "\n  ") for label, t in self.transforms.items())
        return f"partition(\n{inner}\n)"


class masked(partition):  # noqa: N801
    """Apply ``t`` to the parameters ``mask`` selects; the others' updates pass through unchanged.

    ``masked(t, all False)`` is the identity, ``masked(t, all True)`` is ``t``. If ``t`` skips the
    step, the rest of the chain skips it for the selected parameters only. ``t`` must not write
    the parameters (put ``masked`` before the apply). State: ``t``'s, under ``masked/``.

    Args:
        t: the transform run on the selected parameters; it must not write the parameters.
        mask: which parameters ``t`` updates (module docstring): a callable ``f(p)`` or
            ``f(name, p)`` returning a truth value, or a sequence of truth values indexed by the
            parameter's position in the optimizer.

    Examples:
        Weight decay on the matrix only (``u = g + wd p``, then ``-lr u``):

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> w, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
        >>> decay = T.masked(T.add_decayed_weights(), lambda p: p.ndim >= 2)
        >>> tx = hc.chain(decay, T.scale_by_learning_rate(), T.apply_updates())
        >>> opt = hc.ChainOptimizer([w, b], tx, lr=0.1, weight_decay=0.5)
        >>> w.grad, b.grad = torch.zeros(2, 2), torch.zeros(2)
        >>> opt.step()
        >>> w.data[0], b.data  # w: 1 - 0.1 * 0.5; b untouched
        (tensor([0.9500, 0.9500]), tensor([1., 1.]))
    """

    name = "masked"

    def __init__(self, t: Transform, mask: Callable | Sequence):
        _check_transform(t, "masked")
        if t.writes_params:
            raise ValueError("masked: the inner transform must not write the parameters; mask the updates and "
                             "end the chain with an apply")
        super().__init__({"masked": t, "unmasked": identity()}, mask)
        self.inner = t

    def _split(self, bucket: Bucket) -> list[tuple[str, list[int]]]:
        selected = [bool(x) for x in _per_param(self.labeler, bucket, "masked: mask")]
        split = (("masked", [i for i, x in enumerate(selected) if x]),
                 ("unmasked", [i for i, x in enumerate(selected) if not x]))
        return [(label, idx) for label, idx in split if idx]

    def state_bytes(self, p: torch.Tensor, group: dict) -> int:
        return self.inner.state_bytes(p, group)

    def __repr__(self) -> str:
        return f"masked({self.inner!r})".replace("\n", "\n  ")


# --------------------------------------------------------------------------- steps


class _Wrapper(Transform):
    """A transform around one inner transform ``t`` that runs it on some steps; ``t``'s state lives
    under ``inner/`` and ``t`` sees its own step count, ``_inner_steps(bucket)`` (per parameter:
    parameters of one bucket with different histories run as separate views)."""

    def __init__(self, t: Transform):
        _check_transform(t, self.name)
        self.inner = t
        self.hyperparams = t.declared()
        self.writes_params = t.writes_params

    def declared(self) -> dict[str, Hyper]:
        return dict(self.hyperparams)

    def children(self) -> list[tuple[str, Transform]]:
        return [("inner", self.inner)]

    def _inner_steps(self, bucket: Bucket) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def _views(self, bucket: Bucket) -> list[tuple[list[int] | None, Bucket]]:
        return bucket.child("inner").at_steps(self._inner_steps(bucket))

    def init(self, bucket: Bucket) -> None:
        Transform.init(self, bucket)
        self.inner.init(bucket.child("inner"))

    def walk(self, bucket: Bucket) -> Iterable[tuple[Transform, Bucket]]:
        yield self, bucket
        for _, view in self._views(bucket):
            yield from self.inner.walk(view)

    def state_layout(self, bucket: Bucket) -> dict[str, Slot]:
        return {**Transform.state_layout(self, bucket), **self.inner.state_layout(bucket.child("inner"))}

    def state_bytes(self, p: torch.Tensor, group: dict) -> int:
        return Transform.state_bytes(self, p, group) + self.inner.state_bytes(p, group)


class apply_if_finite(_Wrapper):  # noqa: N801
    """Skip a step whose incoming updates are not all finite: ``t`` does not run, so parameters and
    ``t``'s state stay untouched, and the rest of the chain is skipped (returns ``None``).

    The check is on the updates *entering* ``t`` (usually the gradients: one fused norm and one
    host sync per bucket), so it also protects transforms that write the parameters. ``t`` counts
    only the steps it ran, per parameter (its bias corrections and warmups do not advance on
    skipped steps). State: ``notfinite_count`` (consecutive skips) and ``total_notfinite``. After
    ``max_consecutive_errors`` consecutive skips the next non-finite step raises
    ``FloatingPointError`` instead of skipping silently forever.

    Args:
        t: the transform run on the finite steps, usually a chain; it may write the parameters.
        max_consecutive_errors: an integer >= 0, the most consecutive steps skipped; the next
            non-finite one raises (0: the first one raises). Not a hyperparameter. Default 100.

    Examples:
        The NaN step is skipped (p untouched, counted), the next one runs:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> tx = T.apply_if_finite(hc.chain(T.scale_by_learning_rate(), T.apply_updates()))
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.5)
        >>> for g in ([float("nan"), 1.0], [1.0, 1.0]):
        ...     p.grad = torch.tensor(g)
        ...     opt.step()
        >>> p.data, opt.state[p]["total_notfinite"]
        (tensor([0.5000, 0.5000]), 1)
    """

    name = "apply_if_finite"

    def __init__(self, t: Transform, max_consecutive_errors: int = 100):
        super().__init__(t)
        if non_negative_int(max_consecutive_errors) is not None:
            raise ValueError(f"apply_if_finite: max_consecutive_errors must be an integer >= 0, "
                             f"got {max_consecutive_errors!r}")
        self.max_consecutive_errors = max_consecutive_errors

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"notfinite_count": Slot(int, init=lambda p: 0), "total_notfinite": Slot(int, init=lambda p: 0)}

    def _inner_steps(self, bucket: Bucket) -> list[int]:
        key = bucket.key("total_notfinite")
        return [bucket.step - s.get(key, 0) for s in bucket.states]

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        total = torch.stack(bucket.norms(updates)).sum()
        count_key, total_key = bucket.key("notfinite_count"), bucket.key("total_notfinite")
        if bool(torch.isfinite(total)):
            for s in bucket.states:
                s[count_key] = 0
            return run_at_steps(self.inner.update, updates, self._views(bucket))
        consecutive = max(s.get(count_key, 0) for s in bucket.states)
        if consecutive >= self.max_consecutive_errors:
            raise FloatingPointError(f"apply_if_finite: {consecutive + 1} consecutive steps with non-finite "
                                     f"updates (max_consecutive_errors={self.max_consecutive_errors})")
        for s in bucket.states:
            s[count_key] = s.get(count_key, 0) + 1
            s[total_key] = s.get(total_key, 0) + 1
        return None

    def __repr__(self) -> str:
        return f"apply_if_finite({self.inner!r}, max_consecutive_errors={self.max_consecutive_errors})".replace(
            "\n", "\n  ")


class multi_steps(_Wrapper):  # noqa: N801
    """Gradient accumulation: call ``t`` once every ``k`` steps with the mean of the last ``k``
    updates, ``u = (1/k) sum_j u_j``; the other steps return ``None`` (no parameter update).

    Call ``optimizer.step()`` after every micro-batch. ``t`` counts its own steps (at this
    wrapper's step n, ``t`` sees step ``n // k``), so its warmup and bias correction count real
    updates. ``multi_steps(t, 1)`` is ``t``. State: ``acc`` (one buffer per parameter).

    Args:
        t: the transform run on every ``k``-th step, usually a chain; it may write the parameters.
        k: the number of micro-batches accumulated, an integer >= 1; not a hyperparameter.

    Examples:
        Two micro-batches, gradients 1 and 3: no update, then one step with their mean, 2:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.ones(1))
        >>> tx = T.multi_steps(hc.chain(T.scale_by_learning_rate(), T.apply_updates()), k=2)
        >>> opt = hc.ChainOptimizer([p], tx, lr=0.1)
        >>> for g in (1.0, 3.0):
        ...     p.grad = torch.tensor([g])
        ...     opt.step()
        ...     print(p.data)
        tensor([1.])
        tensor([0.8000])
    """

    name = "multi_steps"

    def __init__(self, t: Transform, k: int):
        super().__init__(t)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"multi_steps: k must be an integer >= 1, got {k!r}")
        self.k = k

    def slots(self, bucket: Bucket) -> dict[str, Slot]:
        return {"acc": Slot()} if self.k > 1 else {}

    def _inner_steps(self, bucket: Bucket) -> list[int]:
        return [bucket.step // self.k] * len(bucket.params)

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        if self.k == 1:
            return run_at_steps(self.inner.update, updates, self._views(bucket))
        acc = bucket.state("acc")
        torch._foreach_add_(acc, updates)
        if bucket.step % self.k:
            return None
        mean = torch._foreach_div(acc, float(self.k))
        torch._foreach_zero_(acc)
        return run_at_steps(self.inner.update, mean, self._views(bucket))

    def __repr__(self) -> str:
        return f"multi_steps({self.inner!r}, k={self.k})".replace("\n", "\n  ")


# --------------------------------------------------------------------------- renaming hyperparameters


class renamed(Transform):  # noqa: N801
    """``t`` reading some of its hyperparameters from the param group under other names:
    ``renamed(add_decayed_weights(0.1), weight_decay="weight_decay_1d")`` decays by the group's
    ``weight_decay_1d``. This is how two branches of a ``partition`` get different values of one
    hyperparameter within a param group (MARS's ``betas_1d`` and ``weight_decay_1d`` for the
    parameters it updates by AdamW). ``t``'s state, step and math are unchanged.

    Args:
        t: the transform whose hyperparameters are renamed.
        **names: ``inner=outer`` pairs: ``t`` reads its hyperparameter ``inner`` from the param
            group's ``outer`` (a non-empty string), whose default is ``inner``'s. Each ``inner``
            must be one ``t`` reads, and no two hyperparameters may end up under one name.

    Examples:
        ``clip_by_value`` reading its bound from the group's ``clip``:

        >>> import torch, heavyball_chain as hc
        >>> from heavyball_chain import transforms as T
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> tx = hc.chain(T.renamed(T.clip_by_value(), max_delta="clip"), T.scale_by_learning_rate(),
        ...               T.apply_updates())
        >>> opt = hc.ChainOptimizer([p], tx, lr=1.0, clip=0.5)
        >>> p.grad = torch.tensor([2.0, -0.1])
        >>> opt.step()  # -clamp(g, -0.5, 0.5)
        >>> p.data, "max_delta" in opt.param_groups[0]
        (tensor([-0.5000,  0.1000]), False)
    """

    name = "renamed"

    def __init__(self, t: Transform, **names: str):
        if not isinstance(t, Transform):
            raise TypeError(f"renamed: expected a heavyball_chain Transform, got {type(t).__name__}")
        declared = t.declared()
        unknown = sorted(set(names) - set(declared))
        if unknown:
            raise ValueError(f"renamed: {t.name} does not read {', '.join(map(repr, unknown))}; it reads "
                             f"{sorted(declared)}")
        for inner, outer in names.items():
            if not isinstance(outer, str) or not outer:
                raise TypeError(f"renamed: the new name for {inner!r} must be a non-empty string, got {outer!r}")
        outers = [names.get(k, k) for k in declared]
        if len(set(outers)) != len(outers):
            raise ValueError(f"renamed: two hyperparameters of {t.name} would be read under one name: {names}")
        self.inner = t
        self.names = dict(names)
        self.hyperparams = {names.get(k, k): h for k, h in declared.items()}
        self.writes_params = t.writes_params
        self.supports_complex = t.supports_complex
        self.capturable = t.capturable

    def declared(self) -> dict[str, Hyper]:
        return dict(self.hyperparams)

    def children(self) -> list[tuple[str, Transform]]:
        return [("inner", self.inner)]

    def _view(self, bucket: Bucket) -> Bucket:
        group = dict(bucket.group)
        hypers = dict(bucket.hypers) if bucket.hypers is not None else {}
        for inner, outer in self.names.items():
            group[inner] = bucket.group[outer]
            hypers[inner] = self.hyperparams[outer]
        return bucket.replace(group=group, hypers=hypers)

    def init(self, bucket: Bucket) -> None:
        self.inner.init(self._view(bucket))

    def walk(self, bucket: Bucket) -> Iterable[tuple[Transform, Bucket]]:
        yield self, bucket
        yield from self.inner.walk(self._view(bucket))

    def state_layout(self, bucket: Bucket) -> dict[str, Slot]:
        return self.inner.state_layout(bucket)

    def state_bytes(self, p: torch.Tensor, group: dict) -> int:
        return self.inner.state_bytes(p, group)

    def update(self, updates: list[torch.Tensor], bucket: Bucket) -> Sequence[torch.Tensor | None] | None:
        return self.inner.update(updates, self._view(bucket))

    def fuse(self, bucket: Bucket) -> tuple[Any, ...] | None:
        return self.inner.fuse(self._view(bucket))

    def fused_state(self, bucket: Bucket) -> tuple[str, ...]:
        return self.inner.fused_state(self._view(bucket))

    def fused(self, u: torch.Tensor, p: torch.Tensor, state: Sequence[torch.Tensor],
              s: torch.Tensor) -> torch.Tensor:
        return self.inner.fused(u, p, state, s)

    def __repr__(self) -> str:
        names = ", ".join(f"{k}={v!r}" for k, v in self.names.items())
        return f"renamed({self.inner!r}, {names})".replace("\n", "\n  ")

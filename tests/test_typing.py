"""The package's annotations hold: mypy (configured in pyproject.toml) finds no error in
heavyball_chain/, which ships ``py.typed`` so that users' type checkers read them."""

import collections.abc
import inspect
import os
import subprocess
import sys
import types
import typing

import pytest
import torch

from heavyball_chain import Transform, presets, transforms
from heavyball_chain.core import Elements, Schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mypy_is_clean(tmp_path):
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path), "heavyball_chain"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_package_ships_its_annotations():
    assert os.path.exists(os.path.join(ROOT, "heavyball_chain", "py.typed"))


def _admits(annotation, kind):
    """Whether the resolved ``annotation`` admits a value of ``kind`` ("schedule" or "tensor")."""
    if annotation is typing.Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_admits(a, kind) for a in typing.get_args(annotation))
    if kind == "schedule":
        return (origin is collections.abc.Callable or annotation is collections.abc.Callable
                or inspect.isclass(annotation) and issubclass(annotation, Schedule))
    return annotation is torch.Tensor


def _elements(annotation):
    """The element annotations of a tuple/Sequence annotation (or of each tuple in a Union); an
    element annotated ``None`` must be None (PaLM's beta2, which follows palm_beta2)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [e for a in typing.get_args(annotation) for e in _elements(a)]
    if origin in (tuple, collections.abc.Sequence):
        return [a for a in typing.get_args(annotation) if a is not Ellipsis]
    return []


def _hyper_arguments():
    """(owner, argument, annotation, Hyper) for every preset and transform constructor argument that
    is the default of a hyperparameter of the same name."""
    out = []
    for module in (presets, transforms):
        for name in module.__all__:
            obj = getattr(module, name)
            if not inspect.isclass(obj):
                continue
            hints = typing.get_type_hints(obj.__init__)
            if name == "MuonWithAdamW":
                declared = obj(torch.nn.Linear(2, 2))._hyperparams
            elif module is presets:
                declared = obj([torch.nn.Parameter(torch.zeros(2, 2))])._hyperparams
            else:
                if not issubclass(obj, Transform):
                    continue
                try:
                    declared = obj().declared()
                except TypeError:
                    continue  # a transform that needs arguments (wrappers): its hyperparameters are its children's
            for arg in inspect.signature(obj.__init__).parameters:
                if arg in declared and arg in hints:
                    out.append((name, arg, hints[arg], declared[arg]))
    return out


def test_annotations_admit_what_the_hyperparameters_accept():
    """A constructor argument that is a hyperparameter's default is annotated with everything its
    validator accepts: a schedule ``f(t)`` unless the hyperparameter is fixed (for each element of a
    tuple), and a tensor exactly when the hyperparameter admits one (``lr``). Users' type checkers
    read these annotations (py.typed): ``eps=lambda t: ...`` must not be a type error when it runs."""
    wrong = []
    for owner, arg, annotation, hyper in _hyper_arguments():
        if not hyper.fixed:
            elements = _elements(annotation)
            if isinstance(hyper.check, Elements) or elements:
                if not elements or not all(_admits(e, "schedule") for e in elements if e not in (None, type(None))):
                    wrong.append(f"{owner}({arg}: {annotation}): an element may be a schedule")
            elif not _admits(annotation, "schedule"):
                wrong.append(f"{owner}({arg}: {annotation}): may be a schedule")
        elif _admits(annotation, "schedule"):
            wrong.append(f"{owner}({arg}: {annotation}): is fixed, a schedule is refused")
        if hyper.tensor != _admits(annotation, "tensor"):
            wrong.append(f"{owner}({arg}: {annotation}): a tensor is {'' if hyper.tensor else 'not '}admitted")
    assert not wrong, "\n".join(wrong)


def test_every_hyperparameter_argument_is_checked_for_its_annotation():
    """The test above sees the arguments of all presets and of most transforms (it cannot miss them
    by a broken introspection)."""
    owners = {owner for owner, *_ in _hyper_arguments()}
    assert set(presets.__all__) <= owners
    assert {"scale_by_adam", "soap_precondition", "schedule_free", "trace"} <= owners

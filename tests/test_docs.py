"""The worked examples in the docs run as written."""

import os
import re
import sys
import types

import pytest

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def python_blocks(name):
    with open(os.path.join(DOCS, name)) as fh:
        return re.findall(r"```python\n(.*?)```", fh.read(), flags=re.S)


@pytest.mark.parametrize("code", python_blocks("transforms.md"), ids=lambda c: c.splitlines()[0][:40])
def test_transforms_doc_example_runs(code, monkeypatch):
    """Each block runs as a module of its own (torch.compile looks classes' modules up by name)."""
    module = types.ModuleType("docs_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "docs/transforms.md", "exec"), module.__dict__)


def test_transforms_doc_names_every_transform():
    from heavyball_chain import transforms as T

    with open(os.path.join(DOCS, "transforms.md")) as fh:
        text = fh.read()
    missing = [n for n in T.__all__ if f"`{n}" not in text and n not in ("StochasticWriter", "stochastic_round_",
                                                                      "beta_debias")]
    assert not missing, f"docs/transforms.md does not describe {missing}"

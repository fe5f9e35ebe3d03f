"""Every public transform and preset documents itself: a Google-style ``Args:`` section naming
each parameter of its signature, the paper it implements, and an ``Examples:`` section that runs
(``Examples``, plural: the title griffe renders as doctest code, where ``Example:`` would be
parsed as markdown).

The examples are doctests executed here with empty globals, so each one imports what it uses and
can be pasted as it is; each shows at least one result (a doctest with no expected output checks
nothing but the absence of an exception). The API reference (docs/api, mkdocstrings) renders
these same sections.
"""

from __future__ import annotations

import doctest
import inspect
import re

import pytest

import heavyball_chain as hc

# Transforms and presets with no paper behind them: plumbing (wrappers, the write, the lr
# multiply) whose docstring says what it is for instead.
NO_PAPER = {
    "identity", "scale", "apply_updates", "clip_by_value", "masked", "partition", "renamed", "every",
    "scale_by_learning_rate", "multi_steps", "apply_if_finite", "StochasticWriter",
}
CITATION = re.compile(r"arXiv|\b(19|20)\d\d\b")


def _public() -> list[tuple[str, object]]:
    return ([(f"transforms.{n}", getattr(hc.transforms, n)) for n in hc.transforms.__all__]
            + [(f"presets.{n}", getattr(hc.presets, n)) for n in hc.presets.__all__])


PUBLIC = _public()


def _section(doc: str, title: str) -> str | None:
    """The indented body of a Google-style section (``Args:``, ``Examples:``), or None."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{title}:" and not line.startswith(" " * 8):
            indent = len(line) - len(line.lstrip())
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                body.append(nxt)
            return "\n".join(body)
    return None


def _parameters(obj) -> list[str]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    names = []
    for p in inspect.signature(target).parameters.values():
        if p.name in ("self", "cls"):
            continue
        prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(prefix + p.name)
    return names


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_args_section_names_every_parameter(name, obj):
    doc = inspect.getdoc(obj) or ""
    params = _parameters(obj)
    if not params:
        return
    args = _section(doc, "Args")
    assert args is not None, f"{name}: the docstring has no 'Args:' section (parameters: {', '.join(params)})"
    documented = set(re.findall(r"^\s{4}(\*{0,2}\w+)(?: \([^)]*\))?:", args, re.MULTILINE))
    missing = [p for p in params if p not in documented]
    assert not missing, f"{name}: 'Args:' does not describe {', '.join(missing)}"
    extra = documented - set(params)
    assert not extra, f"{name}: 'Args:' describes {', '.join(sorted(extra))}, which the signature does not take"


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_cites_its_paper(name, obj):
    if name.split(".")[-1] in NO_PAPER:
        return
    assert CITATION.search(inspect.getdoc(obj) or ""), f"{name}: the docstring cites no paper (authors, year, arXiv)"


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_example_runs(name, obj):
    doc = inspect.getdoc(obj) or ""
    example = _section(doc, "Examples")
    assert example is not None, f"{name}: the docstring has no 'Examples:' section"
    test = doctest.DocTestParser().get_doctest(example, {}, name, None, 0)
    assert test.examples, f"{name}: 'Examples:' has no '>>>' lines"
    assert any(e.want.strip() for e in test.examples), f"{name}: the example shows no result"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    out: list[str] = []
    runner.run(test, out=out.append)
    assert runner.failures == 0, f"{name}: the example fails\n" + "".join(out)


def test_public_names_are_the_two_families_and_the_helper():
    """``presets.__all__`` is spelled out for static tools; it must list HEAVYBALL, STANDARD and
    MuonWithAdamW, and nothing else (HeavyBall's alternative spellings are the same classes)."""
    assert hc.presets.__all__ == [*hc.presets.HEAVYBALL, *hc.presets.STANDARD, "MuonWithAdamW"]
    assert hc.PalmForEachSoap is hc.PaLMForeachSOAP
    assert hc.PrecondScheduleSFPaLMSOAP is hc.PrecondScheduleSFPaLMForeachSOAP

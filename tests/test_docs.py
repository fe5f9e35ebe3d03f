"""The worked examples in the docs run as written: every ```python block of README.md and
docs/*.md, each as a module of its own, in a temporary working directory.

An HTML comment on the line before a block changes how it runs: ``<!-- run: 2 processes -->``
runs it in 2 processes with the environment ``torchrun --nproc-per-node 2`` gives them (gloo on
CPU, 127.0.0.1, a free port); ``<!-- requires: transformers, accelerate -->`` runs it when those
modules import (an optional extra) and skips it otherwise; ``<!-- not run: reason -->`` skips it
and reports the reason.
"""

import multiprocessing
import os
import re
import sys
import time
import types

import pytest
import torch

from helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
DOC_FILES = ["README.md"] + sorted(f"docs/{n}" for n in os.listdir(DOCS) if n.endswith(".md"))
TIMEOUT = 120  # seconds for a multi-process block (they take 2-7 s)
BLOCK = re.compile(r"^(?:<!--\s*(?P<marker>.*?)\s*-->\n)?```python\n(?P<code>.*?)^```", flags=re.S | re.M)


def python_blocks(files=DOC_FILES):
    """``pytest.param(path, line, marker, code)`` for every python block; ids are ``file:line``."""
    blocks = []
    for path in files:
        with open(os.path.join(ROOT, path)) as fh:
            text = fh.read()
        for m in BLOCK.finditer(text):
            line = text.count("\n", 0, m.start("code"))  # the ```python line, 1-based
            blocks.append(pytest.param(path, line, m["marker"], m["code"], id=f"{path}:{line}"))
    return blocks


def run_block(code: str, path: str, line: int) -> types.ModuleType:
    """Run ``code`` as a module of its own (torch.compile looks classes' modules up by name);
    tracebacks give the line in the markdown file. Returns the module (its objects alive)."""
    module = types.ModuleType("docs_example")
    sys.modules[module.__name__] = module
    try:
        exec(compile("\n" * line + code, path, "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module


def _rank(rank: int, world: int, port: int, code: str, path: str, line: int) -> None:
    """One process of a multi-process block, with torchrun's environment. After the block it
    exits without freeing the block's objects: a DDP model freed after destroy_process_group()
    can deadlock in torch (its Reducer frees the gloo process group while holding the GIL, which
    a gloo thread freeing a finished work item waits for; seen once in CI)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    module = run_block(code, path, line)  # noqa: F841 - kept alive until the process ends
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_processes(code: str, path: str, line: int, world: int = 2) -> None:
    """Run ``code`` in ``world`` fresh processes, forked from a server that has imported torch once
    (a spawned process would spend seconds importing it)."""
    multiprocessing.set_forkserver_preload(["torch", "torch.distributed.fsdp", "heavyball_chain", __name__])
    for attempt in range(2):  # the free port can be taken before rank 0 binds it: retry once
        ctx = torch.multiprocessing.start_processes(_rank, args=(world, free_port(), code, path, line),
                                                    nprocs=world, start_method="forkserver", join=False)
        deadline = time.monotonic() + TIMEOUT
        try:
            while not ctx.join(timeout=1):
                if time.monotonic() > deadline:
                    for p in ctx.processes:
                        p.kill()
                    pytest.fail(f"{path}:{line}: the {world} processes did not finish in {TIMEOUT} s")
            return
        except torch.multiprocessing.ProcessRaisedException as exc:
            if attempt or "address already in use" not in str(exc).lower():
                raise


@pytest.mark.parametrize("path, line, marker, code", python_blocks())
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # dcp in one process says so
def test_doc_example_runs(path, line, marker, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files (checkpoints)
    if marker is None:
        run_block(code, path, line)
    elif marker == "run: 2 processes":
        if not torch.distributed.is_available():
            pytest.skip("torch.distributed is not available")
        run_processes(code, path, line)
    elif marker.startswith("not run:"):
        pytest.skip(f"{path}:{line} is marked <!-- {marker} -->")
    elif marker.startswith("requires:"):  # optional packages (an extra): skipped without them
        for module in marker.removeprefix("requires:").split(","):
            pytest.importorskip(module.strip())
        run_block(code, path, line)
    else:
        pytest.fail(f"{path}:{line}: unknown marker <!-- {marker} -->; "
                    "expected <!-- run: 2 processes -->, <!-- requires: module, ... --> or <!-- not run: reason -->")


def test_every_doc_with_code_is_collected():
    """The block pattern finds every ```python fence (a fence it missed would go untested)."""
    for path in DOC_FILES:
        with open(os.path.join(ROOT, path)) as fh:
            fences = len(re.findall(r"^```python$", fh.read(), flags=re.M))
        assert len(python_blocks([path])) == fences, path
    assert {p.values[0] for p in python_blocks()} >= {"README.md", "docs/distributed.md", "docs/transforms.md"}


def test_transforms_doc_names_every_transform():
    from heavyball_chain import transforms as T

    with open(os.path.join(DOCS, "transforms.md")) as fh:
        text = fh.read()
    missing = [n for n in T.__all__ if f"`{n}" not in text and n not in ("StochasticWriter", "stochastic_round_",
                                                                      "beta_debias")]
    assert not missing, f"docs/transforms.md does not describe {missing}"


def test_markers_are_read(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("text\n```python\na = 1\n```\n<!-- not run: needs a GPU -->\n```python\nb = 2\n```\n"
                   "<!-- run: 2 processes -->\n```python\nc = 3\n```\n```bash\nls\n```\n")
    assert [p.values for p in python_blocks([str(doc)])] == [
        (str(doc), 2, None, "a = 1\n"), (str(doc), 6, "not run: needs a GPU", "b = 2\n"),
        (str(doc), 10, "run: 2 processes", "c = 3\n")]


def test_every_preset_argument_is_documented():
    """docs/presets.md's "Every constructor argument" table names every argument of every preset."""
    import inspect

    import heavyball_chain as hc

    with open(os.path.join(DOCS, "presets.md")) as fh:
        text = fh.read()
    table = text.split("## Every constructor argument", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(\w+)`", "\n".join(line.split("|")[1] for line in table.splitlines()
                                                      if line.startswith("| `"))))
    missing = {}
    for name in hc.presets.HEAVYBALL + hc.presets.STANDARD + ["MuonWithAdamW"]:
        args = set(inspect.signature(getattr(hc.presets, name)).parameters) - {"params", "model"}
        if args - documented:
            missing[name] = sorted(args - documented)
    assert not missing, missing

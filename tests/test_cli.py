"""`heavyball-chain` end to end on a tiny budget: a real run, its table and files, determinism,
and one-line errors for bad options."""

import csv
import json
import os
import subprocess
import sys

import pytest

import heavyball_chain as hc
from heavyball_chain.bench.cli import main
from heavyball_chain.bench.tasks import TASKS

TINY = ["bench", "--tasks", "charlm,mlp,quadratic,rosenbrock", "--optimizers", "ForeachLaProp,ForeachSOAP,torch.SGD",
        "--steps", "6"]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "heavyball_chain", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def in_process(capsys, *args):
    """``heavyball-chain args`` run in this process (no interpreter and torch start-up, ~4 s each):
    a CompletedProcess-like result with returncode, stdout and stderr."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def table_rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    """{(task, optimizer): cells} from the printed table."""
    rows, task = {}, None
    for line in stdout.splitlines():
        if line and not line.startswith(" ") and ":" in line and not line.startswith("wrote"):
            task = line.split(":")[0]
        elif line.startswith("  ") and not line.strip().startswith("optimizer"):
            cells = line.split()
            if cells[1] == "(diverged)":
                cells.pop(1)
            rows[(task, cells[0])] = cells[1:]
    return rows


def data_runs(out):
    return json.loads((out / "bench.json").read_text())["runs"]


def test_bench_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    proc = in_process(capsys, *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = table_rows(proc.stdout)
    assert set(rows) == {(t, o) for t in TASKS for o in ("ForeachLaProp", "ForeachSOAP", "torch.SGD")}
    # lr, 4 checkpoints, final, held-out, step ms, state bytes per parameter
    for (task, opt), cells in rows.items():
        assert len(cells) == 9, (task, opt, cells)
        assert float(cells[-2]) > 0  # median step ms
    assert not any(r["diverged"] for r in data_runs(out) if r["optimizer"] != "torch.SGD")
    assert float(rows[("mlp", "ForeachLaProp")][-1]) == 8.0  # two fp32 buffers
    assert float(rows[("mlp", "torch.SGD")][-1]) == 4.0  # one momentum buffer
    assert float(rows[("mlp", "ForeachLaProp")][0]) == 0.0025  # preset default lr
    assert float(rows[("quadratic", "ForeachLaProp")][0]) == 0.025  # toy tasks: 10x

    data = json.loads((out / "bench.json").read_text())
    assert data["config"]["steps"] == 6
    assert len(data["runs"]) == 12
    for run in data["runs"]:
        logged = len(run["points"])
        assert [p["step"] for p in run["points"]] == list(range(1, logged + 1))
        assert logged == 6 or run["diverged"]
        assert all(b >= a for a, b in zip([p["seconds"] for p in run["points"]],
                                          [p["seconds"] for p in run["points"]][1:]))
        # the table's final column is the mean of the last 10% of logged losses (here: the last one)
        cell = rows[(run["task"], run["optimizer"])][5]
        if not run["diverged"]:
            assert float(cell) == pytest.approx(run["points"][-1]["loss"], rel=1e-3)
    with open(out / "bench.csv") as fh:
        lines = list(csv.DictReader(fh))
    assert len(lines) == sum(len(r["points"]) for r in data["runs"])
    assert {row["optimizer"] for row in lines} == {"ForeachLaProp", "ForeachSOAP", "torch.SGD"}
    pytest.importorskip("matplotlib")
    assert (out / "bench.png").stat().st_size > 10_000


def test_bench_is_deterministic(tmp_path, capsys):
    args = ["bench", "--tasks", "charlm,quadratic", "--optimizers", "PrecondSchedulePaLMForeachSOAP,ForeachSFAdamW",
            "--steps", "5"]
    runs = []
    for name in ("a", "b"):
        assert main(args + ["--out", str(tmp_path / name)]) == 0
        runs.append(json.loads((tmp_path / name / "bench.json").read_text())["runs"])
    capsys.readouterr()
    for a, b in zip(*runs):
        assert [p["loss"] for p in a["points"]] == [p["loss"] for p in b["points"]]
        assert a["heldout"] == b["heldout"]


def test_tune_keeps_the_best_of_three(tmp_path, capsys):
    assert main(["bench", "--tasks", "quadratic", "--optimizers", "ForeachAdamW", "--steps", "20", "--tune",
                 "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    (run,) = json.loads((tmp_path / "bench.json").read_text())["runs"]
    assert run["tuned_over"] == pytest.approx([0.025 / 3, 0.025, 0.075])
    assert run["lr"] in run["tuned_over"]


def test_text_option(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    assert main(["bench", "--tasks", "charlm", "--optimizers", "torch.AdamW", "--steps", "2", "--text", str(corpus),
                 "--out", str(tmp_path / "o")]) == 0
    assert "charlm" in capsys.readouterr().out


def test_list_shows_every_preset_with_its_chain(capsys):
    proc = in_process(capsys, "list")
    assert proc.returncode == 0, proc.stderr
    for name in hc.presets.__all__:
        assert f"\n{name} " in proc.stdout
    assert "soap_precondition" in proc.stdout and "scale_by_laprop" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["bench", "--tasks", "mnist"], "--tasks: unknown 'mnist'"),
    (["bench", "--tasks", ""], "--tasks: empty list"),
    (["bench", "--tasks", " , "], "--tasks: empty list"),
    (["bench", "--tasks", "rosenbrok"], "--tasks: unknown 'rosenbrok' (did you mean rosenbrock?)"),
    (["bench", "--tasks", "all,mlp"], "--tasks: 'all' cannot be combined with other names"),
    (["bench", "--optimizers", "Adan"], "--optimizers: unknown 'Adan' (did you mean Adam?)"),
    (["bench", "--optimizers", "Muon"], "--optimizers: unknown 'Muon'"),
    (["bench", "--optimizers", ""], "--optimizers: empty list"),
    (["bench", "--optimizers", "ForeachLaPorp"], "unknown 'ForeachLaPorp' (did you mean ForeachLaProp?)"),
    (["bench", "--optimizers", "torch.SGD,PrecondScheduleSFPaLMSOP"],
     "unknown 'PrecondScheduleSFPaLMSOP' (did you mean PrecondScheduleSFPaLMForeachSOAP?)"),
    (["bench", "--steps", "0"], "--steps: expected an integer from 1 to 1000000, got 0"),
    (["bench", "--steps", "-5"], "--steps: expected an integer from 1 to 1000000, got -5"),
    (["bench", "--steps", str(10**20)], f"--steps: expected an integer from 1 to 1000000, got {10**20}"),
    (["bench", "--steps", "x"], "argument --steps: invalid int value: 'x'"),
    (["bench", "--lr", "-1"], "--lr: expected a positive finite number, got -1.0"),
    (["bench", "--lr", "inf"], "--lr: expected a positive finite number, got inf"),
    (["bench", "--lr", "nan"], "--lr: expected a positive finite number, got nan"),
    (["bench", "--lr=-inf"], "--lr: expected a positive finite number, got -inf"),
    (["bench", "--lr", "1e308", "--tune"], "--lr: expected a positive finite number (and, for --tune, 1/3 and 3"),
    (["bench", "--seed", "-1"], "--seed: expected an integer from 0 to 4294967295, got -1"),
    (["bench", "--seed", str(2**64)], f"--seed: expected an integer from 0 to 4294967295, got {2**64}"),
    (["bench", "--threads", "0"], "--threads: expected an integer from 1 to 1024, got 0"),
    (["bench", "--threads", "-2"], "--threads: expected an integer from 1 to 1024, got -2"),
    (["bench", "--threads", "100000"], "--threads: expected an integer from 1 to 1024, got 100000"),
    (["bench", "--text", "/nonexistent/corpus.txt"], "--text: cannot read"),
    (["bench", "--text", "/dev/null"], "--text: need at least 260 bytes of text, got 0"),
    (["bench", "--text", "/dev/zero"], "--text: expected at most 128 MiB of text, '/dev/zero' has more"),
    (["bench", "--out", "/proc/version/sub"], "--out: cannot write to '/proc/version/sub'"),
    (["list", "--steps", "3"], "unrecognized arguments: --steps 3"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "choose a command: bench or list"),
])
def test_bad_options_end_with_one_line(args, message, capsys, tmp_path, monkeypatch):
    """Checked before any work: nothing runs, not even the default output folder is created."""
    if "/dev/zero" in args and not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("heavyball-chain: error: ") and message in lines[0], captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_optimizer_names_ignore_case_and_accept_heavyball_aliases(tmp_path, capsys):
    """Aliases and any capitalisation run under the canonical name, each once."""
    assert main(["bench", "--tasks", "Quadratic", "--steps", "2", "--out", str(tmp_path), "--optimizers",
                 "PalmForEachSoap,paLMforeachsoap,PrecondScheduleSFPaLMSOAP,TORCH.sgd"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == [("quadratic", "PaLMForeachSOAP"), ("quadratic", "PrecondScheduleSFPaLMForeachSOAP"),
                          ("quadratic", "torch.SGD")]
    assert [r["optimizer"] for r in data_runs(tmp_path)] == ["PaLMForeachSOAP", "PrecondScheduleSFPaLMForeachSOAP",
                                                            "torch.SGD"]


# torch may print its own warnings to stderr (a fresh venv without numpy: "UserWarning: Failed to
# initialize NumPy"); the checks below look at our line only. The second command prints such a
# line first, so the test shows it does not depend on what else is on stderr.
NOISE = "import sys; sys.stderr.write('UserWarning: Failed to initialize NumPy: _ARRAY_API not found\\n  x\\n'); "


@pytest.mark.parametrize("python", [["-m", "heavyball_chain"],
                                    ["-c", NOISE + "import runpy; runpy.run_module('heavyball_chain', "
                                                   "run_name='__main__', alter_sys=True)"]], ids=["plain", "noisy"])
def test_bad_option_through_the_console_entry_point(tmp_path, python):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "out"
    proc = subprocess.run([sys.executable, *python, "bench", "--steps", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("heavyball-chain:")]
    assert ours == [f"heavyball-chain: error: --out: cannot write to {str(out)!r} (Not a directory)"], proc.stderr


def test_closed_stdout_ends_quietly(tmp_path):
    """`heavyball-chain ... | head`: the reader goes away; no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "heavyball_chain", "bench", "--tasks", "quadratic",
                             "--optimizers", "torch.SGD", "--steps", "1", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the child has written anything: it is still importing torch
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_bench_compile_runs_presets_compiled_and_baselines_eagerly(tmp_path, capsys):
    """--compile: presets compile (same losses as eager up to fp32 rounding); torch baselines
    have no compiled form and say so once on stderr."""
    args = ["bench", "--tasks", "quadratic", "--optimizers", "ForeachAdamW,torch.SGD", "--steps", "6"]
    eager = in_process(capsys, *args, "--out", str(tmp_path / "e"))
    compiled = in_process(capsys, *args, "--compile", "--out", str(tmp_path / "c"))
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr
    note = [line for line in compiled.stderr.splitlines() if line.startswith("note: --compile")]
    assert len(note) == 1 and "torch.SGD" in note[0] and "ForeachAdamW" not in note[0]
    runs = {r["optimizer"]: r for r in data_runs(tmp_path / "c")}
    for r in data_runs(tmp_path / "e"):
        assert runs[r["optimizer"]]["final_train"] == pytest.approx(r["final_train"], rel=1e-5)
    assert json.loads((tmp_path / "c" / "bench.json").read_text())["config"]["compile"] is True

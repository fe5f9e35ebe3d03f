"""The package's annotations hold: mypy (configured in pyproject.toml) finds no error in
heavyball_chain/, which ships ``py.typed`` so that users' type checkers read them."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mypy_is_clean(tmp_path):
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path), "heavyball_chain"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_package_ships_its_annotations():
    assert os.path.exists(os.path.join(ROOT, "heavyball_chain", "py.typed"))

"""The documentation site builds with ``mkdocs build --strict`` (mkdocs.yml: the docs/*.md pages
and an API reference that mkdocstrings renders from the docstrings): a broken link, a missing
page or a module that fails to render fails the build. Optional: the ``docs`` extra."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reference = (tmp_path / "site" / "api" / "transforms" / "index.html").read_text()
    assert "scale_by_laprop" in reference and "soap_precondition" in reference  # the API pages rendered

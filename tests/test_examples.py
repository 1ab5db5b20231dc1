"""The shipped example notebooks teach only what works: each one's endpoint examples pass
under ``nb2svc test`` (a real server, real kernels), and every endpoint has examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import EXAMPLES, REPO

NOTEBOOKS = sorted(path.name for path in EXAMPLES.glob("*.ipynb"))


def test_the_examples_folder_teaches_each_topic() -> None:
    assert {"hello.ipynb", "todo.ipynb", "stream.ipynb", "jobs.ipynb", "image.ipynb", "upload.ipynb"} <= set(
        NOTEBOOKS
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_example_notebook_passes_its_own_examples(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "test", str(EXAMPLES / name), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        env={**os.environ, "KERNEL_TODO_DB": str(tmp_path / "todo.db")},  # the todo list's file, fresh
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = json.loads(result.stdout)
    assert outcomes and all(outcome["passed"] for outcome in outcomes)
    assert "warning" not in result.stderr, result.stderr  # no endpoint without examples, no overlap

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
#: Notebooks served together as one service, each under its own prefix.
SEVERAL = EXAMPLES.parent / "several"


def test_the_examples_folder_teaches_each_topic() -> None:
    assert {"hello.ipynb", "todo.ipynb", "stream.ipynb", "jobs.ipynb", "image.ipynb", "upload.ipynb"} <= set(
        NOTEBOOKS
    )
    assert {"inventory.ipynb", "orders.ipynb"} <= {path.name for path in SEVERAL.glob("*.ipynb")}


def nb2svc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", *args], capture_output=True, text=True, cwd=REPO, timeout=180
    )


def test_the_several_notebooks_example_passes_its_examples_mounted_together(tmp_path: Path) -> None:
    """One server for both notebooks, each at its prefix; the bundle of both has the same routes."""
    result = nb2svc("test", str(SEVERAL), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = json.loads(result.stdout)
    assert outcomes and all(outcome["passed"] for outcome in outcomes)
    assert {(o["notebook"], o["request"].split(" ")[1].split("/")[1]) for o in outcomes} == {
        ("inventory.ipynb", "inventory"),
        ("orders.ipynb", "orders"),
    }
    assert "warning" not in result.stderr, result.stderr  # every endpoint has examples
    built = nb2svc("build", str(SEVERAL), "-o", str(tmp_path / "dist"))
    assert built.returncode == 0, built.stderr
    bundled, served = (
        nb2svc("routes", str(tmp_path / "dist"), "--json"),
        nb2svc("routes", str(SEVERAL), "--json"),
    )
    assert json.loads(bundled.stdout) == json.loads(served.stdout)


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

"""Issue 23, medium: requests in flight are not cut by a reload, and streams notice a client
that left even while the cell prints nothing.

Real servers on loopback; every wait is on a condition (a file the test creates, a log
line), never a sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat
import requests
from nbformat.v4 import new_code_cell

from tests.notebooks import notebook
from tests.support import Server, wait_for

StartServer = Callable[..., Server]


def streamed(source: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["nb2svc"] = {"response": "stream"}
    return cell


def save_streaming(path: Path, version: str, release: Path) -> None:
    """A stream that prints its version, then waits (silently) until ``release`` exists."""
    nbformat.write(
        notebook(
            "import os, time",
            streamed(
                "# GET /stream\n"
                f"print('{version} started', flush=True)\n"
                f"while not os.path.exists({str(release)!r}):\n"
                "    time.sleep(0.05)\n"
                f"print('{version} finished', flush=True)"
            ),
            kernel="python3",
            language="python",
        ),
        path,
    )


def test_a_stream_started_before_a_reload_finishes_on_its_version(
    start_server: StartServer, tmp_path: Path
) -> None:
    path, release = tmp_path / "live.ipynb", tmp_path / "release"
    save_streaming(path, "v1", release)
    server = start_server(str(path), "--pool-size", "1", "--reload")
    with requests.get(server.url("/stream"), stream=True, timeout=60) as r:
        lines = r.iter_lines(decode_unicode=True)
        assert next(lines) == "v1 started"
        save_streaming(path, "v2", release)
        wait_for(lambda: "version 2 serving" in server.log(), 60, "the new version to serve")
        release.write_text("go")
        rest = list(lines)
    assert rest == ["v1 finished"], rest
    assert "shutting down" not in server.log()
    wait_for(
        lambda: len(server.find_kernels()) == 1, 30, "the old version's kernel to stop once the stream ended"
    )
    assert server.get("/stream").text.splitlines() == ["v2 started", "v2 finished"]


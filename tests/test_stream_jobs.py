"""Streaming answers and async jobs, against a real server (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
import requests
from nbformat.v4 import new_code_cell

from nb2svc.compiler import CompileError, compile_notebook
from tests.notebooks import notebook
from tests.support import Server, wait_for

StartServer = Callable[..., Server]


def marked(source: str, mode: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["nb2svc"] = {"response": mode}
    return cell


SERVICE = notebook(
    "import json, os, sys, time",
    marked(
        "# GET /count/:n\n"
        "for i in range(int(json.loads(REQUEST)['path']['n'])):\n"
        "    print(i, flush=True)\n"
        "    time.sleep(0.3)",
        "stream",
    ),
    marked(
        "# GET /fail-late\nprint('first', flush=True)\ntime.sleep(0.3)\nraise ValueError('late')", "stream"
    ),
    marked("# GET /forever\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.2)", "stream"),
    "# GET /pid\nprint(os.getpid())",
    "# GET /slow/:s\ntime.sleep(float(json.loads(REQUEST)['path']['s']))\nprint('slow done')",
    "# POST /made\nprint(json.loads(REQUEST)['body']['x'])",
    "# ResponseInfo POST /made\nprint(json.dumps({'status': 201, 'headers': {'X-Made': 'yes'}}))",
    marked("# GET /report\ntime.sleep(0.5)\nprint('report ready')", "job"),
    kernel="python3",
    language="python",
)


@pytest.fixture
def server(start_server: StartServer, tmp_path: Path) -> Server:
    path = tmp_path / "svc.ipynb"
    nbformat.write(SERVICE, path)
    return start_server(str(path), "--pool-size", "1", "--request-timeout", "20")


def test_event_stream_sends_each_line_as_it_is_printed(server: Server) -> None:
    arrivals = []
    with requests.get(
        server.url("/count/4"), headers={"Accept": "text/event-stream"}, stream=True, timeout=30
    ) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("data: ") or line.startswith("event: "):
                arrivals.append((time.monotonic(), line))
    data = [line for _, line in arrivals if line.startswith("data: ") and line != "data: "]
    assert data == ["data: 0", "data: 1", "data: 2", "data: 3"]
    assert arrivals[-1][1] == "event: done" or arrivals[-2][1] == "event: done"
    first, last = arrivals[0][0], [t for t, line in arrivals if line == "data: 3"][0]
    assert last > first  # delivered over time, not in one piece at the end


def test_plain_clients_get_chunked_text(server: Server) -> None:
    r = server.get("/count/3")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert r.headers.get("Transfer-Encoding") == "chunked"
    assert r.text == "0\n1\n2\n"


def test_an_error_after_the_first_byte_ends_the_stream_with_an_error_event(server: Server) -> None:
    r = server.get("/fail-late", headers={"Accept": "text/event-stream"})
    assert r.status_code == 200
    assert "data: first" in r.text
    error = r.text.split("event: error\n", 1)[1].splitlines()[0]
    assert json.loads(error.removeprefix("data: "))["error"] == "ValueError"


def test_a_client_that_disconnects_interrupts_the_cell(server: Server) -> None:
    pid = server.get("/pid").text
    with requests.get(server.url("/forever"), stream=True, timeout=30) as r:
        assert next(r.iter_lines()) == b"tick"
    # the kernel is interrupted, not replaced, and free for the next request
    assert wait_for(lambda: server.get("/pid", timeout=30).text == pid, 30, "the kernel to be free again")


def test_prefer_respond_async_gives_a_job_with_the_synchronous_answer(server: Server) -> None:
    r = requests.post(server.url("/made"), json={"x": 7}, headers={"Prefer": "respond-async"}, timeout=30)
    assert r.status_code == 202
    location = r.headers["Location"]
    assert location.startswith("/_api/jobs/")
    done = wait_for(lambda: (a := server.get(location)).headers.get("Nb2svc-Job") == "done" and a, 30, "job")
    assert done.status_code == 201 and done.text == "7\n" and done.headers["X-Made"] == "yes"
    assert server.request("DELETE", location).status_code == 204
    assert server.get(location).status_code == 404


def test_a_job_endpoint_and_cancelling_a_running_job(server: Server) -> None:
    report = server.get("/report")
    assert report.status_code == 202
    slow = requests.get(server.url("/slow/30"), headers={"Prefer": "respond-async"}, timeout=30)
    running = server.get(slow.headers["Location"])
    assert running.json()["status"] == "running" and running.headers["Retry-After"] == "1"
    assert server.request("DELETE", slow.headers["Location"]).status_code == 204
    assert server.get("/pid", timeout=30).status_code == 200  # the kernel was interrupted and freed
    done = wait_for(
        lambda: server.get(report.headers["Location"]).headers.get("Nb2svc-Job") == "done", 30, "job"
    )
    assert done
    assert server.get("/_api/jobs/not-a-job").status_code == 404


def test_a_bundle_streams_and_runs_jobs_too(start_server: StartServer, tmp_path: Path) -> None:
    """The generated app.py declares its routes itself: streams and jobs must survive that."""
    path, bundle = tmp_path / "svc.ipynb", tmp_path / "svc"
    nbformat.write(SERVICE, path)
    built = subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", str(path), "-o", str(bundle)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    server = start_server(str(bundle), "--pool-size", "1")
    with requests.get(server.url("/count/3"), stream=True, timeout=30) as r:
        assert r.headers.get("Transfer-Encoding") == "chunked"
        lines = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert lines == ["0", "1", "2"]
    report = server.get("/report")
    assert report.status_code == 202
    done = wait_for(
        lambda: (a := server.get(report.headers["Location"])).headers.get("Nb2svc-Job") and a, 30, "job"
    )
    assert done.text == "report ready\n"


def test_an_unknown_response_mode_is_a_compile_error() -> None:
    nb = notebook(marked("# GET /x\nprint(1)", "later"), kernel="python3", language="python")
    with pytest.raises(CompileError, match="cell 1: nb2svc.response is 'later'"):
        compile_notebook(nb)

"""API mode with forked kernels over real HTTP: the same answers as spawned ones, healing, no orphans.

Two servers of the contract notebook of ``test_api_http`` run side by side, one with
``--kernel-start auto`` (which forks its ipykernels) and one with ``spawn``, and answer
the same representative requests; then a forked kernel is SIGKILLed and replaced by a
new fork holding just the setup's state, and a worker is SIGKILLed without leaving its
template or kernels behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests

from tests.notebooks import notebook
from tests.support import EXAMPLES, Server, alive, children, is_kernel, parent_pid, wait_for
from tests.test_api_http import BEHAVIOUR

#: (method, path, requests keyword arguments): every kind of answer the contract gives.
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/echo/one/two?x=1&x=2&y=z", {}),
    ("POST", "/echo", {"json": {"name": "ada", "n": [1, 2]}}),
    ("PUT", "/echo", {"data": b"\x00\xffraw", "headers": {"Content-Type": "application/octet-stream"}}),
    ("GET", "/expr", {}),
    ("GET", "/silent", {}),
    ("GET", "/stderr", {}),
    ("GET", "/fail", {}),
    ("GET", "/count", {}),
    ("GET", "/count", {}),
    ("GET", "/multi", {}),
    ("GET", "/created", {}),
    ("GET", "/badinfo", {}),
    ("GET", "/png", {}),
    ("GET", "/infofail", {}),
    ("GET", "/status/418", {}),
    ("GET", "/errinfo", {}),
    ("GET", "/info_runs", {}),
    ("GET", "/users/me", {}),
    ("GET", "/users/7", {}),
    ("GET", "/nowhere", {}),
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    path: Path = tmp_path_factory.mktemp("nb") / "behaviour.ipynb"
    nbformat.write(BEHAVIOUR, path)
    made = {
        mode: Server([str(path), "--pool-size", "1", "--kernel-start", mode], log_dir=path.parent)
        for mode in ("auto", "spawn")
    }
    try:
        for server in made.values():
            server.wait_ready()
        yield made
    finally:
        for server in made.values():
            server.kill()


def answer(server: Server, method: str, path: str, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    r = server.request(method, path, **kwargs)
    body: Any = r.content
    if path.startswith("/echo"):
        body = json.loads(r.text)
        body.pop("headers")  # the Host header names each server's port
    return r.status_code, r.headers.get("Content-Type"), r.headers.get("X-Thing"), body


def forked(pid: int) -> bool:
    return is_kernel(pid) and "ipykernel" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")


def test_forked_and_spawned_kernels_give_the_same_answers(servers: dict[str, Server]) -> None:
    forks, spawns = servers["auto"], servers["spawn"]
    assert [forked(p) for p in forks.find_kernels()] == [True]
    assert [forked(p) for p in spawns.find_kernels()] == [False]
    assert "behaviour.ipynb: kernels fork from a template" in forks.log()
    assert "fork from a template" not in spawns.log()
    got = {mode: [answer(server, *case) for case in CASES] for mode, server in servers.items()}
    assert got["auto"] == got["spawn"]
    statuses = [status for status, *_ in got["auto"]]
    assert statuses[:4] == [200, 200, 200, 200] and 500 in statuses and 418 in statuses
    assert json.loads(got["auto"][CASES.index(("GET", "/expr", {}))][3]) == {"text/plain": "2"}


def test_a_killed_forked_kernel_is_replaced_by_a_fork_with_the_setup_state(
    servers: dict[str, Server],
) -> None:
    server = servers["auto"]
    (kernel,) = server.find_kernels()
    template = parent_pid(kernel)
    server.get("/count")  # state past setup, which the replacement must not have
    os.kill(kernel, signal.SIGKILL)
    wait_for(lambda: server.find_kernels() - {kernel}, 30, "a replacement kernel")
    (replacement,) = server.find_kernels() - {kernel}
    assert forked(replacement) and parent_pid(replacement) == template
    wait_for(lambda: server.get("/_api/health/ready").status_code == 200, 30, "the pool to be full again")
    assert server.get("/count").text.strip() == "1"  # counter = 0 from setup, then this request
    server.kernel_pids.add(replacement)


def test_a_killed_workers_template_and_kernels_are_stopped(tmp_path: Path) -> None:
    path = tmp_path / "behaviour.ipynb"
    nbformat.write(BEHAVIOUR, path)
    tmp = Path(tempfile.mkdtemp(prefix="fk", dir="/tmp"))  # short: IPC socket paths hold at most 107 bytes
    server = Server(
        [str(path), "--pool-size", "2", "--kernel-start", "fork"], env={"TMPDIR": str(tmp)}, log_dir=tmp_path
    )
    try:
        server.wait_ready()
        kernels = server.find_kernels()
        (template,) = server.find_templates()
        assert len(kernels) == 2 and {parent_pid(k) for k in kernels} == {template}
        # serve started this template before forking the worker (kernel/early.py): the master's
        # child, adopted by the worker, whose death must still take it and its kernels along
        assert parent_pid(template) == server.proc.pid
        (worker,) = children(server.proc.pid) - {template}
        server.kernel_pids |= kernels | {template}
        os.kill(worker, signal.SIGKILL)
        wait_for(
            lambda: not any(alive(p) for p in kernels | {template}), 30, "the template and its kernels to go"
        )

        def serves_again() -> bool:
            try:
                return server.get("/count", timeout=60).status_code == 200
            except (requests.ConnectionError, requests.Timeout):
                return False

        wait_for(serves_again, 90, "a respawned worker to serve")
        after = wait_for(
            lambda: len(found := server.find_kernels() | server.find_templates()) == 3 and found,
            30,
            "the respawned worker's template and its two kernels",
        )
        assert isinstance(after, set)
        server.kernel_pids |= after
        assert server.stop() == 0
        assert [p for p in server.kernel_pids if alive(p)] == []
    finally:
        server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_kernel_memory_is_reported_as_pss(servers: dict[str, Server]) -> None:
    server = servers["auto"]
    processes = server.find_kernels() | server.find_templates()
    assert len(processes) == 2
    metrics = server.get("/_api/metrics").text
    (line,) = [m for m in metrics.splitlines() if m.startswith("nb2svc_kernel_memory_pss_bytes")]
    pss = float(line.split()[-1])
    # PSS splits the pages the kernel shares with its template: less than their RSS added up.
    assert 0 < pss < sum(rss_bytes(p) for p in processes)


def test_kernel_start_is_per_notebook(start_server: Any) -> None:
    hello, todo = EXAMPLES / "hello.ipynb", EXAMPLES / "todo.ipynb"
    server = start_server(
        str(hello), str(todo), "--pool-size", "1", env={"NB2SVC_KERNEL_START__TODO": "spawn"}
    )
    assert server.get("/hello/ada").text == "hello, ada\n"
    assert server.get("/todo/todos").status_code == 200
    kernels = server.find_kernels()
    assert sorted(forked(k) for k in kernels) == [False, True]
    assert "hello.ipynb: kernels fork from a template" in server.log()
    assert "todo.ipynb: kernels fork" not in server.log()


def test_auto_spawns_and_says_why_once_when_setup_starts_a_thread(start_server: Any, tmp_path: Path) -> None:
    path = tmp_path / "threaded.ipynb"
    nbformat.write(
        notebook(
            "import threading, time\nticker = threading.Thread(target=time.sleep, args=(600,), daemon=True)\n"
            "ticker.start()",
            "# GET /alive\nprint(ticker.is_alive())",
            kernel="python3",
            language="python",
        ),
        path,
    )
    server = start_server(str(path), "--pool-size", "2")
    assert server.get("/alive").text == "True\n"  # each spawned kernel ran setup, thread and all
    assert [forked(k) for k in server.find_kernels()] == [False, False]
    lines = [line for line in server.log().splitlines() if "spawn instead of forking" in line]
    assert len(lines) == 1, lines
    assert "threaded.ipynb: kernels spawn instead of forking: setup left thread 'Thread-" in lines[0]

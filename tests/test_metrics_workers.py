"""``/_api/metrics`` of a server with ``--workers 2`` shows the whole server, whichever
worker answers the scrape: requests of both workers, kernels of both pools, each worker's
process figures as its own series; a worker killed with SIGKILL stops being counted once
gunicorn replaced it; a ``--reload`` worker counts its current version only."""

from __future__ import annotations

import glob
import os
import signal
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import nbformat
import requests

from tests.notebooks import notebook
from tests.support import Server, free_port, parent_pid, wait_for, worker_of

StartServer = Callable[..., Server]
ROUTE = {"method": "GET", "route": "/pid", "status": "200"}


def write(path: Path, version: str) -> None:
    """A notebook whose endpoint answers ``<version> <kernel pid>`` (the pid tells the worker)."""
    nbformat.write(
        notebook(f"# GET /pid\nimport os\nprint('{version}', os.getpid())", kernel="python3"), path
    )


def ask(server: Server, answered: Counter[int], version: str = "v1") -> str:
    """One request on a new connection (so either worker may take it); counts the worker
    whose kernel answered; returns the version that answered."""
    response = requests.get(server.url("/pid"), timeout=30)
    assert response.status_code == 200, response.text
    answer, pid = response.text.split()
    answered[worker_of(server, int(pid))] += 1
    return answer


def until_both_answered(server: Server, answered: Counter[int], at_least: int = 10) -> None:
    sent = 0
    while len(answered) < 2 or sent < at_least:
        ask(server, answered)
        sent += 1
        assert sent < 400, f"one worker took every request: {answered}"


def scraped(server: Server, name: str, path: str = "/_api/metrics", **labels: str) -> float | None:
    """The value of ``name`` (with ``labels``) on a scrape of ``path`` (a full URL for another
    port), None when no such sample is there."""
    url = path if path.startswith("http") else server.url(path)
    page = requests.get(url, timeout=10).text
    for line in page.splitlines():
        head, _, value = line.rpartition(" ")
        if head.partition("{")[0] == name and all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


def per_worker(server: Server, name: str) -> set[int]:
    """The ``worker`` labels of ``name``'s series on a scrape."""
    page = requests.get(server.url("/_api/metrics"), timeout=10).text
    prefix = name + '{worker="'
    return {
        int(line[len(prefix) :].partition('"')[0]) for line in page.splitlines() if line.startswith(prefix)
    }


def until_scraped(
    server: Server, expected: float, name: str, paths: tuple[str, ...] = ("/_api/metrics",), **labels: str
) -> None:
    """Every scrape may land on either worker: wait until several in a row (on each of
    ``paths``) say ``expected``."""

    def settled() -> bool:
        return all(scraped(server, name, path, **labels) == expected for _ in range(4) for path in paths)

    wait_for(settled, 30, f"{name} {labels} = {expected} (last scrape: {scraped(server, name, **labels)})")


def workers(server: Server) -> set[int]:
    """The gunicorn master's children: its workers."""
    master = server.proc.pid
    return {
        int(entry) for entry in os.listdir("/proc") if entry.isdigit() and parent_pid(int(entry)) == master
    }


def snapshot_of(server: Server, worker: int) -> list[str]:
    """The worker's published snapshot (in its own directory in its server's), if any."""
    base = os.path.join(tempfile.gettempdir(), f"nb2svc-{os.getuid()}-*")
    return glob.glob(os.path.join(base, f"{server.proc.pid}-*", f"{worker}-*", "metrics.prom"))


def test_a_scrape_adds_up_both_workers_and_forgets_a_killed_one(
    start_server: StartServer, tmp_path: Path
) -> None:
    write(tmp_path / "pid.ipynb", "v1")
    port = free_port()
    server = start_server(
        str(tmp_path / "pid.ipynb"), "--workers", "2", "--pool-size", "1", "--metrics-port", str(port)
    )
    wait_for(lambda: len(server.find_kernels()) == 2, 60, "both workers' kernels")
    answered: Counter[int] = Counter()
    until_both_answered(server, answered)
    total = sum(answered.values())
    every_way = ("/_api/metrics", "/metrics", f"http://127.0.0.1:{port}/_api/metrics")
    until_scraped(server, total, "nb2svc_request_duration_seconds_count", every_way, **ROUTE)
    until_scraped(server, total, "nb2svc_requests_total", route="GET /pid", status="200")
    until_scraped(server, 2, "nb2svc_pool_kernels_live")
    until_scraped(server, 2, "nb2svc_pool_size")
    # a process's own figures are never summed: one series per worker
    wait_for(lambda: per_worker(server, "process_start_time_seconds") == workers(server), 30, "per worker")
    assert per_worker(server, "process_resident_memory_bytes") == workers(server)

    killed = next(iter(answered))
    assert snapshot_of(server, killed)
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: len(workers(server) - {killed}) == 2, 60, "gunicorn replaced the killed worker")
    wait_for(lambda: not snapshot_of(server, killed), 30, "the killed worker's snapshot gone")
    until_scraped(server, total - answered[killed], "nb2svc_request_duration_seconds_count", **ROUTE)
    until_scraped(server, 2, "nb2svc_pool_kernels_live")  # the new worker's kernel and the other's


def test_a_reloading_worker_counts_its_current_version_only(
    start_server: StartServer, tmp_path: Path
) -> None:
    path = tmp_path / "pid.ipynb"
    write(path, "v1")
    server = start_server(str(path), "--workers", "2", "--pool-size", "1", "--reload")
    answered: Counter[int] = Counter()
    until_both_answered(server, answered)
    write(path, "v2")
    current: Counter[int] = Counter()  # answers of the version each worker serves now

    def both_reloaded() -> bool:
        answer = Counter[int]()
        if ask(server, answer) == "v2":
            current.update(answer)
        return len(current) == 2

    wait_for(both_reloaded, 120, "both workers serving v2", interval=0)
    for _ in range(10):
        assert ask(server, current) == "v2"
    # neither v1's requests nor a second copy of v2's: one version per worker, counted once
    until_scraped(server, sum(current.values()), "nb2svc_request_duration_seconds_count", **ROUTE)
    until_scraped(server, 2, "nb2svc_pool_kernels_live")

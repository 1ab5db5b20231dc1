"""``/_api/metrics`` of a server with ``--workers 2`` shows the whole server, whichever
worker answers the scrape: requests of both workers, kernels of both pools, each worker's
process figures as its own series; a worker that exits (SIGKILL, or SIGTERM: gunicorn
replaces it) leaves its counts in the sum, which never drops across scrapes, and takes
its gauges and own series with it; a ``--reload`` worker counts its current version only."""

from __future__ import annotations

import glob
import os
import signal
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def sample(page: str, name: str, **labels: str) -> float | None:
    """The value of ``name`` (with ``labels``) on ``page``, None when no such sample is there."""
    for line in page.splitlines():
        head, _, value = line.rpartition(" ")
        if head.partition("{")[0] == name and all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


def scraped(
    server: Server, name: str, labels: dict[str, str] | None = None, path: str = "/_api/metrics"
) -> float | None:
    """The value of ``name`` (with ``labels``) on a scrape of ``path`` (a full URL for another
    port), None when no such sample is there."""
    url = path if path.startswith("http") else server.url(path)
    return sample(requests.get(url, timeout=10).text, name, **(labels or {}))


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
        return all(scraped(server, name, labels, path) == expected for _ in range(4) for path in paths)

    wait_for(settled, 30, f"{name} {labels} = {expected} (last scrape: {scraped(server, name, labels)})")


def workers(server: Server) -> set[int]:
    """The gunicorn master's children: its workers."""
    master = server.proc.pid
    return {
        int(entry) for entry in os.listdir("/proc") if entry.isdigit() and parent_pid(int(entry)) == master
    }


def snapshot_count(server: Server, worker: int) -> float | None:
    """The worker's own count of GET /pid requests in its published snapshot."""
    for path in snapshot_of(server, worker):
        return sample(Path(path).read_text(), "nb2svc_request_duration_seconds_count", **ROUTE)
    return None


def snapshot_of(server: Server, worker: int) -> list[str]:
    """The worker's published snapshot (in its own directory in its server's), if any."""
    base = os.path.join(tempfile.gettempdir(), f"nb2svc-{os.getuid()}-*")
    return glob.glob(os.path.join(base, f"{server.proc.pid}-*", f"{worker}-*", "metrics.prom"))


#: The summed request counters a scrape shows for GET /pid: the counter and the histogram's count.
COUNTERS = (
    ("nb2svc_requests_total", {"route": "GET /pid", "status": "200"}),
    ("nb2svc_request_duration_seconds_count", ROUTE),
)


@contextmanager
def watching(server: Server) -> Iterator[list[tuple[float, ...]]]:
    """Scrape continuously, each on a new connection (so either worker answers), and yield
    the list of what each answered scrape summed (:data:`COUNTERS`); a scrape that fails
    (a worker killed under it) is not an answer. Stops when the block ends."""
    seen: list[tuple[float, ...]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                response = requests.get(server.url("/_api/metrics"), timeout=10)
            except requests.RequestException:
                continue
            assert response.status_code == 200, response.text
            seen.append(tuple(sample(response.text, name, **labels) or 0 for name, labels in COUNTERS))
            done.wait(0.02)  # pacing, not synchronisation

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join(30)


def never_dropped(seen: list[tuple[float, ...]]) -> None:
    """No summed counter ever went down from one scrape to the next (a counter reset to Prometheus)."""
    assert len(seen) > 5, seen
    for counter in range(len(COUNTERS)):
        values = [scrape[counter] for scrape in seen]
        drops = [(a, b) for a, b in zip(values, values[1:], strict=False) if b < a]
        assert not drops, f"{COUNTERS[counter][0]} dropped: {drops}"


def test_a_scrape_adds_up_both_workers_and_keeps_a_killed_ones_counts(
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
    # its snapshot (written every second, and by each scrape it answers) has all it answered
    wait_for(lambda: snapshot_count(server, killed) == answered[killed], 30, "the snapshot current")
    sent, failed = Counter[int](), 0
    with watching(server) as seen:
        wait_for(lambda: len(seen) > 5, 30, "scrapes before the kill")
        for _ in range(5):  # requests keep coming while the worker dies under them
            ask(server, sent)
        before = len(seen)
        os.kill(killed, signal.SIGKILL)
        while len(workers(server) - {killed}) < 2:
            try:
                ask(server, sent)
            except (requests.RequestException, AssertionError):
                failed += 1  # sent to the killed worker as it died
        wait_for(lambda: not snapshot_of(server, killed), 30, "the killed worker's snapshot folded")
        # everything it answered up to its snapshot stays, and everything the others answered
        floor = total + sum(count for worker, count in sent.items() if worker != killed)
        wait_for(lambda: (scraped(server, *COUNTERS[0]) or 0) >= floor, 30, f"a sum of at least {floor}")
        wait_for(lambda: len(seen) > before + 5, 30, "scrapes after the kill")
    never_dropped(seen)  # not even by the killed worker's counts since its last snapshot
    final = scraped(server, *COUNTERS[0])
    assert final is not None and max(scrape[0] for scrape in seen[:before]) <= final
    assert floor <= final <= total + sum(sent.values()) + failed
    until_scraped(server, 2, "nb2svc_pool_kernels_live")  # the new worker's kernel and the other's
    wait_for(
        lambda: per_worker(server, "process_start_time_seconds") == workers(server), 30, "its series gone"
    )


def test_a_worker_restarted_gracefully_leaves_every_count_in_the_sum(
    start_server: StartServer, tmp_path: Path
) -> None:
    """SIGTERM to a worker: it drains and exits through its exit hook, as every graceful
    exit does (gunicorn's max-requests restart, a TTOU scale-down), and gunicorn starts
    another; both original workers, one after the other, under steady requests."""
    write(tmp_path / "pid.ipynb", "v1")
    server = start_server(str(tmp_path / "pid.ipynb"), "--workers", "2", "--pool-size", "1")
    answered: Counter[int] = Counter()
    until_both_answered(server, answered)
    original = workers(server)
    with watching(server) as seen:
        for leaving in sorted(original):
            os.kill(leaving, signal.SIGTERM)
            others = workers(server) - {leaving}

            def replaced(leaving: int = leaving, others: set[int] = others) -> bool:
                try:
                    ask(server, answered)
                except requests.ConnectionError:
                    # a connection the draining worker accepted but closed unread: no request
                    # was served, none counted (a retry is the client's to make)
                    pass
                return bool(set(answered) - original - others) and leaving not in workers(server)

            wait_for(replaced, 120, f"worker {leaving} replaced and the new one answering", interval=0)
        total = sum(answered.values())
        for name, labels in COUNTERS:
            until_scraped(server, total, name, **labels)
        wait_for(lambda: seen[-1] == (total, total), 30, "the watcher's last scrape counting every request")
    never_dropped(seen)
    assert not workers(server) & original
    until_scraped(server, 2, "nb2svc_pool_kernels_live")  # the gone workers' gauges are gone
    wait_for(
        lambda: per_worker(server, "process_start_time_seconds") == workers(server), 30, "their series gone"
    )


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

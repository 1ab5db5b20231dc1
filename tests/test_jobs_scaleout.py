"""Jobs across workers and replicas: a real redis-server, nb2svc replicas and haproxy in front
(round robin, no affinity), and the embedded store with ``--workers 2`` (issues 17, 18, 23)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import requests

from nb2svc.runtime.store import EMBEDDED_FILE, server_directory_path
from tests.notebooks import notebook
from tests.scaleout import Haproxy, RedisServer, balanced_replicas
from tests.support import REPO, Server, free_port, wait_for, worker_of

pytestmark = pytest.mark.slow

SERVICE = notebook(
    "import json, os, time",
    "# GET /pid\nprint(os.getpid())",
    "# GET /slow/:s\ntime.sleep(float(json.loads(REQUEST)['path']['s']))\nprint('slow done')",
    "# POST /count\nwith open(json.loads(REQUEST)['body']['file'], 'a') as f:\n"
    "    f.write('ran\\n')\nprint('counted')",
    "# GET /big/:n\nprint('x' * int(json.loads(REQUEST)['path']['n']))",
    kernel="python3",
    language="python",
)
#: The job lease of the replicas that are killed: short, so the test is. The others keep the
#: default (10 s), so that a loaded machine never makes their running jobs look lost.
LEASE = 2
ASYNC = {"Prefer": "respond-async"}


def replica(path: Path, directory: Path, store: str, *args: str) -> Server:
    server = Server([str(path), "--pool-size", "1", "--store", store, *args], log_dir=directory)
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def notebook_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nb") / "svc.ipynb"
    nbformat.write(SERVICE, path)
    return path


@pytest.fixture(scope="module")
def cluster(
    notebook_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RedisServer, list[Server], Haproxy]]:
    """A redis-server, two replicas on it, and haproxy in front of both."""
    directory = tmp_path_factory.mktemp("cluster")

    def start(url: str) -> Iterator[Server]:
        for _ in range(2):
            yield replica(notebook_path, directory, url, "--job-result-max-bytes", "4096")

    with balanced_replicas(directory, start) as cluster:
        yield cluster


def poll(get: Callable[[str], requests.Response], location: str, timeout: float = 30) -> requests.Response:
    """Poll a job until it is no longer running; every answer on the way must know the job."""

    def finished() -> list[requests.Response]:  # in a list: a Response of 4xx/5xx is falsy
        answer = get(location)
        assert answer.status_code != 404, f"a poll of {location} answered 404: {answer.text}"
        return [answer] if "Nb2svc-Job" in answer.headers or answer.status_code == 410 else []

    return wait_for(finished, timeout, f"job {location} to finish")[0]  # type: ignore[index]


def test_jobs_polled_through_the_balancer_never_404(
    cluster: tuple[RedisServer, list[Server], Haproxy],
) -> None:
    _, replicas, balancer = cluster
    submitted = [requests.get(balancer.url("/slow/0.2"), headers=ASYNC, timeout=30) for _ in range(4)]
    assert [r.status_code for r in submitted] == [202] * 4
    for r in submitted:
        location = r.headers["Location"]
        # every replica knows every job, whoever took it: running (200) or done
        assert [server.get(location).status_code for server in replicas] == [200, 200]
        done = poll(lambda path: requests.get(balancer.url(path), timeout=30), location)
        assert done.status_code == 200 and done.text == "slow done\n" and done.headers["Nb2svc-Job"] == "done"
        # collected through one replica, gone on all
        assert requests.delete(balancer.url(location), timeout=30).status_code == 204
        assert [s.get(location).status_code for s in replicas] == [404, 404]


def test_a_cancel_through_another_replica_interrupts_the_running_job(
    cluster: tuple[RedisServer, list[Server], Haproxy],
) -> None:
    _, (first, second), _ = cluster
    pid = first.get("/pid").text
    job = first.get("/slow/30", headers=ASYNC)
    location = job.headers["Location"]
    assert second.get(location).json()["status"] == "running"
    assert second.request("DELETE", location).status_code == 204
    # interrupted, not run to its end (30 s) nor replaced: the same kernel answers at once
    assert first.get("/pid", timeout=10).text == pid
    assert first.get(location).status_code == 410 and second.get(location).status_code == 410


def test_a_job_cancelled_while_queued_never_runs(
    cluster: tuple[RedisServer, list[Server], Haproxy], tmp_path: Path
) -> None:
    _, (first, second), _ = cluster
    counter = tmp_path / "counter"
    busy = first.get("/slow/1", headers=ASYNC)  # holds the replica's only kernel
    queued = first.request("POST", "/count", json={"file": str(counter)}, headers=ASYNC)
    assert queued.status_code == 202
    assert second.request("DELETE", queued.headers["Location"]).status_code == 204
    done = poll(first.get, busy.headers["Location"])
    assert done.text == "slow done\n"
    # the kernel is handed out in order: a request after the cancelled job runs after it would have
    assert first.get("/pid").status_code == 200
    assert not counter.exists(), "the cancelled job ran"


def test_a_result_over_the_byte_bound_is_a_clear_error(
    cluster: tuple[RedisServer, list[Server], Haproxy],
) -> None:
    _, (first, second), _ = cluster
    small, large = first.get("/big/10", headers=ASYNC), first.get("/big/10000", headers=ASYNC)
    assert poll(second.get, small.headers["Location"]).text == "x" * 10 + "\n"
    failed = poll(second.get, large.headers["Location"])
    assert failed.status_code == 500 and failed.headers["Nb2svc-Job"] == "failed"
    body = failed.json()
    assert body["error"] == "JobResultTooLarge" and "4096" in body["message"]


def test_a_replica_killed_mid_job_gives_a_failed_job(
    cluster: tuple[RedisServer, list[Server], Haproxy], notebook_path: Path, tmp_path: Path
) -> None:
    redis_server, (survivor, _), _ = cluster
    doomed = replica(notebook_path, tmp_path, redis_server.url, "--job-lease", str(LEASE))
    try:
        location = doomed.get("/slow/60", headers=ASYNC).headers["Location"]
        assert survivor.get(location).json()["status"] == "running"
        doomed.kill()  # SIGKILL: master, workers and kernels; nothing is told
        failed = poll(survivor.get, location, timeout=LEASE + 20)
    finally:
        doomed.kill()
    assert failed.status_code == 502 and failed.headers["Nb2svc-Job"] == "failed"
    assert failed.json()["reason"] == "replica lost"


def test_two_workers_with_the_embedded_store_never_404(notebook_path: Path, tmp_path: Path) -> None:
    server = Server([str(notebook_path), "--pool-size", "1", "--workers", "2"], log_dir=tmp_path)
    try:
        server.wait_ready()
        assert "jobs:      embedded store" in server.log()
        # jobs until both workers have taken some (a job's answer is its kernel's pid)
        kernels: dict[str, str] = {}

        def both_workers() -> bool:
            location = server.get("/pid", headers=ASYNC).headers["Location"]
            kernels[location] = poll(server.get, location).text
            return len(set(kernels.values())) == 2

        wait_for(both_workers, 60, "jobs on both workers")
        for location in kernels:  # fresh connections: the polls land on either worker
            answers = {server.get(location).status_code for _ in range(10)}
            assert answers == {200}
        store = server_directory_path(server.proc.pid)
        assert store is not None and os.path.exists(os.path.join(store, EMBEDDED_FILE))
        assert server.stop() == 0
        assert not os.path.exists(store), "the embedded store outlived its server"
    finally:
        server.kill()


def test_the_embedded_store_survives_a_worker_killed_mid_job(notebook_path: Path, tmp_path: Path) -> None:
    """The worker running a job is SIGKILLed: gunicorn's next worker reads the same SQLite file
    and fails the job as "replica lost" once its lease lapses."""
    server = Server([str(notebook_path), "--pool-size", "1", "--job-lease", str(LEASE)], log_dir=tmp_path)
    try:
        server.wait_ready()
        location = server.get("/slow/60", headers=ASYNC).headers["Location"]
        kernel = next(iter(server.find_kernels()))
        worker = worker_of(server, kernel)
        os.kill(worker, signal.SIGKILL)
        failed = poll(lambda path: server.get(path, timeout=60), location, timeout=LEASE + 60)
        assert failed.status_code == 502 and failed.json()["reason"] == "replica lost"
    finally:
        server.kill()


def test_the_store_gone_under_load_503s_job_routes_and_sync_endpoints_serve(
    notebook_path: Path, tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path, extra=("--requirepass", "s3cret-pw"))
    url = f"redis://:s3cret-pw@127.0.0.1:{redis_server.port}/0"
    server = None
    try:
        server = replica(notebook_path, tmp_path, url)
        # the password is neither printed nor left in the master's command line
        assert f"jobs:      store redis://***@127.0.0.1:{redis_server.port}/0" in server.log()
        assert "s3cret-pw" not in server.log()
        assert "MonkeyPatchWarning" not in server.log(), "redis (and ssl) imported in the master"
        with open(f"/proc/{server.proc.pid}/cmdline", "rb") as f:
            assert b"s3cret-pw" not in f.read()
        location = server.get("/slow/0", headers=ASYNC).headers["Location"]
        assert poll(server.get, location).status_code == 200
        redis_server.stop()

        def sync(_: int) -> int:
            return server.get("/pid", timeout=30).status_code

        def job(_: int) -> requests.Response:
            return server.get("/slow/0", headers=ASYNC, timeout=30)

        with ThreadPoolExecutor(8) as pool:
            syncs = list(pool.map(sync, range(16)))
            jobs = list(pool.map(job, range(8)))
            polls = list(pool.map(lambda _: server.get(location, timeout=30), range(8)))
        assert syncs == [200] * 16
        for answer in jobs + polls:
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
            assert answer.json()["error"] == "ServiceUnavailable" and "job store" in answer.json()["message"]
            assert "s3cret-pw" not in answer.text
        assert "s3cret-pw" not in server.log()
    finally:
        if server is not None:
            server.kill()
        redis_server.stop()


def test_an_unreachable_store_at_start_is_one_line_and_exit_2(notebook_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(notebook_path), "--port", str(free_port())]
        + ["--store", f"redis://:s3cret-pw@127.0.0.1:{port}/0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--store" in lines[0] and f"127.0.0.1:{port}" in lines[0], result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_a_bad_store_url_is_a_usage_error(notebook_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(notebook_path), "--store", "http://:s3cret-pw@h/0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2 and "redis://host:port/db" in result.stderr
    assert "s3cret-pw" not in result.stderr

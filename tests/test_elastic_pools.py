"""Elastic pools and kernel recycling end to end (issue 18): real servers, real kernels.

- ``--pool-size 1..3``: the pool grows while requests queue and shrinks back to MIN once
  idle for ``--pool-idle-timeout``; readiness and metrics say so;
- ``--kernel-max-memory``: a kernel whose cell kept memory is replaced after it answered,
  through a ``LocalProvisioner`` (the kernel's ``/proc`` entry) and through a provisioner
  that is not the local one (the kernel's own report);
- ``--kernel-max-requests``: every kernel answers at most N requests, and none is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.notebooks import notebook
from tests.support import Server, alive, wait_for
from tests.test_api_lifecycle import metric, write
from tests.test_provisioners import Recorded

StartServer = Callable[..., Server]

LOAD = notebook(
    "import json, os, time\nKEEP = []",
    "# GET /pid\nprint(os.getpid())",
    "# GET /sleep/:seconds\ntime.sleep(float(json.loads(REQUEST)['path']['seconds']))\nprint(os.getpid())",
    "# GET /keep/:mib\nKEEP.append(b'\\x01' * (int(json.loads(REQUEST)['path']['mib']) << 20))\n"
    "print(os.getpid())",
    kernel="python3",
    language="python",
)


def test_a_pool_grows_under_queued_load_and_shrinks_when_idle(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(
        write(LOAD, tmp_path), "--pool-size", "1..3", "--pool-idle-timeout", "1", "--queue-timeout", "60"
    )
    ready = server.get("/_api/health/ready").json()
    assert (ready["ready"], ready["kernels"], ready["min"], ready["max"]) == (True, 1, 1, 3)
    with ThreadPoolExecutor(8) as clients:
        answers = list(clients.map(lambda _: server.get("/sleep/1.5", timeout=90), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    pids = {a.text for a in answers}
    assert 1 < len(pids) <= 3  # it grew, never beyond MAX
    server.kernel_pids |= {int(p) for p in pids}
    page = server.get("/_api/metrics").text
    assert "nb2svc_pool_size_max 3" in page and "nb2svc_pool_queue_wait_seconds_count 8" in page
    assert metric(server, "nb2svc_pool_queue_wait_seconds_sum") > 0  # requests did queue
    wait_for(lambda: metric(server, "nb2svc_pool_kernels_live") == 1, 30, "the pool to shrink back to MIN")
    assert metric(server, "nb2svc_pool_idle_stops_total") == len(pids) - 1
    wait_for(lambda: sum(alive(int(p)) for p in pids) == 1, 30, "the stopped kernels to exit")
    assert server.get("/_api/health/ready").json()["ready"] is True
    assert server.get("/pid").status_code == 200


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Recorded]:
    record = Recorded(tmp_path / "rec")
    yield record
    for pid in record.pids():
        if alive(pid):
            os.kill(pid, 9)


@pytest.mark.parametrize("kernel", ["python3", "rec_python"])
def test_a_kernel_over_its_memory_limit_is_replaced_after_answering(
    start_server: StartServer, tmp_path: Path, recorded: Recorded, kernel: str
) -> None:
    """python3 is measured from /proc/<pid>; rec_python (not a LocalProvisioner) by its own report."""
    server = start_server(
        write(LOAD, tmp_path),
        "--pool-size",
        "1",
        "--kernel-name",
        kernel,
        "--kernel-max-memory",
        "250",
        env=recorded.env,
    )
    first = server.get("/pid").text
    assert server.get("/keep/10").text == first  # well under the limit: kept
    assert server.get("/pid").text == first
    big = server.get("/keep/300")
    assert big.status_code == 200 and big.text == first  # the answer is complete
    second = server.get("/pid", timeout=60).text  # waits for the replacement
    assert second != first
    assert metric(server, "nb2svc_kernel_recycled_total") == 1
    assert metric(server, "nb2svc_kernel_replacements_total") == 0
    assert "over --kernel-max-memory 250 MiB" in server.log()
    wait_for(lambda: not alive(int(first)), 30, "the recycled kernel to exit")


def test_max_requests_recycles_kernels_without_dropping_a_request(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(write(LOAD, tmp_path), "--pool-size", "2", "--kernel-max-requests", "2")
    with ThreadPoolExecutor(6) as clients:
        answers = list(clients.map(lambda _: server.get("/sleep/0.2", timeout=90), range(12)))
    assert [a.status_code for a in answers] == [200] * 12
    served: dict[str, int] = {}
    for answer in answers:
        served[answer.text] = served.get(answer.text, 0) + 1
    assert max(served.values()) <= 2 and len(served) >= 6
    assert metric(server, "nb2svc_kernel_recycled_total") >= 5
    server.kernel_pids |= {int(p) for p in served}

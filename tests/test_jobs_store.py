"""The job store's mechanisms against both store backends, without a server (issues 17, 18, 23).

A job's ``run`` here is a plain callable: it is handed the kernel sink, and "kernels"
are objects whose ``interrupt`` ends the run; the real pool and kernels are exercised
end to end in ``test_jobs_scaleout.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import gevent.event
import pytest
from flask import Response

from nb2svc.runtime.http_api.jobs import REPLICA_LOST, JobLimit, JobLimits, JobStore
from nb2svc.runtime.store import Store
from nb2svc.runtime.store.redis import RedisStore
from nb2svc.runtime.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens connections to one store, as several workers or replicas would."""
    opened: list[Store] = []

    def connect() -> Store:
        if request.param == "sqlite":
            store: Store = SqliteStore(str(tmp_path / "jobs.sqlite"))
        else:
            store = RedisStore(request.getfixturevalue("redis_server").url, "test redis")
        opened.append(store)
        return store

    yield connect
    for store in opened:
        store.close()


class Interruptible:
    """Stands in for a leased kernel: ``interrupt`` ends the cell that is "running"."""

    def __init__(self) -> None:
        self.interrupted = gevent.event.Event()

    def interrupt(self) -> None:
        self.interrupted.set()


def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait (cooperatively) for ``condition`` with a deadline."""
    with gevent.Timeout(timeout, AssertionError("condition not met in time")):
        while not condition():
            gevent.sleep(0.02)


def answer(body: bytes = b"done\n", status: int = 200) -> Callable[..., Response]:
    def run(on_kernel: Callable[[object], None]) -> Response:
        on_kernel(Interruptible())
        return Response(body, status=status, headers={"X-Made": "yes"})

    return run


def test_a_finished_job_answers_anywhere_then_is_forgotten(open_store: Callable[[], Store]) -> None:
    here, there = JobStore(open_store()), JobStore(open_store())
    job = here.submit("POST /made", "addr:1", answer(b"7\n", 201))
    until(lambda: (state := there.get(job["id"])) is not None and state.status == "done")
    state = there.get(job["id"])
    assert state is not None and state.result is not None
    status, headers, body = state.result
    assert (status, body, dict(headers)["X-Made"]) == (201, b"7\n", "yes")
    assert there.cancel(job["id"]) is True
    assert here.get(job["id"]) is None and here.cancel(job["id"]) is False


def test_a_job_cancelled_while_queued_never_takes_a_kernel(open_store: Callable[[], Store]) -> None:
    jobs = JobStore(open_store())
    queue = gevent.event.Event()  # the pool: no kernel is free until it is set
    leased = []

    def run(on_kernel: Callable[[object], None]) -> Response:
        queue.wait()
        on_kernel(Interruptible())
        leased.append(True)
        return Response("ran")

    job = jobs.submit("GET /count", "addr:1", run)
    gevent.sleep(0.05)  # let it start waiting
    assert jobs.cancel(job["id"]) is True
    queue.set()
    until(lambda: jobs.running() == 0)
    gevent.sleep(0.05)
    assert leased == [] and jobs.get(job["id"]).status == "cancelled"  # type: ignore[union-attr]


def test_a_kernel_handed_over_as_the_cancel_lands_goes_back_unused(open_store: Callable[[], Store]) -> None:
    jobs = JobStore(open_store())
    returned: list[object] = []

    def run(on_kernel: Callable[[object], None]) -> Response:
        kernel = Interruptible()
        jobs.cancel(job_id[0])  # the cancel lands between the hand-over and the run
        try:
            on_kernel(kernel)
        finally:
            returned.append(kernel)  # what the pool's lease does on the way out
        raise AssertionError("the cell ran")

    job_id: list[str] = []
    gate = gevent.event.Event()

    def gated(on_kernel: Callable[[object], None]) -> Response:
        gate.wait()
        return run(on_kernel)

    job_id.append(jobs.submit("GET /x", "addr:1", gated)["id"])
    jobs._local[job_id[0]].phase = "running"  # past the queue: the cancel must not kill the greenlet
    gate.set()
    until(lambda: jobs.running() == 0)
    assert len(returned) == 1


def test_a_cancel_through_another_replica_interrupts_the_job(open_store: Callable[[], Store]) -> None:
    runner, other = JobStore(open_store()), JobStore(open_store())
    kernel = Interruptible()

    def run(on_kernel: Callable[[object], None]) -> Response:
        on_kernel(kernel)
        kernel.interrupted.wait()
        return Response("interrupted", status=500)

    job = runner.submit("GET /slow", "addr:1", run)
    until(lambda: runner._local[job["id"]].phase == "running")
    assert other.cancel(job["id"]) is True
    # the runner looks every WATCH_INTERVAL (0.2 s); the deadline only bounds a loaded machine
    until(kernel.interrupted.is_set, timeout=10)
    until(lambda: runner.running() == 0)
    assert other.get(job["id"]).status == "cancelled"  # type: ignore[union-attr]


def test_a_job_whose_worker_died_fails_as_replica_lost(open_store: Callable[[], Store]) -> None:
    limits = JobLimits(lease=1.0)
    dying, survivor = JobStore(open_store(), limits), JobStore(open_store(), limits)
    job = dying.submit("GET /slow", "addr:1", lambda on_kernel: gevent.sleep(60))
    gevent.sleep(0.05)
    # the worker dies: its greenlets stop, nothing renews the lease
    gevent.killall([dying._local[job["id"]].greenlet, dying._watcher])
    assert survivor.get(job["id"]).status == "running"  # type: ignore[union-attr]
    until(lambda: survivor.get(job["id"]).status == "failed", timeout=15)  # type: ignore[union-attr]
    state = survivor.get(job["id"])
    assert state is not None and state.record["reason"] == REPLICA_LOST and state.record["code"] == 502


def test_a_result_over_the_byte_bound_fails_the_job_clearly(open_store: Callable[[], Store]) -> None:
    jobs = JobStore(open_store(), JobLimits(result_max_bytes=1000))
    small = jobs.submit("GET /small", "addr:1", answer(b"x" * 100))
    large = jobs.submit("GET /large", "addr:1", answer(b"x" * 5000))
    until(lambda: jobs.running() == 0)
    assert jobs.get(small["id"]).status == "done"  # type: ignore[union-attr]
    state = jobs.get(large["id"])
    assert state is not None and state.status == "failed" and state.result is None
    assert state.record["error"] == "JobResultTooLarge" and "1000" in state.record["message"]


def test_jobs_are_bounded_per_client_not_globally(open_store: Callable[[], Store]) -> None:
    jobs = JobStore(open_store(), JobLimits(per_client=2))
    forever = gevent.event.Event()

    def run(on_kernel: Callable[[object], None]) -> Response:
        forever.wait()
        return Response("late")

    first = jobs.submit("GET /a", "addr:greedy", run)
    jobs.submit("GET /a", "addr:greedy", run)
    with pytest.raises(JobLimit, match="limit 2"):
        jobs.submit("GET /a", "addr:greedy", run)
    jobs.submit("GET /a", "addr:polite", run)  # another client is not locked out
    jobs.cancel(first["id"])
    jobs.submit("GET /a", "addr:greedy", run)  # a cancelled job stops counting
    forever.set()
    until(lambda: jobs.running() == 0)

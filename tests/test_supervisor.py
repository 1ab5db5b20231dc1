"""The kernel supervisor's mechanisms, in-process and fast: no server, no kernel process.

A kernel is not what these tests are about, so a :class:`FakeKernel` made by a
:class:`Starter` stands in for one (the starter can hold starts open or fail them); the
pool, its policies and the supervisor are the real ones. Time that a policy reads comes
from a :class:`Clock` the test moves; greenlets are waited for with a deadline, never
slept on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import gevent
import gevent.event
import pytest

from nb2svc.config import normalize_pool_size, pool_bounds
from nb2svc.runtime.kernel.policies import PoolSize, RecyclePolicy, RestartPolicy, RetryPolicy
from nb2svc.runtime.kernel.pool import KernelPool, PoolBusy, PoolFailed
from nb2svc.runtime.kernel.process import KernelStartError
from nb2svc.runtime.kernel.supervisor import KernelSupervisor

MiB = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProcess:
    def __init__(self, stable_start: float | None) -> None:
        self._stable = stable_start

    def stable_start_time(self, recommended: float) -> float:
        return recommended if self._stable is None else self._stable


class FakeKernel:
    """What a pool needs of a kernel: liveness, retirement, a death callback, shutdown."""

    numbers = itertools.count(1)

    def __init__(self, started_at: float = 0.0, stable_start: float | None = None) -> None:
        self.label = f"fake-{next(self.numbers)}"
        self.started_at = started_at
        self.process = FakeProcess(stable_start)
        self.retire_reason: str | None = None
        self.on_death: Callable[[FakeKernel], None] | None = None
        self.dead = False
        self.stopped = False
        self.memory: int | None = None

    @property
    def usable(self) -> bool:
        return self.retire_reason is None and not self.dead

    def retire(self, reason: str) -> None:
        self.retire_reason = self.retire_reason or reason

    def die(self) -> None:
        self.dead = True
        if self.on_death:
            self.on_death(self)

    def shutdown(self, now: bool = False) -> None:
        self.stopped = True


class Starter:
    """Makes fake kernels; ``hold()`` keeps starts open until ``open()``; ``fail`` raises."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock
        self.started: list[FakeKernel] = []
        self.calls = 0
        self.fail: BaseException | None = None
        self._gate = gevent.event.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()

    def open(self) -> None:
        self._gate.set()

    def __call__(self) -> FakeKernel:
        self.calls += 1
        self._gate.wait()
        if self.fail is not None:
            raise self.fail
        kernel = FakeKernel(started_at=self.clock() if self.clock else 0.0)
        self.started.append(kernel)
        return kernel


def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Let greenlets run until ``condition`` holds (a deadline, not a sleep)."""
    with gevent.Timeout(timeout, AssertionError("condition not reached")):
        while not condition():
            gevent.sleep(0.001)


def pool_of(size: PoolSize | int, starter: Starter, **kwargs: object) -> KernelPool:
    pool = KernelPool(size, starter, **kwargs)  # type: ignore[arg-type]
    pool.start()
    return pool


# --- hand-off and queueing -------------------------------------------------------------


def test_a_released_kernel_goes_to_the_oldest_waiter_not_back_to_the_releaser() -> None:
    starter = Starter()
    pool = pool_of(1, starter)
    until(lambda: pool.ready)
    kernel = pool.acquire()
    served: list[str] = []

    def wait(name: str) -> None:
        got = pool.acquire(timeout=5)
        served.append(name)
        pool.release(got)

    waiters = [gevent.spawn(wait, name) for name in ("first", "second", "third")]
    until(lambda: pool.stats().waiting == 3)
    pool.release(kernel)
    again = gevent.spawn(wait, "releaser")  # asks again at once: must queue behind the others
    gevent.joinall([*waiters, again], timeout=5, raise_error=True)
    assert served == ["first", "second", "third", "releaser"]
    assert starter.calls == 1


def test_pool_busy_after_the_queue_timeout_and_beyond_max_queue() -> None:
    pool = pool_of(1, Starter(), max_waiting=1)
    until(lambda: pool.ready)
    held = pool.acquire()
    with pytest.raises(PoolBusy, match="no kernel became free within 0.01s"):
        pool.acquire(timeout=0.01)
    waiter = gevent.spawn(pool.acquire, 5)
    until(lambda: pool.stats().waiting == 1)
    with pytest.raises(PoolBusy, match="1 requests are already waiting"):
        pool.acquire(timeout=5)
    pool.release(held)
    assert waiter.get(timeout=5) is held


def test_queue_wait_is_observed_for_every_lease() -> None:
    clock = Clock()
    pool = pool_of(1, Starter(), clock=clock)
    until(lambda: pool.ready)
    held = pool.acquire()
    waiter = gevent.spawn(pool.acquire, 5)
    until(lambda: pool.stats().waiting == 1)
    clock.now += 0.3
    pool.release(held)
    waiter.get(timeout=5)
    lines = pool.stats().queue_wait.lines()
    assert "nb2svc_pool_queue_wait_seconds_count 2" in lines
    sums = [float(line.split()[1]) for line in lines if line.startswith("nb2svc_pool_queue_wait_seconds_sum")]
    assert sums == [pytest.approx(0.3)]
    assert 'nb2svc_pool_queue_wait_seconds_bucket{le="0.001"} 1' in lines  # the free kernel: no wait


# --- start failures and retries -------------------------------------------------------------


def test_transient_start_failures_give_up_after_the_retry_attempts() -> None:
    starter = Starter()
    starter.fail = KernelStartError("provisioner unreachable")
    fatal: list[BaseException] = []
    pool = pool_of(1, starter, retry=RetryPolicy(attempts=3, first_delay=0.0), on_fatal=fatal.append)
    until(lambda: pool.failure is not None)
    assert starter.calls == 3 and fatal == [starter.fail] and not pool.ready
    with pytest.raises(PoolFailed, match="provisioner unreachable"):
        pool.acquire(timeout=1)


def test_a_permanent_start_failure_gives_up_at_once() -> None:
    starter = Starter()
    starter.fail = KernelStartError("setup cell raised", permanent=True)
    pool = pool_of(2, starter, retry=RetryPolicy(attempts=5, first_delay=0.0))
    until(lambda: pool.failure is not None and pool.stats().starting == 0)
    assert starter.calls == 2  # both initial starts, no retry


def test_a_warmed_pool_never_gives_up() -> None:
    assert not RetryPolicy(attempts=1).gives_up(KernelStartError("x", permanent=True), 99, ever_warmed=True)
    assert RetryPolicy().delay(1) == 1.0 and RetryPolicy().delay(3) == 4.0 and RetryPolicy().delay(99) == 30.0


# --- elastic size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("live", "starting", "waiting", "wanted"),
    [
        (0, 0, 0, 1),  # back up to MIN
        (1, 0, 0, 0),
        (1, 0, 1, 1),  # one waiter: one start
        (1, 1, 3, 0),  # ceil(3 / 4) = 1 already in flight
        (1, 1, 5, 1),
        (1, 0, 100, 7),  # bounded by MAX as well
        (8, 0, 100, 0),
    ],
)
def test_growth_is_bounded_by_waiters_and_max(live: int, starting: int, waiting: int, wanted: int) -> None:
    assert PoolSize(1, 8, waiters_per_start=4).starts_wanted(live, starting, waiting) == wanted


def test_a_pool_grows_while_requests_wait_one_start_per_four_waiters() -> None:
    starter = Starter()
    pool = pool_of(PoolSize(1, 8), starter)
    until(lambda: pool.ready)
    held = pool.acquire()
    starter.hold()
    waiters = [gevent.spawn(pool.acquire, 5) for _ in range(7)]
    until(lambda: pool.stats().waiting == 7)
    assert pool.stats().starting == math.ceil(7 / 4)  # not 7 at once
    starter.open()
    kernels = {waiter.get(timeout=5) for waiter in waiters}
    assert len(kernels | {held}) == 8 == pool.stats().live == pool.size
    assert len(starter.started) == 8  # never beyond MAX
    extra = gevent.spawn(pool.acquire, 5)
    until(lambda: pool.stats().waiting == 1)
    assert pool.stats().starting == 0  # at MAX: waits for a release
    pool.release(held)
    assert extra.get(timeout=5) is held


def test_idle_kernels_above_min_are_stopped_after_the_idle_timeout() -> None:
    clock = Clock()
    starter = Starter()
    pool = pool_of(PoolSize(1, 3, idle_timeout=60), starter, clock=clock)
    until(lambda: pool.ready)
    first = pool.acquire()
    waiters = [gevent.spawn(pool.acquire, 5) for _ in range(2)]  # the pool grows to 3
    kernels = [first, *(waiter.get(timeout=5) for waiter in waiters)]
    assert pool.stats().live == 3
    for kernel in kernels:
        pool.release(kernel)
        clock.now += 10  # released 10 s apart: the first is the longest idle
    assert pool.stop_idle() == 0  # idle 30, 20, 10 s
    clock.now += 25
    assert pool.stop_idle() == 0  # idle 55, 45, 35 s
    clock.now += 10
    assert pool.stop_idle() == 1
    until(lambda: kernels[0].stopped)  # stopped in the background, gracefully
    clock.now += 1000
    assert pool.stop_idle() == 1  # never below MIN
    assert pool.stats().live == 1 and pool.stats().stopped_idle == 2 and pool.ready
    assert pool.acquire() is kernels[2]  # the survivor is the most recently used


def test_a_fixed_pool_never_stops_idle_kernels() -> None:
    clock = Clock()
    pool = pool_of(2, Starter(), clock=clock)
    until(lambda: pool.stats().idle == 2)
    clock.now += 10**6
    assert pool.stop_idle() == 0 and pool.stats().live == 2


def test_readiness_means_min_kernels_warm() -> None:
    starter = Starter()
    starter.hold()
    ready: list[bool] = []
    pool = pool_of(PoolSize(2, 6), starter, on_ready=lambda: ready.append(True))
    assert not pool.ready and pool.stats().starting == 2  # MIN, not MAX
    starter.open()
    until(lambda: pool.ready)
    assert ready == [True] and pool.stats().live == 2


@pytest.mark.parametrize(
    ("text", "bounds", "canonical"),
    [("3", (3, 3), 3), (" 1 .. 8 ", (1, 8), "1..8"), ("0..4", (0, 4), "0..4"), ("2..2", (2, 2), 2)],
)
def test_pool_size_forms(text: str, bounds: tuple[int, int], canonical: object) -> None:
    assert pool_bounds(text) == bounds and normalize_pool_size(text) == canonical


@pytest.mark.parametrize(
    ("text", "reason"),
    [("0", "must be at least 1"), ("0..0", "MAX must be"), ("4..2", "MIN must not"), ("x", "N or")],
)
def test_bad_pool_sizes(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        pool_bounds(text)


# --- recycling -----------------------------------------------------------------------------------


def test_recycle_decision() -> None:
    policy = RecyclePolicy.from_settings(max_requests=3, max_memory_mib=100)
    assert policy.reason(2, 50 * MiB) is None
    assert "answered 3 requests" in (policy.reason(3, None) or "")
    assert "holds 101 MiB, over --kernel-max-memory 100 MiB" in (policy.reason(1, 101 * MiB) or "")
    assert policy.reason(1, None) is None  # memory unknown: no decision on it
    assert not RecyclePolicy().active


def test_a_kernel_is_recycled_after_max_requests_and_the_waiter_gets_the_replacement() -> None:
    starter = Starter()
    pool = pool_of(1, starter, recycle=RecyclePolicy(max_requests=2))
    until(lambda: pool.ready)
    first = pool.acquire()
    pool.release(first)
    assert pool.acquire() is first
    waiter = gevent.spawn(pool.acquire, 5)
    until(lambda: pool.stats().waiting == 1)
    pool.release(first)  # its second answer is complete: now it goes
    replacement = waiter.get(timeout=5)
    assert replacement is not first and first.retire_reason
    until(lambda: first.stopped)
    assert pool.stats().recycled == 1 and pool.stats().replaced == 0


def test_a_kernel_over_the_memory_limit_is_recycled_on_release() -> None:
    starter = Starter()
    pool = pool_of(
        1, starter, recycle=RecyclePolicy.from_settings(0, 100), memory=lambda kernel: kernel.memory
    )
    until(lambda: pool.ready)
    kernel = pool.acquire()
    kernel.memory = 99 * MiB
    pool.release(kernel)
    assert pool.acquire() is kernel
    kernel.memory = 300 * MiB  # the request allocated
    pool.release(kernel)
    assert "300 MiB" in (kernel.retire_reason or "")
    until(lambda: kernel.stopped and pool.stats().idle == 1)
    assert pool.acquire() is starter.started[-1] is not kernel


# --- restarts -------------------------------------------------------------------------------------


def test_a_death_is_quick_relative_to_the_provisioners_stable_start_time() -> None:
    policy = RestartPolicy(limit=3, stable_start=10.0)
    slow_remote = FakeKernel(started_at=0.0, stable_start=120.0)
    local = FakeKernel(started_at=0.0)
    assert policy.judge(slow_remote, 0, now=30.0).quick_deaths == 1  # 30 s < its 120 s
    assert policy.judge(local, 0, now=30.0).quick_deaths == 0  # 30 s > the default 10 s
    verdict = policy.judge(slow_remote, 2, now=30.0)
    assert verdict.give_up and verdict.stable_start == 120.0
    assert not policy.judge(slow_remote, 2, now=200.0).give_up  # a stable run resets the count


def test_a_pool_replaces_kernels_that_keep_dying_after_a_growing_delay() -> None:
    policy = RestartPolicy(first_delay=1.0, max_delay=30.0)
    assert [policy.delay(n) for n in (0, 1, 2, 3, 4, 10)] == [0.0, 0.0, 1.0, 2.0, 4.0, 30.0]
    clock = Clock()
    starter = Starter(clock)
    pool = pool_of(1, starter, clock=clock, restart=policy)
    until(lambda: pool.ready)
    starter.started[-1].die()  # one quick death: replaced at once
    until(lambda: len(starter.started) == 2)
    assert pool.stats().replaced == 1


def test_the_supervisor_judges_kernel_mode_deaths_with_its_clock_and_policy() -> None:
    clock = Clock()
    supervisor = KernelSupervisor(restart=RestartPolicy(limit=2), clock=clock)
    kernel = FakeKernel(started_at=clock.now, stable_start=60.0)
    clock.now += 59
    first = supervisor.judge_death(kernel, 0)  # type: ignore[arg-type]
    assert (first.quick_deaths, first.give_up) == (1, False)
    assert supervisor.judge_death(kernel, first.quick_deaths).give_up  # type: ignore[arg-type]


def test_the_supervisor_owns_its_pools_and_start_batches() -> None:
    supervisor = KernelSupervisor(retry=RetryPolicy(first_delay=0.0))
    starter = Starter()
    pool = supervisor.pool("/orders", starter, PoolSize(1, 2))  # type: ignore[arg-type]
    pool.start()
    errors: list[Exception] = []
    made: list[int] = []

    def start_one() -> None:
        if len(made) == 1:
            raise KernelStartError("second prespawn fails")
        made.append(1)

    batch = supervisor.start_batch(2, start_one, errors.append)
    until(lambda: batch.pending == 0 and pool.ready)
    assert batch.failed == 1 and [str(e) for e in errors] == ["second prespawn fails"]
    assert [(name, stats.maximum) for name, stats in supervisor.stats()] == [("/orders", 2)]
    supervisor.shutdown()
    assert starter.started and all(kernel.stopped for kernel in starter.started)
    with pytest.raises(PoolFailed, match="shutting down"):
        pool.acquire(timeout=1)
    assert supervisor.pools == []


def test_a_reload_version_pool_stands_beside_the_one_it_replaces() -> None:
    supervisor = KernelSupervisor()
    old = supervisor.pool("/", Starter(), 1)  # type: ignore[arg-type]
    new = supervisor.pool("/", Starter(), 1)  # type: ignore[arg-type]
    assert [pool for _, pool in supervisor.pools] == [old, new]
    old.shutdown()
    assert [pool for _, pool in supervisor.pools] == [new]


def test_a_batch_failure_handler_may_shut_the_supervisor_down() -> None:
    """A failing seed cell's handler stops the worker: shutting down must not kill that handler."""
    supervisor = KernelSupervisor()
    handled: list[Exception] = []

    def fail() -> None:
        raise KernelStartError("seed cell raised", permanent=True)

    def on_error(exc: Exception) -> None:
        gevent.joinall([gevent.spawn(supervisor.shutdown)])  # as stop_worker_for_good's cleanup does
        handled.append(exc)

    batch = supervisor.start_batch(1, fail, on_error)
    until(lambda: batch.pending == 0)
    assert [str(e) for e in handled] == ["seed cell raised"]

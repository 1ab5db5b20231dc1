"""A warm pool: kernels started (and seeded) ahead of need, healed, handed out fairly.

Pools belong to the worker's :class:`~nb2svc.runtime.kernel.supervisor.KernelSupervisor`
(one per mounted notebook in API mode, the ``--warm`` supply in kernel mode), which gives
them its restart and retry policies. Two ways out:

- API mode leases: :meth:`KernelPool.acquire` / :meth:`KernelPool.release` (or
  ``with pool.lease() as kernel``) lend a kernel for one request and take it back;
- kernel mode takes: :meth:`KernelPool.take` hands a warm kernel over for good (``--warm``)
  and starts a replacement in the background.

Why FIFO hand-off rather than a queue: a greenlet that just released a kernel on a
keep-alive connection would otherwise take it straight back before the woken waiters
run, and p99 latency triples under load (RUNTIME-NOTES.md, "Kernel pool"). Here a
released kernel goes directly to the oldest waiter. Idle kernels are handed out most
recently used first, so under light load the surplus of an elastic pool stays idle
long enough to be stopped.

Size (:class:`~.policies.PoolSize`): ``MIN`` kernels always; while requests wait, more
start, at a bounded rate, up to ``MAX``; a kernel above ``MIN`` idle for the idle timeout
is stopped (:meth:`KernelPool.stop_idle`, run by a background greenlet of elastic pools).

Healing: a kernel that died, or that was retired (it asked to exit, closed its output,
or an interrupt could not bring it back), is discarded and a replacement is started in
the background, so the request path never waits on a kernel start. Kernels that keep
dying soon after their start are replaced after a growing delay
(:class:`~.policies.RestartPolicy`).

Recycling (:class:`~.policies.RecyclePolicy`): decided in :meth:`KernelPool.release`, once
the request's answer is complete: a kernel that answered its ``--kernel-max-requests`` or
holds more than ``--kernel-max-memory`` is retired and replaced like a dead one, so no
request is ever dropped by it; waiting requests get the next kernel.

Retries (:class:`~.policies.RetryPolicy`): a failed start is retried after a growing delay,
never in a tight loop. Before the first kernel has ever warmed, a permanent error (a setup
cell that raises, an unknown kernel spec) fails the pool at once, and a transient one
after ``attempts`` tries: then :attr:`KernelPool.failure` says why, readiness stays false
and nothing more is started.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import gevent
from gevent.event import AsyncResult

from nb2svc.runtime.kernel.channels import Kernel
from nb2svc.runtime.kernel.memory import resident_bytes
from nb2svc.runtime.kernel.policies import PoolSize, RecyclePolicy, RestartPolicy, RetryPolicy
from nb2svc.runtime.metrics import Histogram

log = logging.getLogger("nb2svc")

#: Queue-wait histogram buckets, in seconds.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def queue_wait_histogram() -> Histogram:
    """A pool's queue waits, one observation per lease (its ``/_api/metrics`` series)."""
    return Histogram(
        "nb2svc_pool_queue_wait_seconds",
        "Seconds a request waited for a kernel (0 when one was free).",
        WAIT_BUCKETS,
    )


class PoolBusy(RuntimeError):
    """No kernel became free in time, or too many requests are already waiting."""


class PoolFailed(RuntimeError):
    """The pool cannot start kernels (e.g. a setup cell raises); the service cannot work."""


@dataclass
class PoolStats:
    size: int  # kernels the pool aims at now: MIN, or more while it grows
    live: int
    idle: int
    busy: int
    starting: int
    waiting: int
    replaced: int
    minimum: int = 0
    maximum: int = 0
    recycled: int = 0
    stopped_idle: int = 0
    queue_wait: Histogram = field(default_factory=lambda: queue_wait_histogram())


class KernelPool:
    """Kernels made by ``provision`` (a started, seeded :class:`Kernel`, or raises)."""

    def __init__(
        self,
        size: PoolSize | int,
        provision: Callable[[], Kernel],
        *,
        max_waiting: int = 256,
        retry: RetryPolicy | None = None,
        restart: RestartPolicy | None = None,
        recycle: RecyclePolicy | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        on_ready: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        memory: Callable[[Kernel], int | None] = resident_bytes,
    ) -> None:
        """``clock`` and ``memory`` (how a kernel's resident bytes are read) are for tests."""
        if isinstance(size, int):
            if size < 0:
                raise ValueError("pool size must not be negative")
            size = PoolSize.fixed(size)
        self.policy = size
        self._provision = provision
        self._max_waiting = max_waiting
        self._retry = retry or RetryPolicy()
        self._restart = restart or RestartPolicy()
        self._recycle = recycle or RecyclePolicy()
        self._on_fatal = on_fatal
        self._on_ready = on_ready
        self._clock = clock
        self._memory = memory
        self._idle: collections.deque[Kernel] = collections.deque()
        self._idle_since: dict[Kernel, float] = {}
        self._served: dict[Kernel, int] = {}
        self._waiters: collections.deque[AsyncResult] = collections.deque()
        self._all: set[Kernel] = set()
        self._starting = 0
        self._failures = 0
        self._quick_deaths = 0
        self._replaced = 0
        self._recycled = 0
        self._stopped_idle = 0
        self._warmed = 0
        self._announced = False
        self._closed = False
        self._unmeasured_warned = False
        self._queue_wait = queue_wait_histogram()
        self._shrinker: gevent.Greenlet | None = None
        self.failure: BaseException | None = None

    @property
    def size(self) -> int:
        """Kernels the pool aims at: its MIN, or as many as live and start while it grows."""
        return max(self.policy.minimum, len(self._all) + self._starting)

    # --- start-up, growth and healing ----------------------------------------------------

    def start(self) -> None:
        """Provision MIN kernels in the background; each joins the pool when warm."""
        self._refill()
        self._maybe_announce()
        if self.policy.elastic and self._shrinker is None:
            self._shrinker = gevent.spawn(self._shrink_loop)

    def _refill(self, delay: float = 0.0) -> int:
        """Start what the size policy wants now: back to MIN, or growth while requests wait."""
        if self._closed or self.failure is not None:
            return 0
        wanted = self.policy.starts_wanted(len(self._all), self._starting, len(self._waiters))
        for _ in range(wanted):
            self._starting += 1
            gevent.spawn_later(delay, self._provision_one)
        return wanted

    def _provision_one(self) -> None:
        try:
            kernel = self._provision()
        except BaseException as exc:  # noqa: B036 - reported, retried or fatal
            self._starting -= 1
            if isinstance(exc, gevent.GreenletExit) or self._closed:
                return
            self._failures += 1
            if self._retry.gives_up(exc, self._failures, self._warmed > 0):
                if self._on_fatal is None and self.failure is None:
                    log.error("could not start a kernel: %s", exc)
                self._fail(exc)  # on_fatal reports it: the error is printed once
            else:
                log.error("could not start a kernel: %s", exc)
                delay = self._retry.delay(self._failures)
                log.info("retrying the kernel start in %gs", delay)
                self._refill(delay)
            return
        self._starting -= 1
        if self._closed or self.failure is not None:
            gevent.spawn(kernel.shutdown, True)
            return
        self._failures = 0
        kernel.on_death = self._on_kernel_death
        self._all.add(kernel)
        self._served[kernel] = 0
        self._warmed += 1
        self._hand_out(kernel)
        self._maybe_announce()
        self._refill()  # still waiters: the growth bound may allow another start now

    def _maybe_announce(self) -> None:
        if not self._announced and self._warmed >= self.policy.minimum:
            self._announced = True
            if self._on_ready:
                self._on_ready()

    def _fail(self, exc: BaseException) -> None:
        if self.failure is not None:
            return
        self.failure = exc
        while self._waiters:
            self._waiters.popleft().set_exception(PoolFailed(str(exc)))
        if self._on_fatal:
            self._on_fatal(exc)

    def _on_kernel_death(self, kernel: Kernel) -> None:
        self._quick_deaths = self._restart.judge(kernel, self._quick_deaths, self._clock()).quick_deaths
        self._forget_idle(kernel)
        self._discard(kernel, "died", delay=self._restart.delay(self._quick_deaths))

    def _forget_idle(self, kernel: Kernel) -> None:
        if kernel in self._idle:
            self._idle.remove(kernel)
        self._idle_since.pop(kernel, None)

    def _discard(self, kernel: Kernel, reason: str, *, delay: float = 0.0, recycled: bool = False) -> None:
        if kernel not in self._all:
            return
        self._all.discard(kernel)
        self._served.pop(kernel, None)
        gevent.spawn(kernel.shutdown, True)  # it serves nobody: no grace needed
        if self._failures:
            delay = max(delay, self._retry.delay(self._failures))
        started = self._refill(delay)
        then = ""
        if started:
            then = f"; starting a replacement in {delay:g}s" if delay else "; starting a replacement"
        if recycled:
            self._recycled += 1
            log.info("kernel %s recycled: %s%s", kernel.label, reason, then)
        else:
            self._replaced += 1
            log.warning("kernel %s %s%s", kernel.label, reason, then)

    # --- shrinking -------------------------------------------------------------------------

    def _shrink_loop(self) -> None:
        interval = max(0.05, min(1.0, self.policy.idle_timeout / 4))
        while not self._closed:
            gevent.sleep(interval)
            self.stop_idle()

    def stop_idle(self) -> int:
        """Stop kernels above MIN that were idle for the idle timeout (longest idle first)."""
        stopped = 0
        now = self._clock()
        while self._idle and not self._closed:
            oldest = self._idle[0]
            if not self.policy.may_stop_idle(len(self._all), now - self._idle_since.get(oldest, now)):
                break
            self._idle.popleft()
            self._idle_since.pop(oldest, None)
            self._all.discard(oldest)
            self._served.pop(oldest, None)
            oldest.on_death = None
            self._stopped_idle += 1
            stopped += 1
            log.info("kernel %s stopped after %gs idle", oldest.label, self.policy.idle_timeout)
            gevent.spawn(oldest.shutdown)
        return stopped

    # --- hand-out ----------------------------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> Kernel:
        """A free kernel, waiting in FIFO order; :class:`PoolBusy` if none comes in time."""
        if self.failure is not None:
            raise PoolFailed(str(self.failure))
        if self._closed:
            raise PoolFailed("the server is shutting down")
        while self._idle:
            kernel = self._idle.pop()
            self._idle_since.pop(kernel, None)
            if kernel.usable:
                self._queue_wait.observe(0.0)
                return kernel
            self._discard(kernel, _why_unusable(kernel))
        if len(self._waiters) >= self._max_waiting:
            raise PoolBusy(f"{len(self._waiters)} requests are already waiting for a kernel")
        waiter: AsyncResult = AsyncResult()
        self._waiters.append(waiter)
        queued = self._clock()
        self._refill()  # requests wait: the pool may grow
        try:
            kernel = waiter.get(timeout=timeout)
        except gevent.Timeout:
            self._give_back(waiter)
            raise PoolBusy(f"no kernel became free within {timeout:g}s") from None
        except BaseException:  # killed while waiting (a cancelled job): it never takes a kernel
            self._give_back(waiter)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        self._queue_wait.observe(self._clock() - queued)
        return kernel

    def _give_back(self, waiter: AsyncResult) -> None:
        """A kernel handed to a waiter that stopped waiting in the same instant goes back
        (it ran nothing for that waiter, so it does not count towards recycling)."""
        if not (waiter.ready() and waiter.successful()):
            return
        kernel = waiter.value
        if kernel.usable and not self._closed:
            self._hand_out(kernel)
        else:
            self.release(kernel)

    def release(self, kernel: Kernel) -> None:
        """Return a leased kernel; a dead, retired or recycled one is replaced instead of reused."""
        if not kernel.usable:
            self._discard(kernel, _why_unusable(kernel))
            return
        if self._closed:
            return
        if kernel in self._served:
            self._served[kernel] += 1
            reason = self._recycle_reason(kernel)
            if reason is not None:
                kernel.retire(reason)
                self._discard(kernel, reason, recycled=True)
                return
        self._hand_out(kernel)

    def _recycle_reason(self, kernel: Kernel) -> str | None:
        if not self._recycle.active:
            return None
        resident = self._memory(kernel) if self._recycle.measures_memory else None
        if resident is None and self._recycle.measures_memory and not self._unmeasured_warned:
            self._unmeasured_warned = True
            log.warning("kernel %s does not say its memory: --kernel-max-memory cannot apply", kernel.label)
        return self._recycle.reason(self._served[kernel], resident)

    def _hand_out(self, kernel: Kernel) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.ready():
                waiter.set(kernel)
                return
        self._idle.append(kernel)
        self._idle_since[kernel] = self._clock()

    @contextmanager
    def lease(self, timeout: float | None = None) -> Iterator[Kernel]:
        """``with pool.lease() as kernel:`` — released on exit; :meth:`Kernel.retire` it to replace it."""
        kernel = self.acquire(timeout)
        try:
            yield kernel
        finally:
            self.release(kernel)

    def take(self) -> Kernel | None:
        """A warm kernel handed over for good (the caller owns it), or ``None`` if none is ready."""
        while self._idle:
            kernel = self._idle.popleft()
            self._idle_since.pop(kernel, None)
            self._all.discard(kernel)
            self._served.pop(kernel, None)
            kernel.on_death = None
            self._refill()
            if kernel.usable:
                return kernel
            gevent.spawn(kernel.shutdown, True)
        return None

    # --- introspection and shutdown ----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Warm: MIN kernels have started once and the pool still has one (or needs none)."""
        if self.failure is not None:
            return False
        return self.policy.minimum == 0 or (self._warmed >= self.policy.minimum and bool(self._all))

    @property
    def closed(self) -> bool:
        """Shut down: it hands out nothing more."""
        return self._closed

    @property
    def filled_once(self) -> bool:
        return self._warmed >= self.policy.minimum

    def stats(self) -> PoolStats:
        live = len(self._all)
        idle = len(self._idle)
        return PoolStats(
            size=self.size,
            live=live,
            idle=idle,
            busy=live - idle,
            starting=self._starting,
            waiting=len(self._waiters),
            replaced=self._replaced,
            minimum=self.policy.minimum,
            maximum=self.policy.maximum,
            recycled=self._recycled,
            stopped_idle=self._stopped_idle,
            queue_wait=self._queue_wait,
        )

    def shutdown(self) -> None:
        """Shut every kernel down (in parallel) and refuse further work."""
        self._closed = True
        if self._shrinker is not None:
            self._shrinker.kill(block=False)
        while self._waiters:
            self._waiters.popleft().set_exception(PoolFailed("the server is shutting down"))
        kernels = list(self._all)
        self._all.clear()
        self._idle.clear()
        self._idle_since.clear()
        self._served.clear()
        gevent.joinall([gevent.spawn(k.shutdown) for k in kernels], timeout=15)
        for kernel in kernels:  # whatever did not finish gracefully
            kernel.shutdown(now=True)


def _why_unusable(kernel: Kernel) -> str:
    if kernel.retire_reason is not None:
        return f"was retired ({kernel.retire_reason})"
    return "died"

"""The warm supply: kernels started (and seeded) ahead of need, healed, handed out fairly.

One supply serves both modes:

- API mode leases: :meth:`KernelPool.acquire` / :meth:`KernelPool.release` (or
  ``with pool.lease() as kernel``) lend a kernel for one request and take it back;
- kernel mode takes: :meth:`KernelPool.take` hands a warm kernel over for good (``--warm``)
  and starts a replacement in the background.

Why FIFO hand-off rather than a queue: a greenlet that just released a kernel on a
keep-alive connection would otherwise take it straight back before the woken waiters
run, and p99 latency triples under load (RUNTIME-NOTES.md, "Kernel pool"). Here a
released kernel goes directly to the oldest waiter.

Healing: a kernel that died, or that was retired (it asked to exit, closed its output,
or an interrupt could not bring it back), is discarded and a replacement is started in
the background, so the request path never waits on a kernel start.

Retries (:class:`RetryPolicy`): a failed start is retried after a growing delay, never
in a tight loop. Before the first kernel has ever warmed, a permanent error (a setup
cell that raises, an unknown kernel spec) fails the pool at once, and a transient one
(a provisioner that could not launch, a timeout) after ``attempts`` tries: then
:attr:`KernelPool.failure` says why, readiness stays false and nothing more is started.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gevent
from gevent.event import AsyncResult

from nb2svc.runtime.kernel.channels import Kernel
from nb2svc.runtime.kernel.process import KernelStartError

log = logging.getLogger("nb2svc")


class PoolBusy(RuntimeError):
    """No kernel became free in time, or too many requests are already waiting."""


class PoolFailed(RuntimeError):
    """The pool cannot start kernels (e.g. a setup cell raises); the service cannot work."""


@dataclass(frozen=True)
class RetryPolicy:
    """How failed kernel starts are retried (see the module docstring)."""

    attempts: int = 3
    first_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.max_delay, self.first_delay * 2 ** max(0, failures - 1))

    def gives_up(self, exc: BaseException, failures: int, ever_warmed: bool) -> bool:
        if ever_warmed:
            return False
        permanent = isinstance(exc, KernelStartError) and exc.permanent
        return permanent or failures >= self.attempts


@dataclass
class PoolStats:
    size: int
    live: int
    idle: int
    busy: int
    starting: int
    waiting: int
    replaced: int


class KernelPool:
    """``size`` kernels made by ``provision`` (a started, seeded :class:`Kernel`, or raises)."""

    def __init__(
        self,
        size: int,
        provision: Callable[[], Kernel],
        *,
        max_waiting: int = 256,
        retry: RetryPolicy | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        if size < 0:
            raise ValueError("pool size must not be negative")
        self.size = size
        self._provision = provision
        self._max_waiting = max_waiting
        self._retry = retry or RetryPolicy()
        self._on_fatal = on_fatal
        self._on_ready = on_ready
        self._idle: collections.deque[Kernel] = collections.deque()
        self._waiters: collections.deque[AsyncResult] = collections.deque()
        self._all: set[Kernel] = set()
        self._starting = 0
        self._failures = 0
        self._replaced = 0
        self._warmed = 0
        self._closed = False
        self.failure: BaseException | None = None

    # --- start-up and healing ------------------------------------------------------

    def start(self) -> None:
        """Provision every kernel in the background; each joins the pool when warm."""
        self._refill()
        if self.size == 0 and self._on_ready:
            self._on_ready()

    def _refill(self, delay: float = 0.0) -> None:
        while not self._closed and self.failure is None and len(self._all) + self._starting < self.size:
            self._starting += 1
            gevent.spawn_later(delay, self._provision_one)

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
        self._warmed += 1
        self._hand_out(kernel)
        if self._warmed == self.size and self._on_ready:
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
        if kernel in self._idle:
            self._idle.remove(kernel)
        self._discard(kernel, "died")

    def _discard(self, kernel: Kernel, reason: str) -> None:
        if kernel not in self._all:
            return
        self._all.discard(kernel)
        self._replaced += 1
        log.warning("kernel %s %s; starting a replacement", kernel.label, reason)
        gevent.spawn(kernel.shutdown, True)  # it serves nobody: no grace needed
        self._refill(self._retry.delay(self._failures) if self._failures else 0.0)

    # --- hand-out ------------------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> Kernel:
        """A free kernel, waiting in FIFO order; :class:`PoolBusy` if none comes in time."""
        if self.failure is not None:
            raise PoolFailed(str(self.failure))
        while self._idle:
            kernel = self._idle.popleft()
            if kernel.usable:
                return kernel
            self._discard(kernel, _why_unusable(kernel))
        if len(self._waiters) >= self._max_waiting:
            raise PoolBusy(f"{len(self._waiters)} requests are already waiting for a kernel")
        waiter: AsyncResult = AsyncResult()
        self._waiters.append(waiter)
        try:
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            self._give_back(waiter)
            raise PoolBusy(f"no kernel became free within {timeout:g}s") from None
        except BaseException:  # killed while waiting (a cancelled job): it never takes a kernel
            self._give_back(waiter)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _give_back(self, waiter: AsyncResult) -> None:
        """A kernel handed to a waiter that stopped waiting in the same instant goes back."""
        if waiter.ready() and waiter.successful():
            self.release(waiter.value)

    def release(self, kernel: Kernel) -> None:
        """Return a leased kernel; a dead or retired one is replaced instead of reused."""
        if not kernel.usable:
            self._discard(kernel, _why_unusable(kernel))
            return
        if self._closed:
            return
        self._hand_out(kernel)

    def _hand_out(self, kernel: Kernel) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.ready():
                waiter.set(kernel)
                return
        self._idle.append(kernel)

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
            self._all.discard(kernel)
            kernel.on_death = None
            self._refill()
            if kernel.usable:
                return kernel
            gevent.spawn(kernel.shutdown, True)
        return None

    # --- introspection and shutdown ------------------------------------------------

    @property
    def ready(self) -> bool:
        """Warm: the first round of kernels has started and is still there."""
        if self.failure is not None:
            return False
        return self.size == 0 or (self._warmed >= self.size and bool(self._all))

    @property
    def filled_once(self) -> bool:
        return self.size == 0 or self._warmed >= self.size

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
        )

    def shutdown(self) -> None:
        """Shut every kernel down (in parallel) and refuse further work."""
        self._closed = True
        while self._waiters:
            self._waiters.popleft().set_exception(PoolFailed("the server is shutting down"))
        kernels = list(self._all)
        self._all.clear()
        self._idle.clear()
        gevent.joinall([gevent.spawn(k.shutdown) for k in kernels], timeout=15)
        for kernel in kernels:  # whatever did not finish gracefully
            kernel.shutdown(now=True)


def _why_unusable(kernel: Kernel) -> str:
    if kernel.retire_reason is not None:
        return f"was retired ({kernel.retire_reason})"
    return "died"

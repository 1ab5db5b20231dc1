"""A pool of warm kernels with fair (FIFO) hand-off and self-healing.

Why FIFO hand-off rather than a queue: a greenlet that just released a kernel on a
keep-alive connection would otherwise take it straight back before the woken waiters
run, and p99 latency triples under load (RUNTIME-NOTES.md, "Kernel pool"). Here a
released kernel goes directly to the oldest waiter.

Healing: a kernel that died, or that an interrupt could not bring back, is discarded
and a replacement is started and seeded in the background, so the pool returns to its
size without the request path waiting on a kernel start.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gevent
from gevent.event import AsyncResult

from nb2svc.runtime.kernels import Kernel

log = logging.getLogger("nb2svc")


class PoolBusy(RuntimeError):
    """No kernel became free in time, or too many requests are already waiting."""


class PoolFailed(RuntimeError):
    """The pool cannot start kernels (e.g. a setup cell raises); the service cannot work."""


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
    """``size`` kernels made by ``provision`` (start + seed), handed out one at a time.

    ``provision`` returns a started, seeded :class:`Kernel` or raises; ``on_fatal``
    is called once if the very first provisioning fails, since every later attempt
    would fail the same way (a broken setup cell, an unknown kernel spec).
    """

    def __init__(
        self,
        size: int,
        provision: Callable[[], Kernel],
        *,
        max_waiting: int = 256,
        on_fatal: Callable[[BaseException], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.size = size
        self._provision = provision
        self._max_waiting = max_waiting
        self._on_fatal = on_fatal
        self._on_ready = on_ready
        self._idle: collections.deque[Kernel] = collections.deque()
        self._waiters: collections.deque[AsyncResult] = collections.deque()
        self._all: set[Kernel] = set()
        self._starting = 0
        self._replaced = 0
        self._warmed = 0
        self._closed = False
        self.failure: BaseException | None = None

    # --- start-up and healing ------------------------------------------------------

    def start(self) -> None:
        """Provision every kernel in the background; each joins the pool when warm."""
        for _ in range(self.size):
            self._spawn_provision()

    def _spawn_provision(self) -> None:
        self._starting += 1
        gevent.spawn(self._provision_one)

    def _provision_one(self) -> None:
        try:
            kernel = self._provision()
        except BaseException as exc:  # noqa: B036 - reported, and fatal when nothing ever worked
            self._starting -= 1
            if self._closed:
                return
            log.error("could not start a kernel: %s", exc)
            if self._warmed == 0 and self.failure is None:
                self.failure = exc
                self._fail_waiters(exc)
                if self._on_fatal:
                    self._on_fatal(exc)
            else:
                gevent.spawn_later(1.0, self._spawn_provision)
            return
        self._starting -= 1
        if self._closed:
            kernel.shutdown(now=True)
            return
        kernel.on_death = self._on_kernel_death
        self._all.add(kernel)
        self._warmed += 1
        self.release(kernel)
        if self._warmed == self.size and self._on_ready:
            self._on_ready()

    def _on_kernel_death(self, kernel: Kernel) -> None:
        if kernel in self._idle:
            self._idle.remove(kernel)
        self._discard(kernel, "died")

    def _discard(self, kernel: Kernel, reason: str) -> None:
        if kernel not in self._all:
            return
        self._all.discard(kernel)
        self._replaced += 1
        log.warning("kernel %s %s; starting a replacement", _kernel_label(kernel), reason)
        gevent.spawn(kernel.shutdown, True)
        if not self._closed:
            self._spawn_provision()

    def _fail_waiters(self, exc: BaseException) -> None:
        while self._waiters:
            self._waiters.popleft().set_exception(PoolFailed(str(exc)))

    # --- hand-out ------------------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> Kernel:
        """A free kernel, waiting in FIFO order; :class:`PoolBusy` if none comes in time."""
        if self.failure is not None:
            raise PoolFailed(str(self.failure))
        while self._idle:
            kernel = self._idle.popleft()
            if kernel.is_alive():
                return kernel
            self._discard(kernel, "was found dead")
        if len(self._waiters) >= self._max_waiting:
            raise PoolBusy(f"{len(self._waiters)} requests are already waiting for a kernel")
        waiter: AsyncResult = AsyncResult()
        self._waiters.append(waiter)
        try:
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            raise PoolBusy(f"no kernel became free within {timeout:g}s") from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, kernel: Kernel, healthy: bool = True) -> None:
        """Return a kernel; unhealthy or dead ones are replaced instead of reused."""
        if not healthy or not kernel.is_alive():
            self._discard(kernel, "is unhealthy" if kernel.is_alive() else "died")
            return
        if self._closed:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.ready():
                waiter.set(kernel)
                return
        self._idle.append(kernel)

    @contextmanager
    def lease(self, timeout: float | None = None) -> Iterator[Kernel]:
        """``with pool.lease() as kernel:`` — released on exit, replaced if the body marks it bad.

        The body signals a wedged kernel by raising :class:`KernelUnhealthy` or by the
        kernel being dead when the block exits.
        """
        kernel = self.acquire(timeout)
        healthy = True
        try:
            yield kernel
        except KernelUnhealthy:
            healthy = False
            raise
        finally:
            self.release(kernel, healthy)

    # --- introspection and shutdown ------------------------------------------------

    @property
    def ready(self) -> bool:
        """Warm: the first round of kernels has started and at least one is alive."""
        return self.failure is None and self._warmed >= self.size and bool(self._all)

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
        self._fail_waiters(RuntimeError("the server is shutting down"))
        kernels = list(self._all)
        self._all.clear()
        self._idle.clear()
        jobs = [gevent.spawn(k.shutdown) for k in kernels]
        gevent.joinall(jobs, timeout=10)
        for kernel in kernels:  # whatever did not finish gracefully
            kernel.shutdown(now=True)


class KernelUnhealthy(RuntimeError):
    """Raised inside a lease when the kernel must not be reused (e.g. it is wedged)."""


def _kernel_label(kernel: Kernel) -> str:
    proc = kernel.process
    return f"{kernel.kernel_name} (pid {proc.pid})" if proc is not None else kernel.kernel_name

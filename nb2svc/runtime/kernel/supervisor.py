"""One kernel supervisor per worker, for both modes: warm pools, start batches, restarts.

Everything a worker keeps running ahead of need or brings back after a death goes
through here, with one set of policies (:mod:`.policies`):

- API mode: one :class:`~.pool.KernelPool` per mounted notebook (:meth:`KernelSupervisor.pool`),
  leased per request, sized by a :class:`~.policies.PoolSize` and recycled by a
  :class:`~.policies.RecyclePolicy`;
- kernel mode: the ``--warm`` pool (taken for good), the ``--prespawn`` kernels
  (:meth:`KernelSupervisor.start_batch`) and the auto-restart of a listed kernel that died
  (:meth:`KernelSupervisor.judge_death`);
- both: the :class:`~.policies.RestartPolicy` (quick deaths measured against the
  provisioner's stable start time) and the :class:`~.policies.RetryPolicy` of failed starts.

It is built from explicit arguments and holds no module-level state, so the worker's
runtime object owns it; :meth:`shutdown` stops every kernel it supervises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent

from nb2svc.runtime.kernel.channels import Kernel
from nb2svc.runtime.kernel.policies import DeathVerdict, PoolSize, RecyclePolicy, RestartPolicy, RetryPolicy
from nb2svc.runtime.kernel.pool import KernelPool, PoolStats

log = logging.getLogger("nb2svc")


class StartBatch:
    """Kernels started once in the background (kernel mode's ``--prespawn``), not replaced.

    ``start`` makes and registers one kernel; ``on_error`` hears each failure. ``pending``
    counts starts not yet finished (readiness waits for zero).
    """

    def __init__(
        self, count: int, start: Callable[[], object], on_error: Callable[[Exception], None]
    ) -> None:
        self.pending = count
        self.failed = 0
        self._start = start
        self._on_error = on_error
        self._starting: set[gevent.Greenlet] = set()
        self._starting.update(gevent.spawn(self._one) for _ in range(count))

    def _one(self) -> None:
        failure: Exception | None = None
        try:
            self._start()
        except Exception as exc:
            failure = exc
        finally:
            # Past its start: :meth:`cancel` must not kill it now, as its failure's handler
            # may be what is shutting the worker down (a failing seed cell).
            self._starting.discard(gevent.getcurrent())
        try:
            if failure is not None:
                self.failed += 1
                self._on_error(failure)
        finally:
            self.pending -= 1

    def cancel(self) -> None:
        """Stop the starts still under way."""
        gevent.killall(list(self._starting), block=False)


class KernelSupervisor:
    """The worker's kernels kept warm or restarted; see the module docstring."""

    def __init__(
        self,
        *,
        restart: RestartPolicy | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.restart = restart or RestartPolicy()
        self.retry = retry or RetryPolicy()
        self._clock = clock
        #: ``(name, pool)`` of every pool not shut down: a ``--reload`` version's pool
        #: stands beside the one it replaces (same name) until that one is shut down.
        self._pools: list[tuple[str, KernelPool]] = []
        self._batches: list[StartBatch] = []

    def pool(
        self,
        name: str,
        provision: Callable[[], Kernel],
        size: PoolSize | int,
        *,
        recycle: RecyclePolicy | None = None,
        max_waiting: int = 256,
        on_fatal: Callable[[BaseException], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> KernelPool:
        """A new pool under this supervisor (not started: call its ``start()``)."""
        self._pools = [(known, pool) for known, pool in self._pools if not pool.closed]
        pool = KernelPool(
            size,
            provision,
            max_waiting=max_waiting,
            retry=self.retry,
            restart=self.restart,
            recycle=recycle,
            on_fatal=on_fatal,
            on_ready=on_ready,
            clock=self._clock,
        )
        self._pools.append((name, pool))
        return pool

    def start_batch(
        self, count: int, start: Callable[[], object], on_error: Callable[[Exception], None]
    ) -> StartBatch:
        """Start ``count`` kernels once, in the background (see :class:`StartBatch`)."""
        batch = StartBatch(count, start, on_error)
        self._batches.append(batch)
        return batch

    def judge_death(self, kernel: Kernel, quick_before: int) -> DeathVerdict:
        """After ``kernel`` died: quick deaths in a row (measured against its provisioner's
        stable start time, from the moment its start began) and whether to give up."""
        return self.restart.judge(kernel, quick_before, self._clock())

    @property
    def pools(self) -> list[tuple[str, KernelPool]]:
        """``(name, pool)`` of the pools still serving, oldest first."""
        return [(name, pool) for name, pool in self._pools if not pool.closed]

    def stats(self) -> list[tuple[str, PoolStats]]:
        return [(name, pool.stats()) for name, pool in self.pools]

    def shutdown(self) -> None:
        """Stop every pool's kernels in parallel; batches still starting are cancelled."""
        for batch in self._batches:
            batch.cancel()
        gevent.joinall([gevent.spawn(pool.shutdown) for _, pool in self.pools], timeout=20)


__all__ = ["KernelSupervisor", "StartBatch"]

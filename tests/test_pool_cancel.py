"""A request killed while it waits for a kernel never takes one, even when a kernel was handed
to it in the same instant (a job cancelled while queued: issues 17, 23)."""

from __future__ import annotations

import gevent

from nb2svc.runtime.kernel.pool import KernelPool


class Idle:
    """What the pool needs of a started kernel: it is usable and can be told of its death."""

    usable = True
    label = "test kernel"
    on_death = None

    def shutdown(self, now: bool = False) -> None:
        pass


class Cancelled(Exception):
    pass


def one_lent() -> tuple[KernelPool, Idle, gevent.Greenlet]:
    """A pool of one kernel, lent out, and a greenlet queued for it."""
    pool = KernelPool(1, Idle)  # type: ignore[arg-type]
    pool.start()
    with gevent.Timeout(5):
        kernel = pool.acquire()
    waiting = gevent.spawn(pool.acquire, 5)
    gevent.sleep(0)  # it now waits in the queue
    return pool, kernel, waiting


def test_a_kernel_handed_to_a_waiter_killed_meanwhile_goes_back_to_the_pool() -> None:
    pool, kernel, waiting = one_lent()
    waiting.kill(Cancelled(), block=False)  # the cancel is scheduled first ...
    pool.release(kernel)  # ... then the kernel is handed to the waiter
    gevent.joinall([waiting])
    assert isinstance(waiting.exception, Cancelled)
    assert pool.take() is kernel, "the kernel went back to the pool, not lost with the waiter"
    pool.shutdown()


def test_a_waiter_killed_before_any_kernel_is_free_leaves_no_trace() -> None:
    pool, kernel, waiting = one_lent()
    waiting.kill(Cancelled())
    pool.release(kernel)
    assert pool.take() is kernel
    pool.shutdown()

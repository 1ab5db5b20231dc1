"""Where jupyter_client's lifecycle coroutines run: one asyncio loop on one greenlet.

jupyter_client writes kernel lifecycle once, as coroutines (``start_kernel``,
``shutdown_kernel``, ``interrupt_kernel``, ``is_alive``, and the provisioner hooks they
call: ``pre_launch``, ``launch_kernel``, ``poll``, ``send_signal``, ``shutdown_requested``,
``terminate``, ``kill``, ``wait``, ``cleanup``). Its sync wrappers (``run_sync``) leak an
event loop per calling greenlet and collide when two greenlets call at once
(RUNTIME-NOTES.md, items 3 and 4), and a remote provisioner's shutdown can take
seconds: serialising every call behind it would stall every other kernel's start.

So the worker has one asyncio loop (its kernel host's, :mod:`.host`), run forever by
one long-lived greenlet (under gevent's monkey-patching its selector waits on the gevent hub, so the hub keeps
serving requests). Any greenlet hands a coroutine over with :meth:`Lifecycle.run` and
waits cooperatively for its result; coroutines run *concurrently* on the loop, so ten
kernels shut down in the time of the slowest, not of all ten added up.

Never call a ``run_sync`` wrapper from another greenlet while this loop runs: asyncio
keeps one "running loop" per OS thread, and every greenlet shares the thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import gevent
from gevent.event import AsyncResult

log = logging.getLogger("nb2svc")
T = TypeVar("T")


class Lifecycle:
    """The process's asyncio loop, run by one greenlet; see the module docstring."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._greenlet = gevent.spawn(self._loop.run_forever)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop; wait (cooperatively) at most ``timeout`` seconds.

        On timeout the coroutine is cancelled and :class:`gevent.Timeout` is raised.
        """
        result: AsyncResult = AsyncResult()
        tasks: list[asyncio.Task[T]] = []

        def deliver(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                result.set_exception(asyncio.CancelledError())
            elif task.exception() is not None:
                result.set_exception(task.exception())  # type: ignore[arg-type]
            else:
                result.set(task.result())

        def begin() -> None:
            task = self._loop.create_task(coro)
            task.add_done_callback(deliver)
            tasks.append(task)

        self._loop.call_soon_threadsafe(begin)
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            self._loop.call_soon_threadsafe(lambda: [t.cancel() for t in tasks])
            raise

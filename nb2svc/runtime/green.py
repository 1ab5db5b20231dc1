"""Cooperative helpers: where blocking jupyter_client calls are allowed to run.

jupyter_client's lifecycle methods (``start_kernel``, ``shutdown_kernel``,
``interrupt_kernel``, ``restart_kernel``) are ``run_sync`` wrappers around asyncio
coroutines. Called from many greenlets they leak an event loop per greenlet and
collide with each other (RUNTIME-NOTES.md, items 3 and 4). :class:`LifecycleRunner`
runs them one at a time from one long-lived greenlet, so there is one event loop per
process and no collisions, while request greenlets keep running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
from gevent.event import AsyncResult
from gevent.queue import Queue

log = logging.getLogger("nb2svc")
T = TypeVar("T")


class LifecycleRunner:
    """Serialises jupyter_client lifecycle calls onto one long-lived greenlet."""

    def __init__(self) -> None:
        self._jobs: Queue = Queue()
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            fn, args, kwargs, result = self._jobs.get()
            try:
                result.set(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: B036 - delivered to the caller, never swallowed
                result.set_exception(exc)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run ``fn`` on the lifecycle greenlet and wait (cooperatively) for its result."""
        result: AsyncResult = AsyncResult()
        self._jobs.put((fn, args, kwargs, result))
        return result.get(timeout=timeout)


_runner: LifecycleRunner | None = None


def lifecycle() -> LifecycleRunner:
    """The process's lifecycle runner, created on first use (after fork, in the worker)."""
    global _runner
    if _runner is None:
        _runner = LifecycleRunner()
    return _runner

"""``--warm N``: hidden kernels, already started (and seeded), for ``POST /api/kernels``.

Why: a kernel start is a process start plus the seed notebook, a few hundred
milliseconds at best; the reference gateway makes every client wait for it. A warm
kernel is handed out at once and a replacement starts in the background, so a client
waits for a kernel start only when requests outrun the refill.

Warm kernels are not listed, not counted against ``--max-kernels`` and never culled:
until handed out they belong to the server, not to a client. One that dies while
waiting is replaced.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

import gevent

from nb2svc.runtime.kernels import Kernel

log = logging.getLogger("nb2svc")

#: Seconds to wait before retrying after a failed start (a broken seed fails every time).
RETRY_DELAY = 5.0


class WarmPool:
    """Keeps ``size`` kernels of ``kernel_name`` started by ``provision``."""

    def __init__(self, size: int, kernel_name: str, provision: Callable[[], Kernel]) -> None:
        self.size = size
        self.kernel_name = kernel_name
        self._provision = provision
        self._idle: collections.deque[Kernel] = collections.deque()
        self._starting = 0
        self._closed = False
        self.filled_once = size == 0

    def start(self) -> None:
        """Fill the pool in the background."""
        self._refill()

    def take(self) -> Kernel | None:
        """A live warm kernel (the caller owns it from now on), or ``None`` if none is ready."""
        while self._idle:
            kernel = self._idle.popleft()
            kernel.on_death = None
            self._refill()
            if kernel.is_alive():
                return kernel
            gevent.spawn(kernel.shutdown, True)
        self._refill()
        return None

    @property
    def ready(self) -> int:
        return len(self._idle)

    def _refill(self) -> None:
        while not self._closed and len(self._idle) + self._starting < self.size:
            self._starting += 1
            gevent.spawn(self._start_one)

    def _start_one(self, delay: float = 0.0) -> None:
        if delay:
            gevent.sleep(delay)
        try:
            kernel = self._provision()
        except Exception as exc:
            log.error("could not start a warm kernel: %s", exc)
            if not self._closed:
                gevent.spawn(self._start_one, RETRY_DELAY)  # still counted as starting
            else:
                self._starting -= 1
            return
        self._starting -= 1
        if self._closed:
            kernel.shutdown(now=True)
            return
        kernel.on_death = self._on_death
        self._idle.append(kernel)
        if len(self._idle) >= self.size:
            self.filled_once = True

    def _on_death(self, kernel: Kernel) -> None:
        if kernel in self._idle:
            self._idle.remove(kernel)
            log.warning("a warm kernel died; starting a replacement")
            gevent.spawn(kernel.shutdown, True)
            self._refill()

    def shutdown(self) -> list[Kernel]:
        """Stop refilling; return the idle kernels for the caller to shut down."""
        self._closed = True
        kernels = list(self._idle)
        self._idle.clear()
        return kernels

"""The kernel supervisor's decisions, as small immutable policies with no I/O.

Each policy answers one question the supervisor (:mod:`.supervisor`, :mod:`.pool`) asks,
so the mechanisms (hand-off, starting, stopping) stay separate from the rules and the
rules are unit-tested on plain numbers:

- :class:`PoolSize` — how many kernels a pool keeps (fixed ``N``, or ``MIN..MAX``), how
  fast it grows while requests wait, when an idle kernel above MIN is stopped;
- :class:`RecyclePolicy` — whether a kernel is retired when it is released (requests it
  answered, resident memory);
- :class:`RestartPolicy` — whether a kernel's death was "quick" (before its provisioner's
  stable start time) and when quick deaths in a row mean giving up; both modes use it;
- :class:`RetryPolicy` — how failed starts are retried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nb2svc.config import pool_bounds
from nb2svc.runtime.kernel.process import KernelStartError

if TYPE_CHECKING:
    from nb2svc.runtime.kernel.channels import Kernel

MiB = 1024 * 1024


@dataclass(frozen=True)
class PoolSize:
    """``minimum`` kernels always (readiness means they are warm), up to ``maximum``.

    Growth is bounded: while requests wait, at most one start is in flight per
    ``waiters_per_start`` waiting requests (a burst of 16 waiters starts 4 kernels at
    once, not 16: every start competes for the CPU the running kernels need). A kernel
    above ``minimum`` idle for ``idle_timeout`` seconds is stopped.
    """

    minimum: int
    maximum: int
    idle_timeout: float = 60.0
    waiters_per_start: int = 4

    def __post_init__(self) -> None:
        if self.minimum < 0 or self.maximum < self.minimum:
            raise ValueError(f"a pool of {self.minimum}..{self.maximum} kernels cannot exist")
        if self.waiters_per_start < 1 or self.idle_timeout <= 0:
            raise ValueError("waiters_per_start must be at least 1 and idle_timeout positive")

    @classmethod
    def fixed(cls, size: int) -> PoolSize:
        return cls(size, size)

    @classmethod
    def parse(cls, value: int | str, idle_timeout: float = 60.0) -> PoolSize:
        """From a ``--pool-size`` value (``2`` or ``"1..8"``)."""
        low, high = pool_bounds(value)
        return cls(low, high, idle_timeout=idle_timeout)

    @property
    def elastic(self) -> bool:
        return self.maximum > self.minimum

    def __str__(self) -> str:
        return f"{self.minimum}..{self.maximum}" if self.elastic else str(self.minimum)

    def starts_wanted(self, live: int, starting: int, waiting: int) -> int:
        """Kernels to start now: back up to ``minimum`` (healing), and grow while requests wait."""
        floor = self.minimum - live - starting
        in_flight = math.ceil(waiting / self.waiters_per_start)
        growth = min(self.maximum - live - starting, in_flight - starting)
        return max(0, floor, growth)

    def may_stop_idle(self, live: int, idle_for: float) -> bool:
        """Whether an idle kernel of a pool of ``live`` kernels may be stopped."""
        return self.elastic and live > self.minimum and idle_for >= self.idle_timeout


@dataclass(frozen=True)
class RecyclePolicy:
    """When a released kernel is retired and replaced: after ``max_requests`` answers, or
    when its resident memory is over ``max_memory`` bytes (``0``: no limit).

    Decided at release, after the answer is complete, so recycling never drops a request.
    """

    max_requests: int = 0
    max_memory: int = 0

    @classmethod
    def from_settings(cls, max_requests: int, max_memory_mib: int) -> RecyclePolicy:
        return cls(max_requests=max_requests, max_memory=max_memory_mib * MiB)

    @property
    def measures_memory(self) -> bool:
        return self.max_memory > 0

    @property
    def active(self) -> bool:
        return self.max_requests > 0 or self.max_memory > 0

    def reason(self, requests: int, resident: int | None) -> str | None:
        """Why the kernel must go (``None``: keep it). ``resident`` is ``None`` when unknown."""
        if self.max_requests and requests >= self.max_requests:
            return f"answered {requests} requests (--kernel-max-requests {self.max_requests})"
        if self.max_memory and resident is not None and resident > self.max_memory:
            return f"holds {resident / MiB:.0f} MiB, over --kernel-max-memory {self.max_memory // MiB} MiB"
        return None


@dataclass(frozen=True)
class DeathVerdict:
    """After a kernel died: ``quick_deaths`` in a row now, and whether to give up."""

    quick_deaths: int
    give_up: bool
    lived: float
    stable_start: float


@dataclass(frozen=True)
class RestartPolicy:
    """When a kernel that died is restarted, for both modes.

    A death is *quick* when the kernel had lived less than its provisioner's stable start
    time (``provisioner.get_stable_start_time(recommended=stable_start)``, as
    jupyter_client's restarter asks), counted from the moment its start began: a remote
    provisioner that needs a minute to schedule a pod says so, and its kernels are not
    judged by a local kernel's ten seconds. ``limit`` quick deaths in a row and kernel mode
    declares the kernel dead; API mode's pools keep healing but wait longer between starts
    (:meth:`delay`).
    """

    limit: int = 5
    stable_start: float = 10.0
    first_delay: float = 1.0
    max_delay: float = 30.0

    def is_quick(self, lived: float, stable_start: float) -> bool:
        return lived < stable_start

    def quick_deaths(self, before: int, lived: float, stable_start: float) -> int:
        """Quick deaths in a row after this death (a slow one ends the run)."""
        return before + 1 if self.is_quick(lived, stable_start) else 0

    def gives_up(self, quick_deaths: int) -> bool:
        return quick_deaths >= self.limit

    def judge(self, kernel: Kernel, quick_before: int, now: float) -> DeathVerdict:
        """The verdict on ``kernel``'s death at ``now`` (its clock: ``time.monotonic``), asking
        its provisioner for the stable start time."""
        lived = now - kernel.started_at
        stable = kernel.process.stable_start_time(self.stable_start)
        quick = self.quick_deaths(quick_before, lived, stable)
        return DeathVerdict(quick, self.gives_up(quick), lived, stable)

    def delay(self, quick_deaths: int) -> float:
        """Seconds before a pool replaces a kernel after ``quick_deaths`` in a row (0: at once)."""
        if quick_deaths < 2:
            return 0.0
        return min(self.max_delay, self.first_delay * 2 ** (quick_deaths - 2))


@dataclass(frozen=True)
class RetryPolicy:
    """How failed kernel starts are retried: after a growing delay, never in a tight loop.

    Before a pool has ever warmed, a permanent error (a setup cell that raises, an unknown
    kernel spec) gives up at once and a transient one (a provisioner that could not launch,
    a timeout) after ``attempts`` tries; once warm, a pool never gives up.
    """

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


__all__ = ["DeathVerdict", "PoolSize", "RecyclePolicy", "RestartPolicy", "RetryPolicy"]

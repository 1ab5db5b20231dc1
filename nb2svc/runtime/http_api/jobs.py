"""Async jobs: ``Prefer: respond-async`` (or an endpoint whose cell says ``"response": "job"``).

The request is answered ``202 Accepted`` at once with ``Location: {base}/_api/jobs/{id}``;
the endpoint runs on the pool in the background, exactly as the synchronous call would
(same REQUEST, same timeout, same errors). Then:

- ``GET /_api/jobs/{id}`` while it runs: ``200 {"id", "status": "running", "endpoint"}``
  with ``Retry-After: 1``; once done: the status, headers and body the synchronous call
  would have given, plus ``Nb2svc-Job: done``;
- ``DELETE /_api/jobs/{id}``: cancels a running job (its kernel is interrupted) or
  forgets a finished one: ``204``.

Jobs live in this worker's memory: at most :attr:`JobStore.limit` at once (one more is a
503), each finished one kept :attr:`JobStore.ttl` seconds. A job id from another
worker or replica, or one that expired, is a plain 404: clients that need durability
should poll the replica that answered (session affinity) or use a queue of their own.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from flask import Response

#: Called with the kernel a job's request has leased, so that a cancel can interrupt it.
KernelSink = Callable[[Any], None]


@dataclass
class Job:
    id: str
    endpoint: str
    greenlet: gevent.Greenlet | None = None
    kernel: Any = None
    response: Response | None = None
    cancelled: bool = False
    finished_at: float = 0.0
    created_at: float = field(default_factory=time.monotonic)

    @property
    def status(self) -> str:
        if self.cancelled:
            return "cancelled"
        return "done" if self.response is not None else "running"


class JobLimit(RuntimeError):
    """Too many jobs are running or waiting to be collected."""


class JobStore:
    """The jobs of one worker, by id (see the module docstring)."""

    def __init__(self, limit: int = 1000, ttl: float = 600.0) -> None:
        self.limit = limit
        self.ttl = ttl
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def submit(self, endpoint: str, run: Callable[[KernelSink], Response]) -> Job:
        """Start ``run`` in the background; it gets a sink for the kernel it leases."""
        self._expire()
        if len(self._jobs) >= self.limit:
            raise JobLimit(
                f"{len(self._jobs)} jobs are kept already (limit {self.limit}); collect some first"
            )
        job = Job(uuid.uuid4().hex, endpoint)

        def body() -> None:
            def on_kernel(kernel: Any) -> None:
                job.kernel = kernel

            response = run(on_kernel)
            job.kernel = None
            if not job.cancelled:
                job.response = response
            job.finished_at = time.monotonic()

        self._jobs[job.id] = job
        job.greenlet = gevent.spawn(body)
        return job

    def get(self, job_id: str) -> Job | None:
        self._expire()
        return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Interrupt a running job, or forget a finished one; ``False`` if there is no such job."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        if job.response is None:
            job.cancelled = True
            kernel = job.kernel
            if kernel is not None:
                try:
                    kernel.interrupt()
                except Exception:  # a kernel that cannot be interrupted times out and is replaced
                    pass
        return True

    def running(self) -> int:
        return sum(1 for job in self._jobs.values() if job.response is None)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl
        for job_id in [
            j.id for j in self._jobs.values() if j.response is not None and j.finished_at < cutoff
        ]:
            del self._jobs[job_id]

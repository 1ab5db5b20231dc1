"""Async jobs: ``Prefer: respond-async`` (or an endpoint whose cell says ``"response": "job"``).

The request is answered ``202 Accepted`` at once with ``Location: {base}/_api/jobs/{id}``;
the endpoint runs on this worker's pool in the background, exactly as the synchronous
call would (same REQUEST, same timeout, same errors). Jobs live in the shared store
(:mod:`nb2svc.runtime.store`), so **any** worker or replica answers:

- ``GET /_api/jobs/{id}`` while it runs: ``200 {"id", "status": "running", "endpoint"}``
  with ``Retry-After: 1``; once done: the status, headers and body the synchronous call
  would have given, plus ``Nb2svc-Job: done``; a job that could not finish: a JSON error
  with ``Nb2svc-Job: failed`` (``"reason"`` says why: ``"replica lost"``, or a result
  over ``--job-result-max-bytes``); a cancelled one: ``410``;
- ``DELETE /_api/jobs/{id}``: cancels a queued job (it never takes a kernel) or a
  running one (its kernel is interrupted within a second, on whichever worker runs it),
  or forgets a finished one: ``204``.

How, in the store (keys under ``job:{id}``):

- the *record* (JSON: id, endpoint, status) moves ``running`` → ``done`` | ``failed`` |
  ``cancelled`` only by compare-and-set, so a cancel and a finish never both win;
- a *lease* the running worker renews every ``lease / 3`` seconds; a poller that finds
  a running record whose lease expired marks it ``failed`` with reason ``"replica
  lost"``: a dead worker or replica is seen within the lease time, never an endless
  ``running``;
- the *result* (status, headers, body), written once with the job TTL, bounded in bytes;
- the client's *index* of jobs (by address, and token when tokens are checked): at most
  ``--max-jobs-per-client`` running or uncollected, so one client cannot lock others out.

The worker running jobs watches their records a few times a second (one ``get_many``
round trip for all of them): a cancel made through another replica reaches it that way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from flask import Request, Response

from nb2svc.runtime.auth import presented_token
from nb2svc.runtime.store import Store, StoreUnavailable

log = logging.getLogger("nb2svc")

#: Called with the kernel a job's request has leased, so that a cancel can interrupt it.
KernelSink = Callable[[Any], None]
#: Seconds between two looks at the records of this worker's running jobs.
WATCH_INTERVAL = 0.2
#: The reason a job whose worker stopped renewing its lease is failed with.
REPLICA_LOST = "replica lost"

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"


@dataclass(frozen=True)
class JobLimits:
    """Bounds of the job store (from ``--job-*`` and ``--max-jobs-per-client``)."""

    per_client: int = 100
    ttl: float = 600.0
    result_max_bytes: int = 16 * 1024 * 1024
    lease: float = 10.0
    #: The longest a job can queue and run (queue + request timeout): a running record
    #: is kept that long plus ``ttl`` even if nobody ever polls it.
    max_run: float = 60.0


class JobLimit(RuntimeError):
    """This client has too many jobs running or waiting to be collected."""


class JobCancelled(Exception):
    """Raised in a job's greenlet: it was cancelled before it could run."""


@dataclass
class LocalJob:
    """A job this worker runs: what a cancel needs to stop it."""

    id: str
    client: str
    greenlet: gevent.Greenlet | None = None
    kernel: Any = None
    cancelled: bool = False
    #: "queued" (waiting for a kernel), "running" (has one), "finishing" (storing its result)
    phase: str = "queued"


@dataclass(frozen=True)
class JobState:
    """What a poll sees: the record and, for a finished job, its stored result."""

    record: dict[str, Any]
    result: tuple[int, list[tuple[str, str]], bytes] | None = None

    @property
    def status(self) -> str:
        return str(self.record["status"])


def client_identity(request: Request, token_checked: bool) -> str:
    """Whose jobs count together: the client's address, and with it the token it presented
    (hashed) when the server checks tokens. An unchecked token is ignored: a client could
    otherwise send a new made-up one with each job to escape its bound."""
    address = "addr:" + (request.remote_addr or "unknown")
    token = presented_token() if token_checked else None
    if token:
        return address + ",token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return address


def new_job_id() -> str:
    """A fresh job id (what :meth:`JobStore.submit` gives a job unless told one)."""
    return uuid.uuid4().hex


def _record_key(job_id: str) -> str:
    return f"job:{job_id}"


def _lease_key(job_id: str) -> str:
    return f"job:{job_id}:lease"


def _result_key(job_id: str) -> str:
    return f"job:{job_id}:result"


def _client_key(client: str) -> str:
    return f"jobs-of:{client}"


def _dump(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True).encode()


def encode_result(response: Response) -> bytes:
    """A finished job's answer as stored: a JSON line (status, headers), then the body."""
    head = {"status": response.status_code, "headers": list(response.headers.items())}
    return json.dumps(head).encode() + b"\n" + response.get_data()


def decode_result(data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, _, body = data.partition(b"\n")
    meta = json.loads(head)
    return int(meta["status"]), [(str(k), str(v)) for k, v in meta["headers"]], body


class JobStore:
    """This worker's view of the jobs in the shared store (see the module docstring)."""

    def __init__(self, store: Store, limits: JobLimits | None = None) -> None:
        self.store = store
        self.limits = limits or JobLimits()
        #: Who holds a lease: this worker on this host (unique while it lives).
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._local: dict[str, LocalJob] = {}
        self._watcher: gevent.Greenlet | None = None

    # --- submit and run ------------------------------------------------------------

    def submit(
        self, endpoint: str, client: str, run: Callable[[KernelSink], Response], job_id: str | None = None
    ) -> dict[str, Any]:
        """Record a job and start ``run`` (which gets a sink for the kernel it leases).

        ``job_id`` (from :func:`new_job_id`) lets ``run`` know its job's id before it is
        submitted (tracing names the job in its spans); a new one by default.

        Raises :class:`JobLimit` when ``client`` has too many, :class:`StoreUnavailable`
        when the store does not answer (then nothing runs).
        """
        limits = self.limits
        held = self.store.index_count(_client_key(client))
        if held >= limits.per_client:
            raise JobLimit(
                f"this client has {held} jobs running or not yet collected (limit {limits.per_client}); "
                "collect (GET then DELETE) or cancel some first"
            )
        job = LocalJob(job_id or new_job_id(), client)
        record = {"id": job.id, "endpoint": endpoint, "status": RUNNING, "client": client}
        self.store.put(_lease_key(job.id), self.owner.encode(), limits.lease)
        self.store.index_add(_client_key(client), job.id, limits.lease)
        self.store.put(_record_key(job.id), _dump(record), limits.max_run + limits.ttl)
        self._local[job.id] = job
        job.greenlet = gevent.spawn(self._body, job, record, run)
        if self._watcher is None or self._watcher.dead:
            self._watcher = gevent.spawn(self._watch)
        return record

    def _body(self, job: LocalJob, record: dict[str, Any], run: Callable[[KernelSink], Response]) -> None:
        def on_kernel(kernel: Any) -> None:
            if job.cancelled:  # cancelled while the kernel was being handed over: give it back unused
                raise JobCancelled(job.id)
            job.kernel, job.phase = kernel, "running"

        try:
            response = run(on_kernel)
        except JobCancelled:
            return
        except Exception as exc:  # a bug, not the cell's error (that is a response): say so to the poller
            log.exception("job %s failed", job.id)
            body = {"error": "InternalError", "message": f"the job failed inside nb2svc: {exc}"}
            response = Response(json.dumps(body), status=500, mimetype="application/json")
        finally:
            job.kernel, job.phase = None, "finishing"
            self._local.pop(job.id, None)
        if not job.cancelled:
            self._finish(job, record, response)

    def _finish(self, job: LocalJob, record: dict[str, Any], response: Response) -> None:
        """Store the result once (or a failure if it is too large), then settle the record."""
        limits, running = self.limits, _dump(record)
        try:
            data = encode_result(response)
            if len(data) > limits.result_max_bytes:
                final = {
                    **record,
                    "status": FAILED,
                    "code": 500,
                    "error": "JobResultTooLarge",
                    "reason": "result too large",
                    "message": f"the job's answer has {len(data)} bytes, more than --job-result-max-bytes "
                    f"{limits.result_max_bytes}; it was not kept (call the endpoint synchronously or "
                    "return less)",
                }
            else:
                self.store.put(_result_key(job.id), data, limits.ttl)
                final = {**record, "status": DONE}
            if not self.store.compare_and_set(_record_key(job.id), running, _dump(final), limits.ttl):
                self.store.delete(_result_key(job.id))  # cancelled or given up meanwhile
                return
            if final["status"] == DONE:
                self.store.index_add(_client_key(job.client), job.id, limits.ttl)
            else:
                self.store.index_remove(_client_key(job.client), job.id)
            self.store.release_lease(_lease_key(job.id), self.owner)
        except StoreUnavailable as exc:
            log.warning("job %s finished but its result could not be stored: %s", job.id, exc)

    # --- the watcher: cancels from elsewhere, leases --------------------------------

    def _watch(self) -> None:
        """While this worker runs jobs: see cancels made anywhere, renew the leases."""
        renewed = time.monotonic()
        while self._local:
            gevent.sleep(WATCH_INTERVAL)
            jobs = list(self._local.values())
            try:
                records = self.store.get_many([_record_key(job.id) for job in jobs])
                for job, raw in zip(jobs, records, strict=True):
                    if raw is None or json.loads(raw)["status"] != RUNNING:
                        self._stop_local(job)
                if time.monotonic() - renewed >= self.limits.lease / 3:
                    renewed = time.monotonic()
                    for job in jobs:
                        if not job.cancelled:
                            self.store.renew_lease(_lease_key(job.id), self.owner, self.limits.lease)
                            self.store.index_add(_client_key(job.client), job.id, self.limits.lease)
            except StoreUnavailable as exc:
                log.warning("cannot reach the job store to watch %d running job(s): %s", len(jobs), exc)
            except Exception:  # the watcher must outlive any surprise, or every lease lapses
                log.exception("error while watching running jobs")

    def _stop_local(self, job: LocalJob) -> None:
        """Stop a job of this worker: unqueue it, or interrupt its kernel."""
        if job.cancelled:
            return
        job.cancelled = True
        if job.phase == "running" and job.kernel is not None:
            try:
                job.kernel.interrupt()
            except Exception:  # a kernel that cannot be interrupted times out and is replaced
                log.warning("job %s: its kernel could not be interrupted", job.id)
        elif job.phase == "queued" and job.greenlet is not None:
            # still waiting for a kernel (or not started): it must never take one
            job.greenlet.kill(JobCancelled(job.id), block=False)
            self._local.pop(job.id, None)

    # --- polls and cancels (any worker) ----------------------------------------------

    def get(self, job_id: str) -> JobState | None:
        """The job as a poller sees it; ``None`` if unknown or expired.

        A running job whose lease expired is failed here with reason "replica lost".
        """
        for _ in range(3):  # a record that changes under us is read again
            raw, lease = self.store.get_many([_record_key(job_id), _lease_key(job_id)])
            if raw is None:
                return None
            record = json.loads(raw)
            status = record["status"]
            if status == RUNNING and lease is None and job_id not in self._local:
                lost = {
                    **record,
                    "status": FAILED,
                    "code": 502,
                    "error": "JobLost",
                    "reason": REPLICA_LOST,
                    "message": f"the worker or replica running job {job_id} stopped renewing its lease "
                    f"for {self.limits.lease:g}s (it died or lost the store); the job's outcome is unknown",
                }
                if self.store.compare_and_set(_record_key(job_id), raw, _dump(lost), self.limits.ttl):
                    self.store.index_remove(_client_key(record["client"]), job_id)
                    return JobState(lost)
                continue
            if status == DONE:
                data = self.store.get(_result_key(job_id))
                if data is None:
                    return None
                return JobState(record, decode_result(data))
            return JobState(record)
        return None

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job, or forget a finished one; ``False`` if unknown."""
        for _ in range(3):
            raw = self.store.get(_record_key(job_id))
            if raw is None:
                return False
            record = json.loads(raw)
            if record["status"] != RUNNING:
                self.store.delete(_record_key(job_id))
                self.store.delete(_result_key(job_id))
                self.store.index_remove(_client_key(record["client"]), job_id)
                return True
            cancelled = _dump({**record, "status": CANCELLED})
            if self.store.compare_and_set(_record_key(job_id), raw, cancelled, self.limits.ttl):
                self.store.delete(_lease_key(job_id))
                self.store.index_remove(_client_key(record["client"]), job_id)
                local = self._local.get(job_id)
                if local is not None:
                    self._stop_local(local)
                return True
        return False

    def running(self) -> int:
        """Jobs this worker is running or has queued."""
        return len(self._local)

    def shutdown(self) -> None:
        """At worker exit: the jobs still here fail now rather than after their lease."""
        for job in list(self._local.values()):
            self._stop_local(job)
            try:
                raw = self.store.get(_record_key(job.id))
                if raw is not None and json.loads(raw)["status"] == RUNNING:
                    stopped = {
                        **json.loads(raw),
                        "status": FAILED,
                        "code": 503,
                        "error": "ServiceUnavailable",
                        "reason": "worker stopped",
                        "message": f"the worker running job {job.id} shut down before it finished",
                    }
                    self.store.compare_and_set(_record_key(job.id), raw, _dump(stopped), self.limits.ttl)
                self.store.index_remove(_client_key(job.client), job.id)
            except StoreUnavailable:
                pass  # its lease expires: pollers see "replica lost"
        if self._watcher is not None:
            self._watcher.kill(block=False)


__all__ = [
    "REPLICA_LOST",
    "JobCancelled",
    "JobLimit",
    "JobLimits",
    "JobState",
    "JobStore",
    "client_identity",
    "decode_result",
    "encode_result",
    "new_job_id",
]

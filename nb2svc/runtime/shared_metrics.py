"""One ``/_api/metrics`` for the whole server when it runs several workers.

Why: gunicorn hands a scrape to whichever worker accepts it, and each worker counts only
its own requests and kernels; with ``--workers 2`` a scrape used to read half the server.

How, only when the server runs more than one worker (one worker, the default and the
generated manifests' setting, writes no file and starts no greenlet, and its page is
rendered exactly as before):

- each worker publishes its page (:attr:`SharedMetrics.source`: what the app it serves
  shows now; a ``--reload`` worker's current version only, so two versions are never both
  counted) every :data:`PERIOD` seconds from a greenlet, as :data:`SNAPSHOT` in its own
  directory inside its server's (the reaper's per-server scoping:
  ``.../<server pid>-<start>/<worker pid>-<start>/``, :mod:`nb2svc.runtime.reaper`),
  written whole (a temporary file renamed over the last);
- the worker that answers a scrape renders its own page fresh and, holding the server's
  metrics lock, adds up the snapshots of the other workers in the same server directory
  whose process is alive (pid *and* start time) and the counts of the workers that are
  gone (:mod:`nb2svc.runtime.retired_metrics`), family by family as its own page says
  (:func:`nb2svc.runtime.metrics.merge`);
- a worker that exits gracefully folds its final counters and histograms into the
  server's retired counts in its exit hook; a dead worker's last snapshot is folded by
  the next scrape or by gunicorn's master when it reaps the worker, whichever comes
  first, before the worker's directory goes. So a summed counter never drops when a
  worker exits, which Prometheus would read as a counter reset.

Why a summed counter never drops between two scrapes, whichever workers answer them: a
worker's snapshot only grows (rendering and writing it never yield to another greenlet),
the worker answering a scrape writes the page it adds up as its snapshot under the lock,
and a worker's counts move from its snapshot to the retired ones under the same lock,
never smaller. So every count a scrape showed is in a file that a later scrape reads.

Limits: another worker's part is stale by at most :data:`PERIOD` seconds (plus a write);
a worker killed without its exit hook (SIGKILL, the OOM killer) keeps the counts of its
last snapshot: what it counted after that (at most :data:`PERIOD` seconds) is never
shown, though the sum does not drop; its gauges and per-process series leave the page
with it; a ``--reload`` worker's new version counts from zero; the worker count is the
one the worker started with (gunicorn's TTIN/TTOU signals do not change it); without
/proc (no server directory) each worker's page stays its own, and a warning says so.

Kernel mode runs one worker, so its page is always the server's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from nb2svc.runtime import reaper, retired_metrics
from nb2svc.runtime.metrics import Family, Histogram, exposition, merge, parse
from nb2svc.runtime.retired_metrics import SNAPSHOT

log = logging.getLogger("nb2svc")

#: Seconds between two snapshots of a worker: how stale the other workers' part of a page may be.
PERIOD = 1.0

#: The families a worker's page shows now.
Source = Callable[[], Iterable[Family | Histogram]]


class SharedMetrics:
    """One worker's side of the shared page (see the module docstring); held by its
    :class:`~nb2svc.runtime.worker_runtime.WorkerRuntime`."""

    def __init__(self, lock_wait: float = retired_metrics.WAIT) -> None:
        #: What this worker's page shows now (set when the worker's app is built).
        self.source: Source | None = None
        #: Seconds a scrape waits for the server's metrics lock before it answers 503.
        self.lock_wait = lock_wait
        self._server: str | None = None
        self._snapshot: str | None = None
        self._publisher: Any = None
        self._failing = False

    @property
    def sharing(self) -> bool:
        return self._server is not None

    def start(self, workers: int, owner_dir: Callable[[], str], period: float = PERIOD) -> bool:
        """With ``workers`` above 1: publish now and every ``period`` seconds, in the
        directory ``owner_dir()`` makes; whether it started (nothing happens for one worker)."""
        if workers < 2 or self.source is None or self.sharing:
            return False
        directory = owner_dir()
        server = reaper.server_of(directory)
        if server is None:
            log.warning("/_api/metrics shows only the worker that answers: no server directory (no /proc)")
            return False
        import gevent  # in the worker only: the master never imports gevent's hub

        self._server, self._snapshot = server, os.path.join(directory, SNAPSHOT)
        self.publish()
        self._publisher = gevent.spawn(self._publish_every, period)
        return True

    def _publish_every(self, period: float) -> None:
        import gevent

        while True:
            gevent.sleep(period)
            self.publish()

    def publish(self) -> None:
        """Write this worker's page now (see :meth:`_write`)."""
        if self._snapshot is not None and self.source is not None:
            try:
                self._write(exposition(self.source()))
            except Exception as exc:  # a family that failed: as a failed write
                self._failed(exc)

    def _write(self, text: str) -> None:
        """Write ``text`` as this worker's snapshot, whole: a temporary file renamed over the
        last one. Rendering and writing never yield to another greenlet, so the snapshot's
        counts only grow (what a scrape showed of this worker, every later one shows)."""
        if self._snapshot is None:
            return  # stopped: its counts are folded into the retired ones
        temporary = self._snapshot + ".new"
        try:
            with open(temporary, "w") as f:
                f.write(text)
            os.replace(temporary, self._snapshot)
        except OSError as exc:  # a full disk: log once, keep serving
            self._failed(exc)
        else:
            self._failing = False

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("this worker's metrics are not shared with the others: %s", exc)
        self._failing = True

    def stop(self) -> None:
        """The worker exits: stop publishing, fold its final counters and histograms into the
        server's retired counts and remove its snapshot (:func:`retired_metrics.retire`)."""
        if self._publisher is not None:
            self._publisher.kill(block=False)
            self._publisher = None
        snapshot, source = self._snapshot, self.source
        self._server = self._snapshot = None  # from now on nothing writes a snapshot
        if snapshot is None or source is None:
            return
        try:
            retired_metrics.retire(os.path.dirname(snapshot), exposition(source()))
        except Exception as exc:  # the lock stayed taken, a full disk: the scrapes lose these counts
            log.warning("this worker's counts leave the server's metrics as it exits: %s", exc)
            retired_metrics.remove_snapshot(snapshot)

    def page(self, metrics: Source) -> str:
        """The text of ``/_api/metrics``: this worker's ``metrics()`` alone, or, while sharing,
        added up with the other live workers' snapshots and the gone workers' counts.

        While sharing, this worker's page is rendered and written as its snapshot under the
        lock, so scrapes in the order they took the lock never see a summed counter drop,
        whichever worker answers each. :class:`~nb2svc.runtime.retired_metrics.MetricsBusy`
        if the lock stays taken, or the worker is exiting.
        """
        server = self._server
        if server is None:
            return exposition(metrics())
        me = os.getpid()
        with retired_metrics.locked(server, self.lock_wait):
            if self._snapshot is None:  # it stopped while this scrape waited for the lock
                raise retired_metrics.MetricsBusy("this worker is exiting")
            families = list(metrics())
            text = exposition(families)
            self._write(text)
            pages = [(str(me), parse(text))]
            owners = reaper.owners(server)
            retired = retired_metrics.fold_dead(server, owners)
            for pid, directory, alive in owners:
                if pid == me or not alive:
                    continue
                try:
                    with open(os.path.join(directory, SNAPSHOT)) as f:
                        text = f.read()
                except OSError:
                    continue  # not published yet (a worker starting), or folded as it exited
                try:
                    pages.append((str(pid), parse(text)))
                except ValueError as exc:
                    log.warning("worker %d's metrics snapshot is unreadable, left out: %s", pid, exc)
        how = {family.name: family.merge for family in families}
        # the gone workers' part of what this page sums (never a process's own figures)
        pages.append(("retired", [page for page in retired if how.get(page.name, "sum") == "sum"]))
        return exposition(merge(pages, how))


__all__ = ["PERIOD", "SNAPSHOT", "SharedMetrics", "Source"]

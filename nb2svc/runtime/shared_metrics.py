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
  written whole (a temporary file renamed over the last), and removes it at exit;
- the worker that answers a scrape renders its own page fresh, reads the snapshots of the
  other workers in the same server directory whose process is alive (pid *and* start
  time), and adds them up family by family as each says
  (:func:`nb2svc.runtime.metrics.merge`). A dead worker's snapshot is never read and is
  removed by the next scrape; its directory is the master's to reap (it holds the records
  of the kernels to kill), which gunicorn's master does when the worker exits.

Limits: another worker's part is stale by at most :data:`PERIOD` seconds (plus a write);
a worker that dies takes its counts with it, so a summed counter drops, which Prometheus
reads as a counter reset (as it does when the only worker restarts); the worker count is
the one the worker started with (gunicorn's TTIN/TTOU signals do not change it); without
/proc (no server directory) each worker's page stays its own, and a warning says so.

Kernel mode runs one worker, so its page is always the server's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from nb2svc.runtime import reaper
from nb2svc.runtime.metrics import Family, Histogram, exposition, merge, parse

log = logging.getLogger("nb2svc")

#: A worker's published page, in its own directory.
SNAPSHOT = "metrics.prom"
#: Seconds between two snapshots of a worker: how stale the other workers' part of a page may be.
PERIOD = 1.0

#: The families a worker's page shows now.
Source = Callable[[], Iterable[Family | Histogram]]


class SharedMetrics:
    """One worker's side of the shared page (see the module docstring); held by its
    :class:`~nb2svc.runtime.worker_runtime.WorkerRuntime`."""

    def __init__(self) -> None:
        #: What this worker's page shows now (set when the worker's app is built).
        self.source: Source | None = None
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
        """Write this worker's page now, whole: a temporary file renamed over the last one."""
        if self._snapshot is None or self.source is None:
            return
        temporary = self._snapshot + ".new"
        try:
            text = exposition(self.source())
            with open(temporary, "w") as f:
                f.write(text)
            os.replace(temporary, self._snapshot)
        except Exception as exc:  # a full disk, a family that failed: log once, keep serving
            if not self._failing:
                log.warning("this worker's metrics are not shared with the others: %s", exc)
            self._failing = True
        else:
            self._failing = False

    def stop(self) -> None:
        """Stop publishing and remove the snapshot (the worker exits)."""
        if self._publisher is not None:
            self._publisher.kill(block=False)
            self._publisher = None
        if self._snapshot is not None:
            _remove(self._snapshot)
        self._server = self._snapshot = None

    def page(self, families: Iterable[Family | Histogram]) -> str:
        """The text of ``/_api/metrics``: ``families`` (this worker's, fresh) alone, or
        added up with the other live workers' snapshots while sharing."""
        families = list(families)
        if self._server is None:
            return exposition(families)
        how = {family.name: family.merge for family in families}
        me = os.getpid()
        pages = [(str(me), parse(exposition(families)))]
        for pid, directory, alive in reaper.owners(self._server):
            path = os.path.join(directory, SNAPSHOT)
            if pid == me:
                continue
            if not alive:
                _remove(path)  # only the snapshot: the directory's kernel records are the master's
                continue
            try:
                with open(path) as f:
                    text = f.read()
            except OSError:
                continue  # not published yet (a worker starting), or gone with its worker
            try:
                pages.append((str(pid), parse(text)))
            except ValueError as exc:
                log.warning("worker %d's metrics snapshot is unreadable, left out: %s", pid, exc)
        return exposition(merge(pages, how))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["PERIOD", "SNAPSHOT", "SharedMetrics", "Source"]

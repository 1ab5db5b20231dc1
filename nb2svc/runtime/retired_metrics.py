"""The counts of a server's workers that are gone, kept in its metrics page.

Why: with several workers a scrape adds up the live workers' pages
(:mod:`nb2svc.runtime.shared_metrics`). When a worker exits (a restart, a timeout kill,
SIGKILL, the OOM killer) its counters and histograms would leave that sum, so the summed
counter would go *down*, which Prometheus reads as a counter reset: ``rate()`` and
``increase()`` then show a false spike of the whole surviving total. prometheus-client's
multiprocess mode keeps dead processes' counter files for the same reason.

How: the server directory (``.../<master pid>-<start>/``, :mod:`nb2svc.runtime.reaper`)
holds :data:`RETIRED`, the sum of the counters and histograms (the families whose
``# TYPE`` is ``counter`` or ``histogram``) of every worker folded into it, and
:data:`LOCK`, an ``fcntl`` lock that every reader and writer of the snapshots and of
:data:`RETIRED` holds, so a worker's counts are in exactly one of the two places on any
scrape:

- a worker that exits gracefully folds its final page (fresh, not its last snapshot) and
  removes its snapshot (:func:`retire`), in its ``worker_exit`` hook, before its own
  directory is removed at its exit;
- a worker that died without its hook leaves its last snapshot; whoever first finds it
  folds it and removes it (:func:`fold_dead`): a worker answering a scrape, or
  gunicorn's master when it reaps the dead worker (``child_exit``), before the reaper
  removes the worker's directory.

A fold is a journal of one step: :data:`RETIRED` is written whole (a temporary file
renamed over it) and lists, on ``# folded <pid>-<start>`` lines, the workers whose counts
it holds while their directory still exists; the snapshot is removed after that rename.
A process killed between the two leaves a snapshot that the next fold finds listed and
removes without adding it again: no worker is counted twice or lost.

Gauges and the per-process ``worker``-labelled series of a gone worker describe nothing
that still exists: they are not kept (the master cannot tell a ``worker`` family from a
summed one, so a scrape leaves out of :data:`RETIRED` whatever its own page does not
sum). Limits: a SIGKILLed worker's counts are its last snapshot's, at most
:data:`~nb2svc.runtime.shared_metrics.PERIOD` seconds old: what it counted after that is
never shown (no scrape showed it either, so the sum does not drop); the retired counts
live as long as the server (its master removes the server directory when it exits, as
Prometheus expects of a restart).

Imported by gunicorn's master: no zmq, jupyter_client or gevent here. The lock is polled
with :func:`time.sleep`, which yields to other greenlets in a worker (gevent patches it)
and simply waits in the master.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from nb2svc.runtime import reaper
from nb2svc.runtime.metrics import Page, exposition, merge, parse

log = logging.getLogger("nb2svc")

#: A worker's published page, in its own directory.
SNAPSHOT = "metrics.prom"
#: The gone workers' counters and histograms, in the server directory.
RETIRED = "retired.prom"
#: The lock every reader and writer of the snapshots and of :data:`RETIRED` holds.
LOCK = "metrics.lock"
#: How :data:`RETIRED` names a worker it holds, while that worker's directory exists.
FOLDED = "# folded "
#: The families a gone worker leaves in the sum, by their ``# TYPE``.
KEPT_KINDS = frozenset({"counter", "histogram"})
#: Seconds a scrape or an exiting worker waits for the lock (held for milliseconds).
WAIT = 5.0
#: Seconds gunicorn's master waits for it: it must get back to its workers.
MASTER_WAIT = 2.0


class MetricsBusy(RuntimeError):
    """The lock stayed held past the wait (a process stopped while holding it)."""


@contextmanager
def locked(server: str, wait: float = WAIT) -> Iterator[None]:
    """Hold ``server``'s :data:`LOCK` (creating it), polled every few milliseconds up to
    ``wait`` seconds; :class:`MetricsBusy` if it stays taken. Released when a holder dies."""
    fd = os.open(os.path.join(server, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise MetricsBusy(f"the metrics lock {LOCK} stayed taken for {wait:g} s") from None
                time.sleep(0.002)
        yield
    finally:
        os.close(fd)  # releases the lock


def kept(pages: Iterable[Page]) -> list[Page]:
    """The families of ``pages`` a gone worker leaves in the sum: counters and histograms."""
    return [page for page in pages if page.kind in KEPT_KINDS]


def read(server: str) -> tuple[list[Page], set[str]]:
    """``server``'s retired families and the workers listed as folded (lock held)."""
    try:
        with open(os.path.join(server, RETIRED)) as f:
            text = f.read()
    except FileNotFoundError:
        return [], set()
    folded = {line[len(FOLDED) :] for line in text.splitlines() if line.startswith(FOLDED)}
    body = "\n".join(line for line in text.splitlines() if not line.startswith(FOLDED))
    return parse(body), folded


def _write(server: str, pages: list[Page], folded: set[str]) -> None:
    """Replace :data:`RETIRED` whole: the ``# folded`` lines of the workers whose directory
    still exists (a snapshot can only be found in one), then the families."""
    present = {os.path.basename(directory) for _, directory, _ in reaper.owners(server)}
    header = "".join(f"{FOLDED}{name}\n" for name in sorted(folded & present))
    path = os.path.join(server, RETIRED)
    with open(path + ".new", "w") as f:
        f.write(header + exposition(pages))
    os.replace(path + ".new", path)


def _fold(server: str, gone: list[tuple[str, str, str | None]]) -> list[Page]:
    """Fold each ``(name, snapshot path, page text or None to read the snapshot)`` into
    :data:`RETIRED`, once, then remove the snapshots; the retired families after it (lock held)."""
    pages, folded = read(server)
    added: list[tuple[str, list[Page]]] = []
    for name, snapshot, text in gone:
        if name in folded:
            continue  # folded by a process killed before it removed the snapshot
        if text is None:
            try:
                with open(snapshot) as f:
                    text = f.read()
            except OSError:
                continue  # gone with its directory, or never published
        try:
            added.append((name, kept(parse(text))))
        except ValueError as exc:
            log.warning("the metrics snapshot of worker %s is unreadable, its counts are lost: %s", name, exc)
    if added:
        pages = merge([("retired", pages), *added], {})
        _write(server, pages, folded | {name for name, _ in added})
    for _, snapshot, _ in gone:
        remove_snapshot(snapshot)
    return pages


def fold_dead(server: str, owners: list[tuple[int, str, bool]] | None = None) -> list[Page]:
    """Fold the snapshot of every dead worker of ``server`` (``owners`` as
    :func:`reaper.owners` lists them) and return the retired families (lock held)."""
    owners = reaper.owners(server) if owners is None else owners
    gone = [
        (os.path.basename(directory), os.path.join(directory, SNAPSHOT), None)
        for _, directory, alive in owners
        if not alive and os.path.exists(os.path.join(directory, SNAPSHOT))
    ]
    return _fold(server, gone) if gone else read(server)[0]


def retire(owner_dir: str, text: str, wait: float = WAIT) -> None:
    """A worker that exits gracefully: fold its final page ``text`` and remove its snapshot
    in its directory ``owner_dir``, at once for every scrape."""
    server = os.path.dirname(owner_dir)
    with locked(server, wait):
        _fold(server, [(os.path.basename(owner_dir), os.path.join(owner_dir, SNAPSHOT), text)])


def retire_dead_workers(wait: float = MASTER_WAIT) -> None:
    """In gunicorn's master when a worker exited (``child_exit``), before the reaper removes
    its directory: fold the snapshots dead workers left. Touches nothing (no lock file)
    unless one did, which one worker never does (it publishes no snapshot)."""
    server = reaper.own_server_dir()
    if server is None:
        return
    owners = reaper.owners(server)
    if any(not alive and os.path.exists(os.path.join(d, SNAPSHOT)) for _, d, alive in owners):
        with locked(server, wait):
            fold_dead(server)


def remove_snapshot(path: str) -> None:
    """Remove a snapshot file, if it is still there."""
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = [
    "FOLDED",
    "KEPT_KINDS",
    "LOCK",
    "MASTER_WAIT",
    "RETIRED",
    "SNAPSHOT",
    "WAIT",
    "MetricsBusy",
    "fold_dead",
    "kept",
    "locked",
    "read",
    "remove_snapshot",
    "retire",
    "retire_dead_workers",
]

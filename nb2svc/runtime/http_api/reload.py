"""``nb2svc serve NOTEBOOK --reload``: recompile on save, swap in a warm new version atomically.

The served WSGI app is a :class:`ReloadingApp`: it forwards every request to the
*current* version (a complete API-mode Flask app with its own warm kernel pool). A
watcher greenlet polls the notebook (and ``--reload-extra`` files) for changes; on one
it recompiles, builds the next version and starts its pool **in the background**, and
only when that pool is warm swaps the reference. So:

- requests in flight finish on the version they started on, streamed answers included
  (a request counts until the server closes its answer), and that version's pool shuts
  down once its last request has finished (at most ``drain_timeout`` seconds later);
- no request is answered by a half-seeded kernel: the new version serves only when
  every setup cell has run on every kernel of its pool;
- a compile error or a failing setup cell is logged with its cell number and the old
  version keeps serving;
- versions register nothing with the worker: the worker runtime holds one exit hook,
  :meth:`ReloadingApp.shutdown`, which stops every version still running, so reloading
  a hundred times leaves one hook, not a hundred.

Polling (every :data:`POLL` seconds, a ``stat`` per file) rather than inotify: a few
files, no extra dependency, and it works on every filesystem a notebook may live on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import gevent

from nb2svc.compiler import CompileError, compile_notebook
from nb2svc.compiler.spec import ServiceSpec
from nb2svc.runtime.closing import ClosingBody

log = logging.getLogger("nb2svc")

POLL = 0.5
#: A file must keep the same size and mtime this long before it is read (editors save
#: in several writes).
SETTLE = 0.3

Stamp = tuple[tuple[int, int], ...]


class ReloadingApp:
    """A WSGI app that serves the current version of a notebook's service and reloads it.

    ``build(spec, first)`` makes a version (an API-mode Flask app whose pool is starting);
    ``first`` is true for the version served at start, whose failure stops the worker
    as without ``--reload``; a later version's failure only keeps the old one serving.
    """

    def __init__(
        self,
        notebook: Path,
        build: Callable[[ServiceSpec, bool], Any],
        *,
        extra: Sequence[Path] = (),
        comment_prefix: str | None = None,
        cell_parser: str = "default",
        ready_timeout: float = 120.0,
        drain_timeout: float = 60.0,
        first: ServiceSpec | None = None,
    ) -> None:
        self.notebook = notebook
        self._watched = (notebook, *extra)
        self._build = build
        self._comment_prefix = comment_prefix
        self._cell_parser = cell_parser
        self._ready_timeout = ready_timeout
        self._drain_timeout = drain_timeout
        self._stamp = self._read_stamp()
        #: Versions whose pools run (serving, warming or retiring), stopped by :meth:`shutdown`.
        self.live: list[Any] = []
        self.current = self._start(first or self._compile(), True)
        self._inflight: dict[int, int] = {}
        self.version = 1
        self._watcher = gevent.spawn(self._watch)

    # --- WSGI ----------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Forward to the current version, which counts the request as in flight until the
        server closes its answer: a streamed answer is sent after this returns, so the
        count ends with the stream, not with the call."""
        app = self.current
        key = id(app)
        self._inflight[key] = self._inflight.get(key, 0) + 1

        def finished() -> None:
            self._inflight[key] = self._inflight.get(key, 1) - 1

        try:
            body = app(environ, start_response)
        except BaseException:
            finished()
            raise
        return ClosingBody(body, finished)

    # --- watching ------------------------------------------------------------------

    def _read_stamp(self) -> Stamp:
        stamps = []
        for path in self._watched:
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, -1))
        return tuple(stamps)

    def _watch(self) -> None:
        while True:
            gevent.sleep(POLL)
            stamp = self._read_stamp()
            if stamp == self._stamp:
                continue
            gevent.sleep(SETTLE)
            if self._read_stamp() != stamp:
                continue  # still being written
            self._stamp = stamp
            try:
                self.reload()
            except Exception:
                log.exception("reload failed; still serving version %d", self.version)

    def _compile(self) -> ServiceSpec:
        return compile_notebook(
            self.notebook, comment_prefix=self._comment_prefix, cell_parser=self._cell_parser
        )

    def reload(self) -> bool:
        """Compile, warm and swap in the next version; ``False`` (old one kept) on any error."""
        started = time.monotonic()
        log.info("%s changed: recompiling", self.notebook.name)
        try:
            spec = self._compile()
        except CompileError as exc:
            log.error(
                "%s cannot be compiled; still serving version %d:\n%s", self.notebook, self.version, exc
            )
            return False
        except ValueError as exc:  # not a notebook (e.g. saved half-way): wait for the next save
            log.error("%s cannot be read; still serving version %d: %s", self.notebook, self.version, exc)
            return False
        try:
            candidate = self._start(spec, False)
        except CompileError as exc:  # e.g. an endpoint under /public with --static-path
            log.error("%s cannot be served; still serving version %d:\n%s", self.notebook, self.version, exc)
            return False
        service = candidate.extensions["nb2svc"]
        deadline = time.monotonic() + self._ready_timeout
        while not service.pool.ready and service.pool.failure is None and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if not service.pool.ready:
            reason = service.pool.failure or f"not warm within {self._ready_timeout:g}s"
            log.error("the new version cannot start; still serving version %d: %s", self.version, reason)
            gevent.spawn(self._stop, candidate)
            return False
        old, self.current = self.current, candidate
        self.version += 1
        log.info(
            "reloaded %s: version %d serving (%d endpoints, warm in %.2fs)",
            self.notebook.name,
            self.version,
            len(spec.endpoints),
            time.monotonic() - started,
        )
        gevent.spawn(self._retire, old)
        return True

    def _retire(self, app: Any) -> None:
        """Shut the old version's pool down once its last in-flight request (streams too)
        has finished, or after ``drain_timeout`` seconds (``--request-timeout`` +
        ``--queue-timeout``: by then every request of that version has timed out anyway)."""
        key = id(app)
        deadline = time.monotonic() + self._drain_timeout
        while self._inflight.get(key, 0) > 0 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        self._inflight.pop(key, None)
        self._stop(app)

    def _start(self, spec: ServiceSpec, first: bool) -> Any:
        app = self._build(spec, first)
        self.live.append(app)
        return app

    def _stop(self, app: Any) -> None:
        if app in self.live:
            self.live.remove(app)
        for service in app.extensions["nb2svc.services"]:
            service.shutdown()

    def shutdown(self) -> None:
        """The worker exits: stop watching, and stop every version still running."""
        self._watcher.kill(block=False)
        for app in list(self.live):
            self._stop(app)

"""The gunicorn worker: gevent-websocket's, plus a shutdown that really drains.

Why a subclass: gunicorn's gevent worker waits on shutdown until every *connection*
is gone, so one idle keep-alive connection holds the worker for the whole graceful
timeout; the master then SIGKILLs it and its ``worker_exit`` hook (which shuts the
kernels down) never runs. Here, when the worker is told to stop:

- connections idle between requests are closed at once;
- a connection with a request in flight finishes that request, then closes;
- the worker's own drain deadline is a few seconds shorter than the master's, so
  ``worker_exit`` always gets time to stop every kernel.

``on_drain`` callbacks (e.g. kernel mode closing its websockets) run when draining
starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler

log = logging.getLogger("nb2svc")

#: Seconds of the graceful timeout kept back for shutting kernels down.
SHUTDOWN_RESERVE = 3

_drain_callbacks: list[Callable[[], None]] = []


def on_drain(callback: Callable[[], None]) -> None:
    """Run ``callback`` (in a greenlet) when this worker starts draining."""
    _drain_callbacks.append(callback)


class DrainingHandler(WebSocketHandler):
    """Tracks connections that are idle between requests, refuses new requests when
    draining, and writes the access log.
    """

    draining = False
    idle: set[gevent.Greenlet] = set()

    def read_requestline(self) -> Any:
        if DrainingHandler.draining:
            return None
        current = gevent.getcurrent()
        DrainingHandler.idle.add(current)
        try:
            return super().read_requestline()
        finally:
            DrainingHandler.idle.discard(current)

    def handle_one_response(self) -> Any:
        if DrainingHandler.draining:
            self.close_connection = True
        return super().handle_one_response()

    def log_request(self) -> None:
        """One INFO line per request (``GET /hello/x 200 3.1ms``); tokens are redacted by the
        formatter. Here rather than in the Flask app: it covers every answer, costs less,
        and replaces gevent-websocket's own line, which is formatted and then thrown away.
        """
        if self.code == 101 or not log.isEnabledFor(logging.INFO):
            return
        took = (self.time_finish - self.time_start) * 1000 if self.time_finish else 0.0
        log.info("%s %s %s %.1fms", self.command or "-", self.path or "-", abs(self.code or 0), took)


class Nb2svcWorker(GeventWebSocketWorker):
    wsgi_handler = DrainingHandler

    def init_process(self) -> None:
        graceful = self.cfg.graceful_timeout
        self.cfg.set("graceful_timeout", max(1, graceful - SHUTDOWN_RESERVE))
        super().init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        already = not self.alive
        super().handle_exit(sig, frame)
        if not already:
            gevent.spawn(self._drain)

    def _drain(self) -> None:
        DrainingHandler.draining = True
        for greenlet in list(DrainingHandler.idle):
            greenlet.kill(block=False)
        for callback in _drain_callbacks:
            try:
                callback()
            except Exception:
                log.exception("error while draining")

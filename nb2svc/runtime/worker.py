"""The gunicorn worker: gevent-websocket's, plus a shutdown that really drains.

Why a subclass: gunicorn's gevent worker waits on shutdown until every *connection*
is gone, so one idle keep-alive connection holds the worker for the whole graceful
timeout; the master then SIGKILLs it and its ``worker_exit`` hook (which shuts the
kernels down) never runs. Here, when the worker is told to stop:

- connections idle between requests are closed at once;
- a new connection still gets :data:`FIRST_REQUEST_GRACE` seconds to send its first
  request, which is answered (its client connected before the worker stopped accepting
  and, unlike one on a keep-alive connection, would not retry the request);
- a connection with a request in flight finishes that request, then closes;
- the worker's own drain deadline is a few seconds shorter than the master's, so
  ``worker_exit`` always gets time to stop every kernel;
- every response written while draining says ``Connection: close``, so keep-alive
  clients reconnect (to another worker or replica) instead of finding the socket shut
  under their next request.

The worker runtime's drain hooks (e.g. kernel mode closing its websockets) run when
draining starts. The limits and the connection state live in the worker's
:class:`~nb2svc.runtime.worker_runtime.WorkerRuntime`, bound to the handler class once
the app is loaded (:meth:`Nb2svcWorker.load_wsgi`): nothing here is module state.

The handler is also the strict HTTP edge (issue 8), since it decides how a request's
body is framed before any WSGI code runs:

- header lines are parsed strictly: obs-fold (a line starting with a space or tab), a
  line without a colon, or a name that is not an RFC 9110 token (``Name : v``) is a 400;
- framing must be unambiguous: ``Transfer-Encoding`` other than exactly ``chunked``,
  ``Transfer-Encoding`` together with ``Content-Length``, or two different (or
  non-numeric) ``Content-Length`` values are a 400. A proxy in front and this server
  can then never disagree on where a request ends (request smuggling);
- the request line and headers must arrive within ``header_timeout`` seconds, and a
  keep-alive connection may stay idle only ``keepalive_timeout`` seconds: slow or idle
  connections give their slot back, so a worker keeps answering;
- under pressure (:data:`PRESSURE` of the worker's connection slots open) a connection
  that starts waiting for a request gets only :data:`PRESSED_TIMEOUT` seconds for its
  headers or idle keep-alive (:func:`waits`): a client that keeps opening slow
  connections then recycles its slots every second instead of every ``header_timeout``,
  and others get one within about a second. Not a per-client cap: behind a proxy every
  client has the proxy's address;
- a body larger than ``max_body_size`` is a 413, chunked or not (a chunked body is read
  up to the limit here and handed on with its ``Content-Length``), and is not read further;
- gevent's own error lines go through the nb2svc logger, whose formatter redacts tokens.

Every request gets an id (:func:`request_id`): the client's ``X-Request-Id`` when it is a
short token (a proxy's), else a new random one. It is in the environ for the app's own
log lines, echoed in the answer's ``X-Request-Id`` and in the request log, so an error a
client saw can be found in the log.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import uuid
from http import HTTPStatus
from typing import Any

import gevent
from gevent import pywsgi
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler

from nb2svc.config import SHUTDOWN_RESERVE
from nb2svc.runtime.logs import (
    OBSERVER_KEY,
    REQUEST_ID_KEY,
    ROUTE_KEY,
    TRACE_ID_KEY,
    RedactingStream,
    Redactor,
)
from nb2svc.runtime.worker_runtime import EdgeLimits, WorkerRuntime, runtime_of

log = logging.getLogger("nb2svc")

#: RFC 9110 ``token``: what a header name may be (no spaces, no separators).
HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A client's ``X-Request-Id`` kept as it is: a short token, never free text in the log.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Paths logged at DEBUG, not INFO: probes every few seconds would drown the log (the
#: health checks, and their conventional aliases at the end of a path).
PROBE_PATH = "/_api/health/"
PROBE_ALIASES = ("/livez", "/readyz")
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100


class BadFraming(ValueError):
    """A request this server refuses to parse (400): gevent answers it and logs the message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.formatted_message = message


def strict_headers(fp: Any) -> Any:
    """Read a header block like :func:`http.client.parse_headers`, refusing the lax cases."""
    lines: list[bytes] = []
    while True:
        line = fp.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            raise BadFraming("header line too long")
        if line in (b"\r\n", b"\n", b""):
            break
        if len(lines) == MAX_HEADERS:
            raise BadFraming("too many header lines")
        if line[:1] in (b" ", b"\t"):
            raise BadFraming("obsolete line folding in the headers")
        name, colon, _ = line.partition(b":")
        if not colon:
            raise BadFraming("a header line without a colon")
        if not HEADER_NAME.fullmatch(name):
            raise BadFraming(f"invalid header name {name[:40]!r} (whitespace before the colon?)")
        lines.append(line)
    headers = pywsgi.headers_factory(io.BytesIO(b"".join(lines) + b"\r\n"))
    _check_framing(headers)
    return headers


def _check_framing(headers: Any) -> None:
    encodings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if encodings:
        if len(encodings) != 1 or encodings[0].strip().lower() != "chunked":
            raise BadFraming("Transfer-Encoding other than exactly 'chunked'")
        if lengths:
            raise BadFraming("both Transfer-Encoding and Content-Length")
    values = {v.strip() for value in lengths for v in value.split(",")}
    if len(values) > 1 or not all(v.isdigit() for v in values):
        raise BadFraming("conflicting or invalid Content-Length")


#: Share of the connection slots open from which waits for a request are cut short.
PRESSURE = 0.8
#: Seconds a new connection still gets to send its first request once draining starts: it
#: was accepted before the worker stopped accepting, and its client would not retry.
FIRST_REQUEST_GRACE = 1.0
#: Seconds a connection may wait for its request line and headers (or idle between
#: requests) under pressure.
PRESSED_TIMEOUT = 1.0


def waits(edge: EdgeLimits, open_connections: int, capacity: int) -> tuple[float, float]:
    """``(header timeout, keep-alive timeout)`` for a connection that starts waiting now,
    with ``open_connections`` of the worker's ``capacity`` slots open."""
    if open_connections >= capacity * PRESSURE:
        return min(edge.header_timeout, PRESSED_TIMEOUT), min(edge.keepalive_timeout, PRESSED_TIMEOUT)
    return edge.header_timeout, edge.keepalive_timeout


def request_id(environ: dict[str, Any]) -> str:
    """The id of the request of ``environ``: the client's ``X-Request-Id`` if it is a short
    token, else a new random one (set once per request by the worker's handler)."""
    given = environ.get("HTTP_X_REQUEST_ID", "")
    return given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class DrainingHandler(WebSocketHandler):
    """Tracks connections that are idle between requests, refuses new requests when
    draining, and writes the access log.

    ``runtime`` is the worker's, set on a per-worker subclass by :func:`bind_handler`.
    """

    runtime: WorkerRuntime
    _served = 0
    _header_timer: gevent.Timeout | None = None
    _header_timeout = 10.0

    def handle(self) -> Any:
        """One connection; counted, so that waits are cut short under pressure."""
        connections = self.runtime.connections
        connections.open += 1
        try:
            return super().handle()
        finally:
            connections.open -= 1

    def read_requestline(self) -> Any:
        connections = self.runtime.connections
        if connections.draining and self._served:
            return None  # a keep-alive connection: closed (its client retries on a new one)
        current = gevent.getcurrent()
        waiting = connections.idle if self._served else connections.fresh
        waiting.add(current)
        header_timeout, keepalive_timeout = waits(self.runtime.edge, connections.open, connections.capacity)
        self._header_timeout = header_timeout
        timer = None
        try:
            if self._served:
                timer = gevent.Timeout.start_new(keepalive_timeout)
                self.rfile.peek(1)  # idle until the next request's first byte (b"" at EOF)
                timer.close()
            timer = self._header_timer = gevent.Timeout.start_new(header_timeout)
            self._served += 1
            return super().read_requestline()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            self._stop_header_timer()
            return None
        finally:
            waiting.discard(current)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.close()
            self._header_timer = None

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # noqa: N802 - gevent's name
        return strict_headers(fp)

    def read_request(self, raw_requestline: str) -> Any:
        timer = self._header_timer
        try:
            request = super().read_request(raw_requestline)
            if self.runtime.connections.draining:
                self.close_connection = True  # answered, then closed: the worker is stopping
            return request
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            self.close_connection = True
            raise BadFraming(f"the request headers took longer than {self._header_timeout:g}s") from None
        finally:
            self._stop_header_timer()

    def get_environ(self) -> Any:
        """gevent's environ, plus the raw path and header lines (see :mod:`.http_api.kg_compat`)
        and the connection's socket (a stream watches it for the client leaving)."""
        environ = super().get_environ()
        environ["nb2svc.raw_path"] = self.path
        environ["nb2svc.header_lines"] = self.headers.items()
        environ["nb2svc.socket"] = self.socket
        environ[REQUEST_ID_KEY] = request_id(environ)
        return environ

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        finally:
            self._stop_header_timer()

    def run_application(self) -> Any:
        """413 for a body over ``max_body_size`` (chunked too) before the app sees it."""
        limit = self.runtime.edge.max_body_size
        if self.content_length is not None and int(self.content_length) > limit:
            return self._too_large(limit)
        if self.environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            body = self.wsgi_input.read(limit + 1)
            if len(body) > limit:
                return self._too_large(limit)
            self.environ["wsgi.input"] = io.BytesIO(body)
            self.environ["CONTENT_LENGTH"] = str(len(body))
            self.environ.pop("wsgi.input_terminated", None)
            del self.environ["HTTP_TRANSFER_ENCODING"]
        return super().run_application()

    def _too_large(self, limit: int) -> None:
        self.close_connection = True
        self.wsgi_input = pywsgi.Input(self.rfile, 0)  # the rest of the body is never read
        message = f"the request body is larger than the limit of {limit} bytes (--max-body-size)"
        body = json.dumps(
            {"error": "RequestEntityTooLarge", "message": message, "reason": HTTPStatus(413).phrase}
        ).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        self.start_response("413 Request Entity Too Large", headers)
        self.write(body)

    def log_error(self, msg: str, *args: Any) -> None:
        """gevent's error lines (malformed requests) through the redacting logger, not raw stderr."""
        try:
            text = msg % args if args else msg
        except (TypeError, ValueError):
            text = f"{msg!r} {args!r}"
        log.warning("%s", text)

    def handle_one_response(self) -> Any:
        connections = self.runtime.connections
        if connections.draining:
            self.close_connection = True
        connections.in_flight += 1
        try:
            return super().handle_one_response()
        finally:
            connections.in_flight -= 1

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        """Say ``Connection: close`` on a response written while draining (not on a 101);
        echo the request's id."""
        if self.runtime.connections.draining and not status.startswith("101"):
            self.close_connection = True
            if not any(name.lower() == "connection" for name, _ in headers):
                headers = [*headers, ("Connection", "close")]
        rid = self.environ.get(REQUEST_ID_KEY) if self.environ else None
        if rid and not status.startswith("101"):
            headers = [*headers, ("X-Request-Id", rid)]
        return super().start_response(status, headers, exc_info)

    def log_request(self) -> None:
        """One INFO line per request (``GET /hello/x 200 3.1ms``), with its fields for JSON
        lines (see :mod:`nb2svc.runtime.logs`); tokens are redacted by the formatter.
        Health probes are logged at DEBUG. Here rather than in the Flask app: it covers
        every answer, measured to its last byte (a stream too), costs less, and replaces
        gevent-websocket's own line, which is formatted and then thrown away.
        """
        environ = self.environ or {}
        took = (self.time_finish - self.time_start) * 1000 if self.time_finish else 0.0
        status = abs(self.code or 0)
        observer = environ.get(OBSERVER_KEY)
        if observer is not None:
            observer(status, took / 1000)
        path = self.path or "-"
        probe = PROBE_PATH in path or path.partition("?")[0].endswith(PROBE_ALIASES)
        level = logging.DEBUG if probe else logging.INFO
        if self.code == 101 or not log.isEnabledFor(level):
            return
        fields = {
            "method": self.command or "-",
            "path": path,
            "route": environ.get(ROUTE_KEY),
            "status": status,
            "duration_ms": round(took, 3),
            "bytes": self.response_length,
            "request_id": environ.get(REQUEST_ID_KEY),
            "trace_id": environ.get(TRACE_ID_KEY),
        }
        log.log(level, "%s %s %s %.1fms", fields["method"], path, status, took, extra=fields)


def _kill_all(greenlets: set[Any]) -> None:
    for greenlet in list(greenlets):
        greenlet.kill(block=False)


def bind_handler(handler: type[DrainingHandler], runtime: WorkerRuntime) -> type[DrainingHandler]:
    """A subclass of ``handler`` for one worker, whose connections share ``runtime``."""
    return type(handler.__name__, (handler,), {"runtime": runtime, "__module__": handler.__module__})


class Nb2svcWorker(GeventWebSocketWorker):
    wsgi_handler = DrainingHandler

    def load_wsgi(self) -> None:
        """Load the app, then bind its runtime (edge limits, connections) to the handler."""
        super().load_wsgi()
        self.runtime = runtime_of(self.wsgi) or WorkerRuntime()
        self.runtime.connections.capacity = self.worker_connections
        self.runtime.share_metrics(self.cfg.workers)
        self.wsgi_handler = bind_handler(type(self).wsgi_handler, self.runtime)
        gevent.get_hub().exception_stream = RedactingStream(sys.stderr, self.runtime.redactor)

    def patch(self) -> None:
        """gunicorn's ``monkey.patch_all()``, with the installed packages' entry points read once.

        gevent looks up its plugins (an entry-point group) at each of its 25 patch events,
        and each lookup reads every installed package's metadata: 90 of the 115 ms from a
        worker's start to its app's import, on the path to a server's first answer. The
        lookups get the same answers from one reading (nothing is installed meanwhile).
        """
        from importlib import metadata

        every = metadata.entry_points()
        lookup = metadata.entry_points

        def once(**params: Any) -> Any:
            return every.select(**params) if params else every

        metadata.entry_points = once  # type: ignore[assignment]
        try:
            super().patch()
        finally:
            metadata.entry_points = lookup

    def init_process(self) -> None:
        gevent.get_hub().exception_stream = RedactingStream(sys.stderr, Redactor())  # until the app loads
        graceful = self.cfg.graceful_timeout
        self.cfg.set("graceful_timeout", max(1, graceful - SHUTDOWN_RESERVE))
        super().init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        already = not self.alive
        super().handle_exit(sig, frame)
        if not already:
            gevent.spawn(self._drain)

    def _drain(self) -> None:
        connections = self.runtime.connections
        connections.draining = True
        log.info(
            "draining: %d request(s) in flight get up to %ds to finish, then the kernels stop (worker %d)",
            connections.in_flight,
            self.cfg.graceful_timeout,
            self.pid,
        )
        _kill_all(connections.idle)
        gevent.spawn_later(FIRST_REQUEST_GRACE, _kill_all, connections.fresh)
        self.runtime.drain()

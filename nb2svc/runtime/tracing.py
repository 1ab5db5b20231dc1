"""OpenTelemetry tracing: optional (``pip install 'nb2svc[otel]'``), free when off.

On when the standard variables ask for OTLP export: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, ``OTEL_TRACES_EXPORTER`` (default ``otlp``)
names ``otlp`` and ``OTEL_SDK_DISABLED`` is not ``true``. The exporter is OTLP over
HTTP/protobuf and reads its own ``OTEL_EXPORTER_OTLP_*`` settings (headers, timeout);
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` describe the service (default
name: the app's). Variables asking for tracing without the packages installed are one
warning, not an error.

Off, :class:`Tracing` has ``tracer = None``, nothing wraps the app, and the call sites
check that one attribute: no OpenTelemetry import, no span objects, no context.

On, each worker has its own tracer provider (created after the fork, flushed when the
worker exits) and:

- every request is an HTTP server span (stable semantic conventions: ``http.request.method``,
  ``url.path``, ``url.scheme``, ``server.address``/``server.port``, ``client.address``,
  ``user_agent.original``, ``http.route`` with the mount, ``http.response.status_code``;
  named ``GET /orders/:id``), continuing an incoming ``traceparent``, and ended at the
  answer's last byte (a stream's too); a 5xx sets the span's status to error;
- API mode adds, under it, ``nb2svc.pool.wait`` (queued for a kernel) and
  ``nb2svc.kernel.execute`` (the endpoint's code on a kernel: ``nb2svc.kernel.label``,
  ``nb2svc.notebook``, ``nb2svc.cells``);
- a stream's and a job's kernel work runs in a greenlet of its own and stays in its
  request's trace (:func:`carried`): a stream's two spans are children of its request's
  span; a job's are children of the span of the request that created it (which ends at
  the ``202``, before them) and carry ``nb2svc.job.id``, as do that request's span and
  the spans of the job's polls and cancels (``/_api/jobs/{id}``);
- the request log's JSON lines carry ``trace_id``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from nb2svc._version import __version__
from nb2svc.runtime.closing import ClosingBody
from nb2svc.runtime.logs import ROUTE_KEY, TRACE_ID_KEY

log = logging.getLogger("nb2svc")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
F = TypeVar("F", bound=Callable[..., Any])


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces exported over OTLP."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if "otlp" not in exporters:
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class _EnvironGetter:
    """Reads propagation headers (``traceparent``, ``tracestate``) from a WSGI environ."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


class Tracing:
    """One worker's tracing: ``tracer`` is None when off (see the module docstring)."""

    def __init__(self, service_name: str) -> None:
        self.tracer: Any = None
        self._provider: Any = None
        if not wanted():
            return
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            log.warning(
                "OTEL_* variables ask for traces, but OpenTelemetry is not installed: "
                "pip install 'nb2svc[otel]'"
            )
            return
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._provider = provider
        self._propagator = TraceContextTextMapPropagator()
        self.tracer = provider.get_tracer("nb2svc", __version__)

    def shutdown(self) -> None:
        """Export what is left (the worker is exiting)."""
        if self._provider is not None:
            self._provider.shutdown()

    def wrap(self, app: WSGIApp) -> WSGIApp:
        """``app`` with a server span per request (``app`` itself when tracing is off)."""
        if self.tracer is None:
            return app
        from opentelemetry import context, trace

        tracer, propagator, getter = self.tracer, self._propagator, _EnvironGetter()

        def traced(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            method = environ.get("REQUEST_METHOD", "GET")
            span = tracer.start_span(
                method,
                context=propagator.extract(environ, getter=getter),
                kind=trace.SpanKind.SERVER,
                attributes=_request_attributes(environ, method),
            )
            environ[TRACE_ID_KEY] = format(span.get_span_context().trace_id, "032x")
            status: list[int] = []

            def respond(line: str, headers: Any, exc_info: Any = None) -> Any:
                status.append(int(line.split(" ", 1)[0]))
                return start_response(line, headers, exc_info)

            token = context.attach(trace.set_span_in_context(span))
            try:
                body = app(environ, respond)
            except BaseException:
                _finish(span, environ, method, 500)
                raise
            finally:
                context.detach(token)
            return ClosingBody(body, lambda: _finish(span, environ, method, status[-1] if status else 500))

        return traced


def _request_attributes(environ: Mapping[str, Any], method: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.path": environ.get("PATH_INFO", "/"),
        "url.scheme": environ.get("wsgi.url_scheme", "http"),
        "server.address": environ.get("SERVER_NAME", ""),
        "network.protocol.version": environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2],
    }
    if environ.get("SERVER_PORT", "").isdigit():
        attributes["server.port"] = int(environ["SERVER_PORT"])
    if environ.get("REMOTE_ADDR"):
        attributes["client.address"] = environ["REMOTE_ADDR"]
    if environ.get("HTTP_USER_AGENT"):
        attributes["user_agent.original"] = environ["HTTP_USER_AGENT"]
    return attributes


def _finish(span: Any, environ: Mapping[str, Any], method: str, status: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    route = environ.get(ROUTE_KEY)
    if route:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


@contextmanager
def span(tracer: Any, name: str, attributes: Mapping[str, Any]) -> Iterator[None]:
    """A child span of the current one around the block (nothing when ``tracer`` is None)."""
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name, attributes=dict(attributes)):
        yield


def record(tracer: Any, name: str, start_ns: int, attributes: Mapping[str, Any]) -> None:
    """A child span of the current one from ``start_ns`` to now (a wait already over)."""
    if tracer is not None:
        tracer.start_span(name, start_time=start_ns, attributes=dict(attributes)).end()


def annotate(tracer: Any, key: str, value: Any) -> None:
    """Set an attribute on the current span (the request's, in a view)."""
    if tracer is not None:
        from opentelemetry import trace

        trace.get_current_span().set_attribute(key, value)


def carried(tracer: Any, fn: F) -> F:
    """``fn``, made to run in the trace context that is current now, wherever it runs later.

    A gevent greenlet starts with empty context variables, not its spawner's, so kernel
    work a request hands to a greenlet (a job, a stream) would otherwise start traces of
    its own. ``fn`` itself when ``tracer`` is None: nothing is captured or attached.
    """
    if tracer is None:
        return fn
    from opentelemetry import context

    captured = context.get_current()

    def in_context(*args: Any, **kwargs: Any) -> Any:
        token = context.attach(captured)
        try:
            return fn(*args, **kwargs)
        finally:
            context.detach(token)

    return cast(F, in_context)


__all__ = ["Tracing", "annotate", "carried", "record", "span", "wanted"]

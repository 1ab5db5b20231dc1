"""OpenTelemetry tracing (issue 22): spans read back through a real OTLP/HTTP receiver on
loopback, the incoming traceparent continued; nothing at all when the variables are unset."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nb2svc.runtime.tracing import Tracing, wanted
from tests.notebooks import notebook
from tests.support import Server, wait_for

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

StartServer = Callable[..., Server]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (protobuf ``POST /v1/traces``)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        spans = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    service = {a.key: a.value.string_value for a in resource.resource.attributes}
                    for scope in resource.scope_spans:
                        spans.extend(_span(s, service) for s in scope.spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, name: str, **attributes: Any) -> dict[str, Any] | None:
        return next(
            (
                s
                for s in self.spans
                if s["name"] == name and all(s["attributes"].get(k) == v for k, v in attributes.items())
            ),
            None,
        )


def _span(span: Any, service: dict[str, str]) -> dict[str, Any]:
    def value(v: Any) -> Any:
        kind = v.WhichOneof("value")
        if kind == "array_value":
            return [value(x) for x in v.array_value.values]
        return getattr(v, kind)

    return {
        "name": span.name,
        "kind": span.kind,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent": span.parent_span_id.hex(),
        "status": span.status.code,
        "attributes": {a.key: value(a.value) for a in span.attributes},
        "service": service.get("service.name"),
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


def test_a_request_is_a_server_span_with_pool_wait_and_kernel_execute_children(
    start_server: StartServer, tmp_path: Path, receiver: Receiver
) -> None:
    path = tmp_path / "orders.ipynb"
    nbformat.write(
        notebook("import json", "# GET /orders/:id\nprint(json.loads(REQUEST)['path']['id'])"), path
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s, not 5 s
        "OTEL_SERVICE_NAME": "orders-svc",
    }
    server = start_server(str(path), "--pool-size", "1", "--log-format", "json", env=env)
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    assert server.get("/orders/7", headers={"traceparent": traceparent, "User-Agent": "t/1"}).text == "7\n"
    root = wait_for(lambda: receiver.named("GET /orders/:id"), 30, "the server span")
    execute = wait_for(lambda: receiver.named("nb2svc.kernel.execute"), 30, "the execute span")
    wait = wait_for(lambda: receiver.named("nb2svc.pool.wait"), 30, "the pool wait span")
    assert root["trace_id"] == TRACE_ID and root["parent"] == PARENT_ID  # the caller's trace continues
    assert root["kind"] == 2 and root["service"] == "orders-svc"  # SPAN_KIND_SERVER
    assert {
        "http.request.method": "GET",
        "url.path": "/orders/7",
        "http.route": "/orders/:id",
        "http.response.status_code": 200,
        "user_agent.original": "t/1",
    }.items() <= root["attributes"].items()
    for child in (execute, wait):
        assert child["trace_id"] == TRACE_ID and child["parent"] == root["span_id"]
    assert execute["attributes"]["nb2svc.cells"] == [2]
    assert execute["attributes"]["nb2svc.notebook"] == "orders.ipynb"
    assert "pid" in execute["attributes"]["nb2svc.kernel.label"]
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(line.get("trace_id") == TRACE_ID and line.get("status") == 200 for line in lines)
    assert server.get("/nowhere").status_code == 404
    unrouted = wait_for(lambda: receiver.named("GET", **{"url.path": "/nowhere"}), 30, "an unrouted span")
    assert unrouted["attributes"]["http.response.status_code"] == 404 and unrouted["trace_id"] != TRACE_ID


def test_tracing_is_off_unless_the_variables_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not wanted({})
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"})
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    off = Tracing("svc")
    assert off.tracer is None

    def app(environ: Any, start_response: Any) -> list[bytes]:
        return []

    assert off.wrap(app) is app  # nothing between the server and the app

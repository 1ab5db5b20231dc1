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
from nbformat.v4 import new_code_cell

from nb2svc.runtime.tracing import Tracing, carried, wanted
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
    assert carried(off.tracer, app) is app  # no context captured for a job's or stream's greenlet


def test_carried_runs_a_greenlet_in_the_trace_of_the_greenlet_that_made_it() -> None:
    """Why jobs and streams need it: a new greenlet does not inherit its spawner's context."""
    import gevent
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")

    def current_span_id() -> int:
        return trace.get_current_span().get_span_context().span_id

    with tracer.start_as_current_span("request") as request_span:
        plain = gevent.spawn(current_span_id)
        kept = gevent.spawn(carried(tracer, current_span_id))
        gevent.joinall([plain, kept], raise_error=True)
    assert plain.value == 0  # no span: the work would start a trace of its own
    assert kept.value == request_span.get_span_context().span_id


def test_a_job_and_a_stream_run_their_kernel_work_in_their_request_s_trace(
    start_server: StartServer, tmp_path: Path, receiver: Receiver
) -> None:
    """The kernel work of a job and of a stream runs in greenlets spawned by the request:
    its spans are still children of the request's server span, in the caller's trace."""
    stream = new_code_cell(
        "# GET /ticks/:n\nfor i in range(int(json.loads(REQUEST)['path']['n'])):\n    print(i)"
    )
    stream.metadata["nb2svc"] = {"response": "stream"}
    path = tmp_path / "orders.ipynb"
    nbformat.write(
        notebook("import json", "# POST /orders\nprint(json.loads(REQUEST)['body']['n'])", stream), path
    )
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    server = start_server(str(path), "--pool-size", "1", env=env)
    job_trace, stream_trace = "1" * 32, "2" * 32
    posted = server.request(
        "POST",
        "/orders",
        json={"n": 5},
        headers={"Prefer": "respond-async", "traceparent": f"00-{job_trace}-{PARENT_ID}-01"},
    )
    assert posted.status_code == 202
    job_id = posted.json()["id"]
    done = wait_for(
        lambda: (r := server.get(posted.headers["Location"])).headers.get("Nb2svc-Job") == "done" and r,
        30,
        "job",
    )
    assert done.text == "5\n"
    streamed = server.get("/ticks/3", headers={"traceparent": f"00-{stream_trace}-{PARENT_ID}-01"})
    assert streamed.text == "0\n1\n2\n"

    post = wait_for(lambda: receiver.named("POST /orders"), 30, "the POST's server span")
    get = wait_for(lambda: receiver.named("GET /ticks/:n"), 30, "the stream's server span")
    assert post["trace_id"] == job_trace and post["attributes"]["nb2svc.job.id"] == job_id
    assert get["trace_id"] == stream_trace
    parents = {(root["trace_id"], root["span_id"]) for root in (post, get)}
    for root, cells in ((post, [2]), (get, [3])):
        execute = wait_for(
            lambda cells=cells: receiver.named("nb2svc.kernel.execute", **{"nb2svc.cells": cells}),
            30,
            "execute",
        )
        assert (execute["trace_id"], execute["parent"]) == (root["trace_id"], root["span_id"])
    assert (
        receiver.named("nb2svc.kernel.execute", **{"nb2svc.cells": [2]})["attributes"]["nb2svc.job.id"]
        == job_id
    )
    poll = wait_for(lambda: receiver.named("GET", **{"nb2svc.job.id": job_id}), 30, "a poll's span")
    assert poll["trace_id"] not in {job_trace, stream_trace}  # each poll is a request of its own
    waits = wait_for(
        lambda: len(w := [s for s in receiver.spans if s["name"] == "nb2svc.pool.wait"]) == 2 and w,
        30,
        "waits",
    )
    assert {(w["trace_id"], w["parent"]) for w in waits} == parents

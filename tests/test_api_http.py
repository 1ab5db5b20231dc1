"""API mode over real HTTP: one real gunicorn server with real kernels for the module.

Every behaviour of the request/response contract is checked against the running
server: REQUEST shape and body parsing, outputs to responses, ResponseInfo, errors,
the service endpoints, auth-free defaults and concurrency with a pool of 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import requests

from tests.notebooks import md, notebook
from tests.support import Server

BEHAVIOUR = notebook(
    md("# Behaviour\nEndpoints exercising every rule of the contract."),
    "import json, sys\ncounter = 0\ninfo_runs = 0",
    "# GET /echo/:a/:b\nprint(REQUEST)",
    "# POST /echo\nprint(REQUEST, end='')",
    "# PUT /echo\nprint(REQUEST, end='')",
    "# GET /expr\n1 + 1",
    "# GET /silent\nx = 1",
    "# GET /stderr\nprint('to stderr', file=sys.stderr)\nprint('to stdout')",
    "# GET /fail\nvalue = 1\nraise ValueError('bad thing')",
    "# GET /count\ncounter += 1\nprint(counter)",
    "# GET /multi\nprint('first', end=' ')",
    "# GET /multi\nprint('second')",
    "# GET /created\nprint(json.dumps({'ok': True}))",
    "# ResponseInfo GET /created\n"
    "print(json.dumps({'status': 201, 'headers': {'Content-Type': 'application/json', 'X-Thing': 'yes'}}))",
    "# GET /badinfo\nprint('x')",
    "# ResponseInfo GET /badinfo\nprint('not json')",
    "# GET /png\nfrom IPython.display import Image, display\n"
    "display(Image(data=bytes.fromhex('89504e470d0a1a0a0000000d49484452'), format='png'))",
    "# ResponseInfo GET /png\nprint(json.dumps({'headers': {'Content-Type': 'image/png'}}))",
    "# GET /infofail\nprint('x')",
    "# ResponseInfo GET /infofail\nraise KeyError('nope')",
    "# GET /status/:code\nprint('custom')",
    "# ResponseInfo GET /status/:code\n"
    "print(json.dumps({'status': int(json.loads(REQUEST)['path']['code'])}))",
    "# GET /errinfo\nraise RuntimeError('main cell failed')",
    "# ResponseInfo GET /errinfo\ninfo_runs += 1\nprint('{}')",
    "# GET /info_runs\nprint(info_runs)",
    "# GET /cached_request_cells\nimport linecache\n"
    "marker = 'cache' + '-marker-'\n"
    "print(sum(1 for e in list(linecache.cache.values()) if marker in ''.join(e[2])), "
    "sum(1 for e in list(linecache.cache.values()) if '# GET /echo/:a/:b' in ''.join(e[2])))",
    "# GET /users/:id\nprint('user ' + json.loads(REQUEST)['path']['id'])",
    "# GET /users/me\nprint('me')",
    kernel="python3",
    language="python",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path: Path = tmp_path_factory.mktemp("nb") / "behaviour.ipynb"
    nbformat.write(BEHAVIOUR, path)
    srv = Server([str(path), "--pool-size", "2", "--max-body-size", "2048"], log_dir=path.parent)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.kill()


def test_path_params_args_and_headers_reach_request(server: Server) -> None:
    r = server.get("/echo/one/two?x=1&x=2&y=z", headers={"X-Custom": "v"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    req = json.loads(r.text)
    assert req["path"] == {"a": "one", "b": "two"}
    assert req["args"] == {"x": ["1", "2"], "y": ["z"]}
    assert req["headers"]["X-Custom"] == "v"
    assert req["body"] == ""


def test_json_body_is_parsed(server: Server) -> None:
    r = server.request("POST", "/echo", json={"name": "bob", "n": [1, 2]})
    assert r.status_code == 200
    assert json.loads(r.text)["body"] == {"name": "bob", "n": [1, 2]}


def test_invalid_json_body_is_400(server: Server) -> None:
    r = server.request("POST", "/echo", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == "BadRequest"
    assert "invalid JSON" in r.json()["message"]


def test_form_body_is_name_to_values(server: Server) -> None:
    r = server.request("POST", "/echo", data=[("a", "1"), ("a", "2"), ("b", "x")])
    assert json.loads(r.text)["body"] == {"a": ["1", "2"], "b": ["x"]}


def test_multipart_body_is_name_to_values(server: Server) -> None:
    r = server.request("PUT", "/echo", data={"a": "1"}, files={"f": ("f.txt", b"file text")})
    assert json.loads(r.text)["body"] == {"a": ["1"], "f": ["file text"]}


def test_other_body_is_text(server: Server) -> None:
    r = server.request("POST", "/echo", data="plain words", headers={"Content-Type": "text/plain"})
    assert json.loads(r.text)["body"] == "plain words"


def test_body_over_limit_is_413(server: Server) -> None:
    r = server.request("POST", "/echo", data="x" * 4096, headers={"Content-Type": "text/plain"})
    assert r.status_code == 413
    assert r.json()["error"] == "RequestEntityTooLarge"


def test_execute_result_is_mime_bundle_json(server: Server) -> None:
    r = server.get("/expr")
    assert r.status_code == 200
    assert json.loads(r.text) == {"text/plain": "2"}


def test_no_output_is_empty_body(server: Server) -> None:
    r = server.get("/silent")
    assert r.status_code == 200
    assert r.text == ""


def test_stderr_is_not_in_body(server: Server) -> None:
    assert server.get("/stderr").text == "to stdout\n"


def test_same_annotation_cells_concatenate(server: Server) -> None:
    assert server.get("/multi").text == "first second\n"


def test_cell_error_is_500_json_with_traceback(server: Server) -> None:
    r = server.get("/fail")
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "ValueError"
    assert body["message"] == "bad thing"
    text = "\n".join(body["traceback"])
    assert "bad thing" in text
    assert "\x1b[" not in text
    # REQUEST rides on the annotation line, so the cell's own line numbers are kept.
    assert "line 3" in text or "----> 3" in text


def test_state_persists_between_requests_on_a_kernel(server: Server) -> None:
    values = [int(server.get("/count").text) for _ in range(6)]
    # two kernels each count on their own; every kernel's sequence increases by one
    assert sorted(values)[-1] >= 3
    assert all(v >= 1 for v in values)


def test_response_info_sets_status_and_headers(server: Server) -> None:
    r = server.get("/created")
    assert r.status_code == 201
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Thing"] == "yes"
    assert r.json() == {"ok": True}


def test_response_info_sees_request(server: Server) -> None:
    r = server.get("/status/418")
    assert r.status_code == 418
    assert r.text == "custom\n"


def test_response_info_error_is_500_with_its_traceback(server: Server) -> None:
    r = server.get("/infofail")
    assert r.status_code == 500
    assert r.json()["error"] == "KeyError"
    assert "ResponseInfo cell" in "\n".join(r.json()["traceback"])


def test_response_info_does_not_run_when_the_cell_fails(server: Server) -> None:
    for _ in range(4):
        assert server.get("/errinfo").status_code == 500
    assert {server.get("/info_runs").text for _ in range(4)} == {"0\n"}


def test_kernels_do_not_keep_every_request_cell(server: Server) -> None:
    """IPython caches each distinct cell's source forever; REQUEST travels out of band, so
    a cell's source is the same for every request and is cached once per endpoint.
    """
    for i in range(40):
        assert server.get(f"/echo/cache-marker-{i}/x").status_code == 200
    # no request's data is cached, and the echo cell's source a bounded number of times
    # (IPython keeps it under two names), not once per request
    for _ in range(4):
        with_marker, echo_cells = map(int, server.get("/cached_request_cells").text.split())
        assert with_marker == 0 and echo_cells <= 2


def test_invalid_response_info_is_500(server: Server) -> None:
    r = server.get("/badinfo")
    assert r.status_code == 500
    assert r.json()["error"] == "ResponseInfoError"


def test_binary_response_from_rich_output(server: Server) -> None:
    r = server.get("/png")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "image/png"
    assert r.content == bytes.fromhex("89504e470d0a1a0a0000000d49484452")


def test_literal_route_wins_over_parameter(server: Server) -> None:
    assert server.get("/users/me").text == "me\n"
    assert server.get("/users/42").text == "user 42\n"


def test_unknown_path_is_404_json(server: Server) -> None:
    r = server.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"] == "NotFound"


def test_wrong_method_is_405_with_allow(server: Server) -> None:
    r = server.request("DELETE", "/expr")
    assert r.status_code == 405
    assert "GET" in r.headers["Allow"]
    assert r.json()["error"] == "MethodNotAllowed"


def test_head_and_options_are_answered(server: Server) -> None:
    assert server.request("HEAD", "/users/me").status_code == 200
    r = server.request("OPTIONS", "/echo")
    assert r.status_code == 200
    assert {"POST", "PUT"} <= {m.strip() for m in r.headers["Allow"].split(",")}


def test_swagger_is_kernel_gateway_compatible(server: Server) -> None:
    doc = server.get("/_api/spec/swagger.json").json()
    assert doc["swagger"] == "2.0"
    assert "/echo/:a/:b" in doc["paths"]
    assert "get" in doc["paths"]["/echo/:a/:b"]


def test_openapi_declares_path_parameters(server: Server) -> None:
    doc = server.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    item = doc["paths"]["/echo/{a}/{b}"]
    assert "get" in item
    params = item.get("parameters", []) + item["get"].get("parameters", [])
    assert [p["name"] for p in params if p["in"] == "path"] == ["a", "b"]


def test_health_and_metrics(server: Server) -> None:
    assert server.get("/_api/health/live").json() == {"status": "ok"}
    ready = server.get("/_api/health/ready")
    assert ready.status_code == 200
    assert ready.json()["kernels"] == 2
    server.get("/expr")
    metrics = server.get("/_api/metrics").text
    assert 'nb2svc_requests_total{route="GET /expr",status="200"}' in metrics
    assert "nb2svc_pool_size 2" in metrics


def test_cors_is_off_by_default(server: Server) -> None:
    r = server.get("/expr", headers={"Origin": "http://example.com"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_twenty_concurrent_requests_on_two_kernels(server: Server) -> None:
    def call(i: int) -> requests.Response:
        return server.get(f"/echo/{i}/x")

    with ThreadPoolExecutor(max_workers=20) as ex:
        responses = list(ex.map(call, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert [json.loads(r.text)["path"]["a"] for r in responses] == [str(i) for i in range(20)]

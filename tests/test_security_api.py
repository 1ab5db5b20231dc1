"""Issue 8 against a real API-mode server: auth exemptions, errors without echo, hostile bodies.

One token-protected server for the module; every test is an attack, named after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from nb2svc.compiler import CompileError, compile_notebook
from tests.notebooks import notebook
from tests.support import Server

TOKEN = "t0ps3cret"
AUTH = {"Authorization": f"token {TOKEN}"}
COOKIE = "session=c00kie-value-never-echoed"
MAX_BODY = 2_000_000

SERVICE = notebook(
    "import json",
    "# GET /:a/:b/:c\nprint('three segments')",
    "# GET /:x/health/:y\nprint('health-like')",
    "# GET /fail\nvalue = 1\nraise ValueError('bad thing')",
    "# POST /fail\nvalue = 1\n\n\nraise ValueError('bad thing')",
    "# GET /longmessage\nraise ValueError('x' * 100_000)",
    "# POST /size\nprint(len(json.loads(REQUEST)['body']))",
    kernel="python3",
    language="python",
)


def serve(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Server:
    path: Path = tmp_path_factory.mktemp("nb") / "service.ipynb"
    nbformat.write(SERVICE, path)
    server = Server([str(path), "--pool-size", "1", "--token", TOKEN, *args], log_dir=path.parent)
    try:
        server.wait_ready()
    except BaseException:
        server.kill()
        raise
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = serve(tmp_path_factory, "--max-body-size", str(MAX_BODY))
    yield srv
    srv.kill()


# --- item 2: exact auth exemptions -------------------------------------------------------


def test_health_lookalike_paths_need_the_token(server: Server) -> None:
    for path in ("/_api/health/anything", "/_api/health/live/", "/_api/health/x/y", "/_api/healthz"):
        r = server.get(path)
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert "three segments" not in r.text and "health-like" not in r.text
    assert server.get("/_api/health/anything", headers=AUTH).text == "health-like\n"
    assert server.get("/_api/health/live").status_code == 200
    assert server.get("/_api/health/ready").status_code == 200


def test_notebook_route_under_api_prefix_is_a_compile_error_naming_its_cell() -> None:
    with pytest.raises(CompileError) as err:
        compile_notebook(notebook("x = 1", "# GET /_api/health/secret\nprint(1)", "# GET /ok\nprint(2)"))
    (problem,) = err.value.problems
    assert problem.cell == 2
    assert "/_api/" in problem.message


# --- item 3: errors without echo ----------------------------------------------------------


def test_failing_cell_does_not_echo_request_headers_or_body(server: Server) -> None:
    secret_body = {"password": "body-secret-never-echoed"}
    r = server.request(
        "POST", "/fail", json=secret_body, headers={**AUTH, "Cookie": COOKIE, "X-Upstream-Auth": "Basic abc"}
    )
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "ValueError" and body["message"] == "bad thing"
    text = r.text
    for leaked in ("c00kie-value-never-echoed", "body-secret-never-echoed", "Basic abc", "REQUEST ="):
        assert leaked not in text
    trace = "\n".join(body["traceback"])
    assert "raise ValueError('bad thing')" in trace and "----> 5" in trace  # the notebook's own lines
    assert "# POST /fail" in trace  # the annotation line stays, the injected assignment does not


def test_megabyte_post_to_failing_cell_answers_a_small_500(server: Server) -> None:
    payload = "A" * 1_000_000
    r = server.request("POST", "/fail", data=payload, headers={**AUTH, "Content-Type": "text/plain"})
    assert r.status_code == 500
    assert len(r.content) < 10_000
    assert "AAAAAAAAAA" not in r.text


def test_huge_exception_message_is_capped(server: Server) -> None:
    r = server.get("/longmessage", headers=AUTH)
    assert r.status_code == 500
    assert len(r.content) < 80_000
    assert r.json()["message"].endswith("[... truncated]")


def test_error_detail_message_leaves_the_traceback_out(tmp_path_factory: pytest.TempPathFactory) -> None:
    srv = serve(tmp_path_factory, "--error-detail", "message")
    try:
        r = srv.get("/fail", headers=AUTH)
        assert r.status_code == 500
        assert r.json() == {"error": "ValueError", "message": "bad thing"}
    finally:
        srv.kill()


def test_body_size_cell_sanity(server: Server) -> None:
    r = server.request(
        "POST", "/size", data=json.dumps("x" * 10), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.text == "10\n"

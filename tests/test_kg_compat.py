"""Kernel Gateway users' notebooks, settings and clients, served by nb2svc (issue 10).

Every notebook here is written the Kernel Gateway way (its tutorial's habits: client code
guarded by ``KERNEL_GATEWAY``, ``json.loads(REQUEST)``), and every expectation is Kernel
Gateway 3's documented or observable behaviour unless the test says nb2svc is stricter.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path

import nbformat

from tests.kernels_support import KernelClient, kernel_server, start_kernel
from tests.notebooks import md, notebook
from tests.support import Server

StartServer = Callable[..., Server]

#: As in Kernel Gateway's api_intro.ipynb: the last cell is a client for the service,
#: which must not run when the notebook is served (it would fail: nothing listens on port 9).
KG_NOTEBOOK = notebook(
    "import json, os",
    md("# A Kernel Gateway style API"),
    "# GET /hello/:name\nreq = json.loads(REQUEST)\nprint('hello', req['path']['name'])",
    "# GET /headers\nprint(json.dumps(json.loads(REQUEST)['headers']))",
    "# GET /env\nprint(os.environ.get('KERNEL_GATEWAY'), os.environ.get('NB2SVC'))",
    "# POST /echo\nprint(json.dumps(json.loads(REQUEST)['body']))",
    'if "KERNEL_GATEWAY" not in os.environ:\n'
    "    import urllib.request\n"
    '    print(urllib.request.urlopen("http://127.0.0.1:9/hello/world").read())',
    kernel="python3",
    language="python",
)


def write(nb: nbformat.NotebookNode, tmp_path: Path, name: str = "api.ipynb") -> str:
    path = tmp_path / name
    nbformat.write(nb, path)
    return str(path)


def raw_get(server: Server, path: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """A GET with exactly these header lines (repeats included), which requests cannot send."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("GET", path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_kernel_gateway_notebook_guards_its_client_code(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(write(KG_NOTEBOOK, tmp_path), "--pool-size", "1")
    assert server.get("/env").text == "1 1\n"
    assert server.get("/hello/world").text == "hello world\n"


def test_kernel_mode_kernels_see_the_markers_even_when_a_client_overrides(tmp_path: Path) -> None:
    with kernel_server(tmp_path) as server:
        kernel = start_kernel(server, name="python3", env={"KERNEL_GATEWAY": "overridden", "KERNEL_X": "x"})
        with KernelClient(server, kernel["id"]) as client:
            run = client.execute(
                "import os; print(os.getenv('KERNEL_GATEWAY'), os.getenv('NB2SVC'), os.getenv('KERNEL_X'))"
            )
    assert run.stdout == "1 1 x\n"


def test_response_details_kernel_gateway_clients_notice(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(write(KG_NOTEBOOK, tmp_path), "--pool-size", "1")
    # 404 body carries "reason", as Kernel Gateway's JSON errors do
    missing = server.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["reason"] == "Not Found"
    # %2F is decoded inside one segment
    assert server.get("/hello/a%2Fb").text == "hello a/b\n"
    assert server.get("/hello/50%25").text == "hello 50%\n"
    assert server.get("/hello/a/b").status_code == 404
    # a repeated header is a list of its values; one sent once stays a string
    status, body = raw_get(server, "/headers", [("X-Tag", "a"), ("X-Tag", "b"), ("X-One", "1")])
    assert status == 200
    headers = json.loads(body)
    assert headers["X-Tag"] == ["a", "b"]
    assert headers["X-One"] == "1"
    # GET answers carry an ETag; If-None-Match with it is a 304 without a body
    first = server.get("/hello/etag")
    tag = first.headers["ETag"]
    again = server.get("/hello/etag", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    assert server.get("/hello/other", headers={"If-None-Match": tag}).status_code == 200
    assert "ETag" not in server.request("POST", "/echo", json={"a": 1}).headers


def test_deliberately_stricter_than_kernel_gateway(start_server: StartServer, tmp_path: Path) -> None:
    """Kept on purpose (README, "Differences"): Kernel Gateway passes invalid JSON on as a
    string (its issue #313) and ignores a charset parameter; nb2svc answers 400 / parses it."""
    server = start_server(write(KG_NOTEBOOK, tmp_path), "--pool-size", "1")
    bad = server.request("POST", "/echo", data="{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"] == "BadRequest"
    ok = server.request(
        "POST", "/echo", data='{"a": 1}', headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.json() == {"a": 1}

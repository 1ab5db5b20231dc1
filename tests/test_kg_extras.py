"""Kernel Gateway's notebook-http extras, served by nb2svc (issue 10, item 3).

Each notebook here is written the Kernel Gateway way; each expectation is what Kernel
Gateway 3 does (read from its source, ``kernel_gateway/notebook_http``), unless the test
says where nb2svc differs:

- ``/_api/source`` (``KG_ALLOW_NOTEBOOK_DOWNLOAD``): a tornado ``StaticFileHandler`` on the
  seed file behind the token, so the file's bytes as ``application/octet-stream`` (Python's
  ``mimetypes`` knows no ``.ipynb``); a 404 when not enabled.
- ``/public/...`` (``KG_STATIC_PATH``): a plain ``StaticFileHandler``, without the token
  mixin: no token needed; a 404 when not enabled.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat

from tests.notebooks import md, notebook
from tests.support import REPO, Server

StartServer = Callable[..., Server]
TOKEN = "kg-extras-secret"

KG_NOTEBOOK = notebook(
    "import json",
    md("# Hello"),
    "# GET /hello/:name\nprint('hello', json.loads(REQUEST)['path']['name'])",
    kernel="python3",
    language="python",
)


def write(nb: nbformat.NotebookNode, folder: Path, name: str = "api.ipynb") -> Path:
    path = folder / name
    nbformat.write(nb, path)
    return path


def raw_get(server: Server, path: str) -> tuple[int, bytes]:
    """A GET with the path exactly as written (requests would normalise ``..``)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


# --- /_api/source ----------------------------------------------------------------------


def test_source_is_off_by_default_like_kernel_gateway(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(str(write(KG_NOTEBOOK, tmp_path)), "--pool-size", "1")
    answer = server.get("/_api/source")
    assert answer.status_code == 404
    assert answer.json()["reason"] == "Not Found"


def test_source_answers_the_notebook_file_behind_the_token(start_server: StartServer, tmp_path: Path) -> None:
    path = write(KG_NOTEBOOK, tmp_path, "weird name #1.ipynb")
    server = start_server(
        str(path), "--pool-size", "1", env={"KG_ALLOW_NOTEBOOK_DOWNLOAD": "True", "NB2SVC_TOKEN": TOKEN}
    )
    assert server.get("/_api/source").status_code == 401
    answer = server.get("/_api/source", headers=auth())
    assert answer.status_code == 200
    assert answer.content == path.read_bytes()  # verbatim, as Kernel Gateway's file handler
    assert answer.headers["Content-Type"] == "application/octet-stream"
    nb = answer.json()
    assert {"cells", "metadata", "nbformat", "nbformat_minor"} <= nb.keys()  # Kernel Gateway's own test
    etag = answer.headers["ETag"]
    again = server.get("/_api/source", headers={**auth(), "If-None-Match": etag})
    assert again.status_code == 304
    assert server.get("/hello/kg", headers=auth()).text == "hello kg\n"


def test_source_of_a_bundle_is_its_notebook(start_server: StartServer, tmp_path: Path) -> None:
    path = write(KG_NOTEBOOK, tmp_path)
    bundle = tmp_path / "bundle"
    subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", str(path), "-o", str(bundle)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    server = start_server(str(bundle), "--pool-size", "1", "--allow-notebook-download")
    answer = server.get("/_api/source")
    assert answer.status_code == 200
    assert answer.content == path.read_bytes()


# --- /public -----------------------------------------------------------------------------


def site(tmp_path: Path) -> Path:
    public = tmp_path / "public"
    (public / "js").mkdir(parents=True)
    (public / "index.html").write_text("<!doctype html><title>kg</title>", encoding="utf-8")
    (public / "js" / "app.js").write_text("console.log(42)\n", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("not public\n", encoding="utf-8")
    return public


def test_public_is_off_by_default_like_kernel_gateway(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(str(write(KG_NOTEBOOK, tmp_path)), "--pool-size", "1")
    assert server.get("/public").status_code == 404
    assert server.get("/public/index.html").status_code == 404


def test_public_serves_the_static_path_without_a_token(start_server: StartServer, tmp_path: Path) -> None:
    public = site(tmp_path)
    server = start_server(
        str(write(KG_NOTEBOOK, tmp_path)),
        "--pool-size",
        "1",
        "--base-url",
        "/kg",
        env={"KG_STATIC_PATH": str(public), "NB2SVC_TOKEN": TOKEN},
        ready=False,
    )
    server.wait_ready(path="/kg/_api/health/ready")
    page = server.get("/kg/public/index.html")  # Kernel Gateway's test: no token, text/html
    assert page.status_code == 200
    assert page.headers["Content-Type"].split(";")[0] == "text/html"
    assert page.text == "<!doctype html><title>kg</title>"
    script = server.get("/kg/public/js/app.js")
    assert script.status_code == 200 and script.text == "console.log(42)\n"
    assert server.get("/kg/public/missing.html").status_code == 404
    assert server.get("/kg/public/js").status_code == 404  # a directory is not a file
    assert server.get("/kg/hello/x").status_code == 401  # endpoints still need the token
    assert server.get("/kg/_api/source", headers=auth()).status_code == 404  # not enabled


def test_public_refuses_to_leave_the_static_path(start_server: StartServer, tmp_path: Path) -> None:
    public = site(tmp_path)
    server = start_server(str(write(KG_NOTEBOOK, tmp_path)), "--pool-size", "1", "--static-path", str(public))
    for path in (
        "/public/../secret.txt",
        "/public/js/../../secret.txt",
        "/public/..%2Fsecret.txt",
        "/public/%2E%2E/secret.txt",
        "/public//etc/passwd",
        "/public/" + str(tmp_path / "secret.txt"),
        "/public/..\\secret.txt",
    ):
        status, body = raw_get(server, path)
        # 308: werkzeug merges the double slash into /public/etc/passwd, itself a 404
        assert status == (308 if "//" in path else 404), (path, status, body)
        assert b"not public" not in body


def test_static_path_must_be_a_directory(tmp_path: Path) -> None:
    path = write(KG_NOTEBOOK, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(path), "--static-path", str(tmp_path / "nope")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--static-path (NB2SVC_STATIC_PATH): no such directory" in result.stderr


def test_the_worktree_code_is_what_runs() -> None:
    """The servers above are this checkout's nb2svc (cwd = the repo puts it first on sys.path)."""
    out = subprocess.run(
        [sys.executable, "-c", "import nb2svc, json; print(json.dumps(nb2svc.__file__))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(json.loads(out)).resolve().is_relative_to(REPO.resolve())


# --- the swagger cell parser -------------------------------------------------------------

#: Written as for Kernel Gateway's ``KG_CELL_PARSER=kernel_gateway.notebook_http.swagger.parser``:
#: the document in a markdown cell's fenced block, operations implemented by
#: ``# operationId:`` cells, a ResponseInfo cell, client code guarded by KERNEL_GATEWAY.
SWAGGER_DOC = {
    "swagger": "2.0",
    "info": {"version": "0.1.0", "description": "Greets people"},
    "paths": {
        "/greet": {
            "get": {
                "operationId": "greet",
                "summary": "Say hello",
                "parameters": [{"name": "name", "in": "query", "type": "string"}],
            }
        },
        "/items": {"post": {"operationId": "addItem", "summary": "Add an item"}},
    },
}
SWAGGER_NOTEBOOK = notebook(
    "import json, os\nitems = []",
    md("# Greeter\n\n```json\n" + json.dumps(SWAGGER_DOC, indent=2) + "\n```\n"),
    "# operationId: greet\nreq = json.loads(REQUEST)\nprint('hello', req['path']['name'])",
    "# operationId: addItem\nitems.append(json.loads(REQUEST)['body'])\nprint(json.dumps(items))",
    "# ResponseInfo operationId: addItem\nprint(json.dumps({'status': 201, "
    "'headers': {'Content-Type': 'application/json'}}))",
    'if "KERNEL_GATEWAY" not in os.environ:\n    raise SystemExit("client code ran in the service")',
    kernel="python3",
    language="python",
)


def test_swagger_notebook_serves_its_operations(start_server: StartServer, tmp_path: Path) -> None:
    path = write(SWAGGER_NOTEBOOK, tmp_path, "greeter.ipynb")
    server = start_server(
        str(path), "--pool-size", "1", env={"KG_CELL_PARSER": "kernel_gateway.notebook_http.swagger.parser"}
    )
    # Kernel Gateway's route: the document's path plus /:name per named parameter
    assert server.get("/greet/ada").text == "hello ada\n"
    assert server.get("/greet").status_code == 404
    added = server.request("POST", "/items", json={"n": 1})
    assert added.status_code == 201  # the ResponseInfo cell of the operation
    assert added.headers["Content-Type"] == "application/json"
    assert added.json() == [{"n": 1}]
    assert server.request("PUT", "/items").status_code == 405
    # swagger.json is the notebook's document, info.title defaulting to the notebook's name
    assert server.get("/_api/spec/swagger.json").json() == {
        **SWAGGER_DOC,
        "info": {**SWAGGER_DOC["info"], "title": "greeter"},
    }
    # ...merged into nb2svc's OpenAPI document: same operationIds, the document's words
    openapi = server.get("/openapi.json").json()
    assert openapi["info"]["description"] == "Greets people"
    operation = openapi["paths"]["/greet/{name}"]["get"]
    assert operation["operationId"] == "greet" and operation["summary"] == "Say hello"
    assert openapi["paths"]["/items"]["post"]["operationId"] == "addItem"


def test_swagger_notebook_without_the_parser_names_it(tmp_path: Path) -> None:
    path = write(SWAGGER_NOTEBOOK, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cell 3: '# operationId: greet' is an annotation of Kernel Gateway's swagger cell parser" in (
        result.stderr
    )
    assert "--cell-parser swagger" in result.stderr


def test_swagger_bundle_keeps_the_document(start_server: StartServer, tmp_path: Path) -> None:
    path = write(SWAGGER_NOTEBOOK, tmp_path, "greeter.ipynb")
    bundle = tmp_path / "bundle"
    subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", str(path), "-o", str(bundle), "--cell-parser", "swagger"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    server = start_server(str(bundle), "--pool-size", "1")
    assert server.get("/greet/bob").text == "hello bob\n"
    assert server.get("/_api/spec/swagger.json").json()["paths"] == SWAGGER_DOC["paths"]

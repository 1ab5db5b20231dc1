"""Kernel Gateway users' notebooks, settings and clients, served by nb2svc (issue 10).

Every notebook here is written the Kernel Gateway way (its tutorial's habits: client code
guarded by ``KERNEL_GATEWAY``, ``json.loads(REQUEST)``), and every expectation is Kernel
Gateway 3's documented or observable behaviour unless the test says nb2svc is stricter.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest

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


# --- a notebook-less start from the environment (item 2) -----------------------------------


@pytest.fixture
def notebook_site(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server for seed URLs: the KG notebook at /api.ipynb, a kernel-mode
    seed at /seed.ipynb; anything else 404."""
    site = tmp_path / "site"
    site.mkdir()
    write(KG_NOTEBOOK, site)
    write(notebook("import json", "SEEDED = 'yes'", kernel="python3", language="python"), site, "seed.ipynb")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def serve_and_fail(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", "--port", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kernel_gateway_container_settings_start_api_mode_from_a_url(
    start_server: StartServer, notebook_site: str
) -> None:
    env = {"KG_API": "kernel_gateway.notebook_http", "KG_SEED_URI": notebook_site + "/api.ipynb"}
    server = start_server("--pool-size", "1", env=env)
    assert server.get("/hello/kg").text == "hello kg\n"


def test_file_uri_and_nb2svc_names(start_server: StartServer, tmp_path: Path) -> None:
    uri = Path(write(KG_NOTEBOOK, tmp_path)).as_uri()
    server = start_server("--pool-size", "1", env={"NB2SVC_MODE": "api", "NB2SVC_NOTEBOOK": uri})
    assert server.get("/env").text == "1 1\n"


def test_kernel_mode_from_kg_api_with_a_seed_url(notebook_site: str, tmp_path: Path) -> None:
    env = {"KG_API": "kernel_gateway.jupyter_websocket", "KG_SEED_URI": notebook_site + "/seed.ipynb"}
    with kernel_server(tmp_path, env=env) as server:
        kernel = start_kernel(server, name="python3")
        with KernelClient(server, kernel["id"]) as client:
            assert client.execute("print(json.dumps(SEEDED))").stdout == '"yes"\n'  # both from the seed


def test_seed_url_failures_are_one_clear_line(notebook_site: str) -> None:
    missing = serve_and_fail({"KG_SEED_URI": notebook_site + "/nope.ipynb"})
    assert missing.returncode == 1 and "answered 404" in missing.stderr
    big = serve_and_fail({"KG_SEED_URI": notebook_site + "/api.ipynb", "NB2SVC_SEED_MAX_BYTES": "100"})
    assert big.returncode == 1 and "larger than 100 bytes" in big.stderr
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api.ipynb"
        hung = serve_and_fail({"KG_SEED_URI": url, "NB2SVC_SEED_TIMEOUT": "0.5"})
    assert hung.returncode == 1 and "within 0.5s" in hung.stderr
    odd = serve_and_fail({"KG_SEED_URI": "ftp://example.invalid/a.ipynb"})
    assert odd.returncode == 1 and "unsupported scheme" in odd.stderr
    bad_mode = serve_and_fail({"KG_API": "kernel_gateway.nope"})
    assert bad_mode.returncode == 2 and "KG_API" in bad_mode.stderr
    assert "Traceback" not in missing.stderr + big.stderr + hung.stderr


def test_ip_is_an_alias_of_host() -> None:
    done = subprocess.run([sys.executable, "-m", "nb2svc", "serve", "--help"], capture_output=True, text=True)
    assert "--host, --ip" in done.stdout


def test_a_missing_notebook_from_the_environment_is_a_usage_error(tmp_path: Path) -> None:
    done = serve_and_fail({"NB2SVC_NOTEBOOK": (tmp_path / "gone.ipynb").as_uri()})
    assert done.returncode == 2 and "no such file" in done.stderr


# --- a seed as TARGET, and Kernel Gateway's own flag spellings (issue 22) ---------------------


def nb2svc_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", *args], capture_output=True, text=True, timeout=120
    )


def test_a_url_or_file_uri_is_a_target(notebook_site: str, tmp_path: Path) -> None:
    fetched = nb2svc_serve(notebook_site + "/api.ipynb", "--pool-size", "1", "--get", "/hello/kg")
    assert (fetched.returncode, fetched.stdout) == (0, "hello kg\n"), fetched.stderr
    uri = Path(write(KG_NOTEBOOK, tmp_path)).as_uri()
    local = nb2svc_serve(uri, "--pool-size", "1", "--get", "/hello/file")
    assert (local.returncode, local.stdout) == (0, "hello file\n"), local.stderr
    missing = nb2svc_serve((tmp_path / "nope.ipynb").as_uri())
    assert missing.returncode == 2 and "nope.ipynb: no such file" in missing.stderr
    unfetchable = nb2svc_serve(notebook_site + "/nope.ipynb")
    assert unfetchable.returncode == 1 and "answered 404" in unfetchable.stderr
    assert "Traceback" not in missing.stderr + unfetchable.stderr


def test_kernel_gateway_command_line_works_unchanged(notebook_site: str) -> None:
    result = nb2svc_serve(
        "--KernelGatewayApp.api=kernel_gateway.notebook_http",
        f"--KernelGatewayApp.seed_uri={notebook_site}/api.ipynb",
        "--KernelGatewayApp.prespawn_count",
        "1",
        "--get",
        "/hello/kg",
    )
    assert (result.returncode, result.stdout) == (0, "hello kg\n"), result.stderr


def test_kernel_gateway_spellings_translate_to_nb2svc_flags() -> None:
    from nb2svc.kg_flags import translate

    assert translate(
        ["--api=kernel_gateway.jupyter_websocket", "--seed_uri", "s.ipynb", "--prespawn_count=2"]
    ) == [
        "--kernels",
        "--prespawn",
        "2",
        "--seed",
        "s.ipynb",
    ]
    assert translate(
        [
            "--KernelGatewayApp.seed_uri=n.ipynb",
            "--KernelGatewayApp.ip=0.0.0.0",
            "--KernelGatewayApp.auth_token=t",
            "--KernelGatewayApp.list_kernels=False",
            "--NotebookHTTPPersonality.allow_notebook_download=True",
            "--NotebookHTTPPersonality.comment_prefix=//",
            "--KernelGatewayApp.log_level=DEBUG",
            "--port=9000",
        ]
    ) == [
        "--host",
        "0.0.0.0",
        "--token",
        "t",
        "--no-list-kernels",
        "--allow-notebook-download",
        "--comment-prefix",
        "//",
        "--log-level",
        "debug",
        "--port=9000",
        "n.ipynb",
    ]
    assert translate(["--Other.x=1", "--ip", "h"]) == ["--Other.x=1", "--ip", "h"]  # click judges these


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--port_retries=3", "--port_retries: not an nb2svc option; a taken port is an error here"),
        (
            "--KernelGatewayApp.certfile=c.pem",
            "--KernelGatewayApp.certfile: not an nb2svc option; terminate TLS",
        ),
        ("--KernelGatewayApp.api=nope", "'nope' is not kernel_gateway.notebook_http or"),
        ("--KernelGatewayApp.unheard_of=1", "not a Kernel Gateway option nb2svc reads"),
    ],
)
def test_kernel_gateway_spellings_nb2svc_lacks_say_what_to_write(arg: str, message: str) -> None:
    result = nb2svc_serve(arg)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

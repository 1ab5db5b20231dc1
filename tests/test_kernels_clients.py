"""Real Jupyter clients, unchanged, against kernel mode.

(a) ``jupyter server --gateway-url``: Jupyter Server uses us for every kernel; the test
    talks only to Jupyter Server's own REST and websocket API.
(b) ``@jupyterlab/services`` (JupyterLab's client library) in Node, from npm
    (``tests/js/package.json``; installed on first use, skipped only without node/npm).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernels_support import AUTH, TOKEN, JupyterServer, KernelClient, kernel_server
from tests.support import REPO, Server, wait_for

JS_DIR = REPO / "tests" / "js"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with kernel_server(tmp_path_factory.mktemp("kernels-clients")) as srv:
        yield srv


def test_jupyter_server_uses_us_as_its_gateway(server: Server, tmp_path: Path) -> None:
    pytest.importorskip("jupyter_server", reason="jupyter_server is a [test] extra")
    jupyter = JupyterServer(server, tmp_path)
    try:
        jupyter.wait_ready()
        specs = jupyter.request("GET", "/api/kernelspecs").json()
        assert "python3" in specs["kernelspecs"]
        created = jupyter.request("POST", "/api/kernels", json={"name": "python3"})
        assert created.status_code == 201, created.text
        kid = created.json()["id"]
        ours = server.get("/api/kernels", headers=AUTH).json()
        assert kid in [k["id"] for k in ours]  # Jupyter Server's kernel is our kernel

        with KernelClient(jupyter, kid, token=jupyter.token, query_token=True) as client:
            result = client.execute("print(1+1)")
            assert result.status == "ok" and result.stdout == "2\n"
        assert jupyter.request("POST", f"/api/kernels/{kid}/restart").status_code == 200
        assert jupyter.request("DELETE", f"/api/kernels/{kid}").status_code == 204
        wait_for(
            lambda: server.get(f"/api/kernels/{kid}", headers=AUTH).status_code == 404, 10, "kernel gone"
        )
    finally:
        jupyter.stop()


def _node_tools() -> tuple[str, str] | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    return (node, npm) if node and npm else None


def test_jupyterlab_services_client_runs_code(server: Server) -> None:
    tools = _node_tools()
    if tools is None:
        pytest.skip("node and npm are needed for the @jupyterlab/services client test (not found on PATH)")
    node, npm = tools
    if not (JS_DIR / "node_modules" / "@jupyterlab" / "services").is_dir():
        install = "ci" if (JS_DIR / "package-lock.json").exists() else "install"
        subprocess.run(
            [npm, install, "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR, check=True, timeout=600
        )
    done = subprocess.run(
        [node, "client.js", server.base, TOKEN], cwd=JS_DIR, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok" and result["stdout"] == "2\n"
    assert result["subprotocol"] == "v1.kernel.websocket.jupyter.org" and result["language"] == "python"
    assert server.get(f"/api/kernels/{result['kernelId']}", headers=AUTH).status_code == 404  # shut down

"""A browser page on another origin talks straight to kernel mode, as Thebe-style pages do.

The page (``tests/js/browser_page.js``) is ``@jupyterlab/services`` from npm, bundled by
esbuild (both pinned in ``tests/js/package.json``), served from another loopback port.
The server gets only ``--token`` and ``--allow-origin`` (Jupyter Server needs no more):
the page checks ``GET /api/status``, starts a kernel with the token, runs ``print(6*7)``
and shows the output, read here from the DOM of a real headless Chromium.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.kernels_support import AUTH, TOKEN, kernel_server
from tests.support import free_port

JS_DIR = Path(__file__).resolve().parent / "js"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>kernel page</title></head>
<body><pre id="out"></pre><pre id="error"></pre><script src="page.js"></script></body></html>
"""


def bundle(out_dir: Path) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        pytest.skip("node and npm are needed to bundle @jupyterlab/services for the page (not on PATH)")
    esbuild = JS_DIR / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists() or not (JS_DIR / "node_modules" / "@jupyterlab" / "services").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR, check=True, timeout=600
        )
    subprocess.run(
        [
            str(esbuild),
            "browser_page.js",
            "--bundle",
            "--platform=browser",
            "--format=iife",
            "--define:process.env.NODE_ENV='production'".replace("'", '"'),
            "--log-level=warning",
            f"--outfile={out_dir / 'page.js'}",
        ],
        cwd=JS_DIR,
        check=True,
        timeout=300,
    )
    (out_dir / "index.html").write_text(PAGE)


@pytest.fixture
def page_origin(tmp_path: Path) -> Iterator[str]:
    """The bundled page, served by a static file server on its own loopback port."""
    site = tmp_path / "site"
    site.mkdir()
    bundle(site)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_page_on_another_origin_runs_code_with_a_token(
    page_origin: str, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with kernel_server(tmp_path, "--allow-origin", page_origin) as server:
        query = urlencode({"server": server.base + "/", "token": TOKEN})
        browser.get(f"{page_origin}/index.html?{query}")  # type: ignore[attr-defined]

        def finished(driver: object) -> tuple[str, str] | bool:
            out = driver.find_element(By.ID, "out").text  # type: ignore[attr-defined]
            err = driver.find_element(By.ID, "error").text  # type: ignore[attr-defined]
            return (out, err) if out or err else False

        out, err = WebDriverWait(browser, 60).until(finished)
        assert err == "" and out == "42", f"page error: {err}\nserver log:\n{server.log()}"


def test_preflight_status_and_identity_as_jupyter_server(tmp_path: Path) -> None:
    origin = "http://127.0.0.1:1"
    with kernel_server(tmp_path, "--allow-origin", origin) as server:
        preflight = server.request(
            "OPTIONS",
            "/api/kernels",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,x-custom",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == origin
        assert preflight.headers["Access-Control-Allow-Headers"] == "authorization,x-custom"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert server.get("/api/status").status_code == 401  # the token is needed, as in Jupyter Server
        status = server.get("/api/status", headers=AUTH).json()
        assert list(status) == ["connections", "kernels", "last_activity", "started"]
        assert status["kernels"] == 0 and status["connections"] == 0
        assert status["started"].endswith("Z")
        me = server.get("/api/me", params={"permissions": '{"kernels": ["read", "write"]}'}, headers=AUTH)
        assert me.json()["identity"]["username"] == "anonymous"
        assert me.json()["permissions"] == {"kernels": ["read", "write"], "updatable_fields": []}
        bad = server.get("/api/me", params={"permissions": "[1]"}, headers=AUTH)
        assert bad.status_code == 400 and bad.json()["reason"] == "Bad Request"

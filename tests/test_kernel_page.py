"""``examples/kernel-page``: the kernel-mode web page, served by nb2svc and driven in a real
headless Chromium (Debian's chromium and chromedriver; skips, saying so, where absent).

One ``nb2svc serve --kernels --token T --static-path examples/kernel-page`` on a free
loopback port: the page loads without the token, starts its kernel with it, runs cells over
the channels websocket and shows their stream output, results, a PNG and an error, read back
from the DOM; leaving the page stops its kernel and the kernel's process.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.kernels_support import AUTH, TOKEN, kernel_server
from tests.support import REPO, Server, alive, wait_for

PAGE_DIR = REPO / "examples" / "kernel-page"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with kernel_server(tmp_path, "--static-path", str(PAGE_DIR)) as running:
        yield running


def png(width: int, height: int) -> bytes:
    """A real PNG of ``width`` x ``height`` grey pixels (the browser must decode it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_the_page_is_plain_files_that_load_nothing_from_the_network() -> None:
    html = (PAGE_DIR / "index.html").read_text()
    script = (PAGE_DIR / "app.js").read_text()
    assert not re.search(r"(src|href)=\"https?://", html), "the page must not load anything from a CDN"
    assert '<script type="module" src="app.js">' in html
    assert not re.search(r"^\s*import\b", script, re.MULTILINE), "no modules to fetch or bundle"
    assert "nb2svc serve --kernels --token s3cret --static-path examples/kernel-page" in html
    readme = (REPO / "README.md").read_text()
    assert "nb2svc serve --kernels --token s3cret --static-path examples/kernel-page" in readme


def run_cell(browser: Any, code: str) -> Any:
    """Type ``code``, press Run and wait for its cell to finish (reply and idle seen)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    before = len(browser.find_elements(By.CSS_SELECTOR, "#cells .cell"))
    wait.until(ec.element_to_be_clickable((By.ID, "run-button")))
    field = browser.find_element(By.ID, "code")
    field.clear()  # the page opens with a sample cell in it
    field.send_keys(code)
    browser.find_element(By.ID, "run-button").click()
    cell = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cells .cell")[before:] or False)[0]
    wait.until(lambda _: cell.get_attribute("data-state") == "done")
    return cell


def kernel_ids(server: Server) -> list[str]:
    return [k["id"] for k in server.get("/api/kernels", headers=AUTH).json()]


def test_the_page_runs_cells_and_stops_its_kernel_when_left(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # The files need no token; the API does; nothing outside the folder is served.
    page = server.get("/public/index.html")
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "javascript" in server.get("/public/app.js").headers["Content-Type"]  # module scripts need it
    assert server.get("/public/..%2F..%2FREADME.md").status_code == 404
    assert server.get("/public/", headers=AUTH).status_code == 404  # no directory listing
    for path in (
        "/api",
        "/api/kernels",
        "/api/sessions",
        "/api/kernelspecs",
        "/kernelspecs/python3/logo-64x64.png",
    ):
        assert server.get(path).status_code == 401, path  # the exemption is the files', nothing else

    browser.get(server.url(f"/public/index.html#token={TOKEN}"))
    cell = run_cell(browser, "print(6*7)")
    assert cell.find_element(By.CSS_SELECTOR, ".stream.stdout").text == "42"
    assert cell.get_attribute("data-status") == "ok"
    assert cell.find_element(By.CSS_SELECTOR, ".source").get_attribute("data-prompt") == "[1]"

    assert run_cell(browser, "6 * 7").find_element(By.CSS_SELECTOR, ".result.text").text == "42"

    data = base64.b64encode(png(3, 2)).decode()
    code = f"import base64; from IPython.display import Image; display(Image(base64.b64decode('{data}')))"
    shown = run_cell(browser, code).find_element(By.CSS_SELECTOR, "img.image")
    size = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", shown)
    assert size == [3, 2], "the browser decoded the kernel's PNG"

    failed = run_cell(browser, "1/0")
    assert failed.get_attribute("data-status") == "error"
    assert failed.find_element(By.CSS_SELECTOR, ".error .ename").text == "ZeroDivisionError"
    assert "division by zero" in failed.find_element(By.CSS_SELECTOR, ".error").text
    assert "\x1b[" not in failed.find_element(By.CSS_SELECTOR, ".error").text

    # The page's kernel is the server's only one, and the page is its client.
    kernel_id = browser.find_element(By.ID, "kernel").text
    models = server.get("/api/kernels", headers=AUTH).json()
    assert [(k["id"], k["connections"]) for k in models] == [(kernel_id, 1)]
    pids = server.find_kernels()
    assert len(pids) == 1

    browser.get("about:blank")  # leaving the page: its pagehide handler deletes the kernel
    deleted = f"DELETE /api/kernels/{kernel_id} 204"
    wait_for(lambda: deleted in server.log(), 30, "the page's DELETE of its kernel")
    assert kernel_ids(server) == []
    wait_for(lambda: not any(alive(pid) for pid in pids), 30, "the kernel process to exit")

    # Without the token the page says why, and starts nothing.
    browser.get(server.url("/public/index.html"))
    status = WebDriverWait(browser, 30).until(
        lambda d: (s := d.find_element(By.ID, "status")).get_attribute("class") == "error" and s.text
    )
    assert "401" in status and "token" in status
    assert browser.find_element(By.ID, "run-button").get_attribute("disabled") is not None
    assert kernel_ids(server) == []
    assert requests.get(server.url("/api/kernels"), timeout=10).status_code == 401

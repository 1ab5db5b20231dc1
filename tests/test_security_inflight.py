"""Issue 23, medium: requests in flight are not cut by a reload, and streams notice a client
that left even while the cell prints nothing.

Real servers on loopback; every wait is on a condition (a file the test creates, a log
line), never a sleep.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import nbformat
import requests
from nbformat.v4 import new_code_cell

from tests.notebooks import notebook
from tests.support import Server, wait_for

StartServer = Callable[..., Server]


def streamed(source: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["nb2svc"] = {"response": "stream"}
    return cell


def save_streaming(path: Path, version: str, release: Path) -> None:
    """A stream that prints its version, then waits (silently) until ``release`` exists."""
    nbformat.write(
        notebook(
            "import os, time",
            streamed(
                "# GET /stream\n"
                f"print('{version} started', flush=True)\n"
                f"while not os.path.exists({str(release)!r}):\n"
                "    time.sleep(0.05)\n"
                f"print('{version} finished', flush=True)"
            ),
            kernel="python3",
            language="python",
        ),
        path,
    )


def test_a_stream_started_before_a_reload_finishes_on_its_version(
    start_server: StartServer, tmp_path: Path
) -> None:
    path, release = tmp_path / "live.ipynb", tmp_path / "release"
    save_streaming(path, "v1", release)
    server = start_server(str(path), "--pool-size", "1", "--reload")
    with requests.get(server.url("/stream"), stream=True, timeout=60) as r:
        lines = r.iter_lines(decode_unicode=True)
        assert next(lines) == "v1 started"
        save_streaming(path, "v2", release)
        wait_for(lambda: "version 2 serving" in server.log(), 60, "the new version to serve")
        release.write_text("go")
        rest = list(lines)
    assert rest == ["v1 finished"], rest
    assert "shutting down" not in server.log()
    wait_for(
        lambda: len(server.find_kernels()) == 1, 30, "the old version's kernel to stop once the stream ended"
    )
    assert server.get("/stream").text.splitlines() == ["v2 started", "v2 finished"]


SILENT = notebook(
    "import json, os, time",
    streamed("# GET /silent\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.05)"),
    streamed("# GET /mark/:name\nopen(json.loads(REQUEST)['path']['name'], 'w').close()\nprint('marked')"),
    "# GET /hold/:name\nwhile not os.path.exists(json.loads(REQUEST)['path']['name']):\n    time.sleep(0.05)",
    "# GET /quick\nprint('quick')",
    streamed(
        "# GET /flood\nfor i in range(64):\n    print(str(i) * (1 << 20), flush=True)\nprint('flood done')"
    ),
    kernel="python3",
    language="python",
)


def silent_server(start_server: StartServer, tmp_path: Path) -> Server:
    path = tmp_path / "silent.ipynb"
    nbformat.write(SILENT, path)
    return start_server(str(path), "--pool-size", "1", "--request-timeout", "300", "--queue-timeout", "60")


def gauge(server: Server, name: str) -> float:
    """A gauge of ``/_api/metrics`` (one pool: one sample)."""
    for line in server.get("/_api/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /_api/metrics")


def open_stream(server: Server, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def test_a_client_leaving_a_silent_stream_frees_its_kernel(start_server: StartServer, tmp_path: Path) -> None:
    server = silent_server(start_server, tmp_path)
    sock = open_stream(server, "/silent")
    received = b""
    while b"started" not in received:
        received += sock.recv(4096)
    sock.close()  # the cell prints nothing more: only the watcher can notice
    wait_for(
        lambda: "GET /silent: the client left; interrupting the cell" in server.log(), 30, "the departure"
    )
    assert server.get("/quick", timeout=60).text == "quick\n"  # the kernel is free again


def test_a_stream_whose_client_left_while_queued_never_runs(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = silent_server(start_server, tmp_path)
    release, marker = tmp_path / "release", tmp_path / "marker"  # the kernels' working directory
    holder = threading.Thread(target=server.get, args=("/hold/release",), kwargs={"timeout": 120})
    holder.start()
    wait_for(lambda: gauge(server, "nb2svc_pool_kernels_busy") == 1, 30, "the kernel held")
    sock = open_stream(server, "/mark/marker")
    wait_for(lambda: gauge(server, "nb2svc_pool_waiting_requests") == 1, 30, "the stream queued")
    sock.close()
    wait_for(lambda: "GET /mark/marker: the client left; not running it" in server.log(), 30, "the departure")
    release.write_text("go")
    holder.join(60)
    assert server.get("/quick", timeout=60).text == "quick\n"  # after anything queued before it
    assert not marker.exists()


def test_a_client_that_does_not_read_cannot_make_the_worker_buffer_everything(
    start_server: StartServer, tmp_path: Path
) -> None:
    """64 MiB printed to a client that reads nothing: at most 16 MiB wait, then the stream ends."""
    server = silent_server(start_server, tmp_path)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /flood HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    wait_for(lambda: "GET /flood: the client reads too slowly" in server.log(), 60, "the stream to be cut")
    assert server.get("/quick", timeout=60).text == "quick\n"  # the cell was interrupted
    received = bytearray()
    while chunk := sock.recv(1 << 20):
        received += chunk
    sock.close()
    assert len(received) < 40 * (1 << 20)  # not all of the 64 MiB were kept for it
    assert received.endswith(b"so the cell was interrupted and the stream ended\n\r\n0\r\n\r\n")  # chunked
    assert b"error: ClientTooSlow" in received and b"flood done" not in received

"""Issue 23, medium: ``NB2SVC_SEED_TIMEOUT`` bounds the whole seed fetch.

The attack: a seed server that trickles its headers or its body a byte at a time never
lets a single read time out, so a per-read timeout never fires. Real sockets on loopback;
the trickle goes on until the test stops it, so a fetch that is not bounded hangs (and
the per-test timeout fails it).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from nb2svc.seed_uri import SeedError, resolve

NOTEBOOK = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


class Trickler:
    """An HTTP server on loopback that sends ``head`` at once, then ``tail`` a byte at a time."""

    def __init__(self, head: bytes, tail: bytes) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._head, self._tail = head, tail
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            conn.sendall(self._head)
            for byte in self._tail:
                if self._stop.wait(0.05):  # the trickle's pace, not a synchronisation
                    return
                conn.sendall(bytes([byte]))
            self._stop.wait()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()


@pytest.fixture
def trickle(request: pytest.FixtureRequest) -> Iterator[type[Trickler]]:
    servers: list[Trickler] = []

    def start(head: bytes, tail: bytes) -> Trickler:
        server = Trickler(head, tail)
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def test_trickled_headers_cannot_outlast_the_seed_timeout(trickle: type[Trickler]) -> None:
    server = trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 100_000)
    with pytest.raises(SeedError, match=r"no complete answer within 1s \(NB2SVC_SEED_TIMEOUT\)"):
        resolve(f"http://127.0.0.1:{server.port}/nb.ipynb", {"NB2SVC_SEED_TIMEOUT": "1"})


def test_a_trickled_body_cannot_outlast_the_seed_timeout(trickle: type[Trickler]) -> None:
    body = NOTEBOOK + b" " * 100_000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    server = trickle(head, body)
    with pytest.raises(SeedError, match="within 1s"):
        resolve(f"http://127.0.0.1:{server.port}/nb.ipynb", {"NB2SVC_SEED_TIMEOUT": "1"})


def test_a_prompt_seed_server_is_still_fetched(trickle: type[Trickler]) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(NOTEBOOK)
    server = trickle(head + NOTEBOOK, b"")
    path = resolve(f"http://127.0.0.1:{server.port}/nb.ipynb", {"NB2SVC_SEED_TIMEOUT": "30"})
    assert path.read_bytes() == NOTEBOOK and path.name == "nb.ipynb"

"""Issue 23, low: slow connections cannot hold a worker's connection slots for long.

The attack: a client opens connections and sends headers a byte at a time, so every slot
stays taken for up to ``--header-timeout`` (10 s), and reopens them as they are closed;
every other client then waits about that long for a slot. Now, once most slots are open,
a connection that starts waiting for its request gets about a second.

A real gevent server with nb2svc's connection handler on loopback, in a subprocess, with
20 slots (a worker has 1,000; the mechanism is the same) and a 60 s header timeout.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from nb2svc.runtime.worker import PRESSED_TIMEOUT, PRESSURE, waits
from nb2svc.runtime.worker_runtime import EdgeLimits
from tests.support import REPO, free_port, wait_for

SLOTS = 20
SERVER = f"""
import sys
from gevent import monkey; monkey.patch_all()
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from nb2svc.runtime.worker import DrainingHandler, bind_handler
from nb2svc.runtime.worker_runtime import EdgeLimits, WorkerRuntime

runtime = WorkerRuntime(edge=EdgeLimits(header_timeout=60.0, keepalive_timeout=60.0))
runtime.connections.capacity = {SLOTS}

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]

handler = bind_handler(DrainingHandler, runtime)
WSGIServer(("127.0.0.1", int(sys.argv[1])), app, spawn=Pool({SLOTS}), handler_class=handler,
           log=None).serve_forever()
"""


@pytest.fixture
def port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=REPO)
    try:
        wait_for(lambda: answer(port, timeout=5) == b"ok", 30, "the server to answer")
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def answer(port: int, timeout: float) -> bytes | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data.rsplit(b"\r\n\r\n", 1)[-1]
    except OSError:
        return None


def test_slow_header_connections_cannot_hold_every_slot(port: int) -> None:
    slow = []
    try:
        for _ in range(SLOTS + 5):  # every slot, and a few more waiting to be accepted
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")  # and never the rest
            slow.append(sock)
        # The connections that arrived under pressure are cut after about a second, so a
        # client gets a slot long before the 60 s header timeout of the first ones.
        assert answer(port, timeout=20) == b"ok"
    finally:
        for sock in slow:
            sock.close()


def test_waits_are_cut_short_only_under_pressure() -> None:
    edge = EdgeLimits(header_timeout=10.0, keepalive_timeout=5.0)
    assert waits(edge, int(100 * PRESSURE) - 1, 100) == (10.0, 5.0)
    assert waits(edge, int(100 * PRESSURE), 100) == (PRESSED_TIMEOUT, PRESSED_TIMEOUT)
    short = EdgeLimits(header_timeout=0.5, keepalive_timeout=5.0)
    assert waits(short, 100, 100) == (0.5, PRESSED_TIMEOUT)  # never longer than configured

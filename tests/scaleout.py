"""Real scale-out parts for tests: a throwaway redis-server and an haproxy in front of replicas.

Both are Debian packages (``.ci/run`` installs them where missing); a test that needs one
skips, saying which binary is absent. Each runs on a free loopback port, in the
foreground, and is killed by its pid.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.support import Server, free_port, wait_for


def need(binary: str) -> str:
    """The path of ``binary``, or skip the test saying it is absent."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package; .ci/run installs it)")
    return path


class RedisServer:
    """``redis-server`` with no persistence on a free loopback port."""

    def __init__(self, directory: Path, extra: Sequence[str] = (), tls_cert: Path | None = None) -> None:
        """``tls_cert`` (a PEM holding certificate and key): TLS only, ``rediss://``."""
        binary = need("redis-server")
        self.port = free_port()
        self.tls_cert = tls_cert
        self.url = f"{'rediss' if tls_cert else 'redis'}://127.0.0.1:{self.port}/0"
        self._log = open(directory / f"redis-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        ports = ["--port", str(self.port)]
        if tls_cert is not None:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            ports += ["--tls-cert-file", str(tls_cert), "--tls-key-file", str(tls_cert)]
        self.proc = subprocess.Popen(
            [binary, *ports, "--bind", "127.0.0.1", "--dir", str(directory)]
            + ["--save", "", "--appendonly", "no", *extra],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.pong, 20, f"redis-server on port {self.port} to answer PONG")

    def pong(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as plain:
                sock = plain
                if self.tls_cert is not None:
                    context = ssl.create_default_context(cafile=str(self.tls_cert))
                    sock = context.wrap_socket(plain, server_hostname="127.0.0.1")
                sock.sendall(b"PING\r\n")
                answer = sock.recv(64)  # +PONG, or NOAUTH when a password is required: up either way
                return answer.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


HAPROXY_CONFIG = """\
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 60s
    option http-server-close
    option redispatch
    retries 2
frontend front
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /_api/health/live
{servers}
"""


class Haproxy:
    """haproxy in the foreground, round robin without affinity over ``backends`` (ports)."""

    def __init__(self, directory: Path, backends: Sequence[int]) -> None:
        binary = need("haproxy")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(
            f"    server r{i} 127.0.0.1:{port} check inter 500 fall 2 rise 1"
            for i, port in enumerate(backends)
        )
        config = directory / f"haproxy-{self.port}.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=self.port, servers=servers))
        self._log = open(directory / f"haproxy-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, "-f", str(config), "-db"], stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_for(self._up, 20, f"haproxy on port {self.port} to reach its replicas")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited with {self.proc.returncode}")
        try:
            return requests.get(self.url("/_api/health/live"), timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def url(self, path: str) -> str:
        return self.base + path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


@contextmanager
def balanced_replicas(
    directory: Path, start: Callable[[str], Iterable[Server]]
) -> Iterator[tuple[RedisServer, list[Server], Haproxy]]:
    """A redis-server, the replicas ``start(redis_url)`` yields (one at a time, so a failure
    leaves none running) and haproxy in front of them; every process killed at the end."""
    redis_server = RedisServer(directory)
    replicas: list[Server] = []
    balancer = None
    try:
        for server in start(redis_server.url):
            replicas.append(server)
        balancer = Haproxy(directory, [r.port for r in replicas])
        yield redis_server, replicas, balancer
    finally:
        if balancer is not None:
            balancer.stop()
        for server in replicas:
            server.kill()
        redis_server.stop()


def self_signed_certificate(directory: Path) -> Path:
    """A PEM with a key and a certificate for 127.0.0.1, made by the openssl command."""
    pem = directory / "redis-tls.pem"
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return pem

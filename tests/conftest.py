"""Shared fixtures: real nb2svc servers on free loopback ports, always cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support import Server


@pytest.fixture
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """``start_server(*args, env=..., ready=True)``: an ``nb2svc serve`` subprocess, killed at teardown."""
    servers: list[Server] = []

    def start(
        *args: str, env: dict[str, str] | None = None, ready: bool = True, timeout: float = 60
    ) -> Server:
        server = Server(args, env=env, log_dir=tmp_path_factory.mktemp("server"))
        servers.append(server)
        if ready:
            server.wait_ready(timeout)
        return server

    yield start
    for server in servers:
        server.kill()

"""Shared fixtures: real nb2svc servers on free loopback ports, always cleaned up."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.scaleout import RedisServer
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


@pytest.fixture
def browser() -> Iterator[object]:
    """A headless Debian Chromium driven by selenium; skips, saying why, where it is missing."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A throwaway redis-server per test module (skips where it is not installed)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()

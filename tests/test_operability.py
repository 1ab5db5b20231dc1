"""Operable by default (issue 9): validated settings, no crash loops, drains that keep their
promise, one option table all the way through. Every reproduction of the issue is here, each
asserting a clean exit or answer and no traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import nbformat
import pytest
import requests
import yaml

from nb2svc.config import OPTIONS_BY_NAME, parse_value, render_readme, shutdown_timing
from nb2svc.runtime.server import gunicorn_settings
from tests.notebooks import notebook
from tests.support import EXAMPLES, REPO, Server, alive, free_port, wait_for

HELLO = str(EXAMPLES / "hello.ipynb")


def nb2svc(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def clean(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return output


# --- 1. every option validated where it is parsed -----------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("--pool-size", "0"), {}, "--pool-size"),
        ((), {"NB2SVC_POOL_SIZE": "0"}, "NB2SVC_POOL_SIZE"),
        (("--pool-size", "-3"), {}, "--pool-size"),
        (("--workers", "0"), {}, "--workers"),
        (("--port", "99999"), {}, "--port"),
        (("--port", "-1"), {}, "--port"),
        (("--request-timeout", "0"), {}, "--request-timeout"),
        (("--request-timeout", "inf"), {}, "--request-timeout"),
        (("--max-body-size", "-1"), {}, "--max-body-size"),
        (("--max-queue", "-1"), {}, "--max-queue"),
        (("--queue-timeout", "-5"), {}, "--queue-timeout"),
        (("--graceful-timeout", "soon"), {}, "--graceful-timeout"),
        (("--base-url", "/a?b"), {}, "--base-url"),
    ],
)
def test_invalid_settings_are_one_line_usage_errors_before_anything_starts(
    args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    result = nb2svc("serve", HELLO, "--port", str(free_port()), *args, env=env, timeout=60)
    clean(result)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and named in errors[0], result.stderr
    assert "Starting gunicorn" not in result.stderr


def refused_by_plain_gunicorn(bundle: Path, env: dict[str, str]) -> str:
    """Run ``bundle`` as its image does (plain gunicorn with its config) under ``env``; it must
    stop with one ``error:`` line and exit 2 before any worker boots. Returns that stderr."""
    gunicorn = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:app"]
    result = subprocess.run(
        gunicorn, cwd=bundle, capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )
    clean(result)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "Booting worker" not in result.stderr
    return result.stderr


def test_a_bundle_run_by_gunicorn_itself_refuses_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    """The image's CMD is plain gunicorn with the bundle's config: no nb2svc CLI in front."""
    bundle = tmp_path / "hello"
    assert nb2svc("build", HELLO, "-o", str(bundle)).returncode == 0
    for env, named in (
        ({"NB2SVC_PORT": "http"}, "NB2SVC_PORT"),
        ({"NB2SVC_POOL_SIZE": "0"}, "NB2SVC_POOL_SIZE"),
    ):
        assert named in refused_by_plain_gunicorn(bundle, env)


def test_a_bundle_of_several_checks_its_per_notebook_variables_in_the_master(tmp_path: Path) -> None:
    bundle = tmp_path / "both"
    todo = str(EXAMPLES / "todo.ipynb")
    assert nb2svc("build", HELLO, todo, "-o", str(bundle)).returncode == 0
    for env, named in (
        ({"NB2SVC_POOL_SIZE__HELO": "2"}, "NB2SVC_POOL_SIZE__HELO names no mounted notebook"),
        ({"NB2SVC_POOL_SIZE__TODO": "none"}, "NB2SVC_POOL_SIZE__TODO: must be N or MIN..MAX"),
        ({"NB2SVC_MAX_QUEUE__TODO": "none"}, "NB2SVC_MAX_QUEUE__TODO: expected int"),
    ):
        assert named in refused_by_plain_gunicorn(bundle, env)


def test_kernel_mode_ignores_api_only_variables_it_does_not_use() -> None:
    option = OPTIONS_BY_NAME["pool_size"]
    with pytest.raises(ValueError):
        parse_value(option, "0")
    from nb2svc.config import settings_from_env

    settings = settings_from_env({"KG_PRESPAWN_COUNT": "0"}, mode="kernels")
    assert settings.prespawn == 0 and settings.pool_size == option.default


@pytest.mark.parametrize(
    ("raw", "expected"), [("api", "/api/"), ("/api", "/api/"), ("/a//b/", "/a/b/"), ("", "/")]
)
def test_base_url_is_normalised(raw: str, expected: str) -> None:
    assert parse_value(OPTIONS_BY_NAME["base_url"], raw) == expected


def test_base_url_without_slashes_serves_under_the_prefix(start_server: Callable[..., Server]) -> None:
    server = start_server(HELLO, "--pool-size", "1", "--base-url", "api", ready=False)
    server.wait_ready(path="/api/_api/health/ready")
    assert server.get("/api/hello/world").text == "hello, world\n"
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_port_in_use_is_one_line_naming_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = nb2svc("serve", HELLO, "--host", "127.0.0.1", "--port", str(port), timeout=60)
    clean(result)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr and "--port" in result.stderr
    assert "serving" not in result.stderr  # no banner for a server that never listened


def test_a_worker_that_cannot_boot_stops_the_server_once(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert nb2svc("build", HELLO, "-o", str(bundle)).returncode == 0
    app = bundle / "app.py"
    app.write_text(app.read_text() + "\nraise RuntimeError('the database is unreachable')\n")
    result = nb2svc("serve", str(bundle), "--host", "127.0.0.1", "--port", str(free_port()), timeout=60)
    output = clean(result)
    assert result.returncode == 1
    assert "the server cannot start: the database is unreachable" in output
    assert output.count("Booting worker") == 1  # halted, never respawned
    assert "the server could not start" in result.stderr


# --- 2. the CLI's error contract ------------------------------------------------------------


def test_console_script_goes_through_the_traceback_guard() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "nb2svc"]
    assert script.value == "nb2svc.cli:run"


def test_build_into_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    result = nb2svc("build", HELLO, "-o", "/proc/x")
    clean(result)
    assert result.returncode == 1
    assert "cannot write the bundle to /proc/x" in result.stderr


def test_non_utf8_requirements_file_is_a_usage_error(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_bytes(b"numpy==2.0\ncaf\xe9\n")
    result = nb2svc("build", HELLO, "-o", str(tmp_path / "out"), "--requirements", str(requirements))
    clean(result)
    assert result.returncode == 2
    assert "is not UTF-8" in result.stderr


@pytest.mark.parametrize(
    "content",
    [
        '{"format": 1, "name": "x", "kern',
        '{"name": "x", "notebook": "x.ipynb", "kernel": {}, "endpoints": []}',
    ],
)
def test_a_broken_service_json_is_one_line(tmp_path: Path, content: str) -> None:
    (tmp_path / "service.json").write_text(content)
    for command in ("routes", "serve"):
        result = nb2svc(command, str(tmp_path), timeout=60)
        clean(result)
        assert result.returncode == 1
        assert "service.json is not a valid bundle spec" in result.stderr


# --- 3. one derived timing, drains that keep their promise ----------------------------------


def test_the_graceful_timeout_covers_the_request_timeout_everywhere() -> None:
    timing = shutdown_timing(40)
    assert timing.covers_requests and timing.drain >= 45 - 3
    from nb2svc.config import Settings

    assert gunicorn_settings(Settings(request_timeout=40.0))["graceful_timeout"] == timing.graceful
    assert not shutdown_timing(40, 10).covers_requests


def test_build_takes_the_deploy_options_of_the_table(tmp_path: Path) -> None:
    out = tmp_path / "b"
    result = nb2svc(
        "build",
        HELLO,
        "-o",
        str(out),
        "--k8s",
        "--pool-size",
        "4",
        "--request-timeout",
        "60",
        "--base-url",
        "svc",
    )
    assert result.returncode == 0, result.stderr
    timing = shutdown_timing(60)
    dockerfile = (out / "Dockerfile").read_text()
    for line in (
        "NB2SVC_POOL_SIZE=4",
        "NB2SVC_REQUEST_TIMEOUT=60",
        f"NB2SVC_GRACEFUL_TIMEOUT={timing.graceful}",
    ):
        assert line in dockerfile
    deployment = yaml.safe_load((out / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NB2SVC_GRACEFUL_TIMEOUT"] == str(timing.graceful) and env["NB2SVC_BASE_URL"] == "/svc/"
    assert pod["terminationGracePeriodSeconds"] == timing.termination_grace(5)
    assert container["readinessProbe"]["httpGet"]["path"] == "/svc/_api/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/svc/_api/health/live"
    bad = nb2svc("build", HELLO, "-o", str(tmp_path / "c"), "--pool-size", "0")
    clean(bad)
    assert bad.returncode == 2 and "--pool-size" in bad.stderr


def test_sigterm_during_a_long_request_still_answers_it(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    path = tmp_path / "slow.ipynb"
    cell = f"# GET /slow\nimport time\nopen({str(marker)!r}, 'w').close()\ntime.sleep(4)\nprint('done')"
    nbformat.write(notebook(cell, kernel="python3", language="python"), path)
    server = start_server(str(path), "--pool-size", "1", "--request-timeout", "5")
    answers: list[requests.Response] = []
    client = threading.Thread(target=lambda: answers.append(server.get("/slow", timeout=60)))
    client.start()
    wait_for(marker.exists, 30, "the slow cell to start")
    server.proc.send_signal(signal.SIGTERM)
    client.join(60)
    assert answers and answers[0].status_code == 200 and answers[0].text == "done\n"
    assert answers[0].headers.get("Connection") == "close"  # keep-alive clients reconnect elsewhere
    assert server.stop() == 0
    log = server.log()
    assert "draining: 1 request(s) in flight" in log
    assert "Traceback" not in log


# --- 4. kernel-mode readiness tells the truth -------------------------------------------------


def failing_seed(tmp_path: Path) -> Path:
    path = tmp_path / "seed.ipynb"
    nbformat.write(
        notebook("x = 1", "raise ValueError('no model')", kernel="python3", language="python"), path
    )
    return path


@pytest.mark.parametrize("flag", ["--prespawn", "--warm"])
def test_a_seed_that_fails_at_start_exits_with_the_cell_error(tmp_path: Path, flag: str) -> None:
    seed = failing_seed(tmp_path)
    args = (
        "serve",
        "--kernels",
        "--seed",
        str(seed),
        flag,
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
    )
    result = nb2svc(*args, timeout=120)
    output = clean(result)
    assert result.returncode == 1
    assert "cell 2: setup cell raised ValueError: no model" in output
    assert output.count("Booting worker") == 1


def test_a_seed_that_fails_later_makes_readiness_503_with_the_reason(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server("--kernels", "--seed", str(failing_seed(tmp_path)))
    assert server.request("POST", "/api/kernels", json={}).status_code == 500
    ready = server.get("/_api/health/ready")
    assert ready.status_code == 503
    assert "the seed notebook fails" in ready.json()["reason"] and "no model" in ready.json()["reason"]
    assert server.stop() == 0
    assert "Traceback" not in server.log()


# --- 5. the option table reaches every consumer ---------------------------------------------


def test_readme_option_tables_are_generated_from_the_table() -> None:
    readme = (REPO / "README.md").read_text()
    assert render_readme(readme) == readme, (
        "README option tables are stale: python -m nb2svc.config --markdown"
    )


def test_nb2svc_test_shares_the_serve_options() -> None:
    text = nb2svc("test", "--help").stdout
    for flag in ("--pool-size", "--request-timeout", "--token", "--token-file", "NB2SVC_TOKEN_FILE"):
        assert flag in text


class PlainGunicorn(Server):
    """A bundle run as its image runs it: plain gunicorn with the bundle's config, settings
    from NB2SVC_* variables only (no nb2svc CLI, so no plan handed over)."""

    def __init__(self, bundle: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = bundle.parent / f"gunicorn-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        variables = {"NB2SVC_HOST": "127.0.0.1", "NB2SVC_PORT": str(self.port), **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:app"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **variables},
            cwd=bundle,
            start_new_session=True,
        )
        self.kernel_pids: set[int] = set()


def test_a_bundle_run_by_gunicorn_itself_plans_from_its_environment(tmp_path: Path) -> None:
    """The generated app.py reads its plan once from the environment: the token (from a
    token file), the pool size and the body limit apply; SIGTERM stops every kernel."""
    bundle = tmp_path / "hello"
    assert nb2svc("build", HELLO, "-o", str(bundle)).returncode == 0
    (tmp_path / "token").write_text("plain-gunicorn-token\n")
    env = {
        "NB2SVC_POOL_SIZE": "1",
        "NB2SVC_TOKEN_FILE": str(tmp_path / "token"),
        "NB2SVC_MAX_BODY_SIZE": "64",
    }
    server = PlainGunicorn(bundle, env)
    try:
        server.wait_ready()
        assert len(server.kernel_pids) == 1
        headers = {"Authorization": "token plain-gunicorn-token"}
        assert server.get("/hello/world").status_code == 401
        answer = server.get("/hello/world", headers=headers)
        assert answer.status_code == 200 and "world" in answer.text
        assert server.request("POST", "/hello", data=b"x" * 65, headers=headers).status_code == 413
        assert server.stop() == 0
        assert not [pid for pid in server.kernel_pids if alive(pid)]
    finally:
        server.kill()

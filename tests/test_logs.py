"""Logs that explain failures (issue 22): a failed cell at ERROR with what an operator needs
to find it, JSON lines with fields, quiet health probes, and a failed start said once."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat

from nb2svc.runtime.logs import BootNoiseFilter, JsonFormatter, plain
from tests.notebooks import notebook
from tests.support import REPO, Server, free_port, wait_for

StartServer = Callable[..., Server]

ORDERS = notebook(
    "import json",
    "# GET /boom/:id\nraise ValueError('bad order ' + json.loads(REQUEST)['path']['id'])",
    "# GET /ok\nprint('ok')",
    kernel="python3",
    language="python",
)


def records(server: Server) -> list[dict]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def test_a_failed_cell_is_logged_at_error_with_its_place_even_when_the_client_sees_only_the_message(
    start_server: StartServer, tmp_path: Path
) -> None:
    path = tmp_path / "orders.ipynb"
    nbformat.write(ORDERS, path)
    server = start_server(str(path), "--pool-size", "1", "--error-detail", "message", "--log-format", "json")
    answer = server.get("/boom/7", headers={"X-Request-Id": "req-42"})
    assert answer.status_code == 500 and "traceback" not in answer.json()
    assert answer.headers["X-Request-Id"] == "req-42"
    assert server.get("/_api/health/ready").status_code == 200
    ok = server.get("/ok")
    generated = ok.headers["X-Request-Id"]
    assert len(generated) == 32

    def access(status: int) -> dict | None:
        return next((r for r in records(server) if r.get("status") == status and "method" in r), None)

    wait_for(lambda: access(200), 10, "the access line of /ok")
    (error,) = [r for r in records(server) if r["level"] == "error"]
    assert error["notebook"] == "orders.ipynb" and error["cells"] == [2]
    assert error["route"] == "/boom/:id" and error["request_id"] == "req-42"
    assert "ValueError: bad order 7" in error["message"] and "Traceback" in error["message"]
    assert "\x1b[" not in error["message"]  # IPython's colours stripped
    failed = access(500)
    assert failed is not None
    assert {k: failed[k] for k in ("method", "path", "route", "status", "request_id")} == {
        "method": "GET",
        "path": "/boom/7",
        "route": "/boom/:id",
        "status": 500,
        "request_id": "req-42",
    }
    assert failed["bytes"] > len(answer.content) and failed["duration_ms"] > 0  # headers count too
    assert access(200)["request_id"] == generated
    assert not any("/_api/health" in r["message"] for r in records(server))  # probes: DEBUG only


def test_a_malformed_request_id_is_replaced() -> None:
    from nb2svc.runtime.worker import request_id

    assert request_id({"HTTP_X_REQUEST_ID": "abc.DEF_1:2-3"}) == "abc.DEF_1:2-3"
    for bad in ("", "has space", "a\nb", "x" * 129):
        new = request_id({"HTTP_X_REQUEST_ID": bad})
        assert new != bad and len(new) == 32


def test_json_lines_carry_the_record_fields_and_redact_them() -> None:
    record = logging.LogRecord("nb2svc", logging.INFO, "", 0, "GET %s 200", ("/x",), None)
    record.path = "/x?token=s3cret"
    record.status = 200
    record.request_id = "r1"
    line = json.loads(JsonFormatter().format(record))
    assert line["path"] == "/x?token=[secret]" and line["status"] == 200 and line["request_id"] == "r1"
    assert "route" not in line  # absent fields are left out, not null


def test_gunicorn_boot_failure_lines_are_dropped_and_others_kept() -> None:
    keep = BootNoiseFilter().filter

    def record(level: int, msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("gunicorn.error", level, "", 0, msg, args, None)

    assert not keep(record(logging.ERROR, "Worker (pid:%s) exited with code %s.", 12, 3))
    assert not keep(record(logging.ERROR, "Reason: %s", "Worker failed to boot."))
    assert not keep(record(logging.ERROR, "Shutting down: %s", "Master"))
    assert keep(record(logging.ERROR, "Worker (pid:%s) exited with code %s.", 12, 1))
    assert keep(record(logging.INFO, "Shutting down: %s", "Master"))
    assert keep(record(logging.ERROR, "Reason: %s", "something else"))
    assert plain("\x1b[0;31mValueError\x1b[0m") == "ValueError"


def test_a_failed_start_prints_its_error_once(tmp_path: Path) -> None:
    path = tmp_path / "broken.ipynb"
    nbformat.write(
        notebook("raise RuntimeError('setup broke')", "# GET /x\nprint(1)", kernel="python3"), path
    )
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(path), "--host", "127.0.0.1"]
        + ["--port", str(free_port()), "--pool-size", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert output.count("Traceback (most recent call last)") == 1, output  # the cell's, once
    assert output.count("the service cannot start") == 1, output
    assert "could not start a kernel" not in output
    assert "Worker failed to boot" not in output and "exited with code" not in output

"""API mode under failure and shutdown, with real servers and kernels.

Timeouts, dying kernels, broken setup cells, a saturated pool, auth, CORS, base URL,
bundles, and the shutdown contract: in-flight requests finish, no kernel survives.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
import requests

from tests.notebooks import notebook
from tests.support import EXAMPLES, Server, alive, descendants, parent_pid, wait_for

StartServer = Callable[..., Server]

FAULTS = notebook(
    "import json, os, time",
    "# GET /ok\nprint('ok')",
    "# GET /sleep/:seconds\ntime.sleep(float(json.loads(REQUEST)['path']['seconds']))\nprint('slept')",
    "# GET /die\nos._exit(1)",
    "# GET /pid\nprint(os.getpid())",
    "# GET /env\n"
    "print(json.dumps(sorted(k for k in os.environ if k.startswith(('NB2SVC', 'KERNEL_', 'SECRET')))))",
    "# GET /request\nprint(REQUEST)",
    kernel="python3",
    language="python",
)


def write(nb: nbformat.NotebookNode, tmp_path: Path, name: str = "faults.ipynb") -> str:
    path = tmp_path / name
    nbformat.write(nb, path)
    return str(path)


def metric(server: Server, name: str) -> float:
    for line in server.get("/_api/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not found")


def test_timeout_interrupts_and_kernel_is_reused(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(write(FAULTS, tmp_path), "--pool-size", "1", "--request-timeout", "1")
    pid_before = server.get("/pid").text
    r = server.get("/sleep/30")
    assert r.status_code == 504
    assert r.json()["error"] == "GatewayTimeout"
    assert "1s" in r.json()["message"]
    assert server.get("/ok").text == "ok\n"
    assert server.get("/pid").text == pid_before  # interrupted, not replaced
    assert metric(server, "nb2svc_kernel_replacements_total") == 0


def test_dead_kernel_is_502_and_pool_heals(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(write(FAULTS, tmp_path), "--pool-size", "1")
    pid_before = server.get("/pid").text
    r = server.get("/die")
    assert r.status_code == 502
    assert r.json()["error"] == "KernelDied"
    assert server.get("/ok", timeout=60).text == "ok\n"  # waits for the replacement
    assert server.get("/pid").text != pid_before
    assert metric(server, "nb2svc_kernel_replacements_total") == 1
    assert not alive(int(pid_before))


def test_busy_pool_answers_503_with_retry_after(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(write(FAULTS, tmp_path), "--pool-size", "1", "--queue-timeout", "0.5")
    slow = threading.Thread(target=server.get, args=("/sleep/3",))
    slow.start()
    wait_for(
        lambda: metric(server, "nb2svc_pool_kernels_busy") == 1, 10, "the slow request to hold the kernel"
    )
    r = server.get("/ok")
    slow.join()
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert r.json()["error"] == "ServiceUnavailable"


def test_failing_setup_cell_stops_the_server_with_the_cell_number(
    start_server: StartServer, tmp_path: Path
) -> None:
    broken = notebook(
        "x = 1", "import json\n1 / 0", "# GET /x\nprint(x)", kernel="python3", language="python"
    )
    server = start_server(write(broken, tmp_path, "broken.ipynb"), ready=False)
    server.proc.wait(60)
    assert server.proc.returncode != 0
    log = server.log()
    assert "broken.ipynb, cell 2" in log
    assert "ZeroDivisionError" in log
    assert not server.find_kernels()


def test_unknown_kernel_spec_is_a_clear_error(start_server: StartServer, tmp_path: Path) -> None:
    nb = notebook("# GET /x\nprint(1)", kernel="no-such-kernel", language="python")
    server = start_server(write(nb, tmp_path, "nokernel.ipynb"), ready=False)
    server.proc.wait(60)
    assert server.proc.returncode != 0
    assert "no-such-kernel" in server.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_drains_in_flight_requests_and_stops_kernels(
    start_server: StartServer, tmp_path: Path, sig: int
) -> None:
    server = start_server(write(FAULTS, tmp_path), "--pool-size", "2")
    idle = requests.Session()
    assert idle.get(server.url("/ok"), timeout=10).text == "ok\n"  # an idle keep-alive connection
    kernels = server.find_kernels()
    assert len(kernels) == 2
    result: dict[str, requests.Response] = {}
    slow = threading.Thread(target=lambda: result.setdefault("r", server.get("/sleep/1.5")))
    slow.start()
    wait_for(lambda: metric(server, "nb2svc_pool_kernels_busy") == 1, 10, "the slow request to start")
    assert server.stop(sig, timeout=20) == 0
    slow.join()
    assert result["r"].status_code == 200
    assert result["r"].text == "slept\n"
    assert [p for p in kernels if alive(p)] == []
    assert "shut down 2 kernels" in server.log()


def accepted(server_port: int, client_port: int) -> bool:
    """Whether the server side of this loopback connection has been accepted: in
    /proc/net/tcp a connection still in the listen backlog has no inode yet."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                return inode != "0"
    return False


def test_a_connection_accepted_before_draining_gets_its_first_request_answered(
    start_server: StartServer, tmp_path: Path
) -> None:
    """Its client connected before the worker stopped accepting and would not retry the request
    (one on an idle keep-alive connection would): it is answered, then the connection closes."""
    server = start_server(write(FAULTS, tmp_path), "--pool-size", "2")
    result: dict[str, requests.Response] = {}
    slow = threading.Thread(target=lambda: result.setdefault("r", server.get("/sleep/1.5")))
    slow.start()  # keeps the worker draining for a while
    wait_for(lambda: metric(server, "nb2svc_pool_kernels_busy") == 1, 10, "the slow request to start")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        wait_for(lambda: accepted(server.port, client_port), 10, "the worker to accept the connection")
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "draining:" in server.log(), 10, "the worker to start draining")
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    assert b"connection: close" in head.lower() and body == b"ok\n"
    slow.join()
    assert result["r"].text == "slept\n"
    assert server.proc.wait(30) == 0


def test_token_auth(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(write(FAULTS, tmp_path), "--pool-size", "1", "--token", "s3cret")
    r = server.get("/ok")
    assert r.status_code == 401
    assert r.json()["error"] == "Unauthorized"
    assert server.get("/ok", headers={"Authorization": "token wrong"}).status_code == 401
    assert server.get("/ok", headers={"Authorization": "token s3cret"}).text == "ok\n"
    assert server.get("/ok", headers={"Authorization": "Bearer s3cret"}).text == "ok\n"
    assert server.get("/ok?token=s3cret").text == "ok\n"
    assert server.get("/_api/health/live").status_code == 200
    assert server.get("/_api/health/ready").status_code == 200
    assert server.get("/openapi.json").status_code == 401
    # the server's credential never reaches notebook code
    req = json.loads(server.get("/request?token=s3cret&keep=1").text)
    assert req["args"] == {"keep": ["1"]}
    req = json.loads(server.get("/request", headers={"Authorization": "token s3cret"}).text)
    assert "Authorization" not in req["headers"]
    # the access log shows requests, never the token (it is written after the answer is sent)
    wait_for(lambda: "GET /request?token=[secret]&keep=1 200" in server.log(), 10, "the access log line")
    assert "s3cret" not in server.log()


def test_token_from_environment_and_kg_alias(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(write(FAULTS, tmp_path), "--pool-size", "1", env={"KG_AUTH_TOKEN": "kg-token"})
    assert server.get("/ok").status_code == 401
    assert server.get("/ok", headers={"Authorization": "token kg-token"}).status_code == 200


def test_kernel_environment_is_whitelisted(start_server: StartServer, tmp_path: Path) -> None:
    env = {"SECRET_KEY": "x", "SECRET_ALLOWED": "y", "KERNEL_FLAVOUR": "z"}
    server = start_server(
        write(FAULTS, tmp_path), "--pool-size", "1", "--env-allow", "SECRET_ALLOWED", env=env
    )
    names = json.loads(server.get("/env").text)
    assert "KERNEL_FLAVOUR" in names
    assert "SECRET_ALLOWED" in names
    assert "SECRET_KEY" not in names
    assert [n for n in names if n.startswith("NB2SVC")] == ["NB2SVC"]  # the marker, no settings
    assert "KERNEL_GATEWAY" in names


def test_cors_when_asked(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(
        write(FAULTS, tmp_path),
        "--pool-size",
        "1",
        "--allow-origin",
        "https://app.example",
        "--allow-methods",
        "GET,POST",
        "--token",
        "t",
    )
    r = server.request("OPTIONS", "/ok", headers={"Origin": "https://app.example"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert r.headers["Access-Control-Allow-Methods"] == "GET,POST"
    r = server.get("/ok", headers={"Authorization": "token t"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_base_url_prefixes_every_route(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(write(FAULTS, tmp_path), "--pool-size", "1", "--base-url", "/svc/", ready=False)
    server.wait_ready(path="/svc/_api/health/ready")
    assert server.get("/svc/ok").text == "ok\n"
    assert server.get("/ok").status_code == 404
    assert server.get("/svc/openapi.json").status_code == 200


def test_bundle_serves_like_the_notebook(start_server: StartServer, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from nb2svc.cli import main

    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["build", str(EXAMPLES / "hello.ipynb"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    server = start_server(str(out), "--pool-size", "1")
    assert server.get("/hello/world").text == "hello, world\n"
    r = server.request("POST", "/hello", json={"name": "bob"})
    assert r.status_code == 201
    assert r.json() == {"greeting": "hello, bob"}


def test_todo_example_keeps_state_every_kernel_of_the_pool_sees(
    start_server: StartServer, tmp_path: Path
) -> None:
    """With the default pool of two kernels (issue 22: its todos were once per kernel)."""
    server = start_server(str(EXAMPLES / "todo.ipynb"), env={"KERNEL_TODO_DB": str(tmp_path / "todo.db")})
    assert server.get("/_api/health/ready").json()["size"] == 2
    assert server.log().count("state kept in kernel memory (a variable) is per kernel") == 1  # the banner
    assert len(server.get("/todos").json()) == 2
    created = server.request("POST", "/todos", json={"title": "test it"})
    assert created.status_code == 201
    todo_id = created.json()["id"]
    assert created.headers["Location"] == f"/todos/{todo_id}"
    # the pool hands requests to both kernels in turn: kept per kernel, this was 404 200 404 ...
    assert [server.get(f"/todos/{todo_id}").status_code for _ in range(6)] == [200] * 6
    assert server.get(f"/todos/{todo_id}").json()["title"] == "test it"
    assert server.get("/stats").json() == {"total": 3, "done": 1}
    assert server.request("PUT", f"/todos/{todo_id}", json={"done": True}).json()["done"] is True
    assert server.request("DELETE", f"/todos/{todo_id}").status_code == 204
    assert server.get(f"/todos/{todo_id}").status_code == 404
    assert server.request("POST", "/todos", json={}).status_code == 400


def test_several_workers_each_own_a_pool_and_a_killed_worker_leaves_no_kernels(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(write(FAULTS, tmp_path), "--workers", "2", "--pool-size", "1")
    wait_for(lambda: len(server.find_kernels()) == 2, 30, "both workers' kernels")
    kernels = server.find_kernels()
    workers = {p for p in descendants(server.proc.pid) if parent_pid(p) == server.proc.pid}
    assert len(workers) == 2
    victim = next(iter(workers))
    victim_kernels = {p for p in kernels if p in descendants(victim)}
    assert len(victim_kernels) == 1
    os.kill(victim, signal.SIGKILL)
    # ipykernel notices its parent is gone; gunicorn boots a new worker with a new pool
    wait_for(lambda: not any(alive(p) for p in victim_kernels), 15, "the dead worker's kernel to exit")
    wait_for(lambda: len(server.find_kernels()) == 2, 60, "a replacement worker's kernel")
    assert {server.get("/ok").text for _ in range(4)} == {"ok\n"}
    all_kernels = server.find_kernels()
    assert server.stop() == 0
    assert [p for p in all_kernels if alive(p)] == []


def test_json_logs_for_containers(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(write(FAULTS, tmp_path), "--pool-size", "1", "--log-format", "json")
    assert server.get("/ok?token=hidden").status_code == 200
    wait_for(lambda: "GET /ok?token=[secret] 200" in server.log(), 10, "the access log line")
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    messages = [r["message"] for r in records]
    assert any(m.startswith("ready: 1 python3 kernels warm") for m in messages)
    assert "GET /ok?token=[secret] 200" in " ".join(messages)
    assert {"time", "level", "logger", "message"} <= set(records[0])

"""Issue 8, item 1: hostile web pages cannot start or drive kernels; tokenless servers stay local.

Every test is an attack against a real kernel-mode server on 127.0.0.1 with no token (the
default), as a page in the user's browser would send it.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest
import websocket

from tests.kernels_support import kernel_server
from tests.support import Server, free_port

ALLOWED = "https://app.example"
EVIL = "https://evil.example"
MESSAGE_LIMIT = 65536


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--allow-origin", ALLOWED, "--max-message-size", str(MESSAGE_LIMIT), "--max-body-size", "100000"]
    with kernel_server(tmp_path_factory.mktemp("origin"), *args, token=None) as srv:
        yield srv


def kernel_ids(server: Server) -> set[str]:
    return {k["id"] for k in server.get("/api/kernels").json()}


def start(server: Server) -> str:
    response = server.request("POST", "/api/kernels")
    assert response.status_code == 201, response.text
    return response.json()["id"]


def channels(server: Server, kernel_id: str) -> str:
    return f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"


def test_cross_site_text_plain_post_cannot_start_a_kernel(server: Server) -> None:
    before = kernel_ids(server)
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        r = server.request(
            "POST", "/api/kernels", data="{}", headers={"Origin": EVIL, "Content-Type": content_type}
        )
        assert r.status_code == 403, r.text
        assert "Origin" in r.json()["message"]
    assert kernel_ids(server) == before


def test_cross_site_json_post_and_delete_are_refused(server: Server) -> None:
    kernel_id = start(server)
    r = server.request("POST", "/api/kernels", json={}, headers={"Origin": EVIL})
    assert r.status_code == 403
    assert (
        server.request("DELETE", f"/api/kernels/{kernel_id}", headers={"Origin": "null"}).status_code == 403
    )
    assert (
        server.request("POST", f"/api/kernels/{kernel_id}/restart", headers={"Origin": EVIL}).status_code
        == 403
    )
    assert kernel_id in kernel_ids(server)


def test_allowed_origin_simple_post_is_refused_but_its_json_post_works(server: Server) -> None:
    simple = server.request(
        "POST", "/api/kernels", data="{}", headers={"Origin": ALLOWED, "Content-Type": "text/plain"}
    )
    assert simple.status_code == 403
    assert "application/json" in simple.json()["message"]
    r = server.request("POST", "/api/kernels", json={}, headers={"Origin": ALLOWED})
    assert r.status_code == 201, r.text
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_same_origin_and_originless_requests_still_work(server: Server) -> None:
    r = server.request("POST", "/api/kernels", json={}, headers={"Origin": server.base})
    assert r.status_code == 201, r.text
    assert (
        server.request(
            "DELETE", f"/api/kernels/{r.json()['id']}", headers={"Origin": server.base}
        ).status_code
        == 204
    )


def test_cross_site_websocket_upgrade_is_refused_even_with_another_origin_allowed(server: Server) -> None:
    kernel_id = start(server)
    for origin in (EVIL, "null", "http://127.0.0.1.evil.example"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(channels(server, kernel_id), origin=origin, timeout=10)
        assert refused.value.status_code == 403
    for origin in (ALLOWED, server.base):
        ws = websocket.create_connection(channels(server, kernel_id), origin=origin, timeout=10)
        ws.close()


def test_tokenless_loopback_server_warns_that_anyone_on_this_machine_can_run_code(server: Server) -> None:
    assert "anyone on this machine" in server.log()


def serve_kernels(*args: str) -> subprocess.CompletedProcess[str]:
    """``nb2svc serve --kernels ARGS`` expected to refuse before it binds anything."""
    command = [sys.executable, "-m", "nb2svc", "serve", "--kernels", "--port", str(free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_tokenless_kernel_server_on_all_interfaces_refuses_to_start() -> None:
    result = serve_kernels("--host", "0.0.0.0")
    assert result.returncode == 2, result.stderr
    assert "--no-auth" in result.stderr and "--token" in result.stderr


def test_no_auth_with_a_token_is_a_usage_error() -> None:
    result = serve_kernels("--host", "127.0.0.1", "--no-auth", "--token", "t")
    assert result.returncode == 2
    assert "contradict" in result.stderr


def test_star_origin_with_credentials_refused_at_start() -> None:
    result = serve_kernels("--allow-origin", "*", "--allow-credentials", "true")
    assert result.returncode == 2
    assert "--allow-credentials" in result.stderr


# --- hostile websocket and REST bodies (issue 8, item 5) ----------------------------------


def declare_frame(ws: websocket.WebSocket, opcode: int, length: int, fin: int = 1) -> None:
    """Send a frame header declaring ``length`` bytes and only the first 100 of them:
    the server must refuse on the declaration, not after buffering the payload."""
    frame = websocket.ABNF.create_frame("x" * length, opcode, fin=fin).format()
    ws.sock.sendall(frame[:114])


def close_code(ws: websocket.WebSocket) -> int:
    opcode, data = ws.recv_data(control_frame=True)
    while opcode == websocket.ABNF.OPCODE_TEXT:  # kernel messages (status) may come first
        opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    return struct.unpack("!H", data[:2])[0]


def test_websocket_message_over_the_limit_is_closed_with_1009(server: Server) -> None:
    ws = websocket.create_connection(channels(server, start(server)), timeout=30)
    try:
        declare_frame(ws, websocket.ABNF.OPCODE_TEXT, 50 * MESSAGE_LIMIT)
        assert close_code(ws) == 1009
    finally:
        ws.sock.close()


def test_websocket_fragmented_message_over_the_limit_is_closed_with_1009(server: Server) -> None:
    ws = websocket.create_connection(channels(server, start(server)), timeout=30)
    try:
        half = MESSAGE_LIMIT // 2 + 1
        ws.send_frame(websocket.ABNF.create_frame("x" * half, websocket.ABNF.OPCODE_TEXT, fin=0))
        declare_frame(ws, websocket.ABNF.OPCODE_CONT, half)
        assert close_code(ws) == 1009
    finally:
        ws.sock.close()


def test_deeply_nested_json_to_kernels_api_is_a_json_400(server: Server) -> None:
    body = "[" * 50_000 + "]" * 50_000
    r = server.request("POST", "/api/kernels", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "deep" in r.json()["message"]


def test_chunked_body_over_the_limit_to_kernels_api_is_413(server: Server) -> None:
    body = iter([json.dumps({"name": "python3", "pad": "x" * 100_000}).encode()])
    r = server.request("POST", "/api/kernels", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413

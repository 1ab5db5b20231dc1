"""Helpers for kernel-mode tests: servers, and a websocket kernel client for both wire formats.

The client encodes and decodes frames with jupyter_server's own functions, so the tests
check our server against the reference implementation of each wire format rather than
against our own code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests
import websocket
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from tests.support import Server, free_port, provisioner_spec_env, wait_for

TOKEN = "s3cret"
AUTH = {"Authorization": f"token {TOKEN}"}
V1 = "v1.kernel.websocket.jupyter.org"


class HasBase(Protocol):
    """Our server, or a balancer in front of several."""

    base: str


class HasPort(Protocol):
    """Our server, or Jupyter Server in front of it."""

    port: int


@contextlib.contextmanager
def kernel_server(
    log_dir: Path, *args: str, env: dict[str, str] | None = None, token: str | None = TOKEN, base: str = ""
) -> Iterator[Server]:
    """``nb2svc serve --kernels ARGS`` (with ``--token`` unless ``token=None``), killed on exit."""
    extra = ["--token", token] if token else []
    server = Server(["--kernels", *extra, *args], env=env, log_dir=log_dir)
    try:
        server.wait_ready(60, path=base + "/_api/health/ready")
        yield server
    finally:
        server.kill()


def start_kernel(server: Server, base: str = "", **body: Any) -> dict[str, Any]:
    response = server.request("POST", base + "/api/kernels", json=body or None, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


@dataclass
class Msg:
    channel: str
    header: dict[str, Any]
    parent_header: dict[str, Any]
    content: dict[str, Any]
    buffers: list[bytes] = field(default_factory=list)

    @property
    def msg_type(self) -> str:
        return self.header["msg_type"]

    @property
    def parent_id(self) -> str | None:
        return (self.parent_header or {}).get("msg_id")


@dataclass
class Execution:
    reply: dict[str, Any]
    stdout: str
    messages: list[Msg]

    @property
    def status(self) -> str:
        return self.reply.get("status", "")


class KernelClient:
    """A websocket client of ``/api/kernels/{id}/channels`` (legacy or v1 wire format)."""

    def __init__(
        self,
        server: HasPort,
        kernel_id: str,
        *,
        v1: bool = False,
        token: str | None = TOKEN,
        session_id: str | None = None,
        base: str = "",
        query_token: bool = False,
    ) -> None:
        self.v1 = v1
        self.session = session_id or uuid.uuid4().hex
        query = f"?session_id={self.session}"
        headers = {}
        if token and query_token:
            query += f"&token={token}"
        elif token:
            headers["Authorization"] = f"token {token}"
        url = f"ws://127.0.0.1:{server.port}{base}/api/kernels/{kernel_id}/channels{query}"
        self.ws = websocket.create_connection(
            url, header=headers, subprotocols=[V1] if v1 else None, timeout=30
        )
        self.backlog: list[Msg] = []

    @property
    def protocol(self) -> str | None:
        return self.ws.getsubprotocol()

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> KernelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending ---------------------------------------------------------------------

    def message(self, channel: str, msg_type: str, content: dict[str, Any], parent: Any = None) -> dict:
        header = {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "test",
            "session": self.session,
            "date": "2026-01-01T00:00:00.000000Z",
            "version": "5.3",
        }
        return {
            "channel": channel,
            "header": header,
            "parent_header": parent or {},
            "metadata": {},
            "content": content,
            "buffers": [],
        }

    def send(self, channel: str, msg_type: str, content: dict[str, Any], parent: Any = None) -> str:
        msg = self.message(channel, msg_type, content, parent)
        self.send_msg(msg)
        return msg["header"]["msg_id"]

    def send_msg(self, msg: dict[str, Any]) -> None:
        if self.v1:
            self.ws.send_binary(serialize_msg_to_ws_v1(msg, msg["channel"], lambda o: json.dumps(o).encode()))
        elif msg.get("buffers"):
            self.ws.send_binary(serialize_binary_message(msg))
        else:
            self.ws.send(json.dumps({k: v for k, v in msg.items() if k != "buffers"}))

    def execute_request(self, code: str, allow_stdin: bool = False) -> str:
        content = {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": allow_stdin,
            "stop_on_error": True,
        }
        return self.send("shell", "execute_request", content)

    # --- receiving ---------------------------------------------------------------------

    def recv(self, timeout: float = 10.0) -> Msg:
        if self.backlog:
            return self.backlog.pop(0)
        self.ws.settimeout(timeout)
        opcode, data = self.ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ConnectionError("the server closed the websocket")
        if self.v1:
            assert opcode == websocket.ABNF.OPCODE_BINARY
            channel, parts = deserialize_msg_from_ws_v1(data)
            header, parent, _metadata, content = (json.loads(p) for p in parts[:4])
            return Msg(channel, header, parent, content, list(parts[4:]))
        if opcode == websocket.ABNF.OPCODE_BINARY:
            msg = deserialize_binary_message(data)
        else:
            msg = json.loads(data)
        return Msg(
            msg["channel"], msg["header"], msg["parent_header"], msg["content"], msg.get("buffers", [])
        )

    def wait_for(self, predicate: Callable[[Msg], bool], timeout: float = 10.0) -> Msg:
        """The first message matching ``predicate``; others seen meanwhile are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no matching message")
            msg = self.recv(remaining)
            if predicate(msg):
                return msg

    def collect(
        self, msg_id: str, timeout: float = 15.0, on_input: Callable[[Msg], None] | None = None
    ) -> Execution:
        """Messages of request ``msg_id`` until both its shell reply and iopub idle came."""
        deadline = time.monotonic() + timeout
        reply: dict[str, Any] | None = None
        idle = False
        stdout: list[str] = []
        seen: list[Msg] = []
        while reply is None or not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"request {msg_id} did not finish; saw {[m.msg_type for m in seen]}")
            msg = self.recv(remaining)
            if msg.parent_id != msg_id:
                continue
            seen.append(msg)
            if msg.channel == "shell":
                reply = msg.content
            elif msg.channel == "stdin" and on_input is not None:
                on_input(msg)
            elif msg.msg_type == "stream" and msg.content.get("name") == "stdout":
                stdout.append(msg.content["text"])
            elif msg.msg_type == "status" and msg.content["execution_state"] == "idle":
                idle = True
        return Execution(reply, "".join(stdout), seen)

    def execute(self, code: str, timeout: float = 15.0) -> Execution:
        return self.collect(self.execute_request(code), timeout)


class JupyterServer:
    """``jupyter server --gateway-url`` pointed at our server, on a free port."""

    token = "jupyter-server-token"
    port: int

    def __init__(self, gateway: HasBase, root: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "jupyter-server.log"
        args = [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
            f"--ServerApp.port={self.port}", "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={self.token}",
            f"--gateway-url={gateway.base}", f"--GatewayClient.auth_token={TOKEN}",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def request(self, method: str, path: str, **kwargs: object) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def wait_ready(self) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter server exited:\n{self.log_path.read_text()}")
            try:
                return self.request("GET", "/api/status").status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, 60, "jupyter server to answer")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def detached_spec(root: Path) -> dict[str, str]:
    """Kernel spec ``detached_python`` (the detached test provisioner: kernels that outlive
    their gateway, see ``tests/provisioners``) under ``root``; the variables that find it."""
    return provisioner_spec_env(
        root,
        "detached_python",
        {"provisioner_name": "detached-provisioner"},
        display_name="Python (detached)",
    )

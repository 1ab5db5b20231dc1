"""Issue 23, high: DNS rebinding cannot reach a tokenless server.

A page on ``rebind.example`` whose DNS name later resolves to 127.0.0.1 sends requests
with ``Host: rebind.example:PORT`` and a matching ``Origin``; the origin check alone lets
them in. Real servers on 127.0.0.1 with no token, in both modes, REST and websocket.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import websocket
from flask import Flask

from nb2svc.config import Settings
from nb2svc.runtime.auth import host_name, host_refusal
from nb2svc.runtime.webapp import create_webapp
from tests.kernels_support import kernel_server
from tests.notebooks import notebook
from tests.support import Server, notebook_server


def rebinding(server: Server) -> dict[str, str]:
    """What a rebinding page's requests carry: its own name as Host and as Origin."""
    name = f"rebind.example:{server.port}"
    return {"Host": name, "Origin": f"http://{name}"}


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with kernel_server(tmp_path_factory.mktemp("rebind"), token=None) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    nb = notebook("# POST /run\nprint('ran')", kernel="python3", language="python")
    with notebook_server(
        nb, tmp_path_factory.mktemp("rebind-api") / "svc.ipynb", "--pool-size", "1"
    ) as server:
        yield server


def test_dns_rebinding_cannot_start_a_kernel(kernels: Server) -> None:
    before = kernels.get("/api/kernels").json()
    for content_type in ("text/plain", "application/json"):
        r = kernels.request(
            "POST", "/api/kernels", data="{}", headers={**rebinding(kernels), "Content-Type": content_type}
        )
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "Forbidden"
        assert "rebind.example" in r.json()["message"]
    assert kernels.get("/api/kernels", headers=rebinding(kernels)).status_code == 403
    assert kernels.get("/api/kernels").json() == before


def test_dns_rebinding_cannot_open_a_kernel_websocket(kernels: Server) -> None:
    kernel_id = kernels.request("POST", "/api/kernels", json={}).json()["id"]
    url = f"ws://127.0.0.1:{kernels.port}/api/kernels/{kernel_id}/channels"
    page = rebinding(kernels)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, host=page["Host"], origin=page["Origin"], timeout=10)
    assert refused.value.status_code == 403
    ws = websocket.create_connection(url, origin=f"http://127.0.0.1:{kernels.port}", timeout=10)
    ws.close()


def test_loopback_names_still_reach_a_tokenless_server(kernels: Server) -> None:
    for host in ("localhost", f"localhost:{kernels.port}", "127.0.0.1", "127.0.0.2:1", "[::1]:8888"):
        assert kernels.get("/api/kernels", headers={"Host": host}).status_code == 200, host


def test_dns_rebinding_cannot_call_a_tokenless_api_endpoint(api: Server) -> None:
    r = api.request("POST", "/run", data="x", headers={**rebinding(api), "Content-Type": "text/plain"})
    assert r.status_code == 403
    assert r.json()["reason"] == "Forbidden"
    assert "ran" not in api.log()
    assert api.request("POST", "/run", data="x").text == "ran\n"


def skeleton(**values: object) -> Flask:
    return create_webapp("t", Settings(**{"host": "127.0.0.1", **values}), readiness=lambda: (True, {}))


def status(app: Flask, host: str, **headers: str) -> int:
    return app.test_client().get("/_api/health/live", headers={"Host": host, **headers}).status_code


def test_allow_host_and_allow_remote_access_open_named_hosts() -> None:
    assert status(skeleton(), "dev.test:8888") == 403
    assert status(skeleton(allow_host=("Dev.Test",)), "dev.test:8888") == 200
    assert status(skeleton(allow_host=("Dev.Test",)), "other.test") == 403
    assert status(skeleton(allow_remote_access=True), "rebind.example") == 200


def test_a_token_or_a_network_bind_turn_the_host_check_off() -> None:
    assert status(skeleton(token="s3cret"), "proxy.internal") == 200  # health needs no token
    unauthorised = skeleton(token="s3cret").test_client().get("/x", headers={"Host": "proxy.internal"})
    assert unauthorised.status_code == 401
    assert status(skeleton(host="0.0.0.0"), "pod.svc.cluster.local") == 200


def test_host_names_parse_ports_brackets_and_case() -> None:
    assert host_name("LOCALHOST:80") == "localhost"
    assert host_name("[::1]:8888") == "::1"
    assert host_name("[::1]") == "::1"
    assert host_name("rebind.example") == "rebind.example"
    check = host_refusal(Settings(host="localhost"), token="")
    assert check is not None
    assert check("localhost.:1") is None
    assert check("127.1.2.3") is None
    assert check("0.0.0.0:1") is not None
    assert check("localhost.rebind.example") is not None
    assert host_refusal(Settings(host="localhost"), token="t") is None

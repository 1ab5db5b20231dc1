"""Kernel mode REST API: every endpoint and status code, auth, CORS, base URL, limits."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
import requests

from tests.kernels_support import AUTH, TOKEN, KernelClient, kernel_server, start_kernel
from tests.support import Server

MODEL_KEYS = {"id", "name", "last_activity", "execution_state", "connections"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with kernel_server(tmp_path_factory.mktemp("kernels-rest")) as srv:
        yield srv


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Base URL, CORS, no listing, at most one kernel."""
    args = [
        "--base-url", "/gw/", "--allow-origin", "https://app.example", "--allow-headers", "Authorization",
        "--allow-methods", "GET,POST,DELETE", "--no-list-kernels", "--max-kernels", "1",
    ]  # fmt: skip
    with kernel_server(tmp_path_factory.mktemp("kernels-limited"), *args, base="/gw") as srv:
        yield srv


def call(server: Server, method: str, path: str, **kwargs: object) -> requests.Response:
    headers = kwargs.pop("headers", AUTH)
    return server.request(method, path, headers=headers, **kwargs)


def test_api_version_and_kernelspecs(server: Server) -> None:
    assert "version" in call(server, "GET", "/api").json()
    specs = call(server, "GET", "/api/kernelspecs").json()
    assert specs["default"] == "python3"
    python3 = specs["kernelspecs"]["python3"]
    assert python3["name"] == "python3" and python3["spec"]["language"] == "python"
    logo = python3["resources"]["logo-64x64"]
    assert logo == "/kernelspecs/python3/logo-64x64.png"
    image = call(server, "GET", logo)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
    assert call(server, "GET", "/api/kernelspecs/python3").json() == python3
    assert call(server, "GET", "/api/kernelspecs/nope").status_code == 404
    assert call(server, "GET", "/kernelspecs/nope/logo-64x64.png").status_code == 404
    assert call(server, "GET", "/kernelspecs/python3/missing.png").status_code == 404


def test_kernelspec_resources_do_not_escape_their_directory(server: Server) -> None:
    for path in (
        "/kernelspecs/python3/../../../../etc/passwd",
        "/kernelspecs/python3/%2e%2e/%2e%2e/etc/passwd",
    ):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", path, headers=AUTH)  # raw: no client-side normalisation of ".."
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 404, (path, body)
        assert b"root:" not in body


def test_kernel_lifecycle_and_status_codes(server: Server) -> None:
    created = call(server, "POST", "/api/kernels", json={"name": "python3"})
    assert created.status_code == 201
    model = created.json()
    assert set(model) >= MODEL_KEYS and model["name"] == "python3"
    assert model["execution_state"] == "idle" and model["connections"] == 0
    assert model["last_activity"].endswith("Z")
    kid = model["id"]
    assert created.headers["Location"] == f"/api/kernels/{kid}"
    assert kid in [k["id"] for k in call(server, "GET", "/api/kernels").json()]
    assert call(server, "GET", f"/api/kernels/{kid}").json()["id"] == kid

    assert call(server, "POST", f"/api/kernels/{kid}/interrupt").status_code == 204
    restarted = call(server, "POST", f"/api/kernels/{kid}/restart")
    assert restarted.status_code == 200 and restarted.json()["id"] == kid

    assert call(server, "DELETE", f"/api/kernels/{kid}").status_code == 204
    for method, path in (
        ("GET", f"/api/kernels/{kid}"),
        ("DELETE", f"/api/kernels/{kid}"),
        ("POST", f"/api/kernels/{kid}/interrupt"),
        ("POST", f"/api/kernels/{kid}/restart"),
    ):
        missing = call(server, method, path)
        assert missing.status_code == 404, (method, path)
        assert missing.json()["message"] == f"Kernel does not exist: {kid}"
    assert kid not in [k["id"] for k in call(server, "GET", "/api/kernels").json()]


def test_post_kernels_validates_its_body(server: Server) -> None:
    no_body = call(server, "POST", "/api/kernels")
    assert no_body.status_code == 201
    assert no_body.json()["name"] == "python3"
    call(server, "DELETE", f"/api/kernels/{no_body.json()['id']}")
    json_headers = {**AUTH, "Content-Type": "application/json"}
    for body in ("{bad json", "[1]", '{"name": 3}', '{"env": ["A"]}', '{"env": {"KERNEL_X": 1}}'):
        response = call(server, "POST", "/api/kernels", data=body, headers=json_headers)
        assert response.status_code == 400, body
        assert response.json()["message"]
    unknown = call(server, "POST", "/api/kernels", json={"name": "no-such-spec"})
    assert unknown.status_code == 400 and "no-such-spec" in unknown.json()["message"]
    assert call(server, "GET", "/api/nothing-here").status_code == 404


def test_sessions(server: Server) -> None:
    body = {"path": "a.ipynb", "type": "notebook", "name": "a", "kernel": {"name": "python3"}}
    created = call(server, "POST", "/api/sessions", json=body)
    assert created.status_code == 201
    session = created.json()
    sid, kid = session["id"], session["kernel"]["id"]
    assert created.headers["Location"] == f"/api/sessions/{sid}"
    assert session["path"] == "a.ipynb" and session["notebook"] == {"path": "a.ipynb", "name": "a"}
    assert call(server, "POST", "/api/sessions", json=body).json()["id"] == sid  # same path, same session
    assert sid in [s["id"] for s in call(server, "GET", "/api/sessions").json()]
    assert call(server, "GET", f"/api/sessions/{sid}").json()["kernel"]["id"] == kid

    renamed = call(server, "PATCH", f"/api/sessions/{sid}", json={"path": "b.ipynb", "name": "b"})
    assert renamed.status_code == 200 and renamed.json()["path"] == "b.ipynb"
    bad_kernel = call(server, "PATCH", f"/api/sessions/{sid}", json={"kernel": {"id": "nope"}})
    assert bad_kernel.status_code == 400
    swapped = call(server, "PATCH", f"/api/sessions/{sid}", json={"kernel": {"name": "python3"}}).json()
    assert swapped["kernel"]["id"] != kid
    assert call(server, "GET", f"/api/kernels/{kid}").status_code == 404  # the replaced kernel is gone

    other = start_kernel(server)
    attached = call(server, "POST", "/api/sessions", json={"path": "c", "type": "console", "kernel": other})
    assert attached.status_code == 201 and attached.json()["kernel"]["id"] == other["id"]

    assert call(server, "DELETE", f"/api/sessions/{sid}").status_code == 204
    assert call(server, "GET", f"/api/sessions/{sid}").status_code == 404
    assert call(server, "GET", f"/api/kernels/{swapped['kernel']['id']}").status_code == 404
    call(server, "DELETE", f"/api/kernels/{other['id']}")
    assert call(server, "GET", "/api/sessions").json() == []  # its kernel is gone, so is the session


def test_session_errors(server: Server) -> None:
    assert call(server, "POST", "/api/sessions").status_code == 400
    assert call(server, "POST", "/api/sessions", json={"type": "notebook"}).status_code == 400
    assert call(server, "POST", "/api/sessions", json={"path": "x"}).status_code == 400
    unknown_spec = {"path": "x", "type": "notebook", "kernel": {"name": "no-such-spec"}}
    assert call(server, "POST", "/api/sessions", json=unknown_spec).status_code == 501
    unknown_kernel = {"path": "x", "type": "notebook", "kernel": {"id": "nope"}}
    assert call(server, "POST", "/api/sessions", json=unknown_kernel).status_code == 400
    for method in ("GET", "PATCH", "DELETE"):
        assert call(server, method, "/api/sessions/nope", json={}).status_code == 404


@pytest.mark.parametrize(
    "path",
    ["/api", "/api/kernels", "/api/kernelspecs", "/api/kernelspecs/python3", "/api/sessions",
     "/kernelspecs/python3/logo-64x64.png", "/api/kernels/x", "/api/sessions/x", "/_api/metrics"],
)  # fmt: skip
def test_every_endpoint_needs_the_token(server: Server, path: str) -> None:
    for headers in ({}, {"Authorization": "token wrong"}, {"Authorization": "Basic " + TOKEN}):
        response = call(server, "GET", path, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.json()["error"] == "Unauthorized"
    assert call(server, "GET", path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code != 401
    assert call(server, "GET", f"{path}?token={TOKEN}", headers={}).status_code != 401


def test_writes_need_the_token_and_health_does_not(server: Server) -> None:
    assert call(server, "POST", "/api/kernels", headers={}).status_code == 401
    assert (
        call(server, "POST", "/api/sessions", headers={}, json={"path": "p", "type": "t"}).status_code == 401
    )
    assert call(server, "GET", "/api/kernels", headers={}).status_code == 401
    assert call(server, "GET", "/_api/health/live", headers={}).status_code == 200
    assert call(server, "GET", "/_api/health/ready", headers={}).json()["ready"] is True


def metric_samples(server: Server) -> dict[str, float]:
    """``{series: value}`` of the metrics page (series: name plus its label set)."""
    page = call(server, "GET", "/_api/metrics")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in page.text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def test_metrics_follow_kernels_and_their_clients(server: Server) -> None:
    idle = 'nb2svc_kernels{kernel_name="python3",execution_state="idle"}'
    before = metric_samples(server)
    kid = start_kernel(server)["id"]
    during = metric_samples(server)
    assert during.get(idle, 0) == before.get(idle, 0) + 1
    assert during["nb2svc_kernels_max"] == 0 and "nb2svc_warm_kernels_idle" in during
    with KernelClient(server, kid, v1=True) as client:
        assert client.execute("1").status == "ok"
        assert metric_samples(server)["nb2svc_kernel_connections"] >= 1
    assert call(server, "DELETE", f"/api/kernels/{kid}").status_code == 204
    assert metric_samples(server).get(idle, 0) == before.get(idle, 0)


def test_wrong_method_is_a_json_405_naming_the_allowed_ones(server: Server) -> None:
    response = call(server, "PUT", "/api/kernelspecs")
    assert response.status_code == 405
    assert response.json()["reason"] == "Method Not Allowed"
    assert "GET" in response.headers["Allow"]


def test_base_url_cors_listing_off_and_kernel_limit(limited: Server) -> None:
    assert call(limited, "GET", "/api").status_code == 404
    version = call(limited, "GET", "/gw/api", headers={**AUTH, "Origin": "https://app.example"})
    assert version.status_code == 200
    assert version.headers["Access-Control-Allow-Origin"] == "https://app.example"
    preflight = call(
        limited,
        "OPTIONS",
        "/gw/api/kernels",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200  # browsers send preflights without the token
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET,POST,DELETE"
    assert preflight.headers["Access-Control-Allow-Headers"] == "Authorization"

    for path in ("/gw/api/kernels", "/gw/api/sessions"):
        listing = call(limited, "GET", path)
        assert listing.status_code == 403 and "--no-list-kernels" in listing.json()["message"]

    first = call(limited, "POST", "/gw/api/kernels")
    assert first.status_code == 201
    assert first.headers["Location"] == f"/gw/api/kernels/{first.json()['id']}"
    over = call(limited, "POST", "/gw/api/kernels")
    assert over.status_code == 403
    assert "--max-kernels" in over.json()["message"]
    specs = call(limited, "GET", "/gw/api/kernelspecs").json()
    assert specs["kernelspecs"]["python3"]["resources"]["logo-64x64"].startswith("/gw/kernelspecs/")
    assert call(limited, "DELETE", f"/gw/api/kernels/{first.json()['id']}").status_code == 204
    again = call(limited, "POST", "/gw/api/kernels")
    assert again.status_code == 201
    with KernelClient(limited, again.json()["id"], base="/gw", v1=True) as client:
        assert client.execute("print('under /gw')").stdout == "under /gw\n"

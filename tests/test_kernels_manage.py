"""Kernel mode management: env whitelist, kernel specs, seeding, prespawn, warm pool, culling, death."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.kernels_support import AUTH, KernelClient, kernel_server, start_kernel
from tests.support import Server, alive, wait_for

WRAPPER = """\
import os, runpy, sys
marker = sys.argv.pop(1)
if os.path.exists(marker):
    sys.exit(3)  # a kernel that cannot start (again)
runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
"""


def write_spec(root: Path, name: str, argv: list[str]) -> None:
    spec = root / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": name, "language": "python", "interrupt_mode": "signal"})
    )


def write_notebook(path: Path, kernel: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# seed")] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def kernel_model(server: Server, kid: str) -> dict:
    return server.get(f"/api/kernels/{kid}", headers=AUTH).json()


def kernel_ids(server: Server) -> list[str]:
    return [k["id"] for k in server.get("/api/kernels", headers=AUTH).json()]


@pytest.fixture(scope="module")
def specs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jupyter-path")
    launcher = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    write_spec(root, "other", launcher)
    write_spec(root, "seedfail", launcher)
    (root / "flaky.py").write_text(WRAPPER)
    write_spec(
        root,
        "flaky",
        [sys.executable, str(root / "flaky.py"), str(root / "broken"), "-f", "{connection_file}"],
    )
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, specs_dir: Path) -> Iterator[Server]:
    """Extra kernel specs, a seed for one of them that fails, and a whitelisted env var."""
    seed = write_notebook(specs_dir / "seedfail.ipynb", "seedfail", "y = 1", "raise ValueError('bad seed')")
    env = {
        "JUPYTER_PATH": str(specs_dir),
        "SERVER_SECRET": "do-not-leak",
        "KERNEL_FROM_SERVER": "server",
        "ALLOWED_VAR": "server-value",
    }
    args = ("--default-kernel", "other", "--seed", str(seed), "--env-allow", "ALLOWED_VAR")
    with kernel_server(tmp_path_factory.mktemp("kernels-manage"), *args, env=env) as srv:
        yield srv


def test_only_kernel_and_allowed_variables_reach_the_kernel(server: Server) -> None:
    env = {"KERNEL_FOO": "bar", "ALLOWED_VAR": "from-client", "NOT_ALLOWED": "x", "PATH": "/evil"}
    kid = start_kernel(server, name="python3", env=env)["id"]
    names = [
        "KERNEL_FOO",
        "ALLOWED_VAR",
        "NOT_ALLOWED",
        "SERVER_SECRET",
        "KERNEL_FROM_SERVER",
        "NB2SVC_TOKEN",
    ]
    with KernelClient(server, kid) as client:
        result = client.execute(
            f"import json, os; print(json.dumps({{n: os.environ.get(n) for n in {names!r}}}))"
        )
        seen = json.loads(result.stdout)
        path = client.execute("import os; print(os.environ['PATH'])").stdout.strip()
    assert seen == {
        "KERNEL_FOO": "bar",
        "ALLOWED_VAR": "from-client",
        "NOT_ALLOWED": None,
        "SERVER_SECRET": None,
        "KERNEL_FROM_SERVER": "server",
        "NB2SVC_TOKEN": None,
    }
    assert path != "/evil"


def test_default_kernel_spec_and_listing_of_extra_specs(server: Server) -> None:
    specs = server.get("/api/kernelspecs", headers=AUTH).json()
    assert specs["default"] == "other"
    assert {"python3", "other", "flaky", "seedfail"} <= set(specs["kernelspecs"])
    assert start_kernel(server)["name"] == "other"


def test_a_failing_seed_cell_fails_the_start_with_its_cell_number(server: Server) -> None:
    response = server.request("POST", "/api/kernels", json={"name": "seedfail"}, headers=AUTH)
    assert response.status_code == 500
    message = response.json()["message"]
    assert "cell 3" in message and "ValueError: bad seed" in message
    assert response.json()["reason"] == "Internal Server Error"


def test_a_kernel_that_cannot_come_back_is_dead_and_clients_hear_it(server: Server, specs_dir: Path) -> None:
    kid = start_kernel(server, name="flaky")["id"]
    with KernelClient(server, kid, v1=True) as client:
        assert client.execute("print('up')").stdout == "up\n"
        marker = specs_dir / "broken"
        client.execute_request(f"open({str(marker)!r}, 'w').close(); import os; os._exit(1)")
        states = []
        while "dead" not in states:
            msg = client.wait_for(lambda m: m.msg_type == "status" and m.channel == "iopub", timeout=30)
            states.append(msg.content["execution_state"])
        assert "restarting" in states and states.index("restarting") < states.index("dead")
    model = kernel_model(server, kid)
    assert model["execution_state"] == "dead" and "exited during start-up" in model["reason"]
    assert server.request("DELETE", f"/api/kernels/{kid}", headers=AUTH).status_code == 204


@pytest.fixture(scope="module")
def warm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("kernels-warm")
    seed = write_notebook(
        root / "seed.ipynb", "python3", "SEEDED = 'yes'", "import os\nSEED_PID = os.getpid()"
    )
    with kernel_server(root, "--prespawn", "1", "--warm", "1", "--seed", str(seed)) as srv:
        yield srv


def test_prespawned_kernels_are_listed_and_seeded(warm_server: Server) -> None:
    listed = kernel_ids(warm_server)
    assert len(listed) == 1  # the warm kernel is hidden
    assert warm_server.get("/_api/health/ready").json() == {"ready": True, "kernels": 1, "warm": 1}
    with KernelClient(warm_server, listed[0]) as client:
        assert client.execute("print(SEEDED, SEED_PID == os.getpid())").stdout == "yes True\n"


def test_post_hands_out_the_warm_kernel_and_the_pool_refills(warm_server: Server) -> None:
    before = warm_server.find_kernels()
    assert len(before) == 2  # prespawned + warm
    kid = start_kernel(warm_server)["id"]
    with KernelClient(warm_server, kid) as client:
        pid = int(client.execute("import os; print(os.getpid())").stdout)
        assert pid in before  # started before the request: a warm kernel
        assert client.execute("print(SEEDED)").stdout == "yes\n"
        wait_for(
            lambda: warm_server.get("/_api/health/ready").json()["warm"] == 1, 30, "the warm pool to refill"
        )
        assert len(warm_server.find_kernels()) == 3
        restarted = warm_server.request("POST", f"/api/kernels/{kid}/restart", headers=AUTH)
        assert restarted.status_code == 200
        assert client.execute("SEEDED").reply["ename"] == "NameError"  # a restart does not re-seed
    # a request the warm kernel cannot serve (its own env) starts a kernel of its own
    own = start_kernel(warm_server, env={"KERNEL_X": "1"})["id"]
    with KernelClient(warm_server, own) as client:
        assert client.execute("import os; print(os.environ['KERNEL_X'], SEEDED)").stdout == "1 yes\n"


@pytest.fixture(scope="module")
def culling_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ("--cull-idle-timeout", "1", "--cull-interval", "0.2", "--force-kernel", "python3")
    with kernel_server(tmp_path_factory.mktemp("kernels-cull"), *args) as srv:
        yield srv


def test_idle_kernels_are_culled_unless_connected(culling_server: Server) -> None:
    connected = start_kernel(culling_server)["id"]
    client = KernelClient(culling_server, connected)
    try:
        lonely = start_kernel(culling_server)["id"]
        wait_for(lambda: lonely not in kernel_ids(culling_server), 15, "the idle kernel to be culled")
        assert connected in kernel_ids(culling_server)  # as idle, but a client is connected
        assert client.execute("print('kept')").stdout == "kept\n"
    finally:
        client.close()
    wait_for(lambda: connected not in kernel_ids(culling_server), 15, "the disconnected kernel to be culled")
    assert "culling kernel" in culling_server.log()


def test_force_kernel_overrides_the_requested_spec(culling_server: Server) -> None:
    model = start_kernel(culling_server, name="no-such-spec")
    assert model["name"] == "python3"


def test_sigterm_closes_websockets_and_leaves_no_kernel_behind(tmp_path: Path) -> None:
    with kernel_server(tmp_path, "--prespawn", "1", "--warm", "1") as srv:
        kid = start_kernel(srv)["id"]
        client = KernelClient(srv, kid)
        client.execute("print('connected')")
        # the prespawned kernel, this one (taken warm) and the warm one started to replace it
        kernels = wait_for(lambda: len(found := srv.find_kernels()) == 3 and found, 30, "three kernels")
        assert isinstance(kernels, set)
        assert srv.stop() == 0  # the open websocket does not hold the worker until the graceful timeout
        assert not any(alive(pid) for pid in kernels)
        with pytest.raises((ConnectionError, OSError)):
            client.wait_for(lambda m: False, timeout=5)
        assert "Traceback" not in srv.log()


def test_cull_connected_culls_idle_kernels_even_with_a_client(tmp_path: Path) -> None:
    args = ("--cull-idle-timeout", "1", "--cull-interval", "0.2", "--cull-connected")
    with kernel_server(tmp_path, *args) as server:
        kernel = start_kernel(server)["id"]
        client = KernelClient(server, kernel)
        try:
            assert client.execute("print('busy once')").stdout == "busy once\n"
            wait_for(lambda: kernel not in kernel_ids(server), 15, "the connected idle kernel to be culled")
        finally:
            client.close()
        assert "culling kernel" in server.log()

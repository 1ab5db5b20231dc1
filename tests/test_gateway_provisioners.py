"""gateway_provisioners' ``DistributedProvisioner`` on localhost, in both modes.

A real third-party remote provisioner: ``jupyter ssh-spec install --remote-hosts
localhost`` skips SSH (localhost is local) but keeps everything else remote-shaped: its
launcher (``launch_ipykernel.py``) reports the kernel's ports back encrypted to a
response listener, signals go over the launcher's own TCP socket, and the provisioner
has no ``process`` attribute. The kernel is two processes (the launcher, which runs the
kernel in-process, and a forked listener), both counted by their command line, which
names this test's private copy of the launcher.

Loopback only: the spec's scripts hard-code ``0.0.0.0``, so the private copy is patched
to ``127.0.0.1``, and the response listener is pinned with ``GP_RESPONSE_IP``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest

from tests.kernels_support import AUTH, KernelClient, kernel_server, start_kernel
from tests.notebooks import notebook
from tests.support import Server, cmdline, free_port, wait_for, worker_of

pytest.importorskip("gateway_provisioners")  # a test dependency (setup.py extras "test")

StartServer = Callable[..., Server]
KERNEL = "ssh_python"
INSTALL = "from gateway_provisioners.cli.ssh_specapp import SshProvisionerApp as A; A.launch_instance()"


class GatewaySpec:
    """The ``ssh_python`` spec installed into a private prefix, and the kernels it runs."""

    def __init__(self, root: Path) -> None:
        prefix = root / "gp"
        subprocess.run(
            [sys.executable, "-c", INSTALL, "install", f"--kernel-name={KERNEL}"]
            + ["--remote-hosts=localhost", f"--prefix={prefix}", "--unauthorized-users=nobody-placeholder"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        spec_dir = prefix / "share" / "jupyter" / "kernels" / KERNEL
        scripts = spec_dir / "scripts"
        for name in ("launch_ipykernel.py", "server_listener.py"):
            script = scripts / name
            text = script.read_text()
            assert '"0.0.0.0"' in text, f"{name} no longer binds 0.0.0.0: recheck the loopback patch"
            script.write_text(text.replace('"0.0.0.0"', '"127.0.0.1"'))
        spec_path = spec_dir / "kernel.json"
        spec = json.loads(spec_path.read_text())
        assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "distributed-provisioner"
        spec["argv"][0] = sys.executable  # the installer writes a bare "python"
        spec_path.write_text(json.dumps(spec))
        self.launcher = str(scripts / "launch_ipykernel.py")
        logs = root / "gplogs"
        logs.mkdir()
        self.tmp = root / "tmp"  # where the launcher writes its connection file (it holds the key)
        self.tmp.mkdir()
        self.env = {
            "TMPDIR": str(self.tmp),
            "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
            "GP_RESPONSE_IP": "127.0.0.1",
            "GP_RESPONSE_PORT": str(free_port()),
            "GP_KERNEL_LOG_DIR": str(logs),
        }

    def processes(self) -> set[int]:
        """Every live process of this spec's kernels (launchers and their listeners)."""
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and self.launcher in cmdline(int(entry)) and _running(int(entry)):
                found.add(int(entry))
        return found

    def connection_files(self) -> list[str]:
        return sorted(p.name for p in self.tmp.glob("kernel-*.json"))

    def kill_all(self) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewaySpec]:
    spec = GatewaySpec(tmp_path)
    yield spec
    spec.kill_all()  # never leave a kernel behind, even when a test failed


SERVICE = notebook(
    "import json, os, time",
    "# GET /pid\nprint(os.getpid())",
    "# GET /sleep/:seconds\ntime.sleep(float(json.loads(REQUEST)['path']['seconds']))\nprint('slept')",
    kernel="python3",
    language="python",
)


def test_api_mode_with_gateway_distributed_provisioner(
    start_server: StartServer, tmp_path: Path, gateway: GatewaySpec
) -> None:
    path = tmp_path / "service.ipynb"
    nbformat.write(SERVICE, path)
    server = start_server(
        str(path),
        "--kernel-name",
        KERNEL,
        "--pool-size",
        "1",
        "--request-timeout",
        "2",
        env=gateway.env,
        timeout=90,
    )
    first = int(server.get("/pid").text)
    assert first in gateway.processes()

    timed_out = server.get("/sleep/30")  # interrupted over the launcher's socket
    assert timed_out.status_code == 504
    assert int(server.get("/pid").text) == first  # the interrupt worked: same kernel

    assert server.stop() == 0
    assert gateway.processes() == set(), "a kernel process outlived the server"
    assert gateway.connection_files() == []


def test_a_killed_workers_launcher_is_stopped(
    start_server: StartServer, tmp_path: Path, gateway: GatewaySpec
) -> None:
    """A launcher the provisioner started on this host is recorded like a local kernel."""
    path = tmp_path / "service.ipynb"
    nbformat.write(SERVICE, path)
    server = start_server(str(path), "--kernel-name", KERNEL, "--pool-size", "1", env=gateway.env, timeout=90)
    first = int(server.get("/pid").text)  # the launcher runs the kernel in-process
    old = gateway.processes()
    assert first in old
    os.kill(worker_of(server, first), signal.SIGKILL)
    wait_for(
        lambda: not old & gateway.processes(), 30, "the dead worker's launcher and listener to be killed"
    )
    wait_for(lambda: server.get("/pid", timeout=90).status_code == 200, 90, "a respawned worker to serve")
    assert server.stop() == 0
    assert gateway.processes() == set(), "a kernel process outlived the server"


def test_kernel_mode_with_gateway_distributed_provisioner(tmp_path: Path, gateway: GatewaySpec) -> None:
    with kernel_server(tmp_path, "--default-kernel", KERNEL, env=gateway.env) as server:
        kernel_id = start_kernel(server)["id"]
        with KernelClient(server, kernel_id) as client:
            first = int(client.execute("import os; print(os.getpid())").stdout)
            assert first in gateway.processes()
            msg_id = client.execute_request("import time; print('sleeping', flush=True); time.sleep(30)")
            # interrupted once the cell runs (a signal between execute_input and the cell is
            # ipykernel's, not the cell's, and was seen lost under load)
            client.wait_for(lambda m: m.msg_type == "stream" and m.parent_id == msg_id)
            interrupted = server.request("POST", f"/api/kernels/{kernel_id}/interrupt", headers=AUTH)
            assert interrupted.status_code == 204
            result = client.collect(msg_id, timeout=10)
            assert result.status == "error" and result.reply["ename"] == "KeyboardInterrupt"

            restarted = server.request("POST", f"/api/kernels/{kernel_id}/restart", headers=AUTH, timeout=60)
            assert restarted.status_code == 200
            second = int(client.execute("import os; print(os.getpid())", timeout=30).stdout)
            assert second != first
            wait_for(lambda: first not in gateway.processes(), 15, "the restarted kernel's old process")

        deleted = server.request("DELETE", f"/api/kernels/{kernel_id}", headers=AUTH, timeout=60)
        assert deleted.status_code == 204
        wait_for(lambda: not gateway.processes(), 15, "no kernel process left after DELETE")
        assert gateway.connection_files() == []

        survivor = start_kernel(server)["id"]
        with KernelClient(server, survivor) as client:
            assert client.execute("print(6 * 7)", timeout=30).stdout == "42\n"
        assert gateway.processes()
        assert server.stop() == 0
    assert gateway.processes() == set(), "a kernel process outlived the server"
    assert gateway.connection_files() == []

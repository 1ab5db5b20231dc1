"""Kernels through a provisioner that is not the local one, in both modes.

The recording provisioner (``tests/provisioners``, registered by entry point) runs
ipykernel through an inner ``LocalProvisioner`` but has no ``process`` attribute, as
every remote provisioner: the server must start, poll, interrupt, restart and stop its
kernels through the provisioner API alone. Each test checks the lifecycle hooks the
provisioner saw and that no kernel process is left.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest

from tests.kernels_support import AUTH, KernelClient, kernel_server, start_kernel
from tests.notebooks import notebook
from tests.support import Server, alive, kernel_spec_env, provisioner_spec_env, wait_for

StartServer = Callable[..., Server]


class Recorded:
    """A kernel spec ``rec_python`` using the recording provisioner, and what it recorded."""

    def __init__(self, root: Path) -> None:
        self.path = root / "calls.log"
        self.env = provisioner_spec_env(
            root,
            "rec_python",
            {"provisioner_name": "recording-provisioner", "config": {"record_path": str(self.path)}},
            display_name="Python (recording provisioner)",
        )

    def hooks(self) -> list[str]:
        if not self.path.exists():
            return []
        return [line.split()[1] for line in self.path.read_text().splitlines()]

    def pids(self) -> set[int]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return {int(line.split()[2]) for line in lines if line.split()[1] == "launch_kernel"}


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Recorded]:
    record = Recorded(tmp_path)
    yield record
    for pid in record.pids():  # never leave a kernel behind, even when a test failed
        if alive(pid):
            os.kill(pid, 9)


SERVICE = notebook(
    "import json, os, time, atexit",
    "# GET /pid\nprint(os.getpid())",
    "# GET /sleep/:seconds\ntime.sleep(float(json.loads(REQUEST)['path']['seconds']))\nprint('slept')",
    "# GET /die\nos._exit(1)",
    "# GET /linger\natexit.register(time.sleep, 60)\nprint('will linger on exit')",
    kernel="python3",
    language="python",
)


def test_api_mode_with_a_provisioner_that_has_no_process(
    start_server: StartServer, tmp_path: Path, recorded: Recorded
) -> None:
    path = tmp_path / "service.ipynb"
    nbformat.write(SERVICE, path)
    server = start_server(
        str(path),
        "--kernel-name",
        "rec_python",
        "--pool-size",
        "1",
        "--request-timeout",
        "5",  # longer than the provisioner's poll interval (2 s), which is how /die is seen
        env=recorded.env,
    )
    first = int(server.get("/pid").text)
    assert first in recorded.pids()

    timed_out = server.get("/sleep/30")  # interrupted through the provisioner's send_signal
    assert timed_out.status_code == 504
    assert int(server.get("/pid").text) == first  # the interrupt worked: same kernel

    assert server.get("/die").status_code == 502  # the provisioner's poll() sees it gone
    second = int(server.get("/pid", timeout=60).text)
    assert second != first
    wait_for(lambda: not alive(first), 10, "the dead kernel to be reaped")

    assert server.get("/linger").status_code == 200  # this kernel ignores a graceful stop
    assert server.stop() == 0
    for pid in recorded.pids():
        assert not alive(pid), f"kernel {pid} outlived the server"
    hooks = set(recorded.hooks())
    expected = {"pre_launch", "launch_kernel", "post_launch", "poll", "send_signal"}
    expected |= {"shutdown_requested", "terminate", "kill", "wait", "cleanup"}
    assert expected <= hooks, f"missing hooks: {expected - hooks}"
    assert "died; starting a replacement" in server.log()
    assert server.log().count("starting a replacement") == 1  # no replacement loop


def test_kernel_mode_with_a_provisioner_that_has_no_process(tmp_path: Path, recorded: Recorded) -> None:
    with kernel_server(tmp_path, "--default-kernel", "rec_python", env=recorded.env) as server:
        kernel_id = start_kernel(server)["id"]
        with KernelClient(server, kernel_id) as client:
            first = int(client.execute("import os; print(os.getpid())").stdout)
            msg_id = client.execute_request("import time; print('sleeping', flush=True); time.sleep(30)")
            client.wait_for(lambda m: m.msg_type == "stream" and m.parent_id == msg_id)  # the cell runs
            interrupted = server.request("POST", f"/api/kernels/{kernel_id}/interrupt", headers=AUTH)
            assert interrupted.status_code == 204
            result = client.collect(msg_id, timeout=10)
            assert result.status == "error" and result.reply["ename"] == "KeyboardInterrupt"

            restarted = server.request("POST", f"/api/kernels/{kernel_id}/restart", headers=AUTH)
            assert restarted.status_code == 200
            second = int(client.execute("import os; print(os.getpid())").stdout)
            assert second != first
            wait_for(lambda: not alive(first), 10, "the restarted kernel's old process to stop")

        deleted = server.request("DELETE", f"/api/kernels/{kernel_id}", headers=AUTH)
        assert deleted.status_code == 204
        wait_for(lambda: not alive(second), 10, "the deleted kernel's process to stop")

        survivor = start_kernel(server)["id"]
        with KernelClient(server, survivor) as client:
            third = int(client.execute("import os; print(os.getpid())").stdout)
        assert server.stop() == 0
    assert not alive(third), "a kernel outlived the server"
    assert all(not alive(pid) for pid in recorded.pids())
    hooks = recorded.hooks()
    for hook in (
        "pre_launch",
        "launch_kernel",
        "post_launch",
        "send_signal",
        "shutdown_requested",
        "wait",
        "cleanup",
    ):
        assert hook in hooks, f"{hook} was never called"
    assert len(recorded.pids()) == 3


def test_remote_kernels_are_polled_not_assumed_dead(tmp_path: Path, recorded: Recorded) -> None:
    with kernel_server(tmp_path, "--default-kernel", "rec_python", env=recorded.env) as server:
        kernel_id = start_kernel(server)["id"]
        wait_for(lambda: recorded.hooks().count("poll") >= 2, 15, "the provisioner to be polled")
        # still listed and idle: never taken for dead and restarted in a loop
        model = server.get(f"/api/kernels/{kernel_id}", headers=AUTH).json()
        assert model["execution_state"] == "idle"
        assert recorded.hooks().count("launch_kernel") == 1


def broken_spec(root: Path) -> dict[str, str]:
    """A kernel spec whose launch fails: its program does not exist."""
    return kernel_spec_env(root, "broken", ["/nonexistent/kernel", "{connection_file}"])


def test_api_mode_stops_after_a_bounded_retry_when_the_provisioner_cannot_launch(
    start_server: StartServer, tmp_path: Path
) -> None:
    path = tmp_path / "service.ipynb"
    nbformat.write(SERVICE, path)
    server = start_server(
        str(path), "--kernel-name", "broken", "--pool-size", "2", env=broken_spec(tmp_path), ready=False
    )
    assert server.proc.wait(60) != 0
    log = server.log()
    assert "could not start kernel 'broken' with local-provisioner" in log and "/nonexistent/kernel" in log
    assert log.count("could not start a kernel") <= 2 * 3  # a bounded retry, never a loop
    assert "Traceback" not in log


def test_kernel_mode_readiness_says_why_warm_kernels_cannot_start(tmp_path: Path) -> None:
    env = broken_spec(tmp_path)
    server = Server(["--kernels", "--default-kernel", "broken", "--warm", "1"], env=env, log_dir=tmp_path)
    try:
        wait_for(lambda: "retrying the kernel start in 2s" in server.log(), 30, "the second retry")
        reason = wait_for(
            lambda: (
                server.get("/_api/health/ready").json().get("reason", "").startswith("warm kernels cannot")
            ),
            30,
            "readiness to give the reason",
        )
        assert reason
        ready = server.get("/_api/health/ready")
        assert ready.status_code == 503 and "/nonexistent/kernel" in ready.json()["reason"]
        attempts = server.log().count("could not start a kernel")
        assert attempts == 3
    finally:
        server.kill()


def test_a_replica_answers_404_at_once_for_a_kernel_it_does_not_own(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with kernel_server(tmp_path / "a") as owner, kernel_server(tmp_path / "b") as other:
        kernel_id = start_kernel(owner)["id"]
        assert other.get(f"/api/kernels/{kernel_id}", headers=AUTH).status_code == 404
        with pytest.raises(Exception, match="404"):
            KernelClient(other, kernel_id)
        with KernelClient(owner, kernel_id) as client:
            assert client.execute("print('home')").stdout == "home\n"

"""No kernel outlives a worker that dies without cleaning up (SIGKILL, OOM, a segfault).

xeus-python is the kernel here because, unlike ipykernel, it does not exit when its
parent dies: without the master's reaping its process and the ``sleep`` a cell started
in its process group would run forever. Each test kills only processes of its own
server's tree, and hands every pid it saw to the server's last-resort cleanup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest
import requests

from nb2svc.runtime import reaper
from tests.kernels_support import KernelClient, kernel_server, start_kernel
from tests.notebooks import notebook
from tests.support import Server, alive, descendants, wait_for, worker_of

StartServer = Callable[..., Server]

SLEEPER = notebook(
    "import os, subprocess\nchild = subprocess.Popen(['sleep', '900'])",
    "# GET /pids\nprint(os.getpid(), child.pid)",
    kernel="xpython",
    language="python",
)


def private_tmp(tmp_path: Path) -> dict[str, str]:
    """A TMPDIR of the test's own: the server's records, and its reaping, stay inside it."""
    tmp = tmp_path / "t"
    tmp.mkdir()
    return {"TMPDIR": str(tmp)}


def serve(start_server: StartServer, tmp_path: Path, env: dict[str, str]) -> Server:
    path = tmp_path / "sleeper.ipynb"
    nbformat.write(SLEEPER, path)
    return start_server(str(path), "--pool-size", "1", env=env)


def kernel_pids(server: Server) -> tuple[int, int]:
    """The kernel's pid and its cell's ``sleep``, both in the server's tree and its cleanup."""
    kernel, child = (int(p) for p in server.get("/pids").text.split())
    assert {kernel, child} <= descendants(server.proc.pid)
    server.kernel_pids |= {kernel, child}
    return kernel, child


def gone(*pids: int) -> bool:
    return not any(alive(p) for p in pids)


def serves_again(server: Server, old_kernel: int) -> bool:
    try:
        response = server.get("/pids", timeout=60)
    except (requests.ConnectionError, requests.Timeout):
        return False
    return response.status_code == 200 and int(response.text.split()[0]) != old_kernel


def test_a_killed_workers_kernel_and_its_children_are_stopped(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = serve(start_server, tmp_path, private_tmp(tmp_path))
    kernel, child = kernel_pids(server)
    os.kill(worker_of(server, kernel), signal.SIGKILL)
    wait_for(lambda: gone(kernel, child), 30, "the dead worker's kernel and its sleep to be killed")
    wait_for(lambda: serves_again(server, kernel), 90, "a respawned worker to serve with a new kernel")
    kernel_pids(server)  # the new kernel is recorded for cleanup too
    assert "killed" in server.log()
    assert server.stop() == 0
    assert [p for p in server.kernel_pids if alive(p)] == []


def test_kernels_of_a_server_killed_whole_are_stopped_by_the_next_start(
    start_server: StartServer, tmp_path: Path
) -> None:
    env = private_tmp(tmp_path)
    first = serve(start_server, tmp_path, env)
    kernel, child = kernel_pids(first)
    os.killpg(first.proc.pid, signal.SIGKILL)  # master and workers; the kernels have sessions of their own
    first.proc.wait(10)
    assert alive(kernel) and alive(child)
    serve(start_server, tmp_path, env)
    wait_for(lambda: gone(kernel, child), 30, "the next server to stop the dead server's kernels")


def test_a_master_killed_alone_leaves_its_workers_to_stop_their_kernels(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = serve(start_server, tmp_path, private_tmp(tmp_path))
    kernel, child = kernel_pids(server)
    worker = worker_of(server, kernel)
    server.kernel_pids.add(worker)  # no longer in the master's tree once it is gone
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    wait_for(lambda: gone(worker, kernel, child), 30, "the orphaned worker to stop its kernel and exit")


def test_kernel_mode_a_killed_workers_kernels_are_stopped(tmp_path: Path) -> None:
    code = "import os, subprocess\nchild = subprocess.Popen(['sleep', '900'])\nprint(os.getpid(), child.pid)"
    with kernel_server(tmp_path, "--default-kernel", "xpython", env=private_tmp(tmp_path)) as server:
        with KernelClient(server, start_kernel(server)["id"]) as client:
            kernel, child = (int(p) for p in client.execute(code).stdout.split())
        assert {kernel, child} <= descendants(server.proc.pid)
        server.kernel_pids |= {kernel, child}
        os.kill(worker_of(server, kernel), signal.SIGKILL)
        wait_for(lambda: gone(kernel, child), 30, "the dead worker's kernel and its sleep to be killed")
        server.wait_ready(90)  # a respawned worker
        server.kernel_pids |= {kernel, child}
        with KernelClient(server, start_kernel(server)["id"]) as client:
            assert client.execute("print(6 * 7)").stdout == "42\n"


# --- the reaper's safety, without servers ---------------------------------------------------


@pytest.fixture
def group(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``sleep`` leading a process group of its own (as a kernel does), and a private TMPDIR."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    proc = subprocess.Popen(["sleep", "900"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def me() -> str:
    return f"{os.getpid()}-{reaper._start_time(os.getpid())}"


def owner_with(
    proc: subprocess.Popen[bytes], owner: str, started: int | None = None, server: str | None = None
) -> Path:
    """An owner directory named ``owner`` whose one kernel record names ``proc``'s group, in
    the directory of ``server`` (this process's own by default: what :func:`reaper.reap` reads)."""
    base = reaper._base()
    assert base is not None
    kernel = Path(base, server or me(), owner, "k1")
    kernel.mkdir(parents=True)
    reaper.record_group(str(kernel), proc.pid)
    if started is not None:  # a record of an earlier process that had the same pid
        (kernel / reaper.GROUP_FILE).write_text(f"{proc.pid} {started}\n")
    return kernel.parent


def test_a_dead_owners_groups_are_killed_and_its_directory_removed(group: subprocess.Popen[bytes]) -> None:
    owner = owner_with(group, f"{os.getpid()}-1")  # our pid, another start time: dead
    assert reaper.reap() == [group.pid]
    assert group.wait(10) == -signal.SIGKILL
    assert not owner.exists()


def test_a_live_owners_groups_are_left_alone(group: subprocess.Popen[bytes]) -> None:
    owner = owner_with(group, me())
    assert reaper.reap() == []
    assert group.poll() is None and owner.exists()


def test_a_reused_pid_is_not_killed(group: subprocess.Popen[bytes]) -> None:
    started = reaper._start_time(group.pid)
    assert started is not None
    owner = owner_with(group, f"{os.getpid()}-1", started=started - 1)
    assert reaper.reap() == []
    assert group.poll() is None
    assert not owner.exists()  # the stale record is gone all the same


def test_a_base_directory_others_can_read_is_refused(group: subprocess.Popen[bytes]) -> None:
    owner = owner_with(group, f"{os.getpid()}-1")
    owner.parent.parent.chmod(0o755)
    assert reaper.reap() == []
    assert group.poll() is None and owner.exists()


def test_a_template_record_kills_that_process_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A kernel template shares its worker's process group: its record kills it, never the group."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    template = subprocess.Popen(
        ["sleep", "900"]
    )  # in our own process group, as a template is in its worker's
    try:
        base = reaper._base()
        assert base is not None
        directory = Path(base, me(), f"{os.getpid()}-1", "t1")  # our pid, another start time: a dead owner
        directory.mkdir(parents=True)
        reaper.record_process(str(directory), template.pid)
        assert reaper.reap() == [template.pid]
        assert template.wait(10) == -signal.SIGKILL  # and this test process, in the same group, lives
    finally:
        template.kill()
        template.wait(10)


def test_another_live_servers_dead_worker_is_not_ours(
    group: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    other = f"{group.pid}-{reaper._start_time(group.pid)}"  # a live process stands for the other server
    owner = owner_with(group, "1-1", server=other)
    assert reaper.reap() == [] and reaper.sweep() == []
    assert group.poll() is None and owner.exists()
    assert "died without stopping" not in caplog.text


def test_a_dead_servers_dead_workers_are_swept_and_its_directory_removed(
    group: subprocess.Popen[bytes],
) -> None:
    owner = owner_with(group, "1-1", server=f"{os.getpid()}-1")  # our pid, another start: a dead server
    assert reaper.sweep() == [group.pid]
    assert group.wait(10) == -signal.SIGKILL
    assert not owner.parent.exists()


def test_a_dead_servers_live_worker_keeps_its_directory(group: subprocess.Popen[bytes]) -> None:
    live = f"{group.pid}-{reaper._start_time(group.pid)}"  # a worker whose master was killed alone
    owner = owner_with(group, live, server=f"{os.getpid()}-1")
    assert reaper.sweep() == []
    assert group.poll() is None and owner.exists()


def test_a_killed_worker_is_reaped_by_its_own_server_only(start_server: StartServer, tmp_path: Path) -> None:
    """Two servers of one user share the runtime directory. The first's master is paused
    while its worker is killed (a dead worker not yet reaped); the second then reaps after
    its own worker dies: it must neither kill nor report the first server's kernels."""
    env = private_tmp(tmp_path)
    first = serve(start_server, tmp_path, env)
    second = serve(start_server, tmp_path, env)
    kernel, child = kernel_pids(first)
    other_kernel, other_child = kernel_pids(second)
    first_worker, second_worker = worker_of(first, kernel), worker_of(second, other_kernel)
    first.proc.send_signal(signal.SIGSTOP)
    try:
        os.kill(first_worker, signal.SIGKILL)
        wait_for(lambda: not alive(first_worker), 10, "the first server's worker to be dead")
        os.kill(second_worker, signal.SIGKILL)
        wait_for(lambda: gone(other_kernel, other_child), 30, "the second server to reap its own worker")
        wait_for(lambda: serves_again(second, other_kernel), 90, "the second server to serve again")
        kernel_pids(second)
        assert alive(kernel) and alive(child), "the second server killed the first server's kernels"
        assert f"process {first_worker} died" not in second.log()
        assert f"process {second_worker} died without stopping its kernels" in second.log()
    finally:
        first.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: gone(kernel, child), 30, "the first server to reap its own worker")
    reported = f"process {first_worker} died without stopping its kernels"
    wait_for(lambda: reported in first.log(), 10, "the first server to say so")  # it kills, then logs
    wait_for(lambda: serves_again(first, kernel), 90, "the first server to serve again")
    kernel_pids(first)
    assert first.stop() == 0 and second.stop() == 0
    assert [p for p in first.kernel_pids | second.kernel_pids if alive(p)] == []

"""How kernels end (issue 22): a kernel that aborts requests is retired, not answered 200
with an empty body; a kernel its client shut down over the websocket is removed, not
restarted."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import nbformat

from tests.kernels_support import AUTH, KernelClient, kernel_server, start_kernel
from tests.notebooks import notebook
from tests.support import Server, alive, kernel_spec_env, wait_for

StartServer = Callable[..., Server]

#: An ipykernel that, like tslab, aborts every request after the first error.
ABORTING_KERNEL = """
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp


class AbortingKernel(IPythonKernel):
    failed = False

    async def do_execute(self, code, silent, *args, **kwargs):
        if self.failed:
            return {"status": "abort", "execution_count": self.execution_count}
        reply = await super().do_execute(code, silent, *args, **kwargs)
        if reply.get("status") == "error":
            self.failed = True
        return reply


IPKernelApp.launch_instance(kernel_class=AbortingKernel)
"""


def aborting_spec(root: Path) -> dict[str, str]:
    script = root / "aborting_kernel.py"
    script.write_text(ABORTING_KERNEL)
    return kernel_spec_env(root, "aborting", [sys.executable, str(script), "-f", "{connection_file}"])


def test_an_aborted_request_is_an_error_and_the_kernel_is_replaced(
    start_server: StartServer, tmp_path: Path
) -> None:
    path = tmp_path / "svc.ipynb"
    nbformat.write(
        notebook("import os", "# GET /boom\nraise ValueError('x')", "# GET /pid\nprint(os.getpid())"), path
    )
    server = start_server(
        str(path), "--kernel-name", "aborting", "--pool-size", "1", env=aborting_spec(tmp_path)
    )
    first = server.get("/pid").text
    assert server.get("/boom").status_code == 500  # from now on this kernel aborts everything
    aborted = server.get("/pid")
    assert aborted.status_code == 500 and aborted.json()["error"] == "ExecutionAborted"
    assert "ExecutionAborted" in server.log()  # logged at ERROR like any failed request

    def served_by_a_new_kernel() -> bool:
        answer = server.get("/pid")
        return answer.status_code == 200 and answer.text not in ("", first)

    wait_for(served_by_a_new_kernel, 60, "a replacement kernel to answer")


def test_a_kernel_its_client_shuts_down_is_removed_not_restarted(tmp_path: Path) -> None:
    with kernel_server(tmp_path) as server:
        kernel = start_kernel(server)
        kept = start_kernel(server)
        pids = server.find_kernels()
        with KernelClient(server, kernel["id"]) as client:
            assert client.execute("print(1)").stdout == "1\n"
            client.send("control", "shutdown_request", {"restart": False})  # jupyter console's exit
            client.wait_for(lambda m: m.msg_type == "shutdown_reply", 20)

        def unlisted() -> bool:
            listed = server.get("/api/kernels", headers=AUTH).json()
            return [k["id"] for k in listed] == [kept["id"]]

        wait_for(unlisted, 30, "the shut-down kernel to leave the list")
        assert server.get(f"/api/kernels/{kernel['id']}", headers=AUTH).status_code == 404
        wait_for(lambda: len([p for p in pids if alive(p)]) == 1, 30, "one kernel process left")
        assert server.find_kernels() <= pids  # nothing was restarted
        assert "restarting it" not in server.log()
        with KernelClient(server, kept["id"]) as client:  # the other kernel is untouched
            assert client.execute("print(2)").stdout == "2\n"


def test_a_restart_request_still_restarts(tmp_path: Path) -> None:
    with kernel_server(tmp_path) as server:
        kernel = start_kernel(server)
        with KernelClient(server, kernel["id"]) as client:
            client.send("shell", "shutdown_request", {"restart": True})
            client.wait_for(lambda m: m.msg_type == "shutdown_reply", 20)
        wait_for(lambda: "restarting it" in server.log(), 30, "the automatic restart")
        listed = server.get("/api/kernels", headers=AUTH).json()
        assert [k["id"] for k in listed] == [kernel["id"]]
        with KernelClient(server, kernel["id"]) as client:
            assert client.execute("print(3)", timeout=30).stdout == "3\n"

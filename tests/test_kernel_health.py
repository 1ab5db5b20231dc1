"""A kernel's health, not just its process: API mode retires kernels that cannot answer again.

Each test breaks a kernel the way notebook code can (closing stdout, ``exit()``,
ignoring SIGINT past the timeout, leaving child processes behind) and checks that the
next request is answered by a healthy kernel and that nothing outlives the server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import nbformat

from tests.notebooks import notebook
from tests.support import Server, alive, cmdline, wait_for

StartServer = Callable[..., Server]

BREAKERS = notebook(
    "import json, os, signal, subprocess, sys, time",
    "# GET /pid\nprint(os.getpid())",
    "# GET /connection\nfrom ipykernel.connect import get_connection_file\nprint(get_connection_file())",
    "# GET /close-stdout\nprint('bye', flush=True)\nsys.stdout.close()",
    "# GET /close-stdout-and-fail\nsys.stdout.close()\nraise RuntimeError('and then it failed')",
    "# GET /swap-stdout\nimport io\nsys.stdout = io.StringIO()",
    "# GET /exit\nprint('leaving')\nexit()",
    "# GET /stubborn\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)",
    "# GET /child\nchild = subprocess.Popen(['sleep', '900'])\nprint(child.pid)",
    "# GET /die\nos._exit(3)",
    kernel="python3",
    language="python",
)


def serve(start_server: StartServer, tmp_path: Path, *args: str) -> Server:
    path = tmp_path / "breakers.ipynb"
    nbformat.write(BREAKERS, path)
    return start_server(str(path), "--pool-size", "1", *args)


def test_closed_stdout_kernel_is_replaced_before_the_next_request(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = serve(start_server, tmp_path)
    before = server.get("/pid").text
    assert server.get("/close-stdout").status_code == 200
    after = server.get("/pid", timeout=60)
    assert after.status_code == 200, after.text
    assert after.text != before
    assert "retired" in server.log() and "closed sys.stdout" in server.log()


def test_closed_stdout_in_a_failing_cell_is_noticed_too(start_server: StartServer, tmp_path: Path) -> None:
    server = serve(start_server, tmp_path)
    before = server.get("/pid").text
    failed = server.get("/close-stdout-and-fail")
    assert failed.status_code == 500
    assert failed.json()["message"] == "and then it failed"
    after = server.get("/pid", timeout=60)
    assert after.status_code == 200 and after.text != before


def test_swapped_stdout_is_restored_without_a_new_kernel(start_server: StartServer, tmp_path: Path) -> None:
    server = serve(start_server, tmp_path)
    before = server.get("/pid").text
    assert server.get("/swap-stdout").status_code == 200
    assert server.get("/pid").text == before  # same kernel, its output back


def test_exit_answers_and_the_next_request_does_not_fail(start_server: StartServer, tmp_path: Path) -> None:
    server = serve(start_server, tmp_path)
    before = server.get("/pid").text
    first = server.get("/exit")
    assert first.status_code == 200 and first.text == "leaving\n"
    after = server.get("/pid", timeout=60)  # never the 502 of a kernel that has gone
    assert after.status_code == 200, after.text
    assert after.text != before
    wait_for(lambda: not alive(int(before)), 10, "the exited kernel to be gone")


def test_timeout_whose_interrupt_fails_is_504_and_the_kernel_is_replaced(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = serve(start_server, tmp_path, "--request-timeout", "1")
    before = server.get("/pid").text
    stubborn = server.get("/stubborn")
    assert stubborn.status_code == 504, stubborn.text
    assert stubborn.json()["error"] == "GatewayTimeout"
    after = server.get("/pid", timeout=60)
    assert after.status_code == 200 and after.text != before
    wait_for(lambda: not alive(int(before)), 15, "the stubborn kernel to be killed")
    assert "Traceback" not in server.log()


def test_cell_children_die_with_their_kernel_even_after_it_exited(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = serve(start_server, tmp_path)
    orphan = int(server.get("/child").text)
    assert "sleep" in cmdline(orphan)
    assert server.get("/die").status_code == 502  # the kernel exits; its child lives on in its group
    wait_for(lambda: not alive(orphan), 15, "the dead kernel's child to be killed")
    survivor = int(server.get("/child", timeout=60).text)
    assert server.stop() == 0
    wait_for(lambda: not alive(survivor), 10, "the child to die with the server")


def test_tcp_transport_when_asked(start_server: StartServer, tmp_path: Path) -> None:
    server = serve(start_server, tmp_path, "--transport", "tcp")
    # the kernel's own connection file (a forked kernel's command line is the template's)
    connection = json.loads(Path(server.get("/connection").text.strip()).read_text())
    assert connection["transport"] == "tcp"
    assert connection["ip"] == "127.0.0.1"


def test_ipc_is_the_default_for_a_local_ipykernel(start_server: StartServer, tmp_path: Path) -> None:
    server = serve(start_server, tmp_path)
    # the kernel's own connection file (a forked kernel's command line is the template's)
    connection = json.loads(Path(server.get("/connection").text.strip()).read_text())
    assert connection["transport"] == "ipc"
    assert os.path.isabs(connection["ip"])


def test_unknown_kernel_spec_names_the_installed_ones(start_server: StartServer, tmp_path: Path) -> None:
    path = tmp_path / "nokernel.ipynb"
    nbformat.write(notebook("# GET /x\nprint(1)", kernel="no-such-kernel", language="python"), path)
    server = start_server(str(path), ready=False)
    server.proc.wait(60)
    assert server.proc.returncode != 0
    log = server.log()
    assert "no such kernel spec: 'no-such-kernel' (installed:" in log and "python3" in log
    assert "Traceback" not in log


def test_kernels_forget_the_output_of_answered_requests(start_server: StartServer, tmp_path: Path) -> None:
    """IPython tees every write into history_manager.outputs under an execution count that
    requests (store_history=False) never advance: without the bootstrap's hook a kernel
    keeps every answer it ever printed (2 GB after 2,000 1 MiB echoes, bench/rss_check.py)."""
    nb = notebook(
        "import os",
        "# GET /big\nprint('x' * 100_000)",
        "# GET /held\nhm = get_ipython().history_manager\n"
        "print(sum(len(''.join(o.bundle.get('stream', []))) for outs in hm.outputs.values() for o in outs))",
        kernel="python3",
        language="python",
    )
    path = tmp_path / "outputs.ipynb"
    nbformat.write(nb, path)
    server = start_server(str(path), "--pool-size", "1")
    for _ in range(5):
        assert len(server.get("/big").text) == 100_001
    assert server.get("/held").text == "0\n"

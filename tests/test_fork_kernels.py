"""Kernel mode with forked kernels: POST /api/kernels forks from the kernel spec's template.

One server (``--kernel-start auto``, the default, with a seed notebook and a warm
kernel): a requested kernel is a fork holding the seed's state and the request's
environment; an interrupt stops its running cell; a restart forks afresh (state reset);
stopping the server leaves no template and no kernel.
"""

from __future__ import annotations

import threading
from pathlib import Path

import nbformat

from tests.kernels_support import AUTH, KernelClient, kernel_server, start_kernel
from tests.notebooks import notebook
from tests.support import alive, is_kernel, parent_pid, wait_for

SEED = notebook("seeded = 7", kernel="python3", language="python")


def forked(pid: int) -> bool:
    return is_kernel(pid) and "ipykernel" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")


def pid_of(client: KernelClient) -> int:
    return int(client.execute("import os; print(os.getpid())").stdout)


def test_requested_kernels_fork_and_a_restart_forks_afresh(tmp_path: Path) -> None:
    seed = tmp_path / "seed.ipynb"
    nbformat.write(SEED, seed)
    with kernel_server(tmp_path, "--seed", str(seed), "--warm", "1") as server:
        model = start_kernel(server, name="python3", env={"KERNEL_COLOUR": "teal"})
        kid = model["id"]
        with KernelClient(server, kid) as client:
            first = pid_of(client)
            server.kernel_pids.add(first)
            template = parent_pid(first)
            assert forked(first) and template in server.find_templates()
            assert "kernel spec 'python3': kernels fork from a template" in server.log()
            got = client.execute(
                "import os; x = 5; print(seeded, os.environ['KERNEL_COLOUR'], os.environ['NB2SVC'])"
            )
            assert got.stdout == "7 teal 1\n"

            running = client.execute_request("import time; time.sleep(60)")
            client.wait_for(lambda m: m.msg_type == "status" and m.content["execution_state"] == "busy")
            threading.Timer(
                0.2, lambda: server.request("POST", f"/api/kernels/{kid}/interrupt", headers=AUTH)
            ).start()
            assert client.collect(running, timeout=30).reply["ename"] == "KeyboardInterrupt"

        restarted = server.request("POST", f"/api/kernels/{kid}/restart", headers=AUTH)
        assert restarted.status_code == 200
        with KernelClient(server, kid) as client:
            second = pid_of(client)
            server.kernel_pids.add(second)
            assert second != first and forked(second) and parent_pid(second) == template
            assert not alive(first)
            assert client.execute("print('x' in globals())").stdout == "False\n"  # state reset
        kernels = server.find_kernels()
        assert len(kernels) == 2 and all(forked(k) for k in kernels)  # the requested one and the warm one
        server.kernel_pids |= kernels | {template}
        assert server.stop() == 0
        wait_for(lambda: not any(alive(p) for p in server.kernel_pids), 10, "no kernel or template left")


def test_the_default_specs_template_is_made_before_the_first_start(tmp_path: Path) -> None:
    """``nb2svc serve --kernels`` starts the default spec's template before it forks its
    worker (kernel/early.py) and the worker adopts it at boot, so that the first ``POST``
    forks at once; with ``--kernel-start spawn`` there is none."""
    with kernel_server(tmp_path) as server:
        template = wait_for(lambda: next(iter(server.find_templates()), None), 30, "the template")
        assert parent_pid(template) == server.proc.pid  # the master's child, started before the worker
        wait_for(
            lambda: "kernel spec 'python3': kernels fork from a template" in server.log(),
            30,
            "the worker to adopt it without a kernel being asked for",
        )
        assert server.find_kernels() == set()
        with KernelClient(server, start_kernel(server)["id"]) as client:
            kernel = pid_of(client)
            server.kernel_pids |= {kernel, template}
            assert forked(kernel) and parent_pid(kernel) == template
        assert server.stop() == 0
        wait_for(lambda: not any(alive(p) for p in server.kernel_pids), 10, "no kernel or template left")
    with kernel_server(tmp_path, "--kernel-start", "spawn") as server:
        kernel_id = start_kernel(server)["id"]
        with KernelClient(server, kernel_id) as client:
            assert not forked(pid_of(client))
        assert server.find_templates() == set()

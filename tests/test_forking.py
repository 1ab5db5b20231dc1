"""The fork mechanism without a server: templates, auto's refusals, setup errors, rebuilds, forked kernels.

Real template processes and real forked ipykernels, driven through :class:`Forker` and
:func:`start_kernel` as a worker does. Starting kernels needs gevent's monkey-patching
(jupyter_client's loop must wait on the gevent hub), which pytest's process must not
get: those tests run their scenario in a fresh interpreter (:func:`green`), which
prints what the test checks. Each test stops what it made.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

from nb2svc.runtime.kernel import kernel_env
from nb2svc.runtime.kernel.forking import MAX_REBUILDS, Forker, fork_refusal, ipykernel_args
from nb2svc.runtime.kernel.host import KernelHost
from nb2svc.runtime.kernel.template import _parse_plain_command_line, plain_command_line
from tests.support import REPO, alive, kernel_spec_env, wait_for

PYTHON = KernelSpecManager().get_kernel_spec("python3")
#: One worker's kernel machinery (records directory, lifecycle loop), as a worker holds it.
HOST = KernelHost()


@pytest.fixture
def forkers() -> Iterator[list[Forker]]:
    made: list[Forker] = []
    yield made
    for forker in made:
        forker.close()


def forker(made: list[Forker], setup: list[tuple[str, str]], mode: str = "auto") -> Forker:
    f = Forker(mode, "nb.ipynb", setup, env=kernel_env(), host=HOST, timeout=30)
    made.append(f)
    return f


def test_ipykernel_args_and_refusals() -> None:
    assert ipykernel_args(["python", "-m", "ipykernel_launcher", "-f", "c.json"]) == ["-f", "c.json"]
    assert ipykernel_args(["xpython", "-f", "c.json"]) is None
    assert fork_refusal(PYTHON) is None
    xeus = KernelSpec(argv=["xpython", "-f", "{connection_file}"], language="python", display_name="x")
    assert "not a local ipykernel" in (fork_refusal(xeus) or "")
    remote = KernelSpec(
        argv=PYTHON.argv,
        language="python",
        display_name="r",
        metadata={"kernel_provisioner": {"provisioner_name": "docker-provisioner"}},
    )
    assert "'docker-provisioner', not the local one" in (fork_refusal(remote) or "")


@pytest.mark.parametrize(
    ("setup", "left"),
    [
        (
            "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
            "thread ",
        ),
        ("import socket\nconnection = socket.socket()", "socket:["),
        ("handle = open(__import__('os').devnull)", "/dev/null"),
        ("import subprocess\nchild = subprocess.Popen(['sleep', '60'])", "process "),
        ("get_ipython().events.register('pre_execute', lambda: None)", "shell's event hooks changed"),
        (
            "class Money: ...\nget_ipython().display_formatter.formatters['text/html'].for_type(Money, repr)",
            "formatters",
        ),
        ("from IPython.core.magic import register_line_magic as m\nm(lambda line: line)", "magics"),
    ],
    ids=["thread", "socket", "file", "process", "event-hook", "formatter", "magic"],
)
def test_auto_spawns_when_setup_leaves_something_shared(
    forkers: list[Forker], caplog: pytest.LogCaptureFixture, setup: str, left: str
) -> None:
    f = forker(forkers, [("nb.ipynb, cell 1", setup)])
    with caplog.at_level(logging.INFO, logger="nb2svc"):
        assert f.template(PYTHON) is None
        assert f.template(PYTHON) is None  # decided once
    lines = [r.getMessage() for r in caplog.records if "spawn instead of forking" in r.getMessage()]
    assert len(lines) == 1 and left in lines[0], lines
    assert f.refused is not None and left in f.refused


def test_fork_mode_forks_anyway_with_a_warning(
    forkers: list[Forker], caplog: pytest.LogCaptureFixture
) -> None:
    f = forker(forkers, [("nb.ipynb, cell 1", "import socket\nconnection = socket.socket()")], mode="fork")
    with caplog.at_level(logging.INFO, logger="nb2svc"):
        assert f.template(PYTHON) is not None
    assert any(r.levelno == logging.WARNING and "forking although" in r.getMessage() for r in caplog.records)


def green(scenario: str, timeout: float = 90, env: dict[str, str] | None = None) -> Any:
    """Run ``scenario`` (which sets ``result``) monkey-patched in a fresh interpreter; its ``result``.

    ``env``: variables added to that interpreter's environment."""
    prelude = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import json, logging, os, sys\n"
        "from nb2svc.runtime.kernel import KernelRecipe, SetupCell, SetupFailed, execute, kernel_env\n"
        "from nb2svc.runtime.kernel import start_kernel\n"
        "from nb2svc.runtime.kernel.forking import Forker\n"
        "from nb2svc.runtime.kernel.host import KernelHost\n"
        "HOST = KernelHost()\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "def out(result):\n    return ''.join(map(str, result.stdout_parts)).strip()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(scenario) + "\nprint(json.dumps(result))"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return {"result": json.loads(done.stdout.splitlines()[-1]), "log": done.stderr}


def test_a_failing_setup_cell_is_the_same_error_as_when_spawned() -> None:
    ran = green(
        """
        cells = (SetupCell("nb.ipynb, cell 1", "x = 1"), SetupCell("nb.ipynb, cell 3", "x / 0"))
        errors = []
        for mode in ("fork", "spawn"):
            forker = Forker(mode, "nb.ipynb", [(c.where, c.code) for c in cells], env=kernel_env(), host=HOST)
            try:
                start_kernel(KernelRecipe("python3", kernel_env(), setup=cells, forker=forker, host=HOST))
            except SetupFailed as exc:
                errors.append([str(exc).splitlines()[0], exc.permanent])
            forker.close()
        result = errors
        """
    )
    line = "nb.ipynb, cell 3: setup cell raised ZeroDivisionError: division by zero"
    assert ran["result"] == [[line, True], [line, True]]


def test_forked_kernels_hold_the_setup_state_and_their_own_process_group() -> None:
    ran = green(
        """
        code = "import os\\ncounter = 0\\n"
        code += "def bump():\\n    global counter\\n    counter += 1\\n    return counter"
        forker = Forker("fork", "nb.ipynb", [("nb.ipynb, cell 1", code)], env=kernel_env(), host=HOST)
        cells = (SetupCell("nb.ipynb, cell 1", code),)
        recipe = KernelRecipe("python3", kernel_env(), setup=cells, forker=forker, host=HOST)
        first, second = start_kernel(recipe), start_kernel(recipe)
        probe = "bump(); print(bump(), counter, os.getpid(), os.getppid(), os.getpgid(0))"
        result = {
            "forked": [first.process.forked, second.process.forked],
            "first": out(execute(first, probe, timeout=10)),
            "second": out(execute(second, "print(counter)", timeout=10)),
            "template": forker.template_pid,
            "pid": first.process.pid,
        }
        first.shutdown()
        second.shutdown()
        spec = first.process.km.kernel_spec
        result["template_alive_after_kernels_stop"] = forker.template(spec) is not None
        forker.close()
        """
    )
    result = ran["result"]
    assert result["forked"] == [True, True]
    bumped, counter, pid, ppid, pgid = (int(v) for v in result["first"].split())
    assert (bumped, counter) == (2, 2)  # setup's function and the kernel's globals are one namespace
    assert pid == pgid == result["pid"] and ppid == result["template"]
    assert result["second"] == "0"  # each child has its own copy of the setup state
    assert result["template_alive_after_kernels_stop"]
    assert not alive(pid) and not alive(result["template"])


def test_a_plain_kernel_command_line_is_what_traitlets_parses() -> None:
    """A forked child skips traitlets' parser for ``-f FILE``: it must end as the parser would."""
    from ipykernel.kernelapp import IPKernelApp

    for argv in (["-f", "/tmp/k.json"], ["-f", "/tmp/a dir/kernel-1.json"]):
        full = [*argv, "--IPKernelApp.parent_handle=42"]
        parsed, quick = IPKernelApp(), IPKernelApp()
        parsed.parse_command_line(full)
        _parse_plain_command_line(quick, argv, 42)
        quick.parse_command_line(full)
        assert quick.cli_config == parsed.cli_config
        assert quick.config == parsed.config
        assert (quick.connection_file, quick.parent_handle) == (argv[1], 42)
        assert (quick.argv, quick.extra_args) == (parsed.argv, parsed.extra_args)
    for other in (["-f", "k.json", "--debug"], ["--f=k.json"], ["-f", "--debug"], ["k.json"], []):
        assert plain_command_line(other, 42) is None  # parsed in full by traitlets


def test_a_kernel_spec_with_more_options_forks_with_them(tmp_path: Any) -> None:
    """Options past ``-f`` take the full parse in the child, and apply as in a spawned kernel."""
    argv = [*PYTHON.argv, "--IPKernelApp.exec_lines=extra = 6 * 7"]
    ran = green(
        """
        results = []
        for mode in ("fork", "spawn"):
            forker = Forker(mode, "nb.ipynb", [], env=kernel_env(), host=HOST)
            kernel = start_kernel(KernelRecipe("py-options", kernel_env(), forker=forker, host=HOST))
            results.append([kernel.process.forked, out(execute(kernel, "print(extra)", timeout=10))])
            kernel.shutdown(now=True)
            forker.close()
        result = results
        """,
        env=kernel_spec_env(tmp_path, "py-options", argv),
    )
    assert ran["result"] == [[True, "42"], [False, "42"]]


def test_a_fork_that_fails_spawns_that_kernel_with_a_warning() -> None:
    ran = green(
        """
        cell = SetupCell("nb.ipynb, cell 1", "x = 41")
        forker = Forker("fork", "nb.ipynb", [(cell.where, cell.code)], env=kernel_env(), host=HOST)
        from jupyter_client.kernelspec import KernelSpecManager
        spec = KernelSpecManager().get_kernel_spec("python3")
        template = forker.template(spec)
        template.stop()  # dies between the choice of provisioner and the launch
        forker.template = lambda spec: template
        kernel = start_kernel(KernelRecipe("python3", kernel_env(), setup=(cell,), forker=forker, host=HOST))
        result = [kernel.process.forked, out(execute(kernel, "print(x + 1)", timeout=10))]
        kernel.shutdown()
        """
    )
    assert ran["result"] == [False, "42"]  # spawned, and seeded in full
    assert "a fork failed (the template is not running); spawning this kernel instead" in ran["log"]


def test_a_dead_template_is_rebuilt_a_bounded_number_of_times(
    forkers: list[Forker], caplog: pytest.LogCaptureFixture
) -> None:
    f = forker(forkers, [("nb.ipynb, cell 1", "x = 1")], mode="fork")
    pids = []
    with caplog.at_level(logging.INFO, logger="nb2svc"):
        for _ in range(MAX_REBUILDS + 1):
            template = f.template(PYTHON)
            assert template is not None and template.pid is not None
            pids.append(template.pid)
            os.kill(template.pid, signal.SIGKILL)
            wait_for(lambda t=template: not t.alive, 10, "the template to be seen dead")
        assert f.template(PYTHON) is None
    assert len(set(pids)) == MAX_REBUILDS + 1
    assert "template died" in (f.refused or "")
    assert sum("kernel template died; rebuilding" in r.getMessage() for r in caplog.records) == MAX_REBUILDS


def test_pss_is_read_from_smaps_rollup() -> None:
    from nb2svc.runtime.kernel.memory import pss_bytes, summed_pss

    own = pss_bytes(os.getpid())
    assert own is not None and own > 0
    assert pss_bytes(2**22 + 1) is None  # no such process
    assert 0 < summed_pss([os.getpid(), os.getpid(), None]) < 1.5 * own  # each process counted once


def test_a_started_kernel_managers_ready_future_is_resolved_both_ways() -> None:
    """GreenKernelManager starts without jupyter_client's pending-state wrapper (it sleeps
    10 ms): its ``ready`` future must still be made and resolved, forked or spawned."""
    ran = green(
        """
        states = []
        for mode in ("fork", "spawn"):
            forker = Forker(mode, "nb.ipynb", [], env=kernel_env(), host=HOST)
            kernel = start_kernel(KernelRecipe("python3", kernel_env(), forker=forker, host=HOST))
            ready = kernel.process.km.ready
            states.append([mode, kernel.process.forked, ready.done(), ready.exception() is None])
            kernel.shutdown(now=True)
            forker.close()
        result = states
        """
    )
    assert ran["result"] == [["fork", True, True, True], ["spawn", False, True, True]]

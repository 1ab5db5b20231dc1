"""Templates started by ``nb2svc serve`` before the worker exists (kernel/early.py), adopted by a Forker.

The master guesses a kernel spec's interpreter without jupyter_client; the worker's
:class:`Forker` adopts an early template only when its recipe is exactly its own, and
otherwise lets it go (it exits when its socket closes). Real template processes; the
end-to-end case (the master's child, adopted by the worker, gone with the worker) is in
tests/test_fork_api.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from nb2svc.runtime.kernel import SetupFailed, kernel_env
from nb2svc.runtime.kernel.early import EarlyTemplate, TemplateRecipe, guess_python, launch, start
from nb2svc.runtime.kernel.forking import Forker, spec_python
from nb2svc.runtime.kernel.host import KernelHost
from tests.support import alive, wait_for

PYTHON = KernelSpecManager().get_kernel_spec("python3")
SETUP = (("nb.ipynb, cell 1", "answer = 41 + 1"),)


def write_spec(root: Path, name: str, **spec: object) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "kernel.json").write_text(json.dumps({"display_name": name, **spec}))


def test_the_guess_follows_the_kernel_spec_files(tmp_path: Path) -> None:
    ipykernel = ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    write_spec(tmp_path, "py", argv=ipykernel, language="python")
    write_spec(tmp_path, "other", argv=["/opt/py/bin/python3", *ipykernel[1:]], language="python")
    write_spec(tmp_path, "xpy", argv=["xpython", "-f", "{connection_file}"], language="python")
    write_spec(tmp_path, "bash", argv=["bash_kernel"], language="bash")
    remote = {"kernel_provisioner": {"provisioner_name": "docker-provisioner"}}
    write_spec(tmp_path, "remote", argv=ipykernel, language="python", metadata=remote)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "kernel.json").write_text("{not json")
    search = [str(tmp_path)]
    assert guess_python("py", search) == sys.executable  # "python": this interpreter
    assert guess_python("other", search) == "/opt/py/bin/python3"
    assert guess_python("python3", search) == sys.executable  # ipykernel's native spec, not installed here
    for name in ("xpy", "bash", "remote", "broken", "missing"):
        assert guess_python(name, search) is None, name


def test_the_guess_matches_what_the_worker_resolves() -> None:
    assert guess_python("python3") == spec_python(PYTHON)


@pytest.fixture
def made() -> Iterator[list[object]]:
    things: list[object] = []
    yield things
    for thing in things:
        thing.close()  # type: ignore[attr-defined]


def early_template(
    made: list[object], setup: tuple[tuple[str, str], ...], env: dict[str, str]
) -> EarlyTemplate:
    early = start("nb.ipynb", TemplateRecipe.of(spec_python(PYTHON), setup, env, None))
    assert early is not None
    made.append(early)
    return early


def forker(made: list[object], early: EarlyTemplate, setup: tuple[tuple[str, str], ...]) -> Forker:
    f = Forker("fork", "nb.ipynb", setup, env=kernel_env(), host=KernelHost({"nb.ipynb": early}), timeout=30)
    made.append(f)
    return f


def test_a_matching_early_template_is_adopted_and_stops_with_its_forker(made: list[object]) -> None:
    early = early_template(made, SETUP, kernel_env())
    f = forker(made, early, SETUP)
    template = f.template(PYTHON)
    assert template is not None and template.pid == early.pid and template.alive
    assert early.sock is None  # handed over: the forker holds the only socket now
    f.close()
    wait_for(lambda: not alive(early.pid), 10, "the adopted template to exit with its forker")
    early.proc.wait(10)


def test_an_early_template_of_another_recipe_is_let_go(made: list[object]) -> None:
    early = early_template(made, SETUP, {**kernel_env(), "NB2SVC_TEST_OTHER": "1"})
    f = forker(made, early, SETUP)
    template = f.template(PYTHON)
    assert template is not None and template.pid != early.pid  # started its own
    assert early.sock is None
    assert early.proc.wait(10) == 0  # its socket closed: it exited by itself


def test_a_setup_error_in_an_early_template_is_the_cell_numbered_error(made: list[object]) -> None:
    failing = (("nb.ipynb, cell 3", "1 / 0"),)
    early = early_template(made, failing, kernel_env())
    f = forker(made, early, failing)
    with pytest.raises(SetupFailed, match=r"nb\.ipynb, cell 3: setup cell raised ZeroDivisionError"):
        f.template(PYTHON)
    early.proc.wait(10)


def test_an_early_template_nobody_adopts_exits_when_let_go(made: list[object]) -> None:
    early = early_template(made, SETUP, kernel_env())
    spawning = Forker("spawn", "nb.ipynb", SETUP, env=kernel_env(), host=KernelHost({"nb.ipynb": early}))
    made.append(spawning)
    assert spawning.template(PYTHON) is None
    assert early.sock is None and early.proc.wait(10) == 0  # let go at once: it exited by itself


def waiting_on_its_socket(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` exited or sleeps reading its unix socket (its kernel wait channel)."""
    if proc.poll() is not None:
        return True
    try:
        with open(f"/proc/{proc.pid}/wchan") as f:
            return "unix" in f.read()
    except OSError:
        return proc.poll() is not None


def test_a_template_waits_for_its_setup_on_a_non_blocking_descriptor() -> None:
    """A worker's end of the control socket is a gevent socket, so the descriptor the template
    inherits may be non-blocking: the template must still wait for its setup, not fail at
    its first read (seen once under load: the worker's kernel start got a 500)."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    recipe = TemplateRecipe.of(spec_python(PYTHON), SETUP, kernel_env(), None)
    proc = launch(recipe, theirs.fileno())
    theirs.close()
    try:
        wait_for(lambda: waiting_on_its_socket(proc), 10, "the template to read its socket")
        assert proc.poll() is None, "the template gave up before its setup arrived"
        ours.sendall(recipe.config_line())
        answer = b""
        while b'"event": "ready"' not in answer:
            chunk = ours.recv(65536)
            assert chunk, f"the template exited: {answer!r}"
            answer += chunk
    finally:
        ours.close()
        assert proc.wait(30) == 0

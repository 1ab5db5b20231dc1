"""Helpers for tests that run real nb2svc servers and kernels on 127.0.0.1.

No sleeps as synchronisation: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import requests

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "notebooks"
#: What a forked kernel's and a template's command line hold (they never exec).
TEMPLATE_SCRIPT = "nb2svc/runtime/kernel/template.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float, message: str, interval: float = 0.05) -> object:
    """Poll ``condition`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {message}")
        time.sleep(interval)


def descendants(pid: int) -> set[int]:
    """All live descendant pids of ``pid`` (from /proc), including re-parented kernels' own."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def worker_of(server: Server, pid: int) -> int:
    """The gunicorn worker of ``server`` that started process ``pid`` (a kernel, a launcher),
    directly or through a kernel template (a forked kernel is the template's child)."""
    worker = parent_pid(pid)
    while worker is not None and worker > 1 and parent_pid(worker) != server.proc.pid:
        worker = parent_pid(worker)
    assert worker is not None and parent_pid(worker) == server.proc.pid, f"{pid} is not a worker's descendant"
    if is_template(worker):  # started by serve before forking its one worker, which adopted it (early.py)
        (worker,) = {p for p in children(server.proc.pid) if not is_template(p)}
    return worker


def children(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_template(pid: int) -> bool:
    """A kernel template (``--kernel-start fork``): the template script, in its worker's process group."""
    try:
        return TEMPLATE_SCRIPT in cmdline(pid) and os.getpgid(pid) != pid
    except ProcessLookupError:
        return False


def is_kernel(pid: int) -> bool:
    """A spawned ipykernel, or one forked from a template (the template's script, leading its own group)."""
    command = cmdline(pid)
    if "ipykernel" in command:
        return True
    try:
        return TEMPLATE_SCRIPT in command and os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


class Server:
    """An ``nb2svc serve`` subprocess on a free loopback port."""

    def __init__(
        self, args: Iterable[str], env: dict[str, str] | None = None, log_dir: Path | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
        self.log_path = log_dir / f"nb2svc-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nb2svc", "serve", *args, "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
            start_new_session=True,
        )
        self.kernel_pids: set[int] = set()

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(self.url(path), timeout=kwargs.pop("timeout", 30), **kwargs)  # type: ignore[arg-type]

    def request(self, method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(method, self.url(path), timeout=kwargs.pop("timeout", 30), **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0, path: str = "/_api/health/ready") -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return requests.get(self.url(path), timeout=10).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a loaded machine
                return False

        wait_for(ready, timeout, f"{self.base}{path} to answer 200")
        self.kernel_pids = self.find_kernels()

    def find_kernels(self) -> set[int]:
        return {p for p in descendants(self.proc.pid) if is_kernel(p)}

    def find_templates(self) -> set[int]:
        return {p for p in descendants(self.proc.pid) if is_template(p)}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the master, wait for it, and return its exit code (kills on timeout)."""
        self.kernel_pids |= self.find_kernels()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise AssertionError(f"server did not stop within {timeout}s:\n{self.log()}") from None
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """Last-resort cleanup: kill the server's group and every process it started.

        Every descendant, not only ipykernels: other kernels (xeus-python, tslab) run in
        sessions of their own and do not exit when their parent dies.
        """
        pids = descendants(self.proc.pid) | self.kernel_pids
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        for pid in pids:
            try:
                if os.getpgid(pid) == pid:  # a kernel leads its own group: its cells' children too
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not self._log.closed:
            self._log.close()


@contextmanager
def notebook_server(nb: nbformat.NotebookNode, path: Path, *args: str) -> Iterator[Server]:
    """``nb`` written to ``path`` and served (``nb2svc serve path ARGS``) until the block ends."""
    nbformat.write(nb, path)
    server = Server([str(path), *args], log_dir=path.parent)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


def kernel_spec_env(
    root: Path, name: str, argv: list[str], language: str = "python", **fields: object
) -> dict[str, str]:
    """Install kernel spec ``name`` (running ``argv``; ``fields`` such as ``display_name`` or
    ``metadata`` added to its kernel.json) under ``root``; the ``JUPYTER_PATH`` that finds it."""
    spec_dir = root / "share" / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec = {"argv": argv, "display_name": name, "language": language, **fields}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return {"JUPYTER_PATH": str(root / "share")}


#: The test provisioners (recording, detached), registered by entry point from this folder.
PROVISIONERS = REPO / "tests" / "provisioners"


def provisioner_spec_env(
    root: Path, name: str, provisioner: dict[str, object], **fields: object
) -> dict[str, str]:
    """A Python kernel spec ``name`` whose ``provisioner`` (``provisioner_name``, ``config``)
    is one of the test provisioners; the variables that find both."""
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    env = kernel_spec_env(
        root, name, argv, interrupt_mode="signal", metadata={"kernel_provisioner": provisioner}, **fields
    )
    pythonpath = os.pathsep.join(p for p in (str(PROVISIONERS), os.environ.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": pythonpath}


def serve_ready(
    notebook: nbformat.NotebookNode, path: Path, *args: str, env: dict[str, str] | None = None
) -> Server:
    """``nb2svc serve`` of ``notebook`` (written to ``path``) with ``args``, once it is ready;
    killed, and the error raised, if it never is."""
    nbformat.write(notebook, path)
    server = Server([str(path), *args], env=env, log_dir=path.parent)
    try:
        server.wait_ready()
    except BaseException:
        server.kill()
        raise
    return server

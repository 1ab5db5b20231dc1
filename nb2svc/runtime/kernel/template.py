"""The template process: setup run once, then every kernel forked from it (the child side).

Run as a script by the kernel spec's own Python (``python template.py FD``), so it
imports only the standard library, IPython and ipykernel: never nb2svc, which the
kernel's environment need not have. The worker's side is :mod:`.forking`.

What it does, in order:

1. reads its configuration (the setup cells) from the control socket ``FD``, one JSON
   line; imports ipykernel's kernel application and IPython, and makes an IPython shell
   with history off (no history thread, no database);
2. notes the threads and file descriptors it has (the baseline), runs the setup cells
   in that shell (a failing cell is reported with its traceback, then it exits), and
   reports which threads, descriptors and child processes setup left behind (and which
   parts of the shell itself it changed: hooks, extensions, magics, formatters): a thread
   does not survive a fork, a socket or file shared by several kernels corrupts
   silently, and a process setup started would be the template's, outside every
   kernel's process group; so the worker's ``--kernel-start auto`` spawns instead;
3. serves ``fork`` requests: each child leaves the template's process group
   (``setsid``, like a spawned kernel), takes the kernel's environment and working
   directory, and only then does everything that opens sockets or starts threads:
   ``IPKernelApp.initialize`` with the kernel's own connection file (the usual ``-f
   FILE`` command line without traitlets' argument parser: :func:`plain_command_line`),
   the setup's namespace handed to its shell as the user namespace (the same dict, so
   functions defined in setup see the kernel's globals). The child says "ready" once its sockets
   are bound (a client that connected earlier would wait on reconnects), and runs as
   an ordinary ipykernel from then on;
4. reaps its children and reports each exit; exits itself when the control socket
   closes (its worker is gone, killed or not). It stays in the worker's process group
   and ignores SIGINT: a Ctrl-C in the terminal is the server's to handle.

Messages, one JSON object per line. In: ``{"op": "fork", "id", "argv", "env", "cwd"}``.
Out: ``{"event": "ready", "pid", "threads": [...], "handles": [...]}``,
``{"event": "setup_error", "cell", "ename", "evalue", "traceback"}``,
``{"event": "forked", "id", "pid"}``, ``{"event": "fork_failed", "id", "error"}``,
``{"event": "exited", "pid", "code"}``.
"""

from __future__ import annotations

import gc
import io
import json
import os
import select
import signal
import socket
import sys
import threading
from typing import Any


def _send(ctrl: socket.socket, message: dict[str, Any]) -> None:
    ctrl.sendall(json.dumps(message).encode() + b"\n")


def _open_fds() -> dict[int, str]:
    """This process's open descriptors and what each is (a path, ``socket:[…]``, ``pipe:[…]``)."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return fds


#: What ``IPKernelApp.initialize`` imports (measured: about 160 modules, most of the
#: child's start-up time), imported once here so that every child finds them loaded. The
#: last six are what a child still imported after the first eight (ipykernel 7.x: its
#: debugger's pdb, the storemagic extension, faulthandler, and psutil for the local IPs).
MACHINERY = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "sqlite3",
    "tornado.gen",
    "tornado.queues",
    "tornado.platform.asyncio",
    "IPython.core.debugger",
    "IPython.extensions.storemagic",
    "faulthandler",
    "pdb",
    "psutil",
    "resource",
)


def _import_machinery() -> None:
    import importlib

    for name in MACHINERY:
        try:
            importlib.import_module(name)
        except ImportError:
            if name == "ipykernel.kernelapp":
                raise
            # another ipykernel version: its children import what they need
    try:  # the host's addresses, which every child's connection setup asks for (cached per process)
        from jupyter_client import localinterfaces

        localinterfaces.localhost()
    except Exception:  # noqa: BLE001 - an optimisation only: the child looks them up itself
        pass


def _make_shell() -> Any:
    """An IPython shell for the setup cells: no history thread, tracebacks kept for the report."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class TemplateShell(InteractiveShell):
        last_error: dict[str, Any] | None = None

        def _showtraceback(self, etype: Any, evalue: Any, stb: list[str]) -> None:
            self.last_error = {"ename": etype.__name__, "evalue": str(evalue), "traceback": stb}

    config = Config()
    config.HistoryManager.enabled = False
    config.HistoryAccessor.enabled = False
    return TemplateShell.instance(config=config)


def _run_setup(shell: Any, cells: list[dict[str, str]], ctrl: socket.socket) -> bool:
    """Run the setup cells, their output discarded (as a spawned kernel's is); False if one failed."""
    for cell in cells:
        _send(ctrl, {"event": "cell", "where": cell["where"]})
        shell.last_error = None
        out, err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = io.StringIO()
        try:
            result = shell.run_cell(cell["code"], store_history=True)
        finally:
            sys.stdout, sys.stderr = out, err
        if not result.success:
            error = shell.last_error or {
                "ename": "Error",
                "evalue": str(result.error_in_exec),
                "traceback": [],
            }
            _send(ctrl, {"event": "setup_error", "cell": cell["where"], **error})
            return False
    return True


def _children() -> list[int]:
    """Processes setup started and left running (they would be the template's, not a kernel's)."""
    pids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return pids


def _left_behind(baseline: dict[int, str]) -> tuple[list[str], list[str]]:
    """Threads running besides the main one; descriptors opened since ``baseline`` and child processes."""
    threads = [
        f"thread {t.name!r} running" for t in threading.enumerate() if t is not threading.main_thread()
    ]
    now = _open_fds()
    handles = [f"fd {fd} open ({what})" for fd, what in sorted(now.items()) if baseline.get(fd) != what]
    handles += [f"process {pid} running" for pid in _children()]
    return threads, handles


def _shell_state(shell: Any) -> dict[str, Any]:
    """What setup can change of the IPython shell itself, beyond its namespace.

    A forked kernel gets a fresh shell with the setup's namespace: event hooks, extensions,
    magics, display formatters, input and AST transformers and custom exception handlers
    that setup installed would be missing there, so ``auto`` spawns when any changed.
    """
    formatters = shell.display_formatter.formatters
    return {
        "event hooks": {name: len(hooks) for name, hooks in shell.events.callbacks.items()},
        "extensions": sorted(shell.extension_manager.loaded),
        "magics": {kind: sorted(table) for kind, table in shell.magics_manager.magics.items()},
        "display formatters": {
            mime: (len(f.type_printers), len(f.deferred_printers), len(f.singleton_printers))
            for mime, f in formatters.items()
        },
        "input transformers": (
            len(shell.input_transformers_post),
            len(shell.input_transformer_manager.cleanup_transforms),
            len(shell.input_transformer_manager.line_transforms),
        ),
        "AST transformers": len(shell.ast_transformers),
        "custom exception handlers": repr(shell.custom_exceptions),
    }


def _shell_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The parts of the shell setup changed, as one reason each."""
    return [f"the IPython shell's {part} changed" for part in before if before[part] != after[part]]


def plain_command_line(argv: list[str], parent: int) -> dict[str, Any] | None:
    """What a kernel command line of the usual shape sets, as traitlets parses it; None otherwise.

    Kernel specs almost always say just ``-f {connection_file}``. For that shape the
    child need not build traitlets' argument parser (every option of every configurable
    class: a tenth of a forked kernel's start); any other command line is parsed in full.
    """
    if len(argv) != 2 or argv[0] != "-f" or argv[1].startswith("-"):
        return None
    return {"IPKernelApp": {"connection_file": argv[1], "parent_handle": parent}}


def _parse_plain_command_line(app: Any, argv: list[str], parent: int) -> None:
    """Give ``app`` the parsed command line without traitlets' parser, when its shape allows."""
    settings = plain_command_line(argv, parent)
    if settings is None:
        return
    from traitlets.config import Config

    def parse_command_line(given: list[str] | None = None) -> None:  # as traitlets ends its own
        app.argv = list(given or [])
        app.cli_config = Config(settings)
        app.update_config(app.cli_config)
        app.extra_args = []

    app.parse_command_line = parse_command_line


def _become_kernel(shell: Any, request: dict[str, Any], ready: int, keep: set[int]) -> None:
    """In a fresh child: turn into an ipykernel with the setup's namespace. Never returns."""
    import atexit

    code = 1
    try:
        for fd in keep:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGINT, signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        os.setsid()
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("cwd"):
            os.chdir(request["cwd"])
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        namespace = shell.user_ns
        type(shell).clear_instance()
        from ipykernel.kernelapp import IPKernelApp

        app = IPKernelApp.instance()
        app.user_ns = namespace
        parent = os.getppid()
        _parse_plain_command_line(app, request["argv"], parent)
        app.initialize([*request["argv"], f"--IPKernelApp.parent_handle={parent}"])
        app.shell.execution_count = shell.execution_count  # counts (In[n]) go on after setup, as if run here
        os.write(ready, b"ok")
        os.close(ready)
        app.start()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: B036 - reported to the template, then this child exits
        try:
            os.write(ready, f"{type(exc).__name__}: {exc}".encode()[:4000])
        except OSError:
            pass
    try:
        atexit._run_exitfuncs()  # the kernel's own (history), as a normal exit runs them
    finally:
        os._exit(code)


class Template:
    """The serving loop: fork requests in, readiness and exits out (see the module docstring)."""

    def __init__(self, ctrl: socket.socket, shell: Any) -> None:
        self.ctrl = ctrl
        self.shell = shell
        self.buffer = b""
        self.pending: dict[int, tuple[str, int]] = {}  # ready pipe -> (request id, child pid)
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_w = wake_w
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def serve(self) -> None:
        while True:
            readable, _, _ = select.select([self.ctrl, self.wake_r, *self.pending], [], [])
            if self.wake_r in readable:
                self._drain_wake()
            self._reap()
            for fd in readable:
                if fd in self.pending:
                    self._child_ready(fd)
            if self.ctrl in readable:
                data = self.ctrl.recv(1 << 16)
                if not data:
                    return  # the worker is gone
                self.buffer += data
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    self._fork(json.loads(line))

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            _send(self.ctrl, {"event": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def _fork(self, request: dict[str, Any]) -> None:
        try:
            ready_r, ready_w = os.pipe()
            pid = os.fork()
        except OSError as exc:
            _send(self.ctrl, {"event": "fork_failed", "id": request["id"], "error": str(exc)})
            return
        if pid == 0:
            keep = {self.ctrl.fileno(), self.wake_r, self.wake_w, ready_r, *self.pending}
            _become_kernel(self.shell, request, ready_w, keep)
        os.close(ready_w)
        self.pending[ready_r] = (request["id"], pid)

    def _child_ready(self, fd: int) -> None:
        request_id, pid = self.pending.pop(fd)
        answer = os.read(fd, 4096)
        os.close(fd)
        if answer == b"ok":
            _send(self.ctrl, {"event": "forked", "id": request_id, "pid": pid})
        else:
            why = answer.decode(errors="replace") or "the child exited before its kernel started"
            _send(self.ctrl, {"event": "fork_failed", "id": request_id, "error": why, "pid": pid})


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctrl = socket.socket(fileno=int(argv[1]))
    # the worker's end is a gevent socket, so the descriptor passed here may be non-blocking:
    # a recv before the worker has sent the setup then fails at once instead of waiting
    ctrl.setblocking(True)
    buffer = b""
    while b"\n" not in buffer:
        data = ctrl.recv(1 << 16)
        if not data:
            return 0
        buffer += data
    line, rest = buffer.split(b"\n", 1)
    config = json.loads(line)
    try:
        return _serve(ctrl, config, rest)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the worker (or the server that started us early) is gone: nothing to report to


def _serve(ctrl: socket.socket, config: dict[str, Any], rest: bytes) -> int:
    """Run setup, report, then serve fork requests until the control socket closes."""
    _import_machinery()

    shell = _make_shell()
    shell.run_cell("pass", store_history=False)  # what a first cell opens lazily is baseline
    baseline, shell_before = _open_fds(), _shell_state(shell)
    if not _run_setup(shell, config["setup"], ctrl):
        return 1
    threads, handles = _left_behind(baseline)
    handles += _shell_changes(shell_before, _shell_state(shell))
    # Setup's objects move to the collector's permanent generation: a child's collections
    # then never walk them, so they neither cost time nor dirty the pages the children share.
    gc.freeze()
    _send(ctrl, {"event": "ready", "pid": os.getpid(), "threads": threads, "handles": handles})
    template = Template(ctrl, shell)
    template.buffer = rest
    try:
        template.serve()
    except OSError:
        pass  # the worker closed the socket while we reported: it is gone
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

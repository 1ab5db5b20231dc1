"""Kernels forked after setup: the worker's side of the template (``--kernel-start``).

A spawned kernel imports ipykernel and runs the notebook's setup cells itself: seconds
per kernel for a real notebook, and a full copy of what setup loaded in each. Instead,
a :class:`Template` process (:mod:`.template`, run by the kernel spec's own Python)
imports ipykernel's machinery and runs the setup cells once, then forks one child per
kernel; each child turns into an ordinary ipykernel with its own connection file,
sockets, heartbeat and iopub, and the setup's namespace in place, sharing the setup's
memory copy-on-write.

Kernels still start, stop, interrupt and report liveness through jupyter_client's
``KernelManager`` and a provisioner: :class:`ForkingProvisioner` is a
``LocalProvisioner`` whose launch asks the template for a child instead of running
the kernel spec's command, and whose ``process`` (:class:`ForkedProcess`) is the child
behind a pidfd: ``poll``, ``send_signal``, ``kill``, ``wait`` and ``cleanup`` are
``LocalProvisioner``'s own. A fork that fails spawns that one kernel instead, with a
warning.

When forking applies (:class:`Forker`, one per notebook mount or per kernel spec):

- ``spawn``: never;
- ``fork`` and ``auto``: only for a kernel spec that runs ipykernel
  (``python -m ipykernel_launcher``) through the local provisioner; any other spawns,
  said once;
- ``auto`` also spawns when setup left a thread running (it would not exist in the
  children), a descriptor open (a socket, a pipe, a file: shared by every child, a
  database connection corrupts silently) or a process running (it would belong to the
  template, outside every kernel's process group), said once in one line; ``fork`` forks
  anyway after a warning. Native threads that C libraries start (BLAS pools) are not
  counted: those libraries re-create them after a fork.

Failures: a setup cell that raises in the template is the same cell-numbered
:class:`SetupFailed` as a spawned kernel's; a template that dies is rebuilt, at most
:data:`MAX_REBUILDS` times in a row, then kernels spawn.

Lifetime: the template stays in the worker's process group (it dies with the server)
and exits when its control socket closes, which a killed worker closes too; the
reaper also has a record of it (:func:`nb2svc.runtime.reaper.record_process`). Each
child leads its own process group, recorded like any local kernel's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
from gevent import socket as green_socket
from gevent import subprocess
from gevent.event import AsyncResult, Event
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Any as AnyTrait

from nb2svc.runtime import reaper
from nb2svc.runtime.kernel.early import EarlyTemplate, TemplateRecipe, launch
from nb2svc.runtime.kernel.host import KernelHost
from nb2svc.runtime.kernel.process import KernelStartError, SetupFailed
from nb2svc.runtime.kernel.spec_facts import fork_refusal_of, ipykernel_args, provisioner_of, resolve_python

log = logging.getLogger("nb2svc")

KERNEL_START_MODES = ("auto", "fork", "spawn")
#: Template rebuilds in a row (each after the last one died) before kernels spawn instead.
MAX_REBUILDS = 3
#: Seconds a forked child may take to bind its sockets.
FORK_TIMEOUT = 20.0


class ForkFailed(RuntimeError):
    """The template could not fork a working kernel (it died, or the child failed)."""


def setup_failed(
    where: str, ename: str, evalue: str, traceback: Sequence[str], with_traceback: bool
) -> SetupFailed:
    """The one error a failing setup cell gives, wherever it ran (a kernel or the template)."""
    message = f"{where}: setup cell raised {ename}: {evalue}"
    if with_traceback and traceback:
        message += "\n" + "\n".join(traceback)
    return SetupFailed(message)


def setup_timed_out(where: str, timeout: float) -> SetupFailed:
    return SetupFailed(
        f"{where}: setup did not finish within {timeout:g}s "
        "(raise --kernel-start-timeout or make the cell faster)"
    )


def fork_refusal(spec: KernelSpec) -> str | None:
    """Why kernels of ``spec`` cannot be forked, or None if they can."""
    return fork_refusal_of(provisioner_of(spec.metadata), spec.language, spec.argv)


def spec_python(spec: KernelSpec) -> str:
    """The interpreter of an ipykernel spec, as jupyter_client resolves it."""
    return resolve_python(spec.argv[0])


class ForkedProcess:
    """A process that is not our child, as ``Popen`` is used: through a pidfd, never a bare pid.

    A forked kernel is the template's child: the template reaps it and reports its exit
    code (``template``); a template the master started (:mod:`.early`) is the master's,
    and its exit code is nobody's business here (-1). The pidfd tells us it exited
    (readable) and signals exactly that process, never a later one that reused its pid.
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int, template: Template | None = None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._template = template
        self._pidfd: int | None = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is not None or self._pidfd is None:
            return self.returncode
        if not select.select([self._pidfd], [], [], 0)[0]:
            return None
        self.returncode = self._template.exit_code(self.pid) if self._template is not None else -1
        os.close(self._pidfd)
        self._pidfd = None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0)
            gevent.sleep(0.02)
        return code

    def send_signal(self, signum: int) -> None:
        if self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class Template:
    """One template process, seen from the worker: start it, fork from it, stop it.

    Talks to :mod:`.template` over a socket pair, one JSON message per line; one reader
    greenlet delivers fork answers by request id and records children's exit codes.
    """

    def __init__(
        self,
        python: str,
        setup: Sequence[tuple[str, str]],
        env: Mapping[str, str],
        cwd: str | None,
        label: str,
        records_dir: str,
    ) -> None:
        self.label = label
        self._records_dir = records_dir
        #: What the template runs and in what environment (an early template must match it).
        self.recipe = TemplateRecipe.of(python, setup, env, cwd)
        self._proc: Any = None
        self._sock: Any = None
        self._dir: str | None = None
        self._reader: gevent.Greenlet | None = None
        self._answers: dict[str, AsyncResult] = {}
        self._exits: dict[int, int] = {}
        self._exited: dict[int, Event] = {}
        self._ready: AsyncResult = AsyncResult()
        self._cell = ""
        #: What setup left behind (``auto`` spawns if either is non-empty).
        self.threads: list[str] = []
        self.handles: list[str] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._reader is not None

    def start(self, timeout: float, with_traceback: bool) -> None:
        """Start the template and run setup; raises :class:`SetupFailed` or :class:`KernelStartError`."""
        ours, theirs = green_socket.socketpair()
        self._dir = tempfile.mkdtemp(prefix="t", dir=self._records_dir)
        try:
            self._proc = launch(self.recipe, theirs.fileno(), subprocess.Popen)
        except OSError as exc:
            ours.close()
            self.stop()
            raise KernelStartError(f"could not start the template for {self.label}: {exc}") from exc
        finally:
            theirs.close()
        reaper.record_process(self._dir, self._proc.pid)
        self._sock = ours
        self._reader = gevent.spawn(self._read)
        self._sock.sendall(self.recipe.config_line())
        self._await_ready(timeout, with_traceback)

    def adopt(self, early: EarlyTemplate, timeout: float, with_traceback: bool) -> None:
        """Take over a template the master started for this recipe (:mod:`.early`), then wait
        for its setup as :meth:`start` does; raises as :meth:`start` does."""
        self._dir = tempfile.mkdtemp(prefix="t", dir=self._records_dir)
        try:
            self._proc = ForkedProcess(early.pid)
        except OSError as exc:  # it exited, and the master reaped it, before we could hold it
            early.close()
            self.stop()
            raise KernelStartError(f"the template for {self.label} is gone: {exc}") from exc
        reaper.record_process(self._dir, early.pid)
        self._sock = green_socket.socket(fileno=early.take_socket().detach())
        self._reader = gevent.spawn(self._read)
        self._await_ready(timeout, with_traceback)

    def _await_ready(self, timeout: float, with_traceback: bool) -> None:
        try:
            ready = self._ready.get(timeout=timeout)
        except gevent.Timeout:
            self.stop()
            where = self._cell or f"{self.label}, setup"
            raise setup_timed_out(where, timeout) from None
        except BaseException:
            self.stop()
            raise
        if ready.get("event") == "setup_error":
            self.stop()
            raise setup_failed(
                ready["cell"], ready["ename"], ready["evalue"], ready["traceback"], with_traceback
            )
        self.threads, self.handles = ready["threads"], ready["handles"]

    def _send(self, message: dict[str, Any]) -> None:
        self._sock.sendall(json.dumps(message).encode() + b"\n")

    def _read(self) -> None:
        buffer = b""
        try:
            while True:
                data = self._sock.recv(1 << 16)
                if not data:
                    break
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._deliver(json.loads(line))
        except (OSError, ValueError) as exc:
            log.debug("template of %s: control socket failed: %s", self.label, exc)
        finally:
            self._reader = None
            self._gone()

    def _deliver(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event in ("ready", "setup_error"):
            self._ready.set(message)
        elif event == "cell":
            self._cell = message["where"]
        elif event in ("forked", "fork_failed"):
            answer = self._answers.pop(message["id"], None)
            if answer is not None:
                answer.set(message)
        elif event == "exited":
            self._exits[message["pid"]] = message["code"]
            self._exited.setdefault(message["pid"], Event()).set()

    def _gone(self) -> None:
        """The template exited: nobody will answer a fork or report an exit any more."""
        if not self._ready.ready():
            code = self._proc.wait() if self._proc is not None else None
            self._ready.set_exception(
                KernelStartError(f"the template for {self.label} exited during setup (exit code {code})")
            )
        for answer in self._answers.values():
            answer.set({"event": "fork_failed", "error": "the template exited"})
        self._answers.clear()
        for event in self._exited.values():
            event.set()

    def fork(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> AsyncResult:
        """Ask for a child running ipykernel with ``argv``; the result is a :class:`ForkedProcess`.

        Returns at once; the result is set (or fails with :class:`ForkFailed`) once the
        child has bound its sockets or given up.
        """
        result: AsyncResult = AsyncResult()
        if not self.alive:
            result.set_exception(ForkFailed("the template is not running"))
            return result
        request_id = uuid.uuid4().hex
        answer: AsyncResult = AsyncResult()
        self._answers[request_id] = answer
        self._send({"op": "fork", "id": request_id, "argv": list(argv), "env": dict(env), "cwd": cwd})

        def settle(answer: AsyncResult) -> None:
            message = answer.get()
            if message.get("event") == "forked":
                self._exited.setdefault(message["pid"], Event())
                try:
                    result.set(ForkedProcess(message["pid"], self))
                except OSError as exc:  # it exited, and was reaped, before we could hold it
                    result.set_exception(ForkFailed(f"the child {message['pid']} is gone: {exc}"))
            else:
                result.set_exception(ForkFailed(message.get("error", "the fork failed")))

        answer.rawlink(settle)
        return result

    def exit_code(self, pid: int, wait: float = 1.0) -> int:
        """A child's exit code as the template reported it (it reaps at once); -1 if it cannot say."""
        event = self._exited.setdefault(pid, Event())
        if pid not in self._exits and self.alive:
            event.wait(wait)
        return self._exits.get(pid, -1)

    def stop(self) -> None:
        """Stop the template (its children are their kernels' to stop). Safe to call twice."""
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)  # _gone() runs as it exits: pending forks fail at once
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class ForkingProvisioner(LocalProvisioner):  # type: ignore[misc]
    """``LocalProvisioner`` whose launch forks the template instead of running the command.

    ``pre_launch`` (connection file, ports, environment) and everything after launch
    (``poll``, ``send_signal``, ``kill``, ``terminate``, ``wait``, ``cleanup``) are the
    local provisioner's, acting on :class:`ForkedProcess`. A fork that fails spawns.
    """

    template = AnyTrait()
    forked = False

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        argv = ipykernel_args(cmd)
        template: Template = self.template
        try:
            if argv is None:
                raise ForkFailed(f"the kernel command does not run ipykernel: {cmd}")
            env = kwargs.get("env") or dict(os.environ)
            process = await _settled(template.fork(argv, env, kwargs.get("cwd")), FORK_TIMEOUT)
        except (ForkFailed, TimeoutError) as exc:
            log.warning(
                "%s: a fork failed (%s); spawning this kernel instead", template.label, exc or "timed out"
            )
            return await super().launch_kernel(cmd, **kwargs)
        self.forked = True
        self.process = process
        self.pid = self.pgid = process.pid  # the child leads its own group (setsid)
        self.cwd = kwargs.get("cwd", Path.cwd())
        return self.connection_info


async def _settled(result: AsyncResult, timeout: float) -> Any:
    """Await a gevent result from a coroutine on the lifecycle loop without blocking the loop."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result: AsyncResult) -> None:
        def apply() -> None:
            if future.done():
                return
            if result.successful():
                future.set_result(result.value)
            else:
                future.set_exception(result.exception)

        loop.call_soon_threadsafe(apply)

    result.rawlink(settle)
    return await asyncio.wait_for(future, timeout)


class Forker:
    """Whether kernels of one notebook mount (or one kernel spec) fork, and the template they fork from.

    ``setup``: ``(where, code)`` cells run once in the template (API mode's setup cells;
    none in kernel mode, whose seed cells run on each kernel). Decisions to spawn are
    logged once; the template is made on first use, by whichever start comes first.
    """

    def __init__(
        self,
        mode: str,
        label: str,
        setup: Sequence[tuple[str, str]] = (),
        *,
        env: Mapping[str, str],
        host: KernelHost,
        cwd: str | None = None,
        timeout: float = 60.0,
        with_traceback: bool = True,
    ) -> None:
        if mode not in KERNEL_START_MODES:
            raise ValueError(f"unknown kernel start {mode!r} (choose from {', '.join(KERNEL_START_MODES)})")
        self.mode = mode
        self.label = label
        self._setup = tuple(setup)
        self._env = dict(env)
        self._host = host  # the worker's records directory, for the reaper
        self._cwd = cwd
        self._timeout = timeout
        self._with_traceback = with_traceback
        self._template: Template | None = None
        self._lock = gevent.lock.Semaphore()
        self._rebuilds = 0
        self._closed = False
        #: Why kernels spawn instead (None while forking is still on).
        self.refused: str | None = "--kernel-start spawn" if mode == "spawn" else None
        if self.refused is not None:
            self._close_early()

    @property
    def runs_setup(self) -> bool:
        """Forked kernels already hold the setup's state: the seeding skips the setup cells."""
        return bool(self._setup)

    @property
    def template_pid(self) -> int | None:
        return self._template.pid if self._template is not None else None

    def template(self, spec: KernelSpec) -> Template | None:
        """The running template to fork ``spec``'s kernel from, or None: spawn it.

        Raises :class:`SetupFailed` (a setup cell fails) or :class:`KernelStartError`
        (the template could not start; the pool retries, up to :data:`MAX_REBUILDS`).
        """
        if self.refused is not None or self._closed:
            return None
        with self._lock:
            if self.refused is not None or self._closed:
                return None
            if self._template is not None and self._template.alive:
                return self._template
            why = fork_refusal(spec)
            if why is not None:
                return self._refuse(why)
            if self._template is not None:
                self._template.stop()
                self._template = None
                self._rebuilds += 1
                if self._rebuilds > MAX_REBUILDS:
                    return self._refuse(f"its template died {MAX_REBUILDS + 1} times in a row")
                log.warning("%s: the kernel template died; rebuilding it", self.label)
            template = Template(
                spec_python(spec), self._setup, self._env, self._cwd, self.label, self._host.owner_dir
            )
            early = self._host.claim_early_template(self.label)
            try:
                if early is not None and early.recipe == template.recipe:
                    template.adopt(early, self._timeout, self._with_traceback)
                else:
                    if early is not None:  # the master guessed another interpreter or environment
                        log.debug("%s: not adopting the early template (its recipe differs)", self.label)
                        early.close()
                    template.start(self._timeout, self._with_traceback)
            except SetupFailed:
                raise
            except KernelStartError:
                self._rebuilds += 1
                if self._rebuilds > MAX_REBUILDS:
                    self._refuse(f"its template failed to start {self._rebuilds} times in a row")
                raise
            left = "; ".join(template.threads + template.handles)
            if left and self.mode == "auto":
                template.stop()
                return self._refuse(f"setup left {left} (--kernel-start fork forks anyway)")
            if left:
                log.warning("%s: forking although setup left %s", self.label, left)
            if self._closed:
                template.stop()
                return None
            self._template = template
            log.info("%s: kernels fork from a template (pid %d) after setup", self.label, template.pid)
            return template

    def provisioner(self, km: Any, spec: KernelSpec) -> ForkingProvisioner | None:
        """The provisioner for ``km``'s next kernel: one that forks, or None to spawn as the spec says."""
        template = self.template(spec)
        if template is None:
            return None
        km.kernel_id = km.kernel_id or str(uuid.uuid4())
        return ForkingProvisioner(kernel_id=km.kernel_id, kernel_spec=spec, parent=km, template=template)

    def forked_ok(self) -> None:
        """A kernel forked from the current template: its rebuilds start counting afresh."""
        self._rebuilds = 0

    def _refuse(self, why: str) -> None:
        self.refused = why
        self._close_early()
        level = logging.WARNING if self.mode == "fork" else logging.INFO
        log.log(level, "%s: kernels spawn instead of forking: %s", self.label, why)
        return None

    def close(self) -> None:
        """Stop the template (at shutdown; its children are stopped as kernels)."""
        self._closed = True
        self._close_early()
        if self._template is not None:
            self._template.stop()
            self._template = None

    def _close_early(self) -> None:
        """Let go of an early template nobody will adopt (it exits when its socket closes)."""
        early = self._host.claim_early_template(self.label)
        if early is not None:
            early.close()

"""A kernel's process, wherever it runs: start, alive, interrupt, stop.

Everything goes through jupyter_client's ``KernelManager`` and the kernel spec's
provisioner (``metadata.kernel_provisioner``): the local one, gateway_provisioners'
Kubernetes, Docker, YARN or SSH ones, or a custom one. Nothing here assumes the kernel
is a child of this process:

- start: ``start_kernel`` (the provisioner's ``pre_launch``, ``launch_kernel``,
  ``post_launch``);
- alive: the provisioner's ``poll()``;
- interrupt: ``interrupt_kernel``, which follows the spec's ``interrupt_mode``
  (``send_signal(SIGINT)`` or an ``interrupt_request`` on control);
- stop: ``shutdown_kernel`` (``shutdown_request``, the provisioner's
  ``shutdown_requested``, ``wait``, then ``terminate`` / ``kill`` and ``cleanup``);
  bounded, then the launcher's process group killed, when a non-local provisioner
  launched the kernel on this host (``KernelProcess._stop_launched_here`` says why).

The local fast path, used only when the provisioner *is* a ``LocalProvisioner``:
liveness reads the ``Popen`` object (a syscall, no coroutine), and on stop the
kernel's whole process group is killed, so processes a cell started die with it even
when the kernel itself has already exited.

Forking (``--kernel-start``): a kernel whose :class:`~.forking.Forker` has a template
starts through :class:`~.forking.ForkingProvisioner`, a ``LocalProvisioner`` whose
``process`` is the forked child, so everything above applies to it unchanged. Local
kernels also hold a pidfd, so a watcher learns of a death at once (:meth:`KernelProcess.wait_exit`).

Transport (``--transport``): ``auto`` uses IPC only for a local ipykernel (no port
races, no plaintext-TCP warning), and TCP on the loopback for everything else: other
kernels (xeus-python, tslab) do not all speak IPC, and a remote provisioner reports
its own address.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Mapping
from typing import Any, Protocol

import gevent
import gevent.select
import zmq
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from jupyter_client.session import Session
from traitlets import Instance

from nb2svc.runtime import reaper
from nb2svc.runtime.kernel.host import KernelHost
from nb2svc.runtime.kernel.spec_facts import LOCAL_PROVISIONER, provisioner_of

log = logging.getLogger("nb2svc")


class Forker(Protocol):
    """What a kernel's process needs of :class:`nb2svc.runtime.kernel.forking.Forker` (which
    imports this module, so the process names only this shape of it)."""

    def provisioner(self, km: Any, spec: Any) -> Any:
        """The provisioner that forks ``km``'s kernel, or None to start it as the spec says."""
        ...

    def forked_ok(self) -> None:
        """A fork became a kernel (resets the template's rebuild count)."""
        ...


TRANSPORTS = ("auto", "tcp", "ipc")
#: Seconds a graceful stop may take before the kernel is killed (jupyter_client's
#: shutdown_request, then SIGTERM at half of it, then SIGKILL).
STOP_WAIT = 4.0
#: Seconds a kernel launched here by a non-local provisioner gets after its
#: ``shutdown_request`` before its process group is killed (see ``_stop_launched_here``).
LAUNCHER_GRACE = 1.0


class KernelStartError(RuntimeError):
    """The kernel could not be started or did not become ready in time.

    ``permanent``: trying again cannot help (an unknown kernel spec, a setup cell that
    raises), so pools stop retrying at once.
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class SetupFailed(KernelStartError):
    """A setup (seed) cell raised or did not finish in time: every kernel would fail alike."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


def installed_kernels() -> list[str]:
    return sorted(KernelSpecManager().find_kernel_specs())


def no_such_kernel(name: str) -> str:
    """One line for an unknown kernel spec, naming the installed ones."""
    return f"no such kernel spec: {name!r} (installed: {', '.join(installed_kernels()) or 'none'})"


def choose_transport(requested: str, provisioner_name: str, argv: list[str]) -> str:
    """``tcp`` or ``ipc`` for ``--transport requested`` and this kernel spec."""
    if requested not in TRANSPORTS:
        raise ValueError(f"unknown transport {requested!r} (choose from {', '.join(TRANSPORTS)})")
    if requested != "auto":
        return requested
    ipykernel = any("ipykernel" in arg for arg in argv)
    return "ipc" if provisioner_name == LOCAL_PROVISIONER and ipykernel else "tcp"


class _NoTracebacks(logging.Filter):
    """jupyter_client logs every failed start with a traceback; we report it in one line.

    Its lines (and its provisioners') stay, without the traceback unless at debug level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not log.isEnabledFor(logging.DEBUG):
            record.exc_info = None
            record.exc_text = None
        return True


#: The logger of jupyter_client's managers and the provisioners they own.
client_log = logging.getLogger("nb2svc.jupyter_client")
client_log.addFilter(_NoTracebacks())


class GreenKernelManager(AsyncKernelManager):
    """jupyter_client's coroutine API (run on :mod:`.lifecycle`'s loop) with green sockets.

    ``AsyncKernelManager`` insists on an asyncio context, but the only socket it opens
    itself (control, for ``shutdown_request`` and message-mode interrupts) is used with
    plain ``send`` calls, which a ``zmq.green`` socket makes cooperative.
    """

    context = Instance(zmq.Context)

    async def _async_start_kernel(self, **kw: Any) -> None:
        """jupyter_client's start, with its ``ready`` future, minus the 10 ms its
        ``in_pending_state`` wrapper sleeps on every start ("so tests can capture the
        state"): measured as a fifth of a forked kernel's start (restarts come here too)."""
        start = AsyncKernelManager._async_start_kernel
        unwrapped = getattr(start, "__wrapped__", None)
        if unwrapped is None:  # a jupyter_client without the wrapper: nothing to skip
            await start(self, **kw)
            return
        if self._attempted_start or not self._ready:
            self._ready = asyncio.get_running_loop().create_future()
        try:
            await unwrapped(self, **kw)
        except Exception as exc:
            self._ready.set_exception(exc)
            self._ready.exception()  # retrieved: the caller gets the error itself
            raise
        if self.owns_kernel:
            self._ready.set_result(None)

    start_kernel = _async_start_kernel


class KernelProcess:
    """One kernel's process behind its provisioner. Methods block only the calling greenlet."""

    def __init__(
        self,
        kernel_name: str,
        env: Mapping[str, str],
        host: KernelHost,
        *,
        cwd: str | None = None,
        transport: str = "auto",
        forker: Forker | None = None,
    ) -> None:
        self.kernel_name = kernel_name
        self._host = host
        self._forker = forker
        #: Forked from a template (so it holds the template's setup state), not spawned.
        self.forked = False
        self._pidfd: int | None = None
        self._env = dict(env)
        self._cwd = cwd
        self._transport = transport
        self.km: GreenKernelManager | None = None
        self._dir: str | None = None
        self._popen: Any = None  # local fast path only
        self._pgid: int | None = None
        self._alive = False
        self.exit_code: int | None = None
        self.stopped = False

    # --- facts ---------------------------------------------------------------------

    @property
    def provisioner_name(self) -> str:
        km = self.km
        if km is None:
            return LOCAL_PROVISIONER
        return provisioner_of(km.kernel_spec.metadata if km.kernel_spec else None)

    @property
    def is_local(self) -> bool:
        """The fast path applies: the provisioner is jupyter_client's LocalProvisioner."""
        return self._popen is not None

    @property
    def local_pid(self) -> int | None:
        """The kernel's pid where the provisioner is a ``LocalProvisioner`` (the fast path), else None."""
        return self._popen.pid if self._popen is not None else None

    def stable_start_time(self, recommended: float) -> float:
        """Seconds a (re)start may take before the kernel counts as stably started: the
        provisioner's ``get_stable_start_time`` (jupyter_client's restarter asks the same)."""
        provisioner = self.km.provisioner if self.km is not None else None
        if provisioner is None:
            return recommended
        try:
            return float(provisioner.get_stable_start_time(recommended=recommended))
        except Exception as exc:  # a provisioner's bug must not stop a restart decision
            log.debug("kernel %s: get_stable_start_time failed: %s", self.label, exc)
            return recommended

    @property
    def session(self) -> Session:
        assert self.km is not None
        return self.km.session

    @property
    def label(self) -> str:
        if self._popen is not None:
            return f"{self.kernel_name} (pid {self._popen.pid})"
        return f"{self.kernel_name} (via {self.provisioner_name})"

    def connection_info(self) -> dict[str, Any]:
        assert self.km is not None
        return self.km.get_connection_info()

    def url(self, channel: str) -> str:
        assert self.km is not None
        return self.km._make_url(channel)

    # --- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float) -> None:
        """Start the kernel; raises :class:`KernelStartError` with one clear line."""
        km = GreenKernelManager(kernel_name=self.kernel_name, context=self._host.zmq_context, log=client_log)
        try:
            spec = km.kernel_spec
        except NoSuchKernel:
            raise KernelStartError(no_such_kernel(self.kernel_name), permanent=True) from None
        assert spec is not None
        provisioner = provisioner_of(spec.metadata)
        transport = choose_transport(self._transport, provisioner, spec.argv)
        self._dir = tempfile.mkdtemp(prefix="k", dir=self._host.owner_dir)
        km.connection_file = os.path.join(self._dir, "kernel.json")
        km.transport = transport
        if transport == "ipc":
            # Absolute (the kernel's cwd is the notebook's), and named plainly: xeus-python
            # refuses endpoint names like ``k-<hex>-<port>``.
            km.ip = os.path.join(self._dir, "k")
        elif provisioner == LOCAL_PROVISIONER:
            km.ip = "127.0.0.1"
        self.km = km
        if self._forker is not None:
            km.provisioner = self._forker.provisioner(km, spec)  # None: the spec's own, as usual
        kwargs: dict[str, Any] = {"env": self._env}
        if self._cwd:
            kwargs["cwd"] = self._cwd
        try:
            self._host.lifecycle.run(km.start_kernel(**kwargs), timeout=timeout)
        except gevent.Timeout:
            self.stop(now=True)
            raise KernelStartError(
                f"kernel {self.kernel_name!r} ({provisioner}) did not start within {timeout:g}s"
            ) from None
        except Exception as exc:
            self.stop(now=True)
            raise KernelStartError(
                f"could not start kernel {self.kernel_name!r} with {provisioner}: {exc}"
            ) from exc
        self._alive = True
        if isinstance(km.provisioner, LocalProvisioner):
            self._popen = km.provisioner.process
            self.forked = bool(getattr(km.provisioner, "forked", False))
            self._pidfd = _pidfd(self._popen.pid)
        if self.forked and self._forker is not None:
            self._forker.forked_ok()
        self._pgid = self._local_group()
        if self._pgid is not None:
            reaper.record_group(self._dir, self._pgid)

    def attach(
        self, connection_info: dict[str, Any], provisioner_info: dict[str, Any], timeout: float
    ) -> None:
        """Take over a kernel another gateway started: its connection info, and its
        provisioner reloaded from ``get_provisioner_info()`` (``load_provisioner_info``).

        Raises :class:`KernelStartError` when the spec is unknown, the provisioner cannot
        be reloaded or says the kernel is not running (``has_kernel`` false).
        """
        from jupyter_client.provisioning import KernelProvisionerFactory

        km = GreenKernelManager(kernel_name=self.kernel_name, context=self._host.zmq_context, log=client_log)
        try:
            spec = km.kernel_spec
        except NoSuchKernel:
            raise KernelStartError(no_such_kernel(self.kernel_name), permanent=True) from None
        km.load_connection_info(connection_info)
        self.km = km

        async def reload() -> bool:
            provisioner = KernelProvisionerFactory.instance(parent=km.parent).create_provisioner_instance(
                provisioner_info.get("kernel_id") or km.kernel_id, spec, parent=km
            )
            await provisioner.load_provisioner_info(provisioner_info)
            km.provisioner = provisioner
            km.kernel_id = provisioner.kernel_id
            return bool(km.has_kernel) and await provisioner.poll() is None

        try:
            running = self._host.lifecycle.run(reload(), timeout=timeout)
        except Exception as exc:
            raise KernelStartError(
                f"could not reload the provisioner of kernel {self.kernel_name!r}: {exc}"
            ) from exc
        if not running:
            raise KernelStartError(f"kernel {self.kernel_name!r} is no longer running")
        km._connect_control_socket()
        self._alive = True

    def alive(self) -> bool:
        """The last known liveness: exact for local kernels, as of the last :meth:`poll` otherwise."""
        if self.stopped:
            return False
        if self._popen is not None:
            code = self._popen.poll()
            if code is not None:
                self.exit_code = code
                return False
            return True
        return self._alive

    def wait_exit(self, timeout: float) -> None:
        """Return once a local kernel's process exits, or after ``timeout`` seconds (else just wait)."""
        if self._pidfd is None or self.stopped:
            gevent.sleep(timeout)
            return
        gevent.select.select([self._pidfd], [], [], timeout)

    def poll(self, timeout: float = 10.0) -> bool:
        """Ask the provisioner whether the kernel runs (``poll()``); cheap for local kernels."""
        if self._popen is not None or self.stopped or self.km is None:
            return self.alive()
        try:
            self._alive = bool(self._host.lifecycle.run(self.km.is_alive(), timeout=timeout))
        except BaseException as exc:  # noqa: B036 - a failing poll is not a death; the next one decides
            if isinstance(exc, gevent.GreenletExit):
                raise
            log.debug("polling kernel %s failed: %s", self.label, exc)
        return self._alive

    def interrupt(self, timeout: float = 10.0) -> None:
        """Interrupt the running code, as the kernel spec's ``interrupt_mode`` says."""
        if self.km is None or self.stopped:
            raise KernelStartError(f"kernel {self.kernel_name!r} is not running")
        self._host.lifecycle.run(self.km.interrupt_kernel(), timeout=timeout)

    def stop(self, now: bool = False) -> None:
        """Stop the kernel through its provisioner, then reap what is left. Safe to call twice.

        ``now``: skip the graceful ``shutdown_request`` (a wedged or dead kernel).
        """
        if self.stopped:
            return
        self.stopped = True
        km = self.km
        if self._pgid is None:  # a start that failed or timed out half-way
            self._pgid = self._local_group()
        if km is not None and km.has_kernel and self._launcher() is not None:
            self._stop_launched_here(km, now)
        elif km is not None and km.has_kernel:
            km.shutdown_wait_time = STOP_WAIT
            try:
                self._host.lifecycle.run(km.shutdown_kernel(now=now), timeout=STOP_WAIT + 6)
            except BaseException as exc:  # noqa: B036 - fall through to the hard kill below
                if isinstance(exc, gevent.GreenletExit):
                    raise
                log.warning("kernel %s did not shut down cleanly: %s", self.label, exc)
                if not now:
                    try:
                        self._host.lifecycle.run(km.shutdown_kernel(now=True), timeout=6)
                    except Exception as again:
                        log.warning("kernel %s could not be killed: %s", self.label, again)
        self._kill_group()
        if self._popen is not None and self.exit_code is None:
            self.exit_code = self._popen.poll()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        """The kernel's pid on this host (local kernels), else None."""
        return self._popen.pid if self._popen is not None else None

    def _launcher(self) -> Any:
        """The ``Popen`` of a kernel a *non-local* provisioner started on this host, else None.

        gateway_provisioners sets ``local_proc`` when it launched its kernel launcher here
        (``--remote-hosts localhost``, or a host that resolves to this one) and clears it
        for a remote launch; so a remote kernel never gets here.
        """
        provisioner = self.km.provisioner if self.km is not None else None
        if provisioner is None or isinstance(provisioner, LocalProvisioner):
            return None
        return getattr(provisioner, "local_proc", None)

    def _local_group(self) -> int | None:
        """The process group the kernel runs in *on this host*, or None (a remote kernel).

        A ``LocalProvisioner`` kernel leads its own group; a launcher a non-local
        provisioner started here leads its own (or reports it as ``pgid``). Never our own
        group: killing it would kill this worker.
        """
        provisioner = self.km.provisioner if self.km is not None else None
        if isinstance(provisioner, LocalProvisioner):
            pgid = provisioner.pgid
        else:
            launcher = self._launcher()
            pgid = (getattr(provisioner, "pgid", 0) or launcher.pid) if launcher is not None else None
        return pgid if pgid and pgid != os.getpgid(0) else None

    def _stop_launched_here(self, km: GreenKernelManager, now: bool) -> None:
        """Stop a kernel a remote-style provisioner launched on this host: bounded, then kill its group.

        Why not plain ``shutdown_kernel``: gateway_provisioners' ``wait()`` is a blocking
        ``Popen.wait()`` inside a coroutine, so it stalls the lifecycle loop (every other
        kernel's start, poll and stop) until the launcher exits, and after a graceful
        ``shutdown_request`` its launcher lingers about 30 s (``poll()`` says "dead" as soon
        as its listener exits, so jupyter_client goes straight to ``wait()``). So: send
        ``shutdown_request`` (and the provisioner's ``shutdown_requested``), give the
        kernel :data:`LAUNCHER_GRACE` seconds, kill the launcher's process group (launcher,
        its listener, whatever cells started), and only then let ``shutdown_kernel(now=True)``
        run the provisioner's ``kill``, ``wait`` (now instant) and ``cleanup``; then remove
        the connection file the killed launcher left behind.
        """
        launcher = self._launcher()
        if not now:
            try:
                self._host.lifecycle.run(km.request_shutdown(), timeout=5)
                with gevent.Timeout(LAUNCHER_GRACE, False):
                    while launcher.poll() is None:
                        gevent.sleep(0.05)
            except Exception as exc:
                log.debug("kernel %s: shutdown_request failed: %s", self.label, exc)
        self._pgid = self._local_group()
        self._kill_group()
        try:
            self._host.lifecycle.run(km.shutdown_kernel(now=True), timeout=STOP_WAIT + 6)
        except Exception as exc:
            log.warning("kernel %s did not shut down cleanly: %s", self.label, exc)
        # The killed launcher cannot remove its connection file (it holds the key):
        # gateway_provisioners' launch_ipykernel.py writes it as $TMPDIR/kernel-<id>_*.json.
        tmp = self._env.get("TMPDIR") or tempfile.gettempdir()
        kernel_id = getattr(km.provisioner, "kernel_id", None) or km.kernel_id
        for path in glob.glob(os.path.join(tmp, f"kernel-{glob.escape(kernel_id)}_*.json")):
            with contextlib.suppress(OSError):
                os.remove(path)

    def _kill_group(self) -> None:
        """Kill the local kernel's process group: whatever its cells started dies too."""
        if self._pgid is None:
            return
        try:
            os.killpg(self._pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nothing left in the group
        except OSError as exc:
            log.warning("could not kill process group %d of kernel %s: %s", self._pgid, self.label, exc)


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when process ``pid`` exits (None where Linux has none)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None

"""One running kernel: started through jupyter_client, spoken to over green sockets.

Why not jupyter_client's ``KernelClient``? Its channel methods are ``run_sync``
wrappers that leak an event loop per calling greenlet and its heartbeat thread breaks
``run_sync`` for everyone (RUNTIME-NOTES.md). So the :class:`Kernel` keeps
jupyter_client for what it is good at (kernel specs, provisioners, connection files,
message signing through ``Session``) and does its own messaging: requests are sent on
``zmq.green`` sockets and one reader greenlet per socket dispatches every reply and
iopub message by ``parent_header.msg_id`` to whoever registered for it.

Lifecycle calls (start, interrupt, shutdown) go through :mod:`nb2svc.runtime.green`'s
single lifecycle greenlet.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import gevent
import gevent.event
import zmq.green as zmq
from jupyter_client import KernelManager
from jupyter_client.session import Session

from nb2svc.runtime.green import lifecycle
from nb2svc.runtime.zmqio import DELIMITER, MessageDecoder, green_context, recv_batch, send_frames

log = logging.getLogger("nb2svc")

#: Environment variables a kernel always receives (everything else must be allowed).
BASE_ENV_ALLOW = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "USER")
BASE_ENV_PREFIXES = ("LC_", "KERNEL_")

MessageHandler = Callable[[str, dict[str, Any]], None]


class KernelDied(RuntimeError):
    """The kernel process exited (or was lost) while something waited on it."""


class KernelStartError(RuntimeError):
    """The kernel could not be started or did not become ready in time."""


def kernel_env(
    allow: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whitelisted environment for a kernel process.

    Only :data:`BASE_ENV_ALLOW`, ``LC_*``, ``KERNEL_*`` and names in ``allow`` pass, so
    the server's secrets (its token, cloud credentials) never reach notebook code.
    """
    environ = os.environ if environ is None else environ
    allowed = set(BASE_ENV_ALLOW) | set(allow)
    env = {k: v for k, v in environ.items() if k in allowed or k.startswith(BASE_ENV_PREFIXES)}
    env.update(extra or {})
    return env


def _runtime_dir() -> str:
    """A private directory for this process's kernel IPC sockets (removed at exit)."""
    global _runtime
    if _runtime is None:
        _runtime = tempfile.mkdtemp(prefix="nb2svc-")
        atexit.register(shutil.rmtree, _runtime, True)
    return _runtime


_runtime: str | None = None


class Kernel:
    """A started kernel with green shell/iopub/control sockets and a dispatcher.

    Subscribers register a handler for a ``msg_id`` *before* sending (a green send can
    yield and the reply can arrive first); the handler receives ``(channel, msg)`` for
    every shell reply and iopub message whose parent is that ``msg_id``.
    """

    def __init__(self, kernel_name: str, env: Mapping[str, str], cwd: str | None = None) -> None:
        self.kernel_name = kernel_name
        self._env = dict(env)
        self._cwd = cwd
        self.km: KernelManager | None = None
        self.session: Session | None = None
        self._handlers: dict[str, MessageHandler] = {}
        self._greenlets: list[gevent.Greenlet] = []
        self._sockets: dict[str, Any] = {}
        self._iopub_welcomed = gevent.event.Event()
        self.dead = False
        self.started_at = 0.0
        self.on_death: Callable[[Kernel], None] | None = None
        #: Kernel mode's websocket bridge: called with ``(channel, msg, parts)`` for every
        #: message from the kernel, whatever its parent (``parts``: the received
        #: ``[header, parent_header, metadata, content, *buffers]``, for raw forwarding).
        self.on_message: Callable[[str, dict[str, Any], list[bytes]], None] | None = None

    # --- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start the process, connect sockets, and wait until iopub is subscribed.

        Raises :class:`KernelStartError` with the reason (unknown kernel spec, process
        exited, timeout).
        """
        self.started_at = time.monotonic()
        # IPC (unix sockets) rather than TCP: local only, no port races, and no
        # plaintext-TCP warning from ipykernel. Paths must be absolute: the kernel's
        # working directory is the notebook's, not ours.
        km = KernelManager(kernel_name=self.kernel_name, context=green_context(), transport="ipc")
        stem = os.path.join(_runtime_dir(), f"k-{uuid.uuid4().hex[:12]}")
        km.ip = stem
        km.connection_file = stem + ".json"
        try:
            kwargs: dict[str, Any] = {"env": self._env}
            if self._cwd:
                kwargs["cwd"] = self._cwd
            lifecycle().call(km.start_kernel, timeout=timeout, **kwargs)
        except gevent.Timeout:
            raise KernelStartError(
                f"kernel {self.kernel_name!r} did not start within {timeout:.0f}s"
            ) from None
        except Exception as exc:  # NoSuchKernel, OSError, ...: one clear line for the user
            raise KernelStartError(f"could not start kernel {self.kernel_name!r}: {exc}") from exc
        self.km = km
        self.session = km.session
        self._open(km, (("shell", zmq.DEALER), ("iopub", zmq.SUB), ("control", zmq.DEALER)))
        self._greenlets.append(gevent.spawn(self._watch_process))
        self._wait_until_subscribed(deadline=time.monotonic() + timeout)
        # stdin last (kernel mode's input()): there the kernel sends first, to the shell
        # requester's identity; a DEALER that connected before the kernel had bound took
        # about a second to reconnect, and an input_request sent meanwhile was dropped.
        self._open(km, (("stdin", zmq.DEALER),))

    def _open(self, km: KernelManager, channels: tuple[tuple[str, int], ...]) -> None:
        for channel, sock in self._connect(km, channels).items():
            self._sockets[channel] = sock
            self._greenlets.append(gevent.spawn(self._read_loop, channel, sock))

    def _connect(self, km: KernelManager, channels: tuple[tuple[str, int], ...]) -> dict[str, Any]:
        ctx = green_context()
        info = km.get_connection_info()
        sockets = {}
        for channel, kind in channels:
            sock = ctx.socket(kind)
            sock.linger = 0
            if kind == zmq.DEALER:  # one identity: the kernel routes input_request to the shell requester
                sock.identity = km.session.bsession
            if info.get("curve_publickey"):
                sock.curve_secretkey = km.curve_secretkey
                sock.curve_publickey = km.curve_publickey
                sock.curve_serverkey = km.curve_publickey
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(km._make_url(channel))
            sockets[channel] = sock
        return sockets

    def _wait_until_subscribed(self, deadline: float) -> None:
        """Wait for iopub to be joined: messages published before that are lost.

        ipykernel 7 sends ``iopub_welcome`` to each new subscriber; older kernels get
        ``kernel_info_request`` probes until one's iopub ``status`` arrives.
        """
        while True:
            if self.dead:
                raise KernelStartError(
                    f"kernel {self.kernel_name!r} exited during start-up{self._exit_detail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KernelStartError(f"kernel {self.kernel_name!r} did not become ready in time")
            probe = gevent.event.Event()
            msg_id = self.send(
                "shell",
                "kernel_info_request",
                {},
                lambda ch, msg, probe=probe: probe.set() if ch == "iopub" else None,
            )
            ready = gevent.wait([probe, self._iopub_welcomed], timeout=min(0.5, remaining), count=1)
            self._handlers.pop(msg_id, None)
            if ready:
                return

    def _exit_detail(self) -> str:
        proc = self.process
        if proc is not None and proc.poll() is not None:
            return f" (exit code {proc.returncode})"
        return ""

    @property
    def process(self) -> Any:
        provisioner = self.km.provisioner if self.km else None
        return getattr(provisioner, "process", None)

    def is_alive(self) -> bool:
        proc = self.process
        return not self.dead and proc is not None and proc.poll() is None

    def _watch_process(self) -> None:
        while not self.dead:
            gevent.sleep(0.2)
            proc = self.process
            if proc is not None and proc.poll() is not None:
                self._mark_dead()

    def _mark_dead(self) -> None:
        if self.dead:
            return
        self.dead = True
        self._fail_pending()
        if self.on_death:
            self.on_death(self)

    def _fail_pending(self) -> None:
        """Tell everyone waiting on a reply that none will come."""
        handlers, self._handlers = self._handlers, {}
        for handler in handlers.values():
            handler("dead", {})

    def interrupt(self) -> None:
        """Interrupt the running cell (SIGINT or an interrupt_request, per the kernel spec)."""
        if self.km is not None and self.is_alive():
            lifecycle().call(self.km.interrupt_kernel, timeout=10)

    def shutdown(self, now: bool = False) -> None:
        """Stop the kernel process and close sockets. Safe to call twice.

        Graceful: a ``shutdown_request`` on control, a short wait, then kill. ``now``:
        kill the process group at once (used when a kernel is wedged).
        """
        was_dead = self.dead
        self.dead = True
        for g in self._greenlets:
            if g is not gevent.getcurrent():
                g.kill(block=False)
        km, self.km = self.km, None
        if km is not None:
            proc = getattr(km.provisioner, "process", None)
            if not now and not was_dead and proc is not None and proc.poll() is None:
                try:
                    msg = km.session.msg("shutdown_request", {"restart": False})
                    km.session.send(self._sockets["control"], msg)
                    deadline = time.monotonic() + 1.0
                    while proc.poll() is None and time.monotonic() < deadline:
                        gevent.sleep(0.02)
                except Exception:  # the kill below is the fallback
                    log.debug("graceful kernel shutdown failed", exc_info=True)
            _kill_process_group(proc)
            try:  # the sync parts of cleanup_resources (which is a run_sync wrapper)
                km.cleanup_connection_file()
                km.cleanup_ipc_files()
            except Exception:
                log.debug("kernel cleanup failed", exc_info=True)
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        self._fail_pending()

    # --- messaging -----------------------------------------------------------------

    def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        handler: MessageHandler | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Sign and send a message; ``handler`` (if given) is registered first."""
        if self.dead or self.session is None:
            raise KernelDied(f"kernel {self.kernel_name!r} is not running")
        msg = self.session.msg(msg_type, content, metadata=metadata)
        msg_id = msg["header"]["msg_id"]
        if handler is not None:
            self._handlers[msg_id] = handler
        send_frames(self._sockets[channel], self.session.serialize(msg))
        return msg_id

    def send_raw(self, channel: str, parts: list[bytes]) -> None:
        """Sign and send already serialised ``[header, parent_header, metadata, content, *buffers]``.

        Kernel mode forwards websocket clients' messages this way: they are signed with
        the kernel's key here, and never parsed beyond what the bridge validated.
        """
        if self.dead or self.session is None:
            raise KernelDied(f"kernel {self.kernel_name!r} is not running")
        send_frames(self._sockets[channel], [DELIMITER, self.session.sign(parts[:4]), *parts])

    def forget(self, msg_id: str) -> None:
        self._handlers.pop(msg_id, None)

    def _read_loop(self, channel: str, sock: Any) -> None:
        """Dispatch every message from one socket, a batch per wake-up (see :func:`recv_batch`)."""
        session = self.session
        assert session is not None
        decoder = MessageDecoder(session)
        while True:
            try:
                batch = recv_batch(sock)
            except zmq.ZMQError:
                return
            for parts in batch:
                self._dispatch(channel, parts, decoder)

    def _dispatch(self, channel: str, parts: list[bytes], decoder: MessageDecoder) -> None:
        try:
            frames = parts[parts.index(DELIMITER) + 1 :]
            msg = decoder.parse(frames)
        except Exception:
            log.warning("dropped an unreadable message on %s", channel, exc_info=True)
            return
        if msg["header"]["msg_type"] == "iopub_welcome":
            self._iopub_welcomed.set()
            return
        parent_id = msg["parent_header"].get("msg_id")
        handler = self._handlers.get(parent_id) if parent_id else None
        if handler is not None:
            handler(channel, msg)
        if self.on_message is not None:
            self.on_message(channel, msg, frames[1:])


def _kill_process_group(proc: Any) -> None:
    """Kill the kernel and anything it started (it runs in its own session)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
        if pgid == os.getpgid(0):  # not in a session of its own: never kill our own group
            raise PermissionError
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except Exception:
        log.warning("kernel process %s did not exit after SIGKILL", proc.pid)

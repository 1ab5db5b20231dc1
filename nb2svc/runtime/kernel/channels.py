"""One running kernel as the server speaks to it: green sockets and a dispatcher.

Why not jupyter_client's ``KernelClient``? Its channel methods are ``run_sync``
wrappers that leak an event loop per calling greenlet and its heartbeat thread breaks
``run_sync`` for everyone (RUNTIME-NOTES.md). So a :class:`Kernel` keeps jupyter_client
for what it is good at (kernel specs, provisioners, connection info, message signing
through ``Session``, all behind :class:`~nb2svc.runtime.kernel.process.KernelProcess`)
and does its own messaging: requests are sent on ``zmq.green`` sockets and one reader
greenlet per socket dispatches every reply and iopub message by
``parent_header.msg_id`` to whoever registered for it.

Liveness: a watcher greenlet asks the process every :data:`LOCAL_POLL` seconds (a
syscall for local kernels) or :data:`REMOTE_POLL` seconds (the provisioner's ``poll()``,
which may cross the network). A kernel can also be *retired* while its process still
runs (it closed its stdout, it asked to exit, an interrupt did not bring it back):
:attr:`retire_reason` says why, and pools never hand it out again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import zmq.green as zmq

from nb2svc.runtime.kernel.host import KernelHost
from nb2svc.runtime.kernel.process import KernelProcess, KernelStartError
from nb2svc.runtime.zmqio import DELIMITER, MessageDecoder, recv_batch, send_frames

if TYPE_CHECKING:
    from nb2svc.runtime.kernel.forking import Forker

log = logging.getLogger("nb2svc")

MessageHandler = Callable[[str, dict[str, Any]], None]
LOCAL_POLL = 0.2
REMOTE_POLL = 2.0


class KernelDied(RuntimeError):
    """The kernel process exited (or was lost) while something waited on it."""


class Kernel:
    """A started kernel with green shell/iopub/control/stdin sockets and a dispatcher.

    Subscribers register a handler for a ``msg_id`` *before* sending (a green send can
    yield and the reply can arrive first); the handler receives ``(channel, msg)`` for
    every shell reply and iopub message whose parent is that ``msg_id``, and
    ``("dead", {})`` if the kernel dies first.
    """

    def __init__(
        self,
        kernel_name: str,
        env: Mapping[str, str],
        host: KernelHost,
        cwd: str | None = None,
        transport: str = "auto",
        forker: Forker | None = None,
    ) -> None:
        self.kernel_name = kernel_name
        self.host = host
        self.process = KernelProcess(kernel_name, env, host, cwd=cwd, transport=transport, forker=forker)
        self._handlers: dict[str, MessageHandler] = {}
        self._greenlets: list[gevent.Greenlet] = []
        self._sockets: dict[str, Any] = {}
        self._iopub_welcomed = gevent.event.Event()
        self.session: Any = None
        self.dead = False
        self.retire_reason: str | None = None
        self.started_at = 0.0
        self.on_death: Callable[[Kernel], None] | None = None
        #: What a service learned about this kernel after starting it (API mode: whether
        #: it binds REQUEST from the execute request's buffers).
        self.traits: dict[str, Any] = {}
        #: Resident bytes the kernel last reported of itself (API mode's Python agent, after
        #: every execute); ``None`` until it does (see :mod:`.memory`).
        self.reported_memory: int | None = None
        #: Kernel mode's websocket bridge: called with ``(channel, msg, parts)`` for every
        #: message from the kernel, whatever its parent (``parts``: the received
        #: ``[header, parent_header, metadata, content, *buffers]``, for raw forwarding).
        self.on_message: Callable[[str, dict[str, Any], list[bytes]], None] | None = None

    @property
    def label(self) -> str:
        return self.process.label

    # --- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start the process, connect sockets, and wait until iopub is subscribed.

        Raises :class:`KernelStartError` with the reason (unknown kernel spec, the
        provisioner's error, process exited, timeout).
        """
        self.started_at = time.monotonic()
        deadline = self.started_at + timeout
        self.process.start(timeout)
        self._connect(deadline)

    def attach(
        self, connection_info: dict[str, Any], provisioner_info: dict[str, Any], timeout: float = 30.0
    ) -> None:
        """Connect to a kernel another gateway started (see :meth:`KernelProcess.attach`); its
        state is untouched. Raises :class:`KernelStartError` if it cannot be reached."""
        self.started_at = time.monotonic()
        self.process.attach(connection_info, provisioner_info, timeout)
        self._connect(self.started_at + timeout)

    def _connect(self, deadline: float) -> None:
        """Connect the sockets and wait until iopub is subscribed (shut down on failure)."""
        try:
            self.session = self.process.session
            self._open((("shell", zmq.DEALER), ("iopub", zmq.SUB), ("control", zmq.DEALER)))
            self._greenlets.append(gevent.spawn(self._watch))
            self._wait_until_subscribed(deadline)
            # stdin last (kernel mode's input()): there the kernel sends first, to the shell
            # requester's identity; a DEALER that connected before the kernel had bound took
            # about a second to reconnect, and an input_request sent meanwhile was dropped.
            self._open((("stdin", zmq.DEALER),))
        except BaseException:
            self.shutdown(now=True)
            raise

    def _open(self, channels: tuple[tuple[str, int], ...]) -> None:
        info = self.process.connection_info()
        for channel, kind in channels:
            sock = self.host.zmq_context.socket(kind)
            sock.linger = 0
            if kind == zmq.DEALER:  # one identity: the kernel routes input_request to the shell requester
                sock.identity = self.session.bsession
            if info.get("curve_publickey"):
                km = self.process.km
                sock.curve_secretkey = km.curve_secretkey
                sock.curve_publickey = km.curve_publickey
                sock.curve_serverkey = km.curve_publickey
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(self.process.url(channel))
            self._sockets[channel] = sock
            self._greenlets.append(gevent.spawn(self._read_loop, channel, sock))

    def _wait_until_subscribed(self, deadline: float) -> None:
        """Wait for iopub to be joined: messages published before that are lost.

        ipykernel 7 sends ``iopub_welcome`` to each new subscriber; other kernels get
        ``kernel_info_request`` probes until one's iopub ``status`` arrives.
        """
        while True:
            if self.dead:
                detail = self._exit_detail()
                raise KernelStartError(f"kernel {self.kernel_name!r} exited during start-up{detail}")
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
        code = self.process.exit_code
        return f" (exit code {code})" if code is not None else ""

    def is_alive(self) -> bool:
        return not self.dead and self.process.alive()

    @property
    def usable(self) -> bool:
        """Alive and not retired: may take another request."""
        return self.retire_reason is None and self.is_alive()

    def retire(self, reason: str) -> None:
        """Never hand this kernel out again (its pool replaces it on release)."""
        if self.retire_reason is None:
            self.retire_reason = reason

    def _watch(self) -> None:
        local = self.process.is_local
        interval = LOCAL_POLL if local else REMOTE_POLL
        while not self.dead:
            if local:
                self.process.wait_exit(interval)  # wakes at once when the process exits
            else:
                gevent.sleep(interval)
            if not self.dead and not (self.process.alive() if local else self.process.poll()):
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
        if self.dead:
            raise KernelDied(f"kernel {self.kernel_name!r} is not running")
        self.process.interrupt()

    def shutdown(self, now: bool = False) -> None:
        """Stop the kernel through its provisioner and close sockets. Safe to call twice.

        Graceful by default (``shutdown_request``, a short wait, then kill); ``now``
        kills at once (a dead or wedged kernel).
        """
        was_dead = self.dead
        self._close(lambda: self.process.stop(now=now or was_dead))

    def disconnect(self) -> None:
        """Close this gateway's sockets and leave the kernel running, for another gateway
        to take over (:meth:`attach`); the provisioner is not asked to stop anything."""

        def forget() -> None:
            self.process.stopped = True  # nothing of ours may stop it from here on

        self._close(forget)

    def _close(self, stop: Callable[[], None]) -> None:
        """Stop reading, ``stop`` the process (or not), close the sockets, fail the waiters."""
        self.dead = True
        for g in self._greenlets:
            if g is not gevent.getcurrent():
                g.kill(block=False)
        self._greenlets.clear()
        stop()
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
        buffers: list[bytes] | None = None,
    ) -> str:
        """Sign and send a message; ``handler`` (if given) is registered first.

        ``buffers`` go as raw frames after the content: not JSON-encoded, not escaped
        and not part of the HMAC (per the messaging spec), so large data costs a copy.
        """
        if self.dead or self.session is None:
            raise KernelDied(f"kernel {self.kernel_name!r} is not running")
        msg = self.session.msg(msg_type, content, metadata=metadata)
        msg_id = msg["header"]["msg_id"]
        if handler is not None:
            self._handlers[msg_id] = handler
        frames = self.session.serialize(msg)
        if buffers:
            frames.extend(buffers)
        send_frames(self._sockets[channel], frames)
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
        decoder = MessageDecoder(self.session)
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

"""One kernel of kernel mode: its id, state and websocket clients, and the process behind it.

A :class:`ManagedKernel` outlives its process: a restart (asked for, or automatic after
the process died, unless the worker's supervisor's restart policy says it keeps dying
too soon after each start) swaps in a new :class:`~nb2svc.runtime.kernels.Kernel` under the same
id, and connected clients stay connected, as with Jupyter Server.

Message routing, with one set of ZeroMQ sockets per kernel shared by every client:

- iopub goes to every client (``restarting`` / ``dead`` statuses that the server makes
  up itself too);
- a shell or control reply goes to the client whose request is its parent, and stdin
  (``input_request``) to the client whose ``execute_request`` asked for input;
- messages for a client that has disconnected are buffered under its ``session_id`` and
  replayed when a client reconnects with the same one (Jupyter Server's buffering).

Execution state and ``last_activity`` follow iopub exactly as Jupyter Server computes
them (the same list of untracked message types), since culling depends on them.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import gevent
import gevent.event
import gevent.lock

from nb2svc.runtime.kernel import Kernel, KernelDied, KernelRecipe, KernelSupervisor, start_kernel
from nb2svc.runtime.kernels_api.wire import ClientMessage

log = logging.getLogger("nb2svc")

#: Message types that say nothing about user activity (Jupyter Server's default list).
UNTRACKED = frozenset(
    {
        "comm_info_request", "comm_info_reply", "kernel_info_request", "kernel_info_reply",
        "shutdown_request", "shutdown_reply", "interrupt_request", "interrupt_reply",
        "debug_request", "debug_reply", "stream", "display_data", "update_display_data",
        "execute_input", "execute_result", "error", "status", "clear_output", "debug_event",
        "input_request", "input_reply",
    }
)  # fmt: skip

#: Requests whose replies are still expected, per kernel (oldest forgotten first).
MAX_PENDING = 10_000
#: Messages kept for a disconnected session_id.
MAX_BUFFERED = 10_000


class Client(Protocol):
    """What a kernel needs from a websocket connection."""

    session_id: str
    resumable: bool  # the client chose its session_id, so it may reconnect to it
    closed: bool

    def deliver(self, channel: str, msg: dict[str, Any], parts: list[bytes]) -> None: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...


def isoformat(timestamp: float) -> str:
    """Jupyter's timestamp format: ISO 8601 in UTC with a ``Z``."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


class ManagedKernel:
    """A listed kernel. ``recipe`` (unseeded) makes the fresh process of a restart;
    ``supervisor`` (the worker's) judges whether a death is one too many."""

    def __init__(
        self, kernel_id: str, kernel: Kernel, recipe: KernelRecipe, supervisor: KernelSupervisor
    ) -> None:
        self.id = kernel_id
        self.name = kernel.kernel_name
        self.kernel = kernel
        self.execution_state = "idle"
        self.reason = ""
        self.last_activity = time.time()
        self.closed = False
        self.clients: list[Client] = []
        self._recipe = recipe
        #: Whose restart policy decides when a kernel that keeps dying is given up.
        self._supervisor = supervisor
        self._pending: collections.OrderedDict[str, Client] = collections.OrderedDict()
        self._buffer: tuple[str, collections.deque[tuple[str, dict[str, Any], list[bytes]]]] | None = None
        self._usable = gevent.event.Event()  # clear while restarting
        self._lifecycle = gevent.lock.RLock()
        self._quick_deaths = 0
        #: A client sent ``shutdown_request`` (not a restart): the process's exit ends the kernel.
        self.shutdown_requested = False
        #: Told (with this kernel) when that exit comes; the registry sets it to unlist the kernel.
        self.on_requested_shutdown: Callable[[ManagedKernel], None] | None = None
        self._adopt(kernel)

    # --- model -----------------------------------------------------------------------

    def model(self) -> dict[str, Any]:
        """The Jupyter Server kernel model."""
        model: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "last_activity": isoformat(self.last_activity),
            "execution_state": self.execution_state,
            "connections": len(self.clients),
        }
        if self.reason:
            model["reason"] = self.reason
        return model

    @property
    def pack(self) -> Callable[[Any], bytes]:
        """The session packer, to serialise legacy clients' messages like the kernel would."""
        session = self.kernel.session
        return session.pack if session is not None else self.kernel.host.fallback_session.pack

    @property
    def raw_json(self) -> bool:
        """Whether the kernel's message parts are JSON, so they can be spliced into frames."""
        session = self.kernel.session
        return session is None or session.packer == "json"

    # --- clients -----------------------------------------------------------------------

    def attach(self, client: Client) -> None:
        """Connect a websocket client; replay what its session missed, if it is resuming."""
        for other in list(self.clients):
            if client.resumable and other.session_id == client.session_id:
                log.warning("kernel %s: replacing stale connection of session %s", self.id, client.session_id)
                other.close(1000, "replaced by a new connection with the same session_id")
                self.detach(other)
        buffer, self._buffer = self._buffer, None
        if buffer is not None and client.resumable and buffer[0] == client.session_id:
            log.info(
                "kernel %s: replaying %d buffered messages to session %s", self.id, len(buffer[1]), buffer[0]
            )
            for item in buffer[1]:
                client.deliver(*item)
        self.clients.append(client)
        self.last_activity = time.time()

    def detach(self, client: Client) -> None:
        """Disconnect a client; the last one's resumable session starts buffering."""
        if client not in self.clients:
            return
        self.clients.remove(client)
        if not self.clients and client.resumable and not self.closed:
            self._buffer = (client.session_id, collections.deque(maxlen=MAX_BUFFERED))

    def send(self, client: Client, message: ClientMessage, wait: float = 60.0) -> None:
        """Sign and send a client's message; waits (cooperatively) while the kernel restarts.

        Raises :class:`KernelDied` when there is no kernel to send to.
        """
        if not self._usable.is_set():
            self._usable.wait(wait)
        if self.closed or self.execution_state == "dead":
            raise KernelDied(f"kernel {self.id} is {'shut down' if self.closed else 'dead'}")
        if message.msg_type == "shutdown_request" and not _asks_restart(message, self.kernel.session):
            self.shutdown_requested = True  # its exit is not a death: see _on_death
        if message.channel != "stdin":  # register before send: the reply can arrive first
            self._pending[message.msg_id] = client
            if len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        self.kernel.send_raw(message.channel, message.parts)

    def broadcast_status(self, state: str) -> None:
        """Send a status the server made up (``restarting``, ``dead``) to every client."""
        session = self.kernel.session or self.kernel.host.fallback_session
        msg = session.msg("status", {"execution_state": state})
        parts = session.serialize(msg)[2:]  # drop the delimiter and the signature
        self._to_clients("iopub", msg, parts)

    def _to_clients(self, channel: str, msg: dict[str, Any], parts: list[bytes]) -> None:
        if self.clients:
            for client in list(self.clients):
                client.deliver(channel, msg, parts)
        elif self._buffer is not None:
            self._buffer[1].append((channel, msg, parts))

    def _to_client(self, client: Client, channel: str, msg: dict[str, Any], parts: list[bytes]) -> None:
        if not client.closed:
            client.deliver(channel, msg, parts)
        elif self._buffer is not None and self._buffer[0] == client.session_id:
            self._buffer[1].append((channel, msg, parts))

    # --- messages from the kernel -------------------------------------------------------

    def _on_message(self, channel: str, msg: dict[str, Any], parts: list[bytes]) -> None:
        try:
            if channel == "iopub":
                self._track(msg)
                self._to_clients(channel, msg, parts)
                return
            parent_id = msg["parent_header"].get("msg_id")
            if channel == "stdin":
                client = self._pending.get(parent_id)
            else:
                client = self._pending.pop(parent_id, None)
            if client is not None:  # otherwise the reply is to the server's own request
                self._to_client(client, channel, msg, parts)
        except Exception:  # never let one message stop the kernel's reader
            log.exception("kernel %s: could not route a %s message", self.id, channel)

    def _track(self, msg: dict[str, Any]) -> None:
        msg_type = msg["header"]["msg_type"]
        parent_type = msg["parent_header"].get("msg_type")
        if msg_type not in UNTRACKED or parent_type not in UNTRACKED or self.execution_state == "busy":
            self.last_activity = time.time()
        if msg_type == "status" and self.execution_state not in ("restarting", "dead"):
            state = msg["content"].get("execution_state")
            if parent_type not in UNTRACKED:
                self.execution_state = state
            elif self.execution_state == "starting" and state != "starting":
                self.execution_state = "idle"

    # --- lifecycle -------------------------------------------------------------------------

    def _adopt(self, kernel: Kernel) -> None:
        self.kernel = kernel
        kernel.on_message = self._on_message
        kernel.on_death = self._on_death
        self.execution_state = "idle"
        self.reason = ""
        self._usable.set()

    def _retire(self, now: bool) -> None:
        kernel = self.kernel
        kernel.on_death = None
        kernel.shutdown(now=now)
        kernel.on_message = None

    def interrupt(self) -> None:
        """Interrupt through the provisioner; raises :class:`KernelDied` when there is no process."""
        self.last_activity = time.time()
        if self.execution_state in ("dead", "restarting") or self.closed:
            raise KernelDied(f"kernel {self.id} is {self.execution_state}")
        self.kernel.interrupt()

    def restart(self) -> None:
        """Replace the process (state is lost); raises if the new one cannot start."""
        with self._lifecycle:
            if self.closed:
                raise KernelDied(f"kernel {self.id} was shut down")
            self._usable.clear()
            self.execution_state = "restarting"
            self.last_activity = time.time()
            self._retire(now=False)
            self._pending.clear()
            self._replace()
        if self.execution_state == "dead":
            raise KernelDied(f"kernel {self.id} could not be restarted: {self.reason}")
        log.info("kernel %s restarted", self.id)

    def _replace(self) -> None:
        try:
            kernel = start_kernel(self._recipe)
        except Exception as exc:
            log.error("kernel %s could not be restarted: %s", self.id, exc)
            self.execution_state = "dead"
            self.reason = str(exc)
            self.broadcast_status("dead")
            self._usable.set()  # wake senders: they see "dead"
            return
        if self.closed:  # shut down while restarting
            kernel.shutdown(now=True)
            return
        self._adopt(kernel)

    def _on_death(self, kernel: Kernel) -> None:
        # Called from the kernel's watcher greenlet: restart elsewhere, unless a client
        # asked the kernel to shut down (jupyter console's exit): then it is removed, as
        # Jupyter Server does, by whoever listed it (``on_requested_shutdown``).
        if kernel is not self.kernel or self.closed:
            return
        if self.shutdown_requested:
            log.info("kernel %s shut down at its client's request", self.id)
            gevent.spawn(self.on_requested_shutdown or (lambda managed: managed.shutdown(now=True)), self)
            return
        gevent.spawn(self._auto_restart, kernel)

    def _auto_restart(self, kernel: Kernel) -> None:
        with self._lifecycle:
            if kernel is not self.kernel or self.closed:
                return
            verdict = self._supervisor.judge_death(kernel, self._quick_deaths)
            self._quick_deaths = verdict.quick_deaths
            self._usable.clear()
            self._pending.clear()
            self._retire(now=True)
            if verdict.give_up:
                self.reason = (
                    f"the kernel died {self._quick_deaths} times in a row, each within "
                    f"{verdict.stable_start:g}s of its start"
                )
                log.error("kernel %s: %s; giving up", self.id, self.reason)
                self.execution_state = "dead"
                self.broadcast_status("dead")
                self._usable.set()
                return
            log.warning("kernel %s died; restarting it", self.id)
            self.execution_state = "restarting"
            self.broadcast_status("restarting")
            self._replace()

    def shutdown(self, now: bool = False) -> None:
        """Stop the process and close every client's websocket. Safe to call twice."""
        self._close(1000, "kernel shut down", lambda: self._retire(now=now))

    def hand_over(self) -> None:
        """Stop serving this kernel here and leave its process running for another replica
        to adopt; clients are closed with 1001 (going away) and reconnect through the balancer."""

        def disconnect() -> None:
            self.kernel.on_death = None
            self.kernel.disconnect()
            self.kernel.on_message = None

        self._close(1001, "server shutting down; reconnect", disconnect)

    def _close(self, code: int, reason: str, release: Callable[[], None]) -> None:
        if self.closed:
            return
        self.closed = True
        self._buffer = None
        for client in list(self.clients):
            client.close(code, reason)
        with self._lifecycle:
            release()
        self._usable.set()


def _asks_restart(message: ClientMessage, session: Any) -> bool:
    """Whether a client's ``shutdown_request`` asks for a restart (``content.restart``)."""
    try:
        content = (session.unpack if session is not None else json.loads)(message.parts[3])
    except Exception:  # an unreadable content: the kernel reads it as no restart too
        return False
    return isinstance(content, dict) and bool(content.get("restart"))

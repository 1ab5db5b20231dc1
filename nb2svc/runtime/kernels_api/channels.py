"""``/api/kernels/{id}/channels``: one websocket client of a kernel.

The request greenlet reads frames from the client, validates them (:mod:`.wire`) and
hands them to the kernel, which signs and sends them; a bad frame is logged and dropped
and the socket stays up. Messages for the client go through a queue to a writer
greenlet, so a slow client never holds up the kernel's reader or the other clients;
a client that falls :data:`MAX_BACKLOG` messages behind is disconnected.

gevent-websocket 0.10.1 drops the code from ``WebSocket.close(code, reason)``, so the
close frame is written here.
"""

from __future__ import annotations

import logging
import socket
import struct
import uuid
from typing import Any

import gevent
import gevent.event
from gevent.queue import Queue
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.websocket import Header, WebSocket

from nb2svc.runtime.kernel import KernelDied
from nb2svc.runtime.kernels_api.managed import ManagedKernel
from nb2svc.runtime.kernels_api.wire import BadMessage, decode_client_frame, encode

log = logging.getLogger("nb2svc")

MAX_BACKLOG = 50_000
#: Seconds a client gets to answer our close frame before the TCP connection is cut.
CLOSE_GRACE = 2.0


class _Close:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class ChannelsConnection:
    """Bridges one websocket (legacy or ``v1`` wire format) to a :class:`ManagedKernel`."""

    def __init__(self, ws: Any, kernel: ManagedKernel, session_id: str | None, v1: bool) -> None:
        self.ws = ws
        self.kernel = kernel
        self.resumable = bool(session_id)
        self.session_id = session_id or uuid.uuid4().hex
        self.v1 = v1
        self.closed = False
        self._out: Queue = Queue()
        self._read_done = gevent.event.Event()

    # --- called by the kernel ---------------------------------------------------------

    def deliver(self, channel: str, msg: dict[str, Any], parts: list[bytes]) -> None:
        if self.closed:
            return
        if self._out.qsize() >= MAX_BACKLOG:
            log.warning(
                "kernel %s: a client fell %d messages behind; disconnecting it", self.kernel.id, MAX_BACKLOG
            )
            self.close(1008, "client too slow")
            return
        self._out.put((channel, msg, parts))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (after what is queued) and end the connection."""
        if not self.closed:
            self.closed = True
            self._out.put(_Close(code, reason))

    # --- the connection -----------------------------------------------------------------

    def serve(self) -> None:
        """Run until either side closes (called in the request greenlet)."""
        writer = gevent.spawn(self._write_loop)
        self.kernel.attach(self)
        log.info(
            "kernel %s: client connected (%s protocol, session %s)",
            self.kernel.id,
            "v1" if self.v1 else "legacy",
            self.session_id,
        )
        try:
            self._read_loop()
        finally:
            self._read_done.set()
            self.closed = True
            self.kernel.detach(self)
            if not writer.dead and not any(isinstance(item, _Close) for item in self._out.queue):
                writer.kill(block=False)
            log.info("kernel %s: client disconnected (session %s)", self.kernel.id, self.session_id)

    def _read_loop(self) -> None:
        while not self.closed:
            frame = self.ws.receive()
            if frame is None:
                return
            try:
                message = decode_client_frame(frame, self.v1, self.kernel.pack)
            except BadMessage as exc:
                log.error("kernel %s: dropped a message from a client: %s", self.kernel.id, exc)
                continue
            try:
                self.kernel.send(self, message)
            except KernelDied as exc:
                log.warning("kernel %s: dropped a %s: %s", self.kernel.id, message.msg_type, exc)

    def _write_loop(self) -> None:
        """Write queued messages; what queued up meanwhile goes out in one ``sendall``.

        The frames are built here (gevent-websocket's ``send`` would write each on its
        own and re-encode text): one system call per wake-up instead of one per message.
        """
        queue = self._out
        while True:
            items = [queue.get()]
            while queue.qsize():
                items.append(queue.get_nowait())
            frames = []
            close = None
            for item in items:
                if isinstance(item, _Close):
                    close = item
                    break
                frames.append(self._frame(*item))
            try:
                if frames:
                    self.ws.raw_write(b"".join(frames))
            except (WebSocketError, OSError, TypeError):  # TypeError: gevent-websocket closed it
                self.closed = True
                return
            if close is not None:
                self._send_close(close)
                return

    def _frame(self, channel: str, msg: dict[str, Any], parts: list[bytes]) -> bytes:
        try:
            payload, binary = encode(channel, msg, parts, self.v1, self.kernel.raw_json)
        except Exception:
            log.exception("kernel %s: could not encode a %s message", self.kernel.id, channel)
            return b""
        opcode = WebSocket.OPCODE_BINARY if binary else WebSocket.OPCODE_TEXT
        return Header.encode_header(True, opcode, b"", len(payload), 0) + payload

    def _send_close(self, close: _Close) -> None:
        ws = self.ws
        try:
            ws.send_frame(struct.pack("!H", close.code) + close.reason.encode()[:120], ws.OPCODE_CLOSE)
        except (WebSocketError, OSError):
            return
        if not self._read_done.wait(CLOSE_GRACE):  # the client did not answer: cut the connection
            try:
                ws.handler.socket.shutdown(socket.SHUT_RDWR)
            except (AttributeError, OSError):
                pass

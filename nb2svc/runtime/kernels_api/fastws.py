"""Two of gevent-websocket's per-byte Python loops, replaced by equivalent C-speed code.

Why: every frame a client sends is masked (RFC 6455), and gevent-websocket 0.10.1 unmasks
it one byte at a time in Python, then (for text frames) validates UTF-8 one byte at a time,
twice. For a typical ``execute_request`` that was a large share of the server's CPU per
round trip. Here:

- unmasking XORs the payload with the repeated 4-byte key as one big integer;
- the separate UTF-8 pass is dropped: gevent-websocket decodes every text message with
  strict UTF-8 anyway and closes the socket with 1007 when that fails, so invalid text is
  still refused (at the end of the message rather than at the offending fragment).

It also enforces a message size limit (``--max-message-size``): a frame whose declared
length would take a message past it is not read; the server sends a close frame with
1009 (Message Too Big) and drops the connection. gevent-websocket would otherwise
allocate whatever length a client declares.

Applied once, in the kernel-mode worker (the only place nb2svc serves websockets).
"""

from __future__ import annotations

import struct
from typing import Any

from geventwebsocket.exceptions import ProtocolError, WebSocketError
from geventwebsocket.websocket import Header, WebSocket

#: Close code for a message over the limit (RFC 6455, 7.4.1).
MESSAGE_TOO_BIG = 1009


def _xor_mask(self: Any, payload: bytes | bytearray) -> bytearray:
    length = len(payload)
    if not length:
        return bytearray()
    key = (bytes(self.mask) * (length // 4 + 1))[:length]
    data = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return bytearray(data.to_bytes(length, "little"))


def _skip_separate_utf8_pass(self: Any, payload: bytes | bytearray) -> None:
    return None


#: The limit when the handler carries no worker runtime (a plain gevent-websocket server).
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


def _message_limit(handler: Any) -> int:
    """The worker runtime's ``--max-message-size``, read from the handler that owns the socket."""
    runtime = getattr(handler, "runtime", None)
    return runtime.edge.max_message_size if runtime is not None else DEFAULT_MAX_MESSAGE_SIZE


class _TooBig(ProtocolError):
    pass


def _read_frame_within_limit(self: Any) -> Any:
    """gevent-websocket's ``read_frame``, refusing a message that would exceed the limit."""
    header = Header.decode_header(self.stream)
    if header.opcode == WebSocket.OPCODE_CONTINUATION:
        size = getattr(self.handler, "nb2svc_message_size", 0) + header.length
    elif header.opcode in (WebSocket.OPCODE_TEXT, WebSocket.OPCODE_BINARY):
        size = header.length
    else:
        size = 0 if header.length <= 125 else header.length  # control frames: at most 125 bytes
    if header.opcode in (WebSocket.OPCODE_CONTINUATION, WebSocket.OPCODE_TEXT, WebSocket.OPCODE_BINARY):
        self.handler.nb2svc_message_size = size  # the WebSocket has __slots__; its handler has not
    limit = _message_limit(self.handler)
    if size > limit:
        reason = f"message larger than {limit} bytes".encode()
        try:
            self.send_frame(struct.pack("!H", MESSAGE_TOO_BIG) + reason, WebSocket.OPCODE_CLOSE)
        finally:
            self.closed = True  # receive() then closes without a second close frame
        raise _TooBig(reason.decode())
    return _finish_frame(self, header)


def _finish_frame(self: Any, header: Any) -> Any:
    if header.flags:
        raise ProtocolError
    if not header.length:
        return header, b""
    payload = self.raw_read(header.length)
    if len(payload) != header.length:
        raise WebSocketError("Unexpected EOF reading frame payload")
    if header.mask:
        payload = header.unmask_payload(payload)
    return header, payload


def install() -> None:
    """Patch gevent-websocket's classes in this process (idempotent)."""
    WebSocket.read_frame = _read_frame_within_limit  # type: ignore[method-assign]
    Header.mask_payload = _xor_mask  # type: ignore[method-assign]
    Header.unmask_payload = _xor_mask  # type: ignore[method-assign]
    WebSocket.validate_utf8 = _skip_separate_utf8_pass  # type: ignore[method-assign]

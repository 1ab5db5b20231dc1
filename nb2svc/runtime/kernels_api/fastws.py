"""Two of gevent-websocket's per-byte Python loops, replaced by equivalent C-speed code.

Why: every frame a client sends is masked (RFC 6455), and gevent-websocket 0.10.1 unmasks
it one byte at a time in Python, then (for text frames) validates UTF-8 one byte at a time,
twice. For a typical ``execute_request`` that was a large share of the server's CPU per
round trip. Here:

- unmasking XORs the payload with the repeated 4-byte key as one big integer;
- the separate UTF-8 pass is dropped: gevent-websocket decodes every text message with
  strict UTF-8 anyway and closes the socket with 1007 when that fails, so invalid text is
  still refused (at the end of the message rather than at the offending fragment).

Applied once, in the kernel-mode worker (the only place nb2svc serves websockets).
"""

from __future__ import annotations

from typing import Any

from geventwebsocket.websocket import Header, WebSocket


def _xor_mask(self: Any, payload: bytes | bytearray) -> bytearray:
    length = len(payload)
    if not length:
        return bytearray()
    key = (bytes(self.mask) * (length // 4 + 1))[:length]
    data = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return bytearray(data.to_bytes(length, "little"))


def _skip_separate_utf8_pass(self: Any, payload: bytes | bytearray) -> None:
    return None


def install() -> None:
    """Patch gevent-websocket's classes in this process (idempotent)."""
    Header.mask_payload = _xor_mask  # type: ignore[method-assign]
    Header.unmask_payload = _xor_mask  # type: ignore[method-assign]
    WebSocket.validate_utf8 = _skip_separate_utf8_pass  # type: ignore[method-assign]

"""ZeroMQ I/O for kernels under gevent: the cheap paths, and why they are safe.

zmq.green wraps every frame of every send and receive with a state check
(``getsockopt(EVENTS)`` and enum arithmetic); with six frames a message and six
messages a request, that bookkeeping was the largest share of the server's CPU per
request. Here whole messages go through the C-level socket calls, and zmq.green's own
state hook runs once per message or batch, so greenlets waiting on the socket are
woken exactly as zmq.green would wake them. Where that hook is missing (a future
pyzmq), the plain green calls are used throughout.
"""

from __future__ import annotations

import hmac
from typing import Any

import zmq.backend as zmq_backend
import zmq.green as zmq
from jupyter_client.session import Session

DELIMITER = b"<IDS|MSG>"
#: Raw C-level socket calls need zmq.green's (private) state hook to keep waiting
#: greenlets woken; without it (a future pyzmq), use the green calls throughout.
_RAW_IO = hasattr(zmq.Socket, "_Socket__state_changed")
_backend_send = zmq_backend.Socket.send
_backend_recv = zmq_backend.Socket.recv
_backend_get = zmq_backend.Socket.get


def _raw_send_multipart(sock: Any, frames: list[bytes], flags: int) -> None:
    """Send all frames through the C-level socket: no per-frame green or sugar layers."""
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        _backend_send(sock, frame, flags | zmq.SNDMORE if index < last else flags)


#: Buffer frames at least this large are kept as views of their zmq message, not copied.
ZERO_COPY_MIN = 64 << 10


def _raw_recv_rest(sock: Any, parts: list[Any], flags: int) -> list[Any]:
    """Receive the rest of a message whose first frames are ``parts``.

    A message's buffers (the frames after the delimiter and the five signed parts: a
    large answer, see :mod:`nb2svc.runtime.kernel.agent`) arrive as views (``memoryview``)
    of the zmq message when large: copying a 50 MB image into ``bytes`` would double
    the worker's memory for it. Everything else is ``bytes``.
    """
    found = DELIMITER in parts
    after = len(parts) - 1 - parts.index(DELIMITER) if found else 0  # frames since the delimiter
    while _backend_get(sock, zmq.RCVMORE):
        if found and after >= 5:
            frame = _backend_recv(sock, flags, copy=False)
            parts.append(frame.buffer if len(frame) >= ZERO_COPY_MIN else frame.bytes)
            after += 1
            continue
        part = _backend_recv(sock, flags)
        parts.append(part)
        if found:
            after += 1
        else:
            found = part == DELIMITER
    return parts


def _raw_recv_multipart(sock: Any, flags: int) -> list[Any]:
    """Receive one whole message through the C-level socket (``zmq.Again`` if none)."""
    return _raw_recv_rest(sock, [_backend_recv(sock, flags)], flags)


class MessageDecoder:
    """Check a message's HMAC and decode it: what ``Session.deserialize`` does, minus
    its date parsing and replay history, which cost more than the rest of a request's
    handling here and protect nothing on a private IPC socket.
    """

    def __init__(self, session: Session) -> None:
        self._auth = session.auth
        self._unpack = session.unpack

    def parse(self, frames: list[bytes]) -> dict[str, Any]:
        if self._auth is not None:
            digest = self._auth.copy()
            for frame in frames[1:5]:
                digest.update(frame)
            if not hmac.compare_digest(digest.hexdigest().encode("ascii"), frames[0]):
                raise ValueError("invalid message signature")
        header = self._unpack(frames[1])
        return {
            "header": header,
            "msg_id": header.get("msg_id"),
            "msg_type": header.get("msg_type"),
            "parent_header": self._unpack(frames[2]),
            "metadata": self._unpack(frames[3]),
            "content": self._unpack(frames[4]),
            "buffers": frames[5:],
        }


def send_frames(sock: Any, frames: list[bytes]) -> None:
    """Send a multipart message in one non-blocking pass, waiting cooperatively only
    when the socket is full. The green socket is then told its state may have changed
    (as its own ``send`` does), or a reader waiting on it could miss a wake-up.
    """
    if not _RAW_IO:
        sock.send_multipart(frames)
        return
    try:
        _raw_send_multipart(sock, frames, zmq.NOBLOCK)
    except zmq.Again:
        sock.send_multipart(frames)
        return
    sock._Socket__state_changed()


def recv_batch(sock: Any) -> list[list[Any]]:
    """Wait (cooperatively) for one message, then take whatever else is already queued."""
    if not _RAW_IO:
        return [sock.recv_multipart(copy=True)]
    batch = [_raw_recv_rest(sock, [sock.recv()], 0)]  # the green recv waits for the first frame
    while True:
        try:
            batch.append(_raw_recv_multipart(sock, zmq.NOBLOCK))
        except zmq.Again:
            sock._Socket__state_changed()  # as the green recv does after a receive
            return batch

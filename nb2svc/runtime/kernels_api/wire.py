"""The two websocket wire formats of Jupyter kernel messages, both directions, I/O free.

Why two: Jupyter Server speaks both and clients pick one. JupyterLab (``@jupyterlab/services``
7) offers the ``v1.kernel.websocket.jupyter.org`` subprotocol; ``jupyter server
--gateway-url``, Thebe and older clients use the legacy format.

**Legacy** (no subprotocol). A message is a JSON text frame ``{"header", "parent_header",
"metadata", "content", "buffers", "channel", ...}``. A message with binary buffers is a
binary frame instead::

    u32 n                      (big-endian: number of parts, the JSON part included)
    u32 offset[0..n-1]         (from the start of the frame)
    JSON message (without "buffers"), then each buffer

**v1** (``v1.kernel.websocket.jupyter.org``). Every message is one binary frame that
carries the message parts exactly as ZeroMQ does, so the server forwards them without
parsing the content::

    u64 k                      (little-endian: number of offsets)
    u64 offset[0..k-1]         (from the start of the frame)
    channel name, header, parent_header, metadata, content, buffers...

The server signs what clients send with the kernel's session key (clients never see it)
and never passes the signature on.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from jupyter_client.jsonutil import json_default

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"

#: Channels a client may send on. iopub is kernel → client only.
CLIENT_CHANNELS = frozenset({"shell", "control", "stdin"})

#: ``parts`` everywhere here: ``[header, parent_header, metadata, content, *buffers]`` as bytes.
Parts = Sequence[bytes]


class BadMessage(ValueError):
    """A client frame that cannot be forwarded (logged and dropped; the socket stays up)."""


@dataclass
class ClientMessage:
    """A validated message from a client, ready to be signed and sent to the kernel."""

    channel: str
    header: dict[str, Any]
    parts: list[bytes] = field(default_factory=list)

    @property
    def msg_id(self) -> str:
        return self.header["msg_id"]

    @property
    def msg_type(self) -> str:
        return self.header["msg_type"]


# --- client → server ---------------------------------------------------------------


def decode_client_frame(frame: str | bytes | bytearray, v1: bool, pack: Any = None) -> ClientMessage:
    """Parse and validate one websocket frame from a client.

    ``pack`` serialises dicts to message parts (the kernel session's packer; JSON by
    default). Raises :class:`BadMessage` for anything that is not a well-formed message
    on a channel a client may use. A legacy message without ``channel`` goes to shell,
    as Jupyter Server does.
    """
    pack = pack or _pack_json
    if v1:
        if isinstance(frame, str):
            raise BadMessage("a text frame on a v1.kernel.websocket.jupyter.org socket")
        channel, parts = _split_v1(bytes(frame))
        if len(parts) < 4:
            raise BadMessage(f"a v1 message needs 4 parts, got {len(parts)}")
        header = _load_object(parts[0], "header")
        return ClientMessage(_check_channel(channel), _check_header(header), list(parts))
    if isinstance(frame, str):
        msg = _load_object(frame, "message")
        buffers: list[bytes] = []
    else:
        msg, buffers = _split_legacy_binary(bytes(frame))
    channel = msg.get("channel") or "shell"
    header = _check_header(msg.get("header"))
    parts = [pack(header)]
    for key in ("parent_header", "metadata", "content"):
        value = msg.get(key) or {}
        if not isinstance(value, dict):
            raise BadMessage(f"{key} must be a JSON object")
        parts.append(pack(value))
    return ClientMessage(_check_channel(channel), header, parts + buffers)


def _check_channel(channel: Any) -> str:
    if channel not in CLIENT_CHANNELS:
        raise BadMessage(f"unknown channel {channel!r} (a client may send on shell, control or stdin)")
    return channel


def _check_header(header: Any) -> dict[str, Any]:
    if not isinstance(header, dict):
        raise BadMessage("the header must be a JSON object")
    for key in ("msg_id", "msg_type"):
        if not isinstance(header.get(key), str) or not header[key]:
            raise BadMessage(f"the header has no {key}")
    return header


def _load_object(data: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage(f"the {what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadMessage(f"the {what} must be a JSON object")
    return value


def _pack_json(obj: Any) -> bytes:
    return json.dumps(obj, default=json_default, ensure_ascii=False).encode("utf-8")


def _split_v1(frame: bytes) -> tuple[str, list[bytes]]:
    if len(frame) < 8:
        raise BadMessage("a v1 frame shorter than its offset count")
    count = int.from_bytes(frame[:8], "little")
    table_end = 8 * (count + 1)
    if count < 2 or table_end > len(frame):
        raise BadMessage("a v1 frame with a bad offset table")
    offsets = [int.from_bytes(frame[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
    if offsets[0] != table_end or any(b < a for a, b in pairwise(offsets)) or offsets[-1] > len(frame):
        raise BadMessage("a v1 frame whose offsets do not fit the frame")
    pieces = [frame[a:b] for a, b in pairwise(offsets)]
    try:
        channel = pieces[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadMessage("a v1 frame whose channel name is not UTF-8") from None
    return channel, pieces[1:]


def _split_legacy_binary(frame: bytes) -> tuple[dict[str, Any], list[bytes]]:
    if len(frame) < 4:
        raise BadMessage("a binary frame shorter than its part count")
    count = struct.unpack("!I", frame[:4])[0]
    if count < 1 or 4 * (count + 1) > len(frame):
        raise BadMessage("a binary frame with a bad offset table")
    offsets = list(struct.unpack("!" + "I" * count, frame[4 : 4 * (count + 1)])) + [len(frame)]
    if any(b < a for a, b in pairwise(offsets)):
        raise BadMessage("a binary frame whose offsets do not fit the frame")
    pieces = [frame[a:b] for a, b in pairwise(offsets)]
    return _load_object(pieces[0], "message"), pieces[1:]


# --- server → client ---------------------------------------------------------------


def encode_v1(channel: str, parts: Parts) -> bytes:
    """One v1 binary frame: the channel and the message parts as they came from ZeroMQ."""
    pieces = [channel.encode("utf-8"), *parts]
    offsets = [8 * (len(pieces) + 2)]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    table = b"".join(n.to_bytes(8, "little") for n in (len(offsets), *offsets))
    return table + b"".join(pieces)


def encode_legacy(
    channel: str, msg: dict[str, Any], parts: Parts, raw_json: bool = True
) -> tuple[bytes, bool]:
    """The legacy frame for a message, and whether it is binary: UTF-8 JSON text, or the
    binary layout when the message has buffers.

    With ``raw_json`` (the kernel packs with JSON, the default) the header, parent,
    metadata and content are spliced in as the kernel sent them: no re-serialisation.
    """
    header = msg["header"]
    buffers = list(parts[4:])
    if raw_json:
        text = b"".join(
            (
                b'{"header":', parts[0],
                b',"msg_id":', _pack_json(header["msg_id"]),
                b',"msg_type":', _pack_json(header["msg_type"]),
                b',"parent_header":', parts[1],
                b',"metadata":', parts[2],
                b',"content":', parts[3],
                b',"buffers":[],"channel":', _pack_json(channel), b"}",
            )
        )  # fmt: skip
    else:
        body = {k: msg[k] for k in ("header", "parent_header", "metadata", "content")}
        ids = {"msg_id": header["msg_id"], "msg_type": header["msg_type"]}
        text = _pack_json({**body, **ids, "buffers": [], "channel": channel})
    if not buffers:
        return text, False
    pieces = [text, *buffers]
    offsets = [4 * (len(pieces) + 1)]
    for piece in pieces[:-1]:
        offsets.append(offsets[-1] + len(piece))
    return struct.pack("!" + "I" * (len(pieces) + 1), len(pieces), *offsets) + b"".join(pieces), True


def encode(
    channel: str, msg: dict[str, Any], parts: Parts, v1: bool, raw_json: bool = True
) -> tuple[bytes, bool]:
    """The frame payload for ``v1`` or legacy clients, and whether it is binary."""
    return (encode_v1(channel, parts), True) if v1 else encode_legacy(channel, msg, parts, raw_json)

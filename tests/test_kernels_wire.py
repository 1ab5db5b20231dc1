"""Both websocket wire formats, checked against jupyter_server's reference codec (no server)."""

from __future__ import annotations

import json
import struct

import pytest
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from nb2svc.runtime.kernels_api.wire import BadMessage, decode_client_frame, encode_legacy, encode_v1

HEADER = {"msg_id": "m1", "msg_type": "execute_request", "session": "s", "username": "u", "version": "5.3"}


def _msg(channel: str = "shell", **extra: object) -> dict:
    return {
        "channel": channel,
        "header": dict(HEADER),
        "parent_header": {},
        "metadata": {"m": 1},
        "content": {"code": "print('é')"},
        "buffers": [],
        **extra,
    }


def _pack(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _parts(msg: dict) -> list[bytes]:
    return [_pack(msg[k]) for k in ("header", "parent_header", "metadata", "content")] + list(msg["buffers"])


def test_v1_frames_match_jupyter_server_both_ways() -> None:
    msg = _msg(buffers=[b"\x00\x01", b"xyz"])
    ours = encode_v1("iopub", _parts(msg))
    assert ours == serialize_msg_to_ws_v1(_parts(msg), "iopub")
    channel, parts = deserialize_msg_from_ws_v1(ours)
    assert channel == "iopub" and parts == _parts(msg)

    decoded = decode_client_frame(serialize_msg_to_ws_v1(msg, "shell", _pack), v1=True)
    assert (decoded.channel, decoded.msg_id, decoded.msg_type) == ("shell", "m1", "execute_request")
    assert decoded.parts == _parts(_msg())  # forwarded byte for byte, buffers included below
    with_buffers = decode_client_frame(serialize_msg_to_ws_v1(_parts(msg), "shell"), v1=True)
    assert with_buffers.parts[4:] == [b"\x00\x01", b"xyz"]


def test_legacy_text_and_binary_frames_match_jupyter_server() -> None:
    msg = _msg()
    text, binary = encode_legacy("iopub", msg, _parts(msg))
    assert not binary
    parsed = json.loads(text.decode("utf-8"))
    assert parsed["channel"] == "iopub" and parsed["content"] == msg["content"]
    assert parsed["msg_id"] == "m1" and parsed["msg_type"] == "execute_request" and parsed["buffers"] == []

    with_buffers = _msg(buffers=[b"abc", b"\xff"])
    frame, binary = encode_legacy("iopub", with_buffers, _parts(with_buffers), raw_json=False)
    assert binary
    back = deserialize_binary_message(frame)
    assert back["buffers"] == [b"abc", b"\xff"] and back["content"] == with_buffers["content"]

    client = decode_client_frame(serialize_binary_message(with_buffers), v1=False)
    assert client.parts[4:] == [b"abc", b"\xff"] and json.loads(client.parts[3]) == with_buffers["content"]
    plain = decode_client_frame(json.dumps(_msg("control")), v1=False)
    assert plain.channel == "control" and json.loads(plain.parts[0])["msg_id"] == "m1"


def test_legacy_message_without_channel_goes_to_shell() -> None:
    msg = _msg()
    del msg["channel"]
    assert decode_client_frame(json.dumps(msg), v1=False).channel == "shell"


@pytest.mark.parametrize(
    ("frame", "v1", "problem"),
    [
        ("{not json", False, "not JSON"),
        ("[1, 2]", False, "JSON object"),
        (json.dumps(_msg("iopub")), False, "unknown channel"),
        (json.dumps(_msg("nonsense")), False, "unknown channel"),
        (json.dumps({**_msg(), "header": {"msg_type": "x"}}), False, "msg_id"),
        (json.dumps({**_msg(), "content": [1]}), False, "content"),
        (b"\x00\x00\x00\x05abc", False, "offset table"),
        ("text", True, "text frame"),
        (b"\x01\x00", True, "shorter"),
        (struct.pack("<QQ", 5, 48), True, "offset table"),
        (serialize_msg_to_ws_v1([b"{}", b"{}"], "shell"), True, "4 parts"),
        (serialize_msg_to_ws_v1([b"nope", b"{}", b"{}", b"{}"], "shell"), True, "not JSON"),
    ],
)
def test_bad_client_frames_are_rejected_with_a_reason(frame: str | bytes, v1: bool, problem: str) -> None:
    with pytest.raises(BadMessage, match=problem):
        decode_client_frame(frame, v1=v1)

"""Requests for a kernel another replica owns, passed on to that replica.

Why: behind a load balancer without affinity a request lands on any replica, while a
kernel's sockets live in its owner's ``KernelManager``. The replica that got the request
has already checked the client (token, origin, host); it passes the request on to the
owner's advertised URL, which only ever comes from the kernel registry, with the
server's own token and a ``X-Nb2svc-Forwarded`` mark (an owner that does not have the
kernel answers 404 rather than forwarding again). The client's cookies and origin are not
passed on.

- REST (get, delete, interrupt, restart): one HTTP request, the owner's answer relayed.
- ``/channels``: a websocket to the owner with the same subprotocol (v1 or the legacy
  protocol); frames are relayed both ways as they are, until either side closes.
"""

from __future__ import annotations

import http.client
import logging
import struct
import urllib.parse
from typing import Any

import gevent
from flask import Response, request

from nb2svc.runtime.auth import json_error

log = logging.getLogger("nb2svc")

#: Marks a forwarded request: its receiver answers it itself and never forwards it again.
FORWARDED = "X-Nb2svc-Forwarded"
#: The client headers an owner needs to answer the same.
PASSED_HEADERS = ("Content-Type", "Accept")
TIMEOUT = 60.0


def was_forwarded() -> bool:
    return request.headers.get(FORWARDED) is not None


def _auth_headers(token: str) -> dict[str, str]:
    headers = {FORWARDED: "1"}
    if token:
        headers["Authorization"] = f"token {token}"
    return headers


def forward_request(owner: str, token: str) -> Response:
    """Send the current request to ``owner`` (a registry URL) and answer with its response."""
    headers = {k: v for k, v in request.headers.items() if k in PASSED_HEADERS}
    return forward_http(
        owner, token, request.method, request.full_path.rstrip("?"), request.get_data(), headers
    )


def forward_http(
    owner: str, token: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> Response:
    """``method path`` on ``owner`` with the server's token; its answer, or a 502 if it is unreachable."""
    target = urllib.parse.urlsplit(owner)
    connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(target.netloc, timeout=TIMEOUT)
    try:
        connection.request(
            method,
            target.path.rstrip("/") + path,
            body=body,
            headers={**(headers or {}), **_auth_headers(token)},
        )
        answer = connection.getresponse()
        data = answer.read()
    except OSError as exc:
        log.warning("could not forward %s %s to %s: %s", method, path, owner, exc)
        return json_error(502, "BadGateway", "the replica that owns this kernel did not answer")
    finally:
        connection.close()
    response = Response(data, status=answer.status)
    for name in ("Content-Type", "Location"):
        if answer.getheader(name):
            response.headers[name] = answer.getheader(name)
    return response


def forward_websocket(ws: Any, owner: str, token: str, protocol: str | None) -> None:
    """Relay the client's websocket ``ws`` to the same path on ``owner`` until either closes."""
    import websocket  # websocket-client: cooperative under gevent's monkey-patching

    target = urllib.parse.urlsplit(owner)
    scheme = "wss" if target.scheme == "https" else "ws"
    url = f"{scheme}://{target.netloc}{target.path.rstrip('/')}{request.full_path.rstrip('?')}"
    headers = [f"{k}: {v}" for k, v in _auth_headers(token).items()]
    try:
        upstream = websocket.create_connection(
            url, header=headers, subprotocols=[protocol] if protocol else None, timeout=TIMEOUT
        )
    except (OSError, websocket.WebSocketException) as exc:
        log.warning("could not forward a websocket to %s: %s", owner, exc)
        _close(ws, 1011, "the replica that owns this kernel did not answer")
        return
    upstream.settimeout(None)
    downstream = gevent.spawn(_owner_to_client, upstream, ws)
    try:
        while True:
            message = ws.receive()
            if message is None:
                break
            if isinstance(message, str):
                upstream.send(message)
            else:
                upstream.send_binary(bytes(message))
    except Exception as exc:  # either side went away
        log.debug("forwarded websocket ended: %s", exc)
    finally:
        downstream.kill(block=False)
        upstream.close()
        _close(ws, 1000, "")


def _owner_to_client(upstream: Any, ws: Any) -> None:
    import websocket

    try:
        while True:
            opcode, data = upstream.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            if opcode == websocket.ABNF.OPCODE_TEXT:
                ws.send(data.decode("utf-8"))
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                ws.send(data, binary=True)
    except Exception as exc:
        log.debug("forwarded websocket ended: %s", exc)
    _close(ws, 1000, "")


def _close(ws: Any, code: int, reason: str) -> None:
    """Send a close frame with its code (gevent-websocket's ``close`` drops the code)."""
    if ws.closed:
        return
    try:
        ws.send_frame(struct.pack("!H", code) + reason.encode(), ws.OPCODE_CLOSE)
    except Exception:
        pass
    ws.close()


__all__ = ["FORWARDED", "forward_http", "forward_request", "forward_websocket", "was_forwarded"]

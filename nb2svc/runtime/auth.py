"""Token auth and CORS, shared by API mode and kernel mode.

Token: when configured, every request must carry it as ``Authorization: token T``,
``Authorization: Bearer T`` or ``?token=T`` (the query form is what browsers'
websockets can send). Comparison is constant-time. Health endpoints stay open so that
load balancers and Kubernetes probes need no secret. A failure is a 401 JSON body.

CORS is off unless ``allow_origin`` is set; then the configured headers are added to
every response and ``OPTIONS`` preflights are answered before auth (browsers send
preflights without credentials).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from flask import Flask, Response, jsonify, request

from nb2svc.config import Settings


def presented_token() -> str | None:
    """The token the current request carries, if any (header first, then ``?token=``)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return request.args.get("token") or None


def token_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison; an unset expected token accepts everything."""
    if not expected:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def json_error(status: int, error: str, message: str, **extra: object) -> Response:
    """The one JSON error shape of both modes: ``{"error", "message", ...}``."""
    response = jsonify({"error": error, "message": message, **extra})
    response.status_code = status
    return response


def install_auth(app: Flask, settings: Settings, is_exempt: Callable[[str], bool]) -> None:
    """Require ``settings.token`` on every request whose path ``is_exempt`` rejects."""
    token = settings.token
    if not token:
        return

    @app.before_request
    def _require_token() -> Response | None:
        if request.method == "OPTIONS" and settings.allow_origin:
            return None
        if is_exempt(request.path):
            return None
        if token_matches(token, presented_token()):
            return None
        response = json_error(
            401,
            "Unauthorized",
            "a valid token is required: send 'Authorization: token <token>' or ?token=<token>",
        )
        response.headers["WWW-Authenticate"] = 'Token realm="nb2svc"'
        return response


def install_cors(app: Flask, settings: Settings) -> None:
    """Add the configured CORS headers; nothing at all when ``allow_origin`` is empty."""
    if not settings.allow_origin:
        return
    headers = {
        "Access-Control-Allow-Origin": settings.allow_origin,
        "Access-Control-Allow-Credentials": settings.allow_credentials,
        "Access-Control-Allow-Headers": settings.allow_headers,
        "Access-Control-Allow-Methods": settings.allow_methods,
        "Access-Control-Expose-Headers": settings.expose_headers,
        "Access-Control-Max-Age": settings.max_age,
    }
    headers = {k: v for k, v in headers.items() if v}

    @app.after_request
    def _add_cors(response: Response) -> Response:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        if settings.allow_origin != "*":
            response.headers.add("Vary", "Origin")
        return response

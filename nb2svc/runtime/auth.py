"""Token auth and CORS, shared by API mode and kernel mode.

Token: when configured, every request must carry it as ``Authorization: token T``,
``Authorization: Bearer T`` or ``?token=T`` (the query form is what browsers'
websockets can send). Comparison is constant-time. The two health paths stay open in
both modes (:func:`health_paths`), so that load balancers and Kubernetes probes need no
secret; a mode may exempt more (API mode's docs page, its Swagger UI files, the ``/``
redirect and the ``--static-path`` files: :func:`~nb2svc.runtime.http_api.routes.public_paths`),
and ``OPTIONS`` preflights pass when CORS is on. A failure is a 401 JSON body.

CORS is off unless ``allow_origin`` is set; then the configured headers are added to
every response and ``OPTIONS`` preflights are answered before auth (browsers send
preflights without credentials). As in Jupyter Server, ``--allow-origin`` alone is
enough for a page that sends a token: unless ``--allow-headers`` / ``--allow-methods``
say otherwise, a preflight is answered with the headers it asks for (Jupyter Server's
``accept, content-type, authorization, x-xsrftoken`` when it asks for none) and
:data:`PREFLIGHT_METHODS`. ``*`` together with credentials is refused
(:func:`check_cors`): browsers reject the pair, and it would mean "every site, as the user".

Origin check (kernel mode, as Jupyter Server does it): a websocket upgrade or a
state-changing request (``POST PUT PATCH DELETE``) that carries an ``Origin`` is refused
with 403 unless that origin is the server's own host or allowed by ``allow_origin``.
Requests without ``Origin`` come from non-browser clients and pass. A cross-origin
state-changing request must also be one a browser only sends after a CORS preflight:
JSON (``Content-Type: application/json``) or carrying an ``Authorization`` header
(``@jupyterlab/services`` POSTs ``/api/kernels`` with a token and no content type). A
page can never start a kernel with a "simple" ``text/plain`` or form POST, even where
``allow_origin`` is ``*``.

Host check (both modes, against DNS rebinding): a page on ``rebind.example`` whose name
later resolves to 127.0.0.1 sends ``Host: rebind.example:PORT`` and a matching ``Origin``,
so the origin check alone lets it in. A server with **no token that listens on a loopback
address** therefore answers 403 to every request (REST and websocket upgrade alike) whose
``Host`` is not a loopback name: ``localhost``, an address in 127.0.0.0/8 or ``::1``, or a
name of ``--allow-host``; ``--allow-remote-access`` turns the check off. Like Jupyter
Server's ``check_host`` with ``local_hostnames``, but narrower in when it applies:

- with a token the check is off: a rebinding page never has the token (nb2svc sets no
  cookie), so the Host adds nothing and proxies may name the server as they like;
- a server listening on a non-loopback address (``--host 0.0.0.0``) is reachable by name
  and address from the network already, so any Host is accepted (Jupyter Server's
  ``allow_remote_access`` defaults to true there too). Kernel mode refuses that
  combination without a token unless ``--no-auth``.

A request with no ``Host`` at all (HTTP/1.0) does not come from a browser and passes.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request

from nb2svc.config import Settings
from nb2svc.runtime.secret import read_token_file

log = logging.getLogger("nb2svc")


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
    """The one JSON error shape of both modes: ``{"error", "message", "reason", ...}``
    (``reason``: the status phrase, as Kernel Gateway's errors carry it)."""
    extra.setdefault("reason", HTTPStatus(status).phrase)
    response = jsonify({"error": error, "message": message, **extra})
    response.status_code = status
    return response


def health_paths(base: str, aliases: Mapping[str, str] | None = None) -> Callable[[str], bool]:
    """The auth exemption of both modes: exactly the two health paths and those of ``aliases``
    (``{alias: original}``, full paths) that stand for one, nothing under or beside them."""
    exempt = {base + "/_api/health/live", base + "/_api/health/ready"}
    exempt = frozenset(exempt | {alias for alias, original in (aliases or {}).items() if original in exempt})
    return exempt.__contains__


def configured_token(settings: Settings) -> str:
    """The token in force: ``--token``, else ``--token-file``'s. A serve plan holds it
    resolved already (``nb2svc serve`` read it before hiding it, see :mod:`nb2svc.plan`)."""
    if settings.token:
        return settings.token
    if settings.token_file:
        return read_token_file(settings.token_file)
    return ""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: ``localhost``, 127.0.0.0/8, ``::1``."""
    name = host.strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name of a ``Host`` header, without its port or IPv6 brackets, lower case."""
    text = host.strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    name, colon, port = text.rpartition(":")
    return name if colon and port.isdigit() else text


def host_refusal(settings: Settings, token: str) -> Callable[[str], str | None] | None:
    """The DNS-rebinding check of the module doc: a function from a ``Host`` header to why it
    is refused (``None``: allowed), or ``None`` when the check does not apply to this server."""
    if token or settings.allow_remote_access or not is_loopback(settings.host):
        return None
    allowed = frozenset(name.strip().rstrip(".").lower() for name in settings.allow_host)

    def refusal(host: str) -> str | None:
        name = host_name(host).rstrip(".")
        if is_loopback(name) or name in allowed:
            return None
        return (
            f"Host {host!r} is not this machine: a server without a token answers only localhost, "
            "127.0.0.1 and ::1 (DNS rebinding protection); name it with --allow-host, or set a token"
        )

    return refusal


def install_host_check(app: Flask, settings: Settings, token: str) -> None:
    """403 for requests to a tokenless loopback server that name another host (module doc)."""
    refusal = host_refusal(settings, token)
    if refusal is None:
        return

    @app.before_request
    def _check_host() -> Response | None:
        host = request.environ.get("HTTP_HOST")
        why = refusal(host) if host is not None else None
        if why is None:
            return None
        log.warning("refused %s %s: %s", request.method, request.path, why)
        return json_error(403, "Forbidden", why)


def install_auth(
    app: Flask, settings: Settings, is_exempt: Callable[[str], bool], token: str | None = None
) -> None:
    """Require the token (default: :func:`configured_token`) on every request whose path
    ``is_exempt`` rejects."""
    token = configured_token(settings) if token is None else token
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
    check_cors(settings)
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
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            requested = request.headers.get("Access-Control-Request-Headers", "").strip()
            response.headers.setdefault("Access-Control-Allow-Headers", requested or PREFLIGHT_HEADERS)
            response.headers.setdefault("Access-Control-Allow-Methods", PREFLIGHT_METHODS)
            response.headers.add("Vary", "Access-Control-Request-Headers")
        if settings.allow_origin != "*":
            response.headers.add("Vary", "Origin")
        return response


#: What a preflight is allowed when ``--allow-methods`` / ``--allow-headers`` are unset
#: (Jupyter Server's answers).
PREFLIGHT_METHODS = "GET, PUT, POST, PATCH, DELETE, OPTIONS"
PREFLIGHT_HEADERS = "accept, content-type, authorization, x-xsrftoken"

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_cors(settings: Settings) -> None:
    """Raise ``ValueError`` for CORS settings no browser accepts (``*`` with credentials)."""
    if settings.allow_origin.strip() == "*" and settings.allow_credentials.strip().lower() == "true":
        raise ValueError(
            "--allow-origin '*' together with --allow-credentials true is refused: browsers reject "
            "the pair, and it would let every web site act as the user; name the allowed origin instead"
        )


def _origin_host(origin: str) -> str | None:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return None
    return parts.netloc.lower() if parts.scheme in ("http", "https") and parts.netloc else None


def origin_refusal(settings: Settings) -> str | None:
    """Why the current request must be refused by the origin check, or ``None``."""
    websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    if not websocket and request.method not in STATE_CHANGING:
        return None
    origin = request.headers.get("Origin")
    if origin is None:
        return None  # not sent by a browser
    if _origin_host(origin) == request.host.lower():
        return None
    allowed = settings.allow_origin.strip()
    if allowed != "*" and origin.rstrip("/") != allowed.rstrip("/"):
        return f"cross-origin request refused: Origin {origin!r} is not this server and not --allow-origin"
    preflighted = request.mimetype == "application/json" or "Authorization" in request.headers
    if not websocket and not preflighted:
        return (
            "cross-origin requests that change state must send Content-Type: application/json "
            "or an Authorization header (a browser then asks first with a CORS preflight)"
        )
    return None


def install_origin_check(app: Flask, settings: Settings) -> None:
    """403 for cross-origin websocket upgrades and state-changing requests (see the module doc).

    Registered before :func:`install_auth`, so a hostile page learns nothing about the token.
    """

    @app.before_request
    def _check_origin() -> Response | None:
        refusal = origin_refusal(settings)
        return json_error(403, "Forbidden", refusal, reason="Forbidden") if refusal else None

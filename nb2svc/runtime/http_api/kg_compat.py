"""Kernel Gateway details that clients notice, kept in one place (issue 10).

- **Encoded slashes.** ``GET /hello/a%2Fb`` reaches ``# GET /hello/:name`` with
  ``name == "a/b"``, as in Kernel Gateway (Tornado matches the raw path and decodes each
  argument). WSGI servers decode ``PATH_INFO`` before the app sees it, so the slash
  would split the segment; :func:`keep_encoded_slashes` re-derives ``PATH_INFO`` from the
  raw request path (which :class:`~nb2svc.runtime.worker.DrainingHandler` passes as
  ``nb2svc.raw_path``), escaping ``/`` and ``%`` inside segments, and the endpoint
  decodes its path parameters (:func:`path_params`).
- **Repeated request headers** become a list in ``REQUEST["headers"]``
  (:func:`header_lists`), as Kernel Gateway's ``headers_to_dict`` does; a header sent
  once stays a string.
- **ETag and 304** belong to the answer: :func:`nb2svc.runtime.http_api.responses.conditional`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from flask import Request

#: WSGI environ keys set by nb2svc's worker (absent under other servers: then these
#: helpers leave the request as the server decoded it).
RAW_PATH = "nb2svc.raw_path"
HEADER_LINES = "nb2svc.header_lines"
ESCAPED = "nb2svc.escaped_segments"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _escaped_path(raw_path: str) -> str:
    """``PATH_INFO`` (latin-1 text of the decoded bytes) with ``%`` and ``/`` inside a
    segment escaped again, so routing sees one segment per raw segment."""
    segments = []
    for segment in raw_path.split("/"):
        text = unquote_to_bytes(segment).decode("latin-1")
        segments.append(text.replace("%", "%25").replace("/", "%2F"))
    return "/".join(segments)


def keep_encoded_slashes(app: WsgiApp) -> WsgiApp:
    """WSGI middleware: a raw path with ``%2F`` is routed segment by segment."""

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raw = environ.get(RAW_PATH)
        if raw and "%2f" in raw.lower():
            environ["PATH_INFO"] = _escaped_path(raw.split("?", 1)[0])
            environ[ESCAPED] = True
        return app(environ, start_response)

    return middleware


def path_params(environ: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, str]:
    """The endpoint's path parameters as the client meant them (see the module doc)."""
    if not environ.get(ESCAPED):
        return dict(params)
    return {name: unquote(value) for name, value in params.items()}


def _header_name(name: str) -> str:
    return name.replace("_", "-").title()  # as Werkzeug names HTTP_* environ keys


def header_lists(req: Request, headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` (one string per name) with each header the client repeated as a list
    of its values in order, named as Werkzeug (and Tornado) name it."""
    lines = req.environ.get(HEADER_LINES)
    if not lines:
        return headers
    values: dict[str, list[str]] = {}
    for name, value in lines:
        values.setdefault(_header_name(name), []).append(value)
    for name, found in values.items():
        if len(found) > 1 and name in headers:
            headers[name] = found
    return headers

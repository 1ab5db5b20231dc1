"""The ``REQUEST`` global: what an endpoint's code sees of the HTTP request.

Shape (Kernel Gateway compatible), a JSON *string*::

    {"body": ..., "args": {name: [values]}, "path": {name: value}, "headers": {name: value}}

A header the client sent more than once is a list of its values, as in Kernel Gateway.

``body`` by ``Content-Type``: ``application/json`` (and ``+json``) → the parsed value
(invalid JSON is a 400, not a surprise inside the cell); form-urlencoded and multipart
→ ``{name: [values]}`` (uploaded files contribute their text; malformed multipart is a
400); JSON nested too deeply to parse is a 400; anything else → the
body decoded as UTF-8 text; no body → ``""``. A body that is not UTF-8 text is a 400,
except on Python kernels: there ``body`` is ``null`` and, out of band, the
bytes are in ``REQUEST_BODY``.

How REQUEST reaches the kernel (out of band on Python kernels, with ``REQUEST_BODY`` and
``REQUEST_FILES``; a literal on the annotation line elsewhere) is the invocation
protocol's business: :mod:`nb2svc.runtime.kernel.invoke`. This module turns an HTTP
request into the :class:`~nb2svc.runtime.kernel.invoke.RequestPayload` it sends, with
Kernel Gateway's path and header details (:mod:`.kg_compat`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

from flask import Request
from werkzeug.formparser import FormDataParser

from nb2svc.runtime.http_api.kg_compat import header_lists
from nb2svc.runtime.http_api.kg_compat import path_params as kg_path_params
from nb2svc.runtime.kernel.invoke import RequestPayload, Upload


class BadRequestBody(ValueError):
    """The body does not match its declared content type."""


def _check_multipart(req: Request, data: bytes) -> None:
    """Werkzeug reads a malformed multipart body as an empty form; here it is a 400."""
    boundary = req.mimetype_params.get("boundary")
    if not boundary:
        raise BadRequestBody("multipart/form-data without a boundary parameter")
    if not data:
        return
    parser = FormDataParser(silent=False, max_form_parts=req.max_form_parts)
    try:
        parser.parse(io.BytesIO(data), req.mimetype, len(data), req.mimetype_params)
    except ValueError as exc:
        raise BadRequestBody(f"malformed multipart body: {exc}") from None


def parse_body(req: Request, files: list[Upload] | None = None, binary_ok: bool = False) -> Any:
    """REQUEST's ``body``; multipart uploads are appended to ``files`` when given.

    ``binary_ok``: a body that is not UTF-8 gives ``None`` instead of a 400 (the
    kernel gets the bytes out of band).
    """
    data = req.get_data(cache=True)
    mimetype = req.mimetype or ""
    if mimetype == "multipart/form-data":
        _check_multipart(req, data)
    if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form: dict[str, list[str]] = {k: req.form.getlist(k) for k in req.form}
        for name in req.files:
            for upload in req.files.getlist(name):
                raw = upload.read()
                form.setdefault(name, []).append(raw.decode("utf-8", errors="replace"))
                if files is not None:
                    files.append((name, upload.filename or "", upload.content_type or "", raw))
        return form
    if not data:
        return ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if binary_ok and not (mimetype == "application/json" or mimetype.endswith("+json")):
            return None
        raise BadRequestBody("the request body is not UTF-8 text") from None
    if mimetype == "application/json" or mimetype.endswith("+json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequestBody(f"invalid JSON body: {exc}") from None
        except RecursionError:
            raise BadRequestBody("the JSON body is nested too deeply") from None
    return text


def build_payload(
    req: Request,
    path_params: Mapping[str, str],
    hidden_query: tuple[str, ...] = (),
    binary_ok: bool = False,
) -> RequestPayload:
    """REQUEST and the raw body and uploads of ``req``; ``hidden_query`` args (the token)
    are dropped. ``path_params`` are the route's, as Werkzeug matched them.

    ``Authorization`` is dropped only when it carries the server's own token
    (the caller passes ``hidden_query=("token",)`` then as well).
    """
    args = {k: req.args.getlist(k) for k in req.args if k not in hidden_query}
    headers: dict[str, Any] = header_lists(req, {k: v for k, v in req.headers.items()})
    if hidden_query and "Authorization" in headers:
        del headers["Authorization"]
    files: list[Upload] = []
    body = parse_body(req, files, binary_ok)
    path = kg_path_params(req.environ, path_params)
    payload = {"body": body, "args": args, "path": path, "headers": headers}
    try:
        text = json.dumps(payload)
    except RecursionError:
        raise BadRequestBody("the JSON body is nested too deeply") from None
    return RequestPayload(text, req.get_data(cache=True), files)


def build_request(req: Request, path_params: Mapping[str, str], hidden_query: tuple[str, ...] = ()) -> str:
    """The ``REQUEST`` JSON string for ``req`` (see :func:`build_payload`)."""
    return build_payload(req, path_params, hidden_query).json

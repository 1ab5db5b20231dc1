"""Turn an endpoint's run into an HTTP response (Kernel Gateway's rules, plus binary bodies).

:func:`answer` is the one way back from the kernel layer: it takes the
:class:`~nb2svc.runtime.kernel.invoke.Invocation` and applies the rules below.

- Body: the cell's stdout verbatim; if there is none, the ``execute_result``
  mime bundle serialised as JSON (a cell ending in ``1+1`` answers
  ``{"text/plain": "2"}``); otherwise empty.
- Status 200 and ``Content-Type: text/plain`` unless the endpoint's ResponseInfo cell
  printed ``{"status": int, "headers": {name: value}}``.
- Binary responses (beyond the reference): when ResponseInfo sets a ``Content-Type``
  that the cell also produced as rich output (``display_data`` or
  ``execute_result``, e.g. ``image/png`` from ``display(Image(...))``), that
  representation is the body, base64-decoded for binary types.
- A cell error is a 500 with ``{"error": ename, "message": evalue, "traceback": [...]}``,
  without the injected request and size-capped (:func:`error_payload`); so is a failing
  ResponseInfo cell, and one that prints something else than its JSON is a 500
  ``ResponseInfoError``.
- **ETag and 304** (:func:`conditional`, Kernel Gateway's behaviour): a 200 answer to
  ``GET`` (or ``HEAD``) gets an ``ETag`` (a hash of the body) unless the notebook set one,
  and ``If-None-Match`` with that tag is a 304 without a body, as Tornado does for every
  Kernel Gateway handler.

Large answers (:func:`make_response`): the status comes from the whole cell (its error,
its ResponseInfo), so an answer is complete in the worker before its first byte goes
out; it is held once, as the parts it arrived in (stdout writes, or the rich output's
bytes), and never joined or re-encoded whole. Above :data:`STREAM_ABOVE` the body is a
WSGI iterable of :data:`SLICE`-sized views of those parts, with ``Content-Length``
(non-ASCII text parts are encoded once, in place; ASCII text one slice at a time).
A GET's ``ETag`` is then hashed over the parts in place, up to :data:`ETAG_LIMIT`; a
larger answer has no ``ETag`` (and so no 304), as hashing it would cost about as much
CPU as sending it, for a tag that clients of such answers rarely send back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Request, Response

from nb2svc.runtime.auth import json_error
from nb2svc.runtime.kernel.agent import TEXT_TYPES

if TYPE_CHECKING:  # the executor pulls in zmq and jupyter_client, which must wait for the fork
    from nb2svc.runtime.kernel.executor import ExecutionResult
    from nb2svc.runtime.kernel.invoke import Invocation


class ResponseInfoError(ValueError):
    """The ResponseInfo cell printed something that is not ``{"status", "headers"}`` JSON."""


@dataclass
class ResponseInfo:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def parse_response_info(stdout: str) -> ResponseInfo:
    """Parse a ResponseInfo cell's output, with an error that says what was wrong."""
    text = stdout.strip()
    if not text:
        return ResponseInfo()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ResponseInfoError(
            'the ResponseInfo cell must print JSON like {"status": 201, "headers": {}}, '
            f"got {text[:80]!r}"
        ) from None
    if not isinstance(data, dict):
        raise ResponseInfoError("the ResponseInfo cell must print a JSON object")
    status = data.get("status", 200)
    headers = data.get("headers", {})
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise ResponseInfoError(f"ResponseInfo status must be an integer from 100 to 599, got {status!r}")
    if not isinstance(headers, dict):
        raise ResponseInfoError("ResponseInfo headers must be a JSON object of name: value")
    checked = {str(k): str(v) for k, v in headers.items()}
    for name, value in checked.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ResponseInfoError(f"ResponseInfo header name {name[:80]!r} is not a valid HTTP header name")
        if _BAD_VALUE.search(value):
            raise ResponseInfoError(
                f"ResponseInfo header {name!r} has a line break or control character in its value "
                "(it would split the response's headers)"
            )
    return ResponseInfo(status, checked)


#: RFC 9110 ``token`` (a header name) and what a header value may not hold (CR, LF, NUL and
#: other controls but tab): such a value would split or corrupt the response's headers.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _header(headers: dict[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


#: A body part: text from JSON messages, bytes (or a view of a zmq message) from raw
#: buffers or decoded rich output.
Part = str | bytes | memoryview

#: Bodies above this many bytes are sent as slices of their parts, never joined.
STREAM_ABOVE = 1 << 20
#: Largest piece handed to the WSGI server at once (a view of a part; text is encoded
#: one slice at a time).
SLICE = 1 << 20
#: No ``ETag`` on answers larger than this (see the module docstring).
ETAG_LIMIT = 16 << 20


def body_parts(result: ExecutionResult, info: ResponseInfo) -> tuple[list[Part], str]:
    """The body of a successful execution, as parts in order, and its Content-Type."""
    content_type = _header(info.headers, "Content-Type") or "text/plain"
    mime = content_type.split(";", 1)[0].strip().lower()
    rich = _rich_output(result, mime)
    if rich is not None:
        return [rich], content_type
    if any(result.stdout_parts):
        return result.stdout_parts, content_type
    if result.result is not None:
        return [json.dumps(result.result)], content_type
    return [], content_type


def _join(parts: list[Part]) -> bytes | str:
    if all(isinstance(part, str) for part in parts):
        return "".join(parts)  # type: ignore[arg-type]
    return b"".join(part.encode("utf-8") if isinstance(part, str) else part for part in parts)


def _rich_output(result: ExecutionResult, mime: str) -> Part | None:
    if mime == "text/plain" or mime == "application/json":
        return None  # keep the reference's stdout / mime-bundle rules
    for bundle in [*result.displays, result.result or {}]:
        if mime in bundle:
            value = bundle[mime]
            if isinstance(value, bytes | memoryview):  # a raw buffer: already the decoded bytes
                return value
            if mime.startswith(TEXT_TYPES):
                return value if isinstance(value, str) else json.dumps(value)
            try:
                return base64.b64decode(value, validate=False)
            except (binascii.Error, TypeError):
                return None
    return None


def _measure(parts: list[Part]) -> int:
    """The body's length in bytes. Non-ASCII text is encoded here, in place, one part at a
    time (its text is then freed): a length needs the bytes, and they are sent anyway."""
    total = 0
    for index, part in enumerate(parts):
        if isinstance(part, str) and not part.isascii():
            part = parts[index] = part.encode("utf-8", "surrogateescape")
        total += len(part)
    return total


def _slices(parts: list[Part]) -> Iterator[bytes | memoryview]:
    for part in parts:
        if isinstance(part, str):  # ASCII (see _measure): one slice at a time
            for start in range(0, len(part), SLICE):
                yield part[start : start + SLICE].encode("ascii")
        elif len(part) <= SLICE:
            yield part
        else:
            view = memoryview(part)
            for start in range(0, len(view), SLICE):
                yield view[start : start + SLICE]


class SlicedResponse(Response):
    """A large answer sent as slices of the parts it arrived in (see the module docstring).

    ``get_data`` still gives the whole body (a copy, for the few callers that keep an
    answer, such as async jobs); ``add_etag`` hashes the parts in place.
    """

    def __init__(self, parts: list[Part], length: int, **kwargs: Any) -> None:
        super().__init__(_slices(parts), direct_passthrough=True, **kwargs)
        self.parts = parts
        self.length = length
        self.headers["Content-Length"] = str(length)

    def get_data(self, as_text: bool = False) -> Any:  # type: ignore[override]
        data = b"".join(_slices(self.parts))
        return data.decode() if as_text else data

    def add_etag(self, overwrite: bool = False, weak: bool = False) -> None:
        if not overwrite and "ETag" in self.headers:
            return
        if self.length > ETAG_LIMIT:
            return
        digest = hashlib.sha1()  # what Werkzeug's generate_etag uses for small answers
        for piece in _slices(self.parts):
            digest.update(piece)
        self.set_etag(digest.hexdigest(), weak)


def make_response(result: ExecutionResult, info: ResponseInfo) -> Response:
    """The HTTP response of a successful execution: body, ResponseInfo status and headers.

    A large answer's text parts may be encoded in place (``result`` then holds bytes).
    """
    parts, content_type = body_parts(result, info)
    small = sum(map(len, parts)) * 4 <= STREAM_ABOVE  # whatever the encoding: no need to measure
    length = 0 if small else _measure(parts)
    if length <= STREAM_ABOVE:
        response = Response(_join(parts), status=info.status)
    else:
        response = SlicedResponse(parts, length, status=info.status)
    for name, value in info.headers.items():
        response.headers[name] = value
    response.headers["Content-Type"] = content_type
    return response


#: Caps on a 500's parts (characters): the body stays small whatever the cell raised.
MESSAGE_LIMIT = 4096
TRACEBACK_LIMIT = 32768
TRUNCATED = " [... truncated]"


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + TRUNCATED


def _without(text: str, literal: str, marker: str) -> str:
    """``text`` with ``literal`` removed, and any line still showing ``marker`` dropped."""
    if not literal or not marker:
        return text
    text = text.replace(literal, "")
    if marker not in text:
        return text
    return "\n".join(line for line in text.split("\n") if marker not in line)


def error_payload(result: ExecutionResult, *, hide: str = "", detail: str = "full") -> dict[str, Any]:
    """The 500 body of a failed cell: ``{"error": ename, "message": evalue, "traceback": [...]}``.

    The kernel reports the cell's source around the failing line, and the request's data
    may ride on the cell's first line (see :mod:`nb2svc.runtime.kernel.invoke`); ``hide`` is that
    injected text, and it never reaches the client: it is cut out of every line, and a line
    that still shows its start (however the kernel rendered it) is dropped. So the client
    gets the notebook's own lines, never its own headers (cookies, upstream credentials)
    or body back. The message is capped at :data:`MESSAGE_LIMIT` characters and the
    traceback at :data:`TRACEBACK_LIMIT`; ``detail="message"`` leaves the traceback out.
    """
    err = result.error
    assert err is not None
    marker = hide[:24]
    payload: dict[str, Any] = {
        "error": _cap(err.ename, 200),
        "message": _cap(_without(err.evalue, hide, marker), MESSAGE_LIMIT),
    }
    if detail != "full":
        return payload
    lines, room = [], TRACEBACK_LIMIT
    for entry in err.traceback:
        entry = _without(entry, hide, marker)
        if len(entry) > room:
            lines.append(entry[:room] + TRUNCATED)
            break
        lines.append(entry)
        room -= len(entry)
    payload["traceback"] = lines
    return payload


def answer(done: Invocation, detail: str = "full", req: Request | None = None) -> Response:
    """The HTTP response of an endpoint's run: a 500 for a failed cell or ResponseInfo cell,
    else the body and ResponseInfo's status and headers (``detail``: see :func:`error_payload`).

    ``req``: the request being answered now (not a job's), for :func:`conditional`.
    """
    for failed in (done.result, done.response_info):
        if failed is not None and failed.error is not None:
            payload = error_payload(failed, hide=done.hide, detail=detail)
            return json_error(500, payload.pop("error"), payload.pop("message"), **payload)
    try:
        info = parse_response_info(done.response_info.stdout if done.response_info else "")
    except ResponseInfoError as exc:
        return json_error(500, "ResponseInfoError", str(exc))
    response = make_response(done.result, info)
    return response if req is None else conditional(req, response)


def conditional(req: Request, response: Response) -> Response:
    """ETag on a 200 to GET/HEAD (unless set), and 304 when ``If-None-Match`` matches.

    Streamed answers are left alone: hashing them would hold the whole stream back. A
    :class:`SlicedResponse` is complete already, so it hashes its parts (up to a size).
    """
    if req.method not in ("GET", "HEAD") or response.status_code != 200:
        return response
    if response.is_streamed and not isinstance(response, SlicedResponse):
        return response
    if "ETag" not in response.headers:
        response.add_etag()
    return response.make_conditional(req)

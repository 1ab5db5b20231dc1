"""The ``REQUEST`` global: what an endpoint's code sees of the HTTP request.

Shape (Kernel Gateway compatible), a JSON *string*::

    {"body": ..., "args": {name: [values]}, "path": {name: value}, "headers": {name: value}}

A header the client sent more than once is a list of its values, as in Kernel Gateway.

``body`` by ``Content-Type``: ``application/json`` (and ``+json``) → the parsed value
(invalid JSON is a 400, not a surprise inside the cell); form-urlencoded and multipart
→ ``{name: [values]}`` (uploaded files contribute their text; malformed multipart is a
400); JSON nested too deeply to parse is a 400; anything else → the
body decoded as UTF-8 text (undecodable bytes are a 400); no body → ``""``.

Why the assignment rides on the annotation line: a separate ``REQUEST = …`` execute
costs a full kernel round trip (about 45% of throughput). The first line of an
endpoint's code is always its annotation comment, so :func:`code_with_request`
puts the assignment *in front of that comment on the same line*; the cell's line
numbers, and so its tracebacks, stay exactly as in the notebook.
"""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from flask import Request
from werkzeug.formparser import FormDataParser

from nb2svc.runtime.kg_compat import header_lists


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


def parse_body(req: Request) -> Any:
    data = req.get_data(cache=True)
    mimetype = req.mimetype or ""
    if mimetype == "multipart/form-data":
        _check_multipart(req, data)
    if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form: dict[str, list[str]] = {k: req.form.getlist(k) for k in req.form}
        for name in req.files:
            for upload in req.files.getlist(name):
                form.setdefault(name, []).append(upload.read().decode("utf-8", errors="replace"))
        return form
    if not data:
        return ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestBody("the request body is not UTF-8 text") from None
    if mimetype == "application/json" or mimetype.endswith("+json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequestBody(f"invalid JSON body: {exc}") from None
        except RecursionError:
            raise BadRequestBody("the JSON body is nested too deeply") from None
    return text


def build_request(req: Request, path_params: Mapping[str, str], hidden_query: tuple[str, ...] = ()) -> str:
    """The ``REQUEST`` JSON string for ``req``; ``hidden_query`` args (the token) are dropped.

    ``Authorization`` is dropped only when it carries the server's own token
    (the caller passes ``hidden_query=("token",)`` then as well).
    """
    args = {k: req.args.getlist(k) for k in req.args if k not in hidden_query}
    headers: dict[str, Any] = header_lists(req, {k: v for k, v in req.headers.items()})
    if hidden_query and "Authorization" in headers:
        del headers["Authorization"]
    payload = {"body": parse_body(req), "args": args, "path": dict(path_params), "headers": headers}
    try:
        return json.dumps(payload)
    except RecursionError:
        raise BadRequestBody("the JSON body is nested too deeply") from None


def _double_quoted(value: str) -> str:
    # A JSON string literal is also a valid Python, R, JavaScript and Scala literal.
    return json.dumps(value)


def _julia_literal(value: str) -> str:
    return json.dumps(value).replace("$", "\\$")


#: How each kernel language assigns the REQUEST string; the result goes before the
#: annotation comment on the cell's first line.
ASSIGNMENTS: dict[str, Callable[[str], str]] = {
    "python": lambda s: f"REQUEST = {_double_quoted(s)}; ",
    "r": lambda s: f"REQUEST <- {_double_quoted(s)}; ",
    "julia": lambda s: f"REQUEST = {_julia_literal(s)}; ",
    "javascript": lambda s: f"var REQUEST = {_double_quoted(s)}; ",
    "typescript": lambda s: f"var REQUEST = {_double_quoted(s)}; ",
    "scala": lambda s: f"val REQUEST = {_double_quoted(s)}; ",
    "bash": lambda s: f"REQUEST={shlex.quote(s)}; ",
}


#: Defined once on every Python kernel: runs a ResponseInfo cell with its stdout
#: captured, so that the cell can ride along as a ``user_expression`` of the endpoint's
#: own execute instead of costing a second kernel round trip. ipykernel evaluates user
#: expressions only when the code succeeded, which is when ResponseInfo must run.
#: It answers a JSON string: ``{"stdout": text}`` or ``{"ename", "evalue", "traceback"}``
#: (ipykernel's own report of a failed expression carries no traceback).
#:
#: It keeps the kernel's own stdout and stderr, to tell whether a request closed them
#: (:data:`HEALTH_EXPRESSION`).
#:
#: It also forgets each request's cell source after it ran: IPython caches every
#: distinct cell in ``linecache`` (for tracebacks) and never drops it, and every
#: request's cell is distinct (it carries the REQUEST literal), so a busy kernel would
#: otherwise grow by the size of every request it ever served.
PYTHON_BOOTSTRAP = """
def _nb2svc_forget_request_cell(result):
    raw = getattr(result.info, "raw_cell", None) or ""
    if not raw.startswith("REQUEST = "):
        return
    import linecache
    names = get_ipython().compile._filename_map
    for name in [n for n in names if linecache.cache.get(n, (0, 0, [""]))[2][:1] != [""]]:
        if linecache.cache[name][2][0].startswith("REQUEST = "):
            linecache.cache.pop(name, None)
            names.pop(name, None)


get_ipython().events.register("post_run_cell", _nb2svc_forget_request_cell)


_nb2svc_streams = (__import__("sys").stdout, __import__("sys").stderr)


def _nb2svc_healthy():
    import sys
    out, err = _nb2svc_streams
    if sys.stdout is not out and not out.closed:
        sys.stdout = out
    if sys.stderr is not err and not err.closed:
        sys.stderr = err
    return not (out.closed or err.closed)


def _nb2svc_response_info(code, filename):
    import contextlib, io, json, sys, traceback
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            exec(compile(code, filename, "exec"), get_ipython().user_ns)
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)[1:]
        lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
        return json.dumps({"ename": type(exc).__name__, "evalue": str(exc), "traceback": lines})
    return json.dumps({"stdout": buffer.getvalue()})
"""

RESPONSE_INFO_KEY = "nb2svc_response_info"

#: Evaluated with every request on Python kernels: ``True`` while the kernel's stdout
#: and stderr work. A cell that swapped them and did not restore them gets them back;
#: one that closed them leaves a kernel that could never answer again, so it is retired.
HEALTH_KEY = "nb2svc_healthy"
HEALTH_EXPRESSION = "_nb2svc_healthy()"


def response_info_expressions(language: str, code: str, cells: tuple[int, ...]) -> dict[str, str] | None:
    """The ``user_expressions`` that run a ResponseInfo cell in the same execute, or
    ``None`` where the language has no such fast path (it then runs as its own execute).
    """
    if language.lower() != "python":
        return None
    filename = "<ResponseInfo cell " + ",".join(map(str, cells)) + ">"
    return {RESPONSE_INFO_KEY: f"_nb2svc_response_info({json.dumps(code)}, {json.dumps(filename)})"}


def supports_language(language: str) -> bool:
    return language.lower() in ASSIGNMENTS


def code_with_request(language: str, code: str, request_json: str) -> str:
    """``code`` with ``REQUEST`` assigned on its first (annotation) line."""
    assign = ASSIGNMENTS[language.lower()](request_json)
    return assign + code

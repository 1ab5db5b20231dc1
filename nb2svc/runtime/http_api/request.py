"""The ``REQUEST`` global: what an endpoint's code sees of the HTTP request.

Shape (Kernel Gateway compatible), a JSON *string*::

    {"body": ..., "args": {name: [values]}, "path": {name: value}, "headers": {name: value}}

A header the client sent more than once is a list of its values, as in Kernel Gateway.

``body`` by ``Content-Type``: ``application/json`` (and ``+json``) → the parsed value
(invalid JSON is a 400, not a surprise inside the cell); form-urlencoded and multipart
→ ``{name: [values]}`` (uploaded files contribute their text; malformed multipart is a
400); JSON nested too deeply to parse is a 400; anything else → the
body decoded as UTF-8 text; no body → ``""``. A body that is not UTF-8 text is a 400,
except on Python kernels: there ``body`` is ``null`` and, out of band (below), the
bytes are in ``REQUEST_BODY``.

How REQUEST reaches the kernel:

- **Python kernels (ipykernel): out of band.** The cell's code is sent exactly as in
  the notebook; the request travels beside it in the ``execute_request``: a marker in
  its metadata and the data as raw message buffers (not JSON-escaped, not signed, not
  parsed as source). A ``pre_run_cell`` hook (:data:`PYTHON_BOOTSTRAP`) binds, before
  the cell runs:

  - ``REQUEST``: the JSON string above, byte for byte what the literal held;
  - ``REQUEST_BODY``: the raw body as ``bytes`` (``b""`` if none): images,
    ``application/octet-stream`` and any other binary body arrive without base64;
  - ``REQUEST_FILES``: multipart uploads as ``{name: [{"filename", "content_type",
    "data": bytes}]}`` (``{}`` otherwise);
  - ``PARAMS``: the typed values of the endpoint's declared contract (path and query
    names, the JSON body under ``"body"``; see :mod:`.contract`), in the metadata.

  Large answers come back the same way (the request's metadata asks for it with
  ``raw_outputs``): a stdout flush of :data:`RAW_OUTPUT_MIN` characters or more goes as
  one UTF-8 buffer, and a binary rich output (``display(Image(...))``: a mime type that
  is not text, whose value is strict base64 of that size) as its decoded bytes, named
  in the message metadata (:data:`~nb2svc.runtime.kernel.executor.RAW_BUFFERS`). That
  spares the kernel and the worker JSON-encoding, signing and parsing the answer (and
  base64 for images). Other requests to the kernel (kernel mode, setup cells) are
  untouched.

  Parsing a 1 MiB request as a source literal cost IPython about a second of CPU
  (tokenizing, hashing the cell for its file name); out of band it costs a copy.
  A kernel is checked once after start (:data:`PROBE_EXPRESSION`); one whose language
  is Python but which cannot bind out of band (xeus-python) gets the literal.
- **Other languages: a literal on the annotation line.** A separate ``REQUEST = …``
  execute costs a full kernel round trip (about 45% of throughput). The first line of
  an endpoint's code is always its annotation comment, so :func:`code_with_request`
  puts the assignment *in front of that comment on the same line*; the cell's line
  numbers, and so its tracebacks, stay exactly as in the notebook.
"""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Request
from werkzeug.formparser import FormDataParser

from nb2svc.runtime.http_api.kg_compat import header_lists
from nb2svc.runtime.http_api.responses import TEXT_TYPES


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


#: A multipart upload as it travels out of band: (field name, filename, content type, data).
Upload = tuple[str, str, str, bytes]


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


@dataclass
class RequestPayload:
    """Everything the kernel gets of one request: REQUEST, and (out of band) the raw bytes."""

    json: str
    body: bytes = b""
    files: list[Upload] = field(default_factory=list)
    #: ``PARAMS``: the typed values of a checked contract (:mod:`.contract`); out of band only.
    params: dict[str, Any] | None = None


def build_payload(
    req: Request,
    path_params: Mapping[str, str],
    hidden_query: tuple[str, ...] = (),
    binary_ok: bool = False,
) -> RequestPayload:
    """REQUEST and the raw body and uploads of ``req``; ``hidden_query`` args (the token)
    are dropped.

    ``Authorization`` is dropped only when it carries the server's own token
    (the caller passes ``hidden_query=("token",)`` then as well).
    """
    args = {k: req.args.getlist(k) for k in req.args if k not in hidden_query}
    headers: dict[str, Any] = header_lists(req, {k: v for k, v in req.headers.items()})
    if hidden_query and "Authorization" in headers:
        del headers["Authorization"]
    files: list[Upload] = []
    body = parse_body(req, files, binary_ok)
    payload = {"body": body, "args": args, "path": dict(path_params), "headers": headers}
    try:
        text = json.dumps(payload)
    except RecursionError:
        raise BadRequestBody("the JSON body is nested too deeply") from None
    return RequestPayload(text, req.get_data(cache=True), files)


def build_request(req: Request, path_params: Mapping[str, str], hidden_query: tuple[str, ...] = ()) -> str:
    """The ``REQUEST`` JSON string for ``req`` (see :func:`build_payload`)."""
    return build_payload(req, path_params, hidden_query).json


#: The ``execute_request`` metadata key that marks a request travelling out of band.
OUT_OF_BAND_KEY = "nb2svc_request"


def out_of_band(payload: RequestPayload) -> tuple[dict[str, Any], list[bytes]]:
    """The metadata and buffers that carry ``payload`` beside the cell's code.

    Buffers: REQUEST (UTF-8; ``json.dumps`` output is ASCII), the raw body, then one
    per upload; the metadata names the uploads in the same order, and asks for large
    outputs as raw buffers (the executor reads both forms).
    """
    uploads = [[name, filename, content_type] for name, filename, content_type, _ in payload.files]
    metadata = {OUT_OF_BAND_KEY: {"files": uploads, "raw_outputs": True, "params": payload.params or {}}}
    buffers = [payload.json.encode("utf-8"), payload.body, *(data for *_, data in payload.files)]
    return metadata, buffers


#: Sent once to each new Python kernel: does it bind REQUEST out of band?
PROBE_KEY = "nb2svc_out_of_band"
PROBE_EXPRESSION = "_nb2svc_out_of_band"
PROBE_METADATA: dict[str, Any] = {OUT_OF_BAND_KEY: {"probe": True}}
PROBE_BUFFERS = [b"nb2svc-probe"]


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
#: It also forgets each cell's captured output: IPython (8.x) tees every stdout and
#: stderr write into ``history_manager.outputs[execution_count]``, and requests run
#: with ``store_history=False`` never advance the count, so a kernel would keep every
#: answer it ever printed (measured: about 1 MB of RSS per 1 MiB echo, 2 GB after 2,000).
#:
#: It keeps the kernel's own stdout and stderr, to tell whether a request closed them.
#:
#: It binds REQUEST, REQUEST_BODY and REQUEST_FILES from the execute request's
#: metadata and buffers before a cell runs, when they travel out of band (see the
#: module docstring).
#:
#: For a request that asks for ``raw_outputs``, hooks on stdout (run on ipykernel's IO
#: thread, where stream messages are built) and on the display publisher move large
#: outputs into message buffers (see the module docstring). An embedded
#: ``IPython.display.Image`` then shows its bytes as they are: IPython base64-encodes
#: them in ``_repr_mimebundle_`` before any hook sees them (67 MB of bytes, then of
#: str, for a 50 MB image), and decoding that again cost the kernel more than the rest of
#: the answer. Outside such requests, and for subclasses with their own
#: ``_repr_mimebundle_``, the stock method runs; a bytes value that stays in JSON is
#: base64-encoded by jupyter_client, as the stock method would have.
#:
#: It also forgets each request's cell source after it ran: IPython caches every
#: distinct cell in ``linecache`` (for tracebacks) and never drops it, and a request's
#: cell with the REQUEST literal is distinct (it carries the literal), so a busy kernel would
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


def _nb2svc_forget_outputs(result=None):
    outputs = getattr(getattr(get_ipython(), "history_manager", None), "outputs", None)
    if outputs:
        outputs.clear()


get_ipython().events.register("post_run_cell", _nb2svc_forget_outputs)


_nb2svc_out_of_band = False


def _nb2svc_bind_request(info=None):
    shell = get_ipython()
    parent = shell.kernel.get_parent()
    spec = (parent.get("metadata") or {}).get("nb2svc_request")
    if spec is None:
        return
    buffers = parent.get("buffers") or ()
    ns = shell.user_ns
    if spec.get("probe"):
        ns["_nb2svc_out_of_band"] = bool(buffers) and bytes(buffers[0]) == b"nb2svc-probe"
        return
    _nb2svc_raw_parent[0] = parent["header"]["msg_id"] if spec.get("raw_outputs") and _nb2svc_raw_ok else None
    ns["REQUEST"] = str(buffers[0], "utf-8")
    ns["REQUEST_BODY"] = bytes(buffers[1])
    files = {}
    for (name, filename, content_type), data in zip(spec["files"], buffers[2:]):
        upload = {"filename": filename, "content_type": content_type, "data": bytes(data)}
        files.setdefault(name, []).append(upload)
    ns["REQUEST_FILES"] = files
    ns["PARAMS"] = spec.get("params") or {}


_nb2svc_has_parent = callable(getattr(getattr(get_ipython(), "kernel", None), "get_parent", None))
if _nb2svc_has_parent:
    get_ipython().events.register("pre_run_cell", _nb2svc_bind_request)


_nb2svc_raw_parent = [None]


def _nb2svc_raw_stream(msg):
    text = msg["content"].get("text", "")
    if len(text) < __RAW_MIN__ or msg["parent_header"].get("msg_id") != _nb2svc_raw_parent[0]:
        return msg
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return msg
    msg["content"]["text"] = ""
    msg["metadata"]["nb2svc_buffers"] = ["text"]
    msg["buffers"] = [data]
    return msg


def _nb2svc_raw_display(msg):
    import base64, binascii
    data = msg["content"].get("data") or {}
    if msg["parent_header"].get("msg_id") != _nb2svc_raw_parent[0]:
        return msg
    names, buffers = [], []
    for mime, value in data.items():
        if not isinstance(value, (str, bytes)) or len(value) < __RAW_MIN__ or mime.startswith(__TEXT_TYPES__):
            continue
        raw = value
        if isinstance(value, str):
            try:
                try:
                    raw = binascii.a2b_base64(value, strict_mode=True)
                except TypeError:  # Python < 3.11
                    raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
        names.append(mime)
        buffers.append(raw)
    if names:
        data = msg["content"]["data"] = dict(data)  # the caller's bundle stays as it was
        for mime in names:
            data[mime] = ""
        msg["metadata"]["nb2svc_buffers"] = names
        msg["buffers"] = [*(msg.get("buffers") or ()), *buffers]
    return msg


def _nb2svc_raw_hooks():
    import sys
    publisher = getattr(get_ipython(), "display_pub", None)
    out = sys.stdout
    if not all(callable(getattr(obj, "register_hook", None)) for obj in (publisher, out)):
        return False
    publisher.register_hook(_nb2svc_raw_display)
    thread = getattr(out, "pub_thread", None)
    if thread is None:
        out.register_hook(_nb2svc_raw_stream)
    else:  # stream hooks are per thread, and ipykernel flushes stdout on its IO thread
        thread.schedule(lambda: out.register_hook(_nb2svc_raw_stream))
    return True


# only where REQUEST binds out of band: nothing else asks for raw outputs (xeus-python has no get_parent)
_nb2svc_raw_ok = _nb2svc_has_parent and _nb2svc_raw_hooks()


def _nb2svc_image_bundle(stock):
    def printer(img):
        parent = get_ipython().kernel.get_parent().get("header", {}).get("msg_id")
        mimetype = getattr(img, "_mimetype", None)
        if (
            parent is None or parent != _nb2svc_raw_parent[0] or type(img)._repr_mimebundle_ is not stock
            or not (img.embed and mimetype and isinstance(img.data, bytes))
        ):
            return img._repr_mimebundle_()
        import copy
        probe = copy.copy(img)
        probe.data = b""  # IPython's own bundle and metadata for the image, without encoding it
        bundle, metadata = probe._repr_mimebundle_()
        return {**bundle, mimetype: img.data}, metadata
    return printer


def _nb2svc_raw_images():
    from IPython.display import Image
    stock = getattr(Image, "_repr_mimebundle_", None)
    formatter = getattr(get_ipython().display_formatter, "mimebundle_formatter", None)
    if callable(stock) and callable(getattr(Image, "_data_and_metadata", None)) and formatter is not None:
        formatter.for_type(Image, _nb2svc_image_bundle(stock))


if _nb2svc_raw_ok:
    _nb2svc_raw_images()


_nb2svc_streams = (__import__("sys").stdout, __import__("sys").stderr)


def _nb2svc_check_streams(result=None):
    import sys
    out, err = _nb2svc_streams
    out_closed, err_closed = getattr(out, "closed", False), getattr(err, "closed", False)
    if sys.stdout is not out and not out_closed:
        sys.stdout = out
    if sys.stderr is not err and not err_closed:
        sys.stderr = err
    manager = getattr(get_ipython(), "payload_manager", None)
    if (out_closed or err_closed) and manager is not None:
        reason = "its code closed sys.stdout or sys.stderr"
        manager.write_payload({"source": "nb2svc_unhealthy", "reason": reason})


get_ipython().events.register("post_run_cell", _nb2svc_check_streams)


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
#: Outputs at least this large (characters of text or of base64) travel as raw buffers.
RAW_OUTPUT_MIN = 64 << 10
PYTHON_BOOTSTRAP = PYTHON_BOOTSTRAP.replace("__RAW_MIN__", str(RAW_OUTPUT_MIN)).replace(
    "__TEXT_TYPES__", repr(TEXT_TYPES)
)

RESPONSE_INFO_KEY = "nb2svc_response_info"

#: After every cell, a Python kernel's bootstrap gives back stdout and stderr that a
#: cell swapped and did not restore, and reports closed ones with an ``nb2svc_unhealthy``
#: payload in the execute reply (free when healthy, and sent on errors too): the
#: executor then retires the kernel (see :mod:`nb2svc.runtime.kernel.executor`).


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

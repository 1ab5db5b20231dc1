"""nb2svc's agent inside a Python kernel: the kernel side of API mode's invocation protocol.

This module runs in two places. In the worker it is imported for its constants, the
protocol's keys, each written once here (the worker side, :mod:`.invoke` and
:mod:`.executor`, imports them). In a kernel, :mod:`.invoke` sends its *source* once,
before the setup cells, and the kernel executes it and calls :func:`install`. A remote
kernel has no nb2svc installed, so this module is self-contained: the standard library,
and IPython/ipykernel through the shell it is given. It must also run on the kernel's own
Python, which may be older than the worker's (3.8 and later: no ``match``, no
``zip(strict=)``, no runtime ``X | Y``).

What :func:`install` adds to the kernel's shell (:class:`Agent`, bound as ``_nb2svc`` in
the user namespace and hidden from ``%who``):

- **Request globals out of band.** An ``execute_request`` whose metadata has
  :data:`REQUEST_KEY` carries named globals beside the cell's code, as message buffers
  (not JSON-escaped, not signed, not parsed as source). A ``pre_run_cell`` hook binds
  them before the cell runs. The metadata says, in order, each global's name and kind
  and the buffers follow in the same order::

      {"nb2svc_request": {"globals": [["REQUEST", "text"], ["REQUEST_BODY", "bytes"],
                                      ["REQUEST_FILES", "files", [[field, filename, type], ...]]],
                          "raw_outputs": true}}

  Kinds: ``text`` (one UTF-8 buffer → ``str``), ``bytes`` (one buffer → ``bytes``),
  ``json`` (one UTF-8 JSON buffer → its value) and ``files`` (one buffer per upload →
  ``{field: [{"filename", "content_type", "data": bytes}]}``). **Adding a global** (say
  ``PARAMS``, the validated parameters as JSON) is one line in the worker's list
  (:func:`nb2svc.runtime.kernel.invoke.request_globals`), e.g.
  ``("PARAMS", JSON, None, [payload.params_json.encode()])``: this module binds every
  global the payload names, by its kind, and needs no change. The request with
  ``{"probe": true}`` and the buffer :data:`PROBE_TOKEN` instead tells the worker, once
  per kernel, that this path works (:attr:`Agent.out_of_band`; xeus-python, which has no
  ``kernel.get_parent``, gets REQUEST as a source literal instead).
- **Large outputs as raw buffers.** For a request whose metadata asks for
  ``raw_outputs``, a stdout flush of :data:`RAW_OUTPUT_MIN` characters or more goes as one
  UTF-8 buffer (a hook on ipykernel's IO thread, where stream messages are built), and a
  binary rich output (a mime type that is not text, whose value is strict base64 of that
  size) as its decoded bytes (a display publisher hook); the message metadata names them
  under :data:`RAW_BUFFERS`. An embedded ``IPython.display.Image`` shows its bytes as they
  are: IPython base64-encodes them in ``_repr_mimebundle_`` before any hook sees them,
  and decoding that again cost the kernel more than the rest of the answer. Outside such
  requests, and for subclasses with their own ``_repr_mimebundle_``, the stock method runs.
- **ResponseInfo in the same execute.** :meth:`Agent.response_info` runs a ResponseInfo
  cell with its stdout captured, so it rides along as a ``user_expression`` of the
  endpoint's own execute instead of costing a second round trip (ipykernel evaluates user
  expressions only when the code succeeded, which is when ResponseInfo must run). It
  answers a JSON string: ``{"stdout": text}`` or ``{"ename", "evalue", "traceback"}``
  (ipykernel's own report of a failed expression carries no traceback).
- **No sleep before the reply** (:func:`no_reply_sleep`): ipykernel's 0.5 ms per execute,
  which nb2svc, waiting for ``status: idle``, does not need; and no log records that no
  handler would show (:func:`no_dropped_log_records`).
- **Health.** After every cell, stdout and stderr that a cell swapped and did not
  restore are given back, and closed ones are reported with a :data:`UNHEALTHY` payload in
  the execute reply (free when healthy, and sent on errors too): the worker then retires
  the kernel. A :data:`MEMORY` payload gives the kernel's resident bytes (the worker's
  ``--kernel-max-memory`` recycling reads it).
- **Bounded memory.** IPython (8.x) tees every stdout and stderr write into
  ``history_manager.outputs[execution_count]``, and requests run with
  ``store_history=False`` never advance the count, so a kernel would keep every answer it
  ever printed: the agent clears them after each cell. IPython also caches every distinct
  cell in ``linecache`` and never drops it; a cell carrying a REQUEST literal is distinct
  per request, so the agent forgets those after they ran.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import io
import json
import linecache
import os
import sys
import traceback
from typing import Any

#: ``execute_request`` metadata key: this request's globals travel out of band.
REQUEST_KEY = "nb2svc_request"
#: Output message metadata key: the names whose values travel as the message's buffers, in
#: order (``"text"`` for a stream, mime types for display data and execute results).
RAW_BUFFERS = "nb2svc_buffers"
#: ``execute_reply`` payload ``source``: the kernel is broken and must not take another request.
UNHEALTHY = "nb2svc_unhealthy"
#: ``execute_reply`` payload ``source``: the kernel's resident bytes (``"rss"``), for
#: ``--kernel-max-memory`` wherever the kernel runs (:mod:`nb2svc.runtime.kernel.memory`).
MEMORY = "nb2svc_memory"
#: The agent's name in the user namespace, where user expressions reach it.
AGENT_NAME = "_nb2svc"
#: The one buffer of the start-up probe.
PROBE_TOKEN = b"nb2svc-probe"
#: How a Python REQUEST literal starts (other kernels' cells never start so).
LITERAL_PREFIX = "REQUEST = "
#: Outputs at least this large (characters of text or of base64) travel as raw buffers.
RAW_OUTPUT_MIN = 64 << 10
#: Mime types whose values are text (never decoded from base64).
TEXT_TYPES = ("text/", "application/json", "application/javascript", "image/svg+xml")

#: Kinds of out-of-band globals (see the module docstring).
TEXT = "text"
BYTES = "bytes"
JSON = "json"
FILES = "files"


def _decode(kind: str, data: Any) -> Any:
    if kind == TEXT:
        return str(data, "utf-8")
    if kind == BYTES:
        return bytes(data)
    if kind == JSON:
        return json.loads(str(data, "utf-8"))
    raise ValueError(f"unknown kind of request global: {kind!r}")


def bind(names: list[Any], buffers: Any) -> dict[str, Any]:
    """The globals of an out-of-band request: ``names`` as in the metadata, ``buffers`` in order."""
    values: dict[str, Any] = {}
    position = 0
    for name, kind, *spec in names:
        if kind == FILES:
            files: dict[str, list[dict[str, Any]]] = {}
            for field, filename, content_type in spec[0]:
                upload = {"filename": filename, "content_type": content_type}
                upload["data"] = bytes(buffers[position])
                files.setdefault(field, []).append(upload)
                position += 1
            values[name] = files
        else:
            values[name] = _decode(kind, buffers[position])
            position += 1
    return values


def _strict_base64(value: str) -> bytes:
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except TypeError:  # Python < 3.11
        return base64.b64decode(value, validate=True)


class Agent:
    """The hooks :func:`install` registers, and the state they share (see the module docstring)."""

    def __init__(self, shell: Any, raw_min: int = RAW_OUTPUT_MIN, text_types: tuple[str, ...] = TEXT_TYPES):
        self.shell = shell
        self.raw_min = raw_min
        self.text_types = text_types
        #: The start-up probe came through: this kernel binds request globals out of band.
        self.out_of_band = False
        #: The msg_id of the request whose large outputs go as raw buffers.
        self.raw_parent: str | None = None
        #: Raw output hooks are in place (ipykernel's display publisher and stdout).
        self.raw_ok = False
        #: The kernel's own streams, to tell whether a cell closed or swapped them.
        self.streams = (sys.stdout, sys.stderr)
        self.has_parent = callable(getattr(getattr(shell, "kernel", None), "get_parent", None))

    # --- before a cell: the request's globals --------------------------------------

    def bind_request(self, info: Any = None) -> None:
        """``pre_run_cell``: bind the globals an out-of-band request carries."""
        parent = self.shell.kernel.get_parent()
        spec = (parent.get("metadata") or {}).get(REQUEST_KEY)
        if spec is None:
            return
        buffers = parent.get("buffers") or ()
        if spec.get("probe"):
            self.out_of_band = bool(buffers) and bytes(buffers[0]) == PROBE_TOKEN
            return
        self.raw_parent = parent["header"]["msg_id"] if spec.get("raw_outputs") and self.raw_ok else None
        self.shell.user_ns.update(bind(spec["globals"], buffers))

    # --- while a cell runs: large outputs as raw buffers ---------------------------

    def raw_stream(self, msg: dict[str, Any]) -> dict[str, Any]:
        """stdout hook (ipykernel's IO thread): a large flush of the request goes as one buffer."""
        text = msg["content"].get("text", "")
        if len(text) < self.raw_min or msg["parent_header"].get("msg_id") != self.raw_parent:
            return msg
        try:
            data = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return msg
        msg["content"]["text"] = ""
        msg["metadata"][RAW_BUFFERS] = ["text"]
        msg["buffers"] = [data]
        return msg

    def raw_display(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Display publisher hook: large binary values of the request go as their bytes."""
        data = msg["content"].get("data") or {}
        if msg["parent_header"].get("msg_id") != self.raw_parent:
            return msg
        names, buffers = [], []
        for mime, value in data.items():
            if not isinstance(value, (str, bytes)) or len(value) < self.raw_min:
                continue
            if mime.startswith(self.text_types):
                continue
            raw = value
            if isinstance(value, str):
                try:
                    raw = _strict_base64(value)
                except (binascii.Error, ValueError):
                    continue
            names.append(mime)
            buffers.append(raw)
        if names:
            data = msg["content"]["data"] = dict(data)  # the caller's bundle stays as it was
            for mime in names:
                data[mime] = ""
            msg["metadata"][RAW_BUFFERS] = names
            msg["buffers"] = [*(msg.get("buffers") or ()), *buffers]
        return msg

    def install_raw_hooks(self) -> bool:
        """Hook stdout and the display publisher, where ipykernel lets us (``register_hook``)."""
        publisher = getattr(self.shell, "display_pub", None)
        out = sys.stdout
        if not all(callable(getattr(obj, "register_hook", None)) for obj in (publisher, out)):
            return False
        publisher.register_hook(self.raw_display)
        thread = getattr(out, "pub_thread", None)
        if thread is None:
            out.register_hook(self.raw_stream)
        else:  # stream hooks are per thread, and ipykernel flushes stdout on its IO thread
            thread.schedule(lambda: out.register_hook(self.raw_stream))
        return True

    def image_printer(self, stock: Any) -> Any:
        """A mimebundle printer for ``Image`` that keeps an embedded image's bytes as bytes."""

        def printer(img: Any) -> Any:
            parent = self.shell.kernel.get_parent().get("header", {}).get("msg_id")
            mimetype = getattr(img, "_mimetype", None)
            if (
                parent is None
                or parent != self.raw_parent
                or type(img)._repr_mimebundle_ is not stock
                or not (img.embed and mimetype and isinstance(img.data, bytes))
            ):
                return img._repr_mimebundle_()
            probe = copy.copy(img)
            probe.data = b""  # IPython's own bundle and metadata for the image, without encoding it
            bundle, metadata = probe._repr_mimebundle_()
            return {**bundle, mimetype: img.data}, metadata

        return printer

    def install_image_printer(self) -> None:
        from IPython.display import Image  # here: the worker imports this module for its constants

        stock = getattr(Image, "_repr_mimebundle_", None)
        formatter = getattr(self.shell.display_formatter, "mimebundle_formatter", None)
        if callable(stock) and callable(getattr(Image, "_data_and_metadata", None)) and formatter is not None:
            formatter.for_type(Image, self.image_printer(stock))

    # --- after a cell: memory and health -------------------------------------------

    def forget_request_cell(self, result: Any) -> None:
        """``post_run_cell``: drop a cell that carried a REQUEST literal from ``linecache``."""
        raw = getattr(result.info, "raw_cell", None) or ""
        if not raw.startswith(LITERAL_PREFIX):
            return
        names = self.shell.compile._filename_map
        for name in [n for n in names if linecache.cache.get(n, (0, 0, [""]))[2][:1] != [""]]:
            if linecache.cache[name][2][0].startswith(LITERAL_PREFIX):
                linecache.cache.pop(name, None)
                names.pop(name, None)

    def forget_outputs(self, result: Any = None) -> None:
        """``post_run_cell``: drop the outputs IPython captured for the history."""
        outputs = getattr(getattr(self.shell, "history_manager", None), "outputs", None)
        if outputs:
            outputs.clear()

    def check_streams(self, result: Any = None) -> None:
        """``post_run_cell``: restore swapped streams; report closed ones (:data:`UNHEALTHY`)."""
        out, err = self.streams
        out_closed, err_closed = getattr(out, "closed", False), getattr(err, "closed", False)
        if sys.stdout is not out and not out_closed:
            sys.stdout = out
        if sys.stderr is not err and not err_closed:
            sys.stderr = err
        manager = getattr(self.shell, "payload_manager", None)
        if (out_closed or err_closed) and manager is not None:
            reason = "its code closed sys.stdout or sys.stderr"
            manager.write_payload({"source": UNHEALTHY, "reason": reason})
        if manager is not None:
            manager.write_payload({"source": MEMORY, "rss": resident_bytes()})

    # --- as a user expression: the ResponseInfo cell -------------------------------

    def response_info(self, code: str, filename: str) -> str:
        """Run a ResponseInfo cell with its stdout captured; its report as a JSON string."""
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                exec(compile(code, filename, "exec"), self.shell.user_ns)
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)[1:]  # not this method's frame
            lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
            return json.dumps({"ename": type(exc).__name__, "evalue": str(exc), "traceback": lines})
        return json.dumps({"stdout": buffer.getvalue()})


def resident_bytes() -> int:
    """This process's resident memory (about 20 us): ``/proc``, else the peak from ``getrusage``."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource  # not on Windows, which has neither

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # an upper bound
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def no_reply_sleep(kernel: Any) -> None:
    """Turn off the 0.5 ms ipykernel sleeps before every ``execute_reply`` (its
    ``Kernel._execute_sleep``, a configurable trait), for clients that stop reading outputs
    at the reply. nb2svc waits for the request's ``status: idle`` on iopub, which comes
    after every output, so the sleep only held the kernel: a tenth of a small request's
    time in the kernel."""
    if kernel is not None and isinstance(getattr(kernel, "_execute_sleep", None), float):
        kernel._execute_sleep = 0.0


def no_dropped_log_records(logger: Any) -> None:
    """Raise ``logger``'s level to its handlers' lowest when nothing else would see a record.

    ipykernel's logger is at DEBUG while its one handler shows WARNING and up, so each
    message's ``log.debug`` calls build records that are then dropped (about a twentieth
    of a small request's time in the kernel). Nothing shown changes: a record below
    every handler's level, on a logger that does not propagate, reaches nobody.
    """
    handlers = getattr(logger, "handlers", None)
    if not handlers or getattr(logger, "propagate", True) or not hasattr(logger, "setLevel"):
        return
    lowest = min(handler.level for handler in handlers)
    if lowest > logger.level:
        logger.setLevel(lowest)


def install(shell: Any, **options: Any) -> Agent:
    """Register the agent's hooks on ``shell`` and bind it as :data:`AGENT_NAME`."""
    agent = Agent(shell, **options)
    events = shell.events
    events.register("post_run_cell", agent.forget_request_cell)
    events.register("post_run_cell", agent.forget_outputs)
    if agent.has_parent:  # only where REQUEST binds out of band: nothing else asks for raw outputs
        events.register("pre_run_cell", agent.bind_request)
        agent.raw_ok = agent.install_raw_hooks()
        if agent.raw_ok:
            agent.install_image_printer()
    events.register("post_run_cell", agent.check_streams)
    kernel = getattr(shell, "kernel", None)
    no_reply_sleep(kernel)
    no_dropped_log_records(getattr(kernel, "log", None))
    shell.user_ns[AGENT_NAME] = agent
    hidden = getattr(shell, "user_ns_hidden", None)
    if isinstance(hidden, dict):
        hidden[AGENT_NAME] = agent
    return agent

"""Run code on a kernel and collect what it produced.

Output rules (Kernel Gateway compatible, used by :mod:`nb2svc.runtime.http_api`):

- ``stream`` messages on ``stdout`` are kept in order in ``stdout_parts`` (``stdout``
  joins them); ``stderr`` is kept apart (logged, never part of the response body).
- the ``execute_result`` mime bundle (``{"text/plain": "2"}``) is kept in ``result``;
  ``display_data`` bundles are kept in order in ``displays``.
- **Raw buffers.** A message whose metadata lists :data:`RAW_BUFFERS` carries those
  values as message buffers instead of in its JSON content (API mode's Python agent
  does this for large stdout and binary rich output, see
  :mod:`nb2svc.runtime.kernel.agent`): a stream's ``"text"`` as UTF-8 bytes, a mime type's
  value as its decoded bytes (base64 in JSON otherwise). They are kept as they arrived
  (``bytes``, or a ``memoryview`` of the zmq message when large), never copied or
  decoded here; an ``on_output`` handler still sees the standard message (text
  decoded, binary base64 again).
- an ``error`` gives ``error`` (name, value, traceback without ANSI colours).

An execution is complete when both the shell ``execute_reply`` and the iopub
``status: idle`` for the request have arrived: idle is the kernel's promise that every
output of the request has been published.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event

from nb2svc.runtime.kernel.agent import MEMORY, RAW_BUFFERS, UNHEALTHY
from nb2svc.runtime.kernel.channels import Kernel, KernelDied

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


#: ``execute_reply`` statuses of a request the kernel did not run (the protocol's ``abort``;
#: ipykernel says ``aborted``).
ABORTED = frozenset({"abort", "aborted"})


class ExecutionTimeout(TimeoutError):
    """The code ran past its deadline. ``recovered`` tells whether an interrupt stopped it."""

    def __init__(self, seconds: float, recovered: bool) -> None:
        super().__init__(f"execution exceeded {seconds:g}s")
        self.seconds = seconds
        self.recovered = recovered


@dataclass
class ExecutionError:
    ename: str
    evalue: str
    traceback: list[str]


@dataclass
class ExecutionResult:
    status: str = "ok"  # ok | error | abort (aborted: it gets an ExecutionAborted error)
    #: ``str`` parts from JSON content, UTF-8 ``bytes`` or ``memoryview`` parts from raw buffers.
    stdout_parts: list[str | bytes | memoryview] = field(default_factory=list)
    stderr_parts: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    displays: list[dict[str, Any]] = field(default_factory=list)
    error: ExecutionError | None = None
    user_expressions: dict[str, Any] = field(default_factory=dict)
    #: Why the kernel must not take another request, though this answer stands: its
    #: code asked it to exit (IPython's ``exit()``: an ``ask_exit`` payload), or a
    #: Python agent reported it broken (an :data:`~.agent.UNHEALTHY` payload, e.g. closed stdout).
    retire_reason: str | None = None
    #: Resident bytes the kernel reported after the execute (an :data:`~.agent.MEMORY` payload).
    resident_memory: int | None = None

    @property
    def stdout(self) -> str:
        return "".join(part if isinstance(part, str) else _text(part) for part in self.stdout_parts)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_parts)


def _resident_memory(payloads: Any) -> int | None:
    for payload in payloads:
        if payload.get("source") == MEMORY and isinstance(payload.get("rss"), int):
            return payload["rss"]
    return None


def _retire_reason(payloads: Any) -> str | None:
    for payload in payloads:
        if payload.get("source") == "ask_exit" and not payload.get("keepkernel"):
            return "the code asked the kernel to exit"
        if payload.get("source") == UNHEALTHY:
            return str(payload.get("reason", "the kernel reported itself broken"))
    return None


def _text(data: bytes | memoryview) -> str:
    """A raw stream buffer as text: the kernel encoded it with ``surrogateescape``."""
    return str(data, "utf-8", "surrogateescape")


def _raw_buffers(msg: dict[str, Any]) -> dict[str, bytes | memoryview]:
    names = (msg.get("metadata") or {}).get(RAW_BUFFERS)
    if not names:
        return {}
    return dict(zip(names, msg.get("buffers") or (), strict=False))


def _standard(msg_type: str, content: dict[str, Any], raw: dict[str, bytes | memoryview]) -> dict[str, Any]:
    """``content`` as a kernel without raw buffers would have sent it."""
    if msg_type == "stream":
        return {**content, "text": _text(raw["text"])} if "text" in raw else content
    data = dict(content.get("data") or {})
    for mime, value in raw.items():
        data[mime] = base64.b64encode(value).decode("ascii")
    return {**content, "data": data}


#: Output messages an ``on_output`` handler sees as they arrive.
STREAMED = frozenset({"stream", "display_data", "execute_result", "error"})
OutputHandler = Callable[[str, dict[str, Any]], None]


class _Collector:
    """Accumulates one request's messages; ``done`` fires on reply + idle (or death)."""

    __slots__ = ("result", "done", "_reply", "_idle", "died", "on_output", "keep")

    def __init__(self, on_output: OutputHandler | None = None, keep: bool = True) -> None:
        self.on_output = on_output
        self.keep = keep  # False: output the handler sees is not collected too
        self.result = ExecutionResult()
        self.done = gevent.event.Event()
        self._reply = False
        self._idle = False
        self.died = False

    def __call__(self, channel: str, msg: dict[str, Any]) -> None:
        if channel == "dead":
            self.died = True
            self.done.set()
            return
        content = msg["content"]
        if channel == "shell":
            self.result.status = content.get("status", "ok")
            self.result.user_expressions = content.get("user_expressions") or {}
            self.result.retire_reason = _retire_reason(content.get("payload") or ())
            self.result.resident_memory = _resident_memory(content.get("payload") or ())
            self._reply = True
        else:
            msg_type = msg["header"]["msg_type"]
            raw = _raw_buffers(msg)
            handled = self.on_output is not None and msg_type in STREAMED
            if handled:
                self.on_output(msg_type, _standard(msg_type, content, raw) if raw else content)
            keep = self.keep or not handled
            if msg_type == "stream":
                text = raw.get("text", content.get("text", ""))
                if content.get("name") != "stdout":
                    self.result.stderr_parts.append(text if isinstance(text, str) else _text(text))
                elif keep:
                    self.result.stdout_parts.append(text)
            elif msg_type == "execute_result" and keep:
                self.result.result = {**content.get("data", {}), **raw}
            elif msg_type == "display_data" and keep:
                self.result.displays.append({**content.get("data", {}), **raw})
            elif msg_type == "error":
                self.result.error = ExecutionError(
                    content.get("ename", "Error"),
                    content.get("evalue", ""),
                    [ANSI_ESCAPE.sub("", line) for line in content.get("traceback", [])],
                )
            elif msg_type == "status" and content.get("execution_state") == "idle":
                self._idle = True
        if self._reply and self._idle:
            self.done.set()


def execute(
    kernel: Kernel,
    code: str,
    *,
    timeout: float | None = None,
    store_history: bool = False,
    user_expressions: dict[str, str] | None = None,
    interrupt_grace: float = 3.0,
    metadata: dict[str, Any] | None = None,
    buffers: list[bytes] | None = None,
    on_output: OutputHandler | None = None,
    keep_output: bool = True,
) -> ExecutionResult:
    """Execute ``code`` and wait for all of its output.

    ``store_history=False`` is the default for requests: it saves about 0.5 ms of
    kernel CPU per call and keeps ``history.sqlite`` from growing without bound.

    On timeout the kernel is interrupted; :class:`ExecutionTimeout` says whether it
    came back within ``interrupt_grace`` (if not, the kernel is retired: its pool
    replaces it). A kernel whose code asked to exit is retired too.
    Raises :class:`KernelDied` when the kernel exits mid-execution.

    ``metadata`` and ``buffers`` ride beside the code in the ``execute_request``
    (API mode's out-of-band REQUEST: see :mod:`nb2svc.runtime.kernel.invoke`).

    ``on_output(msg_type, content)`` sees each output message as it arrives (streaming
    answers); the result still collects all of them unless ``keep_output`` is false (then
    it keeps no stdout, displays or execute result a handler saw: a long stream is not
    held in memory a second time; errors and stderr are kept).
    """
    collector = _Collector(on_output, keep_output)
    content = {
        "code": code,
        "silent": False,
        "store_history": store_history,
        "user_expressions": user_expressions or {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    msg_id = kernel.send("shell", "execute_request", content, collector, metadata=metadata, buffers=buffers)
    try:
        if not collector.done.wait(timeout):
            recovered = _interrupt_and_wait(kernel, collector, interrupt_grace)
            if not recovered:
                kernel.retire(f"an interrupt did not stop code that ran past {timeout:g}s")
            raise ExecutionTimeout(timeout or 0.0, recovered)
    finally:
        kernel.forget(msg_id)
    if collector.died:
        raise KernelDied(f"kernel {kernel.kernel_name!r} died while running the request")
    if collector.result.retire_reason:
        kernel.retire(collector.result.retire_reason)
    if collector.result.resident_memory is not None:
        kernel.reported_memory = collector.result.resident_memory
    if collector.result.status == "error" and collector.result.error is None:
        collector.result.error = ExecutionError("Error", "the kernel reported an error without details", [])
    if collector.result.status in ABORTED and collector.result.error is None:
        # Some kernels (tslab) abort every request after one error: never answer that as a
        # success, and let the pool replace the kernel.
        kernel.retire("it aborted a request instead of running it")
        collector.result.error = ExecutionError(
            "ExecutionAborted",
            "the kernel aborted the request instead of running it; it is being replaced",
            [],
        )
    return collector.result


def _interrupt_and_wait(kernel: Kernel, collector: _Collector, grace: float) -> bool:
    try:
        kernel.interrupt()
    except Exception:
        return False
    return collector.done.wait(grace) and not collector.died

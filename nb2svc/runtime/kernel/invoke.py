"""How an API-mode endpoint runs on a kernel: the invocation protocol, worker side.

One interface, :class:`Invoker`, with one implementation per kind of kernel, picked once
per service by :func:`invoker_for`:

1. ``bootstrap``: code each new kernel runs before the setup cells;
2. :meth:`Invoker.prepare`: a check on each new kernel after its setup cells;
3. :meth:`Invoker.invoke`: run an endpoint's code with its request (and stream callbacks),
   and answer an :class:`Invocation`: the endpoint's result, its ResponseInfo cell's run,
   and the text the kernel saw that is not the notebook's (never echo it back). Each
   implementation says what it sends (:meth:`Invoker.call`, no I/O) and how the
   ResponseInfo cell runs (:meth:`Invoker.response_info`).

The implementations:

- :class:`PythonAgent` (ipykernel): the bootstrap installs :mod:`.agent` (its source is
  sent; the kernel needs no nb2svc). The request travels out of band, beside the
  notebook's own code, as named globals in message buffers (:func:`request_globals`:
  ``REQUEST``, ``REQUEST_BODY``, ``REQUEST_FILES``, ``PARAMS``); large outputs come back as raw
  buffers; the ResponseInfo cell runs in the same execute, as a user expression; the
  agent reports a broken kernel in the reply (the executor retires it). A Python kernel
  whose start-up probe says it cannot bind out of band (xeus-python) gets REQUEST as a
  literal, still with ResponseInfo in the same execute.
- :class:`LiteralAssignment` (every other language in :data:`ASSIGNMENTS`): a separate
  ``REQUEST = …`` execute would cost a full kernel round trip (about 45% of throughput),
  so the assignment goes *in front of* the annotation comment on the cell's first line:
  the cell's line numbers, and so its tracebacks, stay as in the notebook. The
  ResponseInfo cell runs as its own execute.

This module is imported by the CLI in gunicorn's master (:func:`supports_language`), so it
imports nothing of zmq, gevent or jupyter_client until an :class:`Invoker` is built.
"""

from __future__ import annotations

import ast
import json
import shlex
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from nb2svc.runtime.kernel.agent import (
    AGENT_NAME,
    BYTES,
    FILES,
    JSON,
    LITERAL_PREFIX,
    PROBE_TOKEN,
    REQUEST_KEY,
    TEXT,
)

if TYPE_CHECKING:
    from nb2svc.runtime.kernel.channels import Kernel
    from nb2svc.runtime.kernel.executor import ExecutionResult, OutputHandler

#: A multipart upload as it travels out of band: (field name, filename, content type, data).
Upload = tuple[str, str, str, bytes]


@dataclass(frozen=True)
class RequestPayload:
    """Everything an endpoint's code gets of one request: the ``REQUEST`` JSON string and,
    out of band, the raw body and uploads (built by :mod:`nb2svc.runtime.http_api.request`)."""

    json: str
    body: bytes = b""
    files: list[Upload] = field(default_factory=list)
    #: ``PARAMS``: the typed values of the endpoint's checked contract
    #: (:mod:`nb2svc.runtime.http_api.contract`), out of band only.
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class EndpointCode:
    """What runs for one endpoint: its code and its ResponseInfo cell's code, if any."""

    code: str
    response_info: str | None = None
    #: How tracebacks of the ResponseInfo cell name it.
    response_info_name: str = "<ResponseInfo>"

    @classmethod
    def of(cls, code: str, info_code: str | None, info_cells: tuple[int, ...] = ()) -> EndpointCode:
        name = "<ResponseInfo cell " + ",".join(map(str, info_cells)) + ">"
        return cls(code, info_code, name)


@dataclass
class Invocation:
    """The outcome of one endpoint run."""

    result: ExecutionResult
    #: The ResponseInfo cell's run (its stdout, or its error); ``None`` when it did not run
    #: (no such cell, or the endpoint's code failed).
    response_info: ExecutionResult | None = None
    #: Text the kernel saw in front of the notebook's code (a REQUEST literal): cut it out of
    #: anything sent back, since it carries the client's headers and body.
    hide: str = ""


def _double_quoted(value: str) -> str:
    # A JSON string literal is also a valid Python, R, JavaScript and Scala literal.
    return json.dumps(value)


def _julia_literal(value: str) -> str:
    return json.dumps(value).replace("$", "\\$")


#: How each kernel language assigns the REQUEST string; the result goes before the
#: annotation comment on the cell's first line.
ASSIGNMENTS: Mapping[str, Callable[[str], str]] = MappingProxyType(
    {
        "python": lambda s: f"{LITERAL_PREFIX}{_double_quoted(s)}; ",
        "r": lambda s: f"REQUEST <- {_double_quoted(s)}; ",
        "julia": lambda s: f"REQUEST = {_julia_literal(s)}; ",
        "javascript": lambda s: f"var REQUEST = {_double_quoted(s)}; ",
        "typescript": lambda s: f"var REQUEST = {_double_quoted(s)}; ",
        "scala": lambda s: f"val REQUEST = {_double_quoted(s)}; ",
        "bash": lambda s: f"REQUEST={shlex.quote(s)}; ",
    }
)


def supports_language(language: str) -> bool:
    """API mode can bind REQUEST in kernels of this language."""
    return language.lower() in ASSIGNMENTS


def code_with_request(language: str, code: str, request_json: str) -> str:
    """``code`` with ``REQUEST`` assigned on its first (annotation) line."""
    return ASSIGNMENTS[language.lower()](request_json) + code


#: One out-of-band global: its name, its kind (:mod:`.agent`'s ``TEXT``, ``BYTES``,
#: ``JSON``, ``FILES``), the kind's description (``None``, or the uploads for ``FILES``)
#: and its buffers.
Global = tuple[str, str, Any, list[bytes]]


def request_globals(payload: RequestPayload) -> list[Global]:
    """The globals a Python kernel binds for ``payload``. One more global is one more line
    here (see :mod:`.agent`): the agent binds whatever the payload names."""
    uploads = [[name, filename, content_type] for name, filename, content_type, _ in payload.files]
    return [
        ("REQUEST", TEXT, None, [payload.json.encode("utf-8")]),  # json.dumps output: ASCII
        ("REQUEST_BODY", BYTES, None, [payload.body]),
        ("REQUEST_FILES", FILES, uploads, [data for *_, data in payload.files]),
        ("PARAMS", JSON, None, [json.dumps(payload.params or {}).encode("utf-8")]),
    ]


def out_of_band(payload: RequestPayload) -> tuple[dict[str, Any], list[bytes]]:
    """The ``execute_request`` metadata and buffers that carry ``payload`` beside the code;
    the metadata also asks for large outputs as raw buffers (the executor reads both forms)."""
    names: list[list[Any]] = []
    buffers: list[bytes] = []
    for name, kind, spec, data in request_globals(payload):
        names.append([name, kind] if spec is None else [name, kind, spec])
        buffers.extend(data)
    return {REQUEST_KEY: {"globals": names, "raw_outputs": True}}, buffers


def agent_bootstrap() -> str:
    """The code that installs :mod:`.agent` in a Python kernel: its source, sent as a literal
    and executed in a namespace of its own (the user namespace gets only ``_nb2svc``)."""
    source = resources.files(__package__).joinpath("agent.py").read_text("utf-8")
    return (
        "_nb2svc_agent = {'__name__': 'nb2svc_agent'}\n"
        f"exec(compile({source!r}, 'nb2svc_agent.py', 'exec'), _nb2svc_agent)\n"
        "_nb2svc_agent['install'](get_ipython())\n"
        "del _nb2svc_agent\n"
    )


def read_report(value: dict[str, Any] | None) -> dict[str, Any]:
    """The agent's ResponseInfo report from ipykernel's ``user_expressions`` entry.

    ipykernel reports an expression as ``{"status": "ok", "data": {"text/plain": repr}}``
    or ``{"status": "error", "ename", "evalue", "traceback"}``; the repr is of the JSON
    string :meth:`.agent.Agent.response_info` returns: ``{"stdout"}`` or
    ``{"ename", "evalue", "traceback"}``.
    """
    if not value:
        return {"ename": "Error", "evalue": "expression was not evaluated", "traceback": []}
    if value.get("status") != "ok":
        return {
            "ename": value.get("ename", "Error"),
            "evalue": value.get("evalue", ""),
            "traceback": value.get("traceback", []),
        }
    try:
        report = json.loads(ast.literal_eval(value.get("data", {}).get("text/plain", "''")))
    except (ValueError, SyntaxError, TypeError):
        report = None
    if not isinstance(report, dict):
        return {"ename": "Error", "evalue": "unreadable ResponseInfo result", "traceback": []}
    return report


#: ``Kernel.traits`` key: the kernel binds request globals out of band (the probe said so).
OUT_OF_BAND = "request_out_of_band"
#: ``user_expressions`` key and expression of the start-up probe.
PROBE_KEY = "nb2svc_out_of_band"
PROBE_EXPRESSION = f"{AGENT_NAME}.out_of_band"
#: ``user_expressions`` key of the ResponseInfo cell.
RESPONSE_INFO_KEY = "nb2svc_response_info"


def response_info_expression(endpoint: EndpointCode) -> str:
    """The user expression that runs ``endpoint``'s ResponseInfo cell on the agent."""
    code, name = json.dumps(endpoint.response_info), json.dumps(endpoint.response_info_name)
    return f"{AGENT_NAME}.response_info({code}, {name})"


@dataclass(frozen=True)
class Call:
    """What one endpoint run sends: the ``execute_request``'s code and what rides with it."""

    code: str
    #: What the kernel sees in front of the notebook's code (see :attr:`Invocation.hide`).
    hide: str = ""
    metadata: dict[str, Any] | None = None
    buffers: list[bytes] | None = None
    user_expressions: dict[str, str] | None = None


class Invoker(ABC):
    """Runs endpoints on the kernels of one service (see the module docstring).

    :meth:`invoke` is the same for every kind of kernel: one execute of :meth:`call`'s
    message, then, when the code succeeded and there is a ResponseInfo cell,
    :meth:`response_info`.
    """

    #: Code run on each new kernel before its setup cells ("" for none).
    bootstrap: str = ""
    #: A body that is not UTF-8 still reaches the code (as ``REQUEST_BODY``; REQUEST's
    #: ``body`` is then null) instead of being a 400.
    binary_body: bool = False

    def __init__(self) -> None:
        # The executor brings zmq and gevent: imported when a worker builds its service,
        # never when the CLI asks supports_language in gunicorn's master.
        from nb2svc.runtime.kernel import executor

        self._executor = executor

    def prepare(self, kernel: Kernel, timeout: float) -> None:  # noqa: B027 - optional step
        """Called once on each new kernel after its setup cells; may raise to refuse it."""

    @abstractmethod
    def call(self, kernel: Kernel, endpoint: EndpointCode, payload: RequestPayload) -> Call:
        """The message that runs ``endpoint`` with ``payload`` bound on ``kernel``."""

    @abstractmethod
    def response_info(
        self, kernel: Kernel, endpoint: EndpointCode, result: ExecutionResult, deadline: float
    ) -> ExecutionResult:
        """The ResponseInfo cell's run, after the endpoint's code succeeded with ``result``."""

    def invoke(
        self,
        kernel: Kernel,
        endpoint: EndpointCode,
        payload: RequestPayload,
        *,
        timeout: float,
        on_output: OutputHandler | None = None,
    ) -> Invocation:
        """Run ``endpoint`` with ``payload`` bound; :class:`ExecutionTimeout` and
        :class:`KernelDied` pass through (the kernel is then interrupted or retired)."""
        deadline = time.monotonic() + timeout
        call = self.call(kernel, endpoint, payload)
        result = self._executor.execute(
            kernel,
            call.code,
            timeout=timeout,
            user_expressions=call.user_expressions,
            metadata=call.metadata,
            buffers=call.buffers,
            on_output=on_output,
            keep_output=on_output is None,  # a stream's output is sent, not kept (bounded memory)
        )
        info = None
        if result.error is None and endpoint.response_info is not None:
            info = self.response_info(kernel, endpoint, result, deadline)
        return Invocation(result, info, call.hide)


class LiteralAssignment(Invoker):
    """REQUEST as a literal on the annotation line; ResponseInfo as a second execute."""

    def __init__(self, language: str) -> None:
        super().__init__()
        self.assign = ASSIGNMENTS[language.lower()]

    def call(self, kernel: Kernel, endpoint: EndpointCode, payload: RequestPayload) -> Call:
        injected = self.assign(payload.json)
        return Call(injected + endpoint.code, injected)

    def response_info(
        self, kernel: Kernel, endpoint: EndpointCode, result: ExecutionResult, deadline: float
    ) -> ExecutionResult:
        """Its own execute, within what is left of the request's timeout."""
        assert endpoint.response_info is not None
        remaining = max(0.1, deadline - time.monotonic())
        return self._executor.execute(kernel, endpoint.response_info, timeout=remaining)


class PythonAgent(Invoker):
    """The request out of band, raw outputs, ResponseInfo in the same execute (see :mod:`.agent`)."""

    binary_body = True

    def __init__(self) -> None:
        super().__init__()
        self.bootstrap = agent_bootstrap()
        self._literal = LiteralAssignment("python")

    def prepare(self, kernel: Kernel, timeout: float) -> None:
        """Ask the kernel once whether request globals reach it out of band."""
        probe = self._executor.execute(
            kernel,
            "pass",
            timeout=timeout,
            user_expressions={PROBE_KEY: PROBE_EXPRESSION},
            metadata={REQUEST_KEY: {"probe": True}},
            buffers=[PROBE_TOKEN],
        )
        answer = (probe.user_expressions.get(PROBE_KEY) or {}).get("data", {}).get("text/plain")
        kernel.traits[OUT_OF_BAND] = answer == "True"

    def call(self, kernel: Kernel, endpoint: EndpointCode, payload: RequestPayload) -> Call:
        """The notebook's code with the request beside it, or (where the probe failed) the
        literal; either way the ResponseInfo cell as a user expression."""
        expressions = None
        if endpoint.response_info is not None:
            expressions = {RESPONSE_INFO_KEY: response_info_expression(endpoint)}
        if not kernel.traits.get(OUT_OF_BAND):
            return replace(self._literal.call(kernel, endpoint, payload), user_expressions=expressions)
        metadata, buffers = out_of_band(payload)
        return Call(endpoint.code, "", metadata, buffers, expressions)

    def response_info(
        self, kernel: Kernel, endpoint: EndpointCode, result: ExecutionResult, deadline: float
    ) -> ExecutionResult:
        """The report the user expression gave in the endpoint's own reply."""
        report = read_report(result.user_expressions.get(RESPONSE_INFO_KEY))
        if "stdout" in report:
            return self._executor.ExecutionResult(stdout_parts=[report["stdout"]])
        error = self._executor.ExecutionError(
            report.get("ename", "Error"),
            report.get("evalue", ""),
            [self._executor.ANSI_ESCAPE.sub("", line) for line in report.get("traceback", [])],
        )
        return self._executor.ExecutionResult(status="error", error=error)


def invoker_for(language: str) -> Invoker:
    """The invocation protocol for a kernel language; ``ValueError`` when API mode cannot bind
    REQUEST in it."""
    if not supports_language(language):
        raise ValueError(f"API mode does not know how to set REQUEST in {language!r} kernels")
    if language.lower() == "python":
        return PythonAgent()
    return LiteralAssignment(language)


__all__ = [
    "ASSIGNMENTS",
    "Call",
    "EndpointCode",
    "Invocation",
    "Invoker",
    "LiteralAssignment",
    "PythonAgent",
    "RequestPayload",
    "Upload",
    "code_with_request",
    "invoker_for",
    "out_of_band",
    "request_globals",
    "supports_language",
]

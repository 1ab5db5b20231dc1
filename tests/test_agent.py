"""The Python agent's hooks, in-process in a plain IPython shell (no kernel process).

ipykernel's part is what the agent reads of it: ``shell.kernel.get_parent()``, the
execute request being run. Here that is :class:`Parent`, holding the message the worker
side (:mod:`nb2svc.runtime.kernel.invoke`) builds, buffers as the memoryviews zmq hands
over. Everything else is IPython's own ``InteractiveShell``: events, user namespace,
display formatter, payload manager, linecache. The raw-output hooks' registration on
ipykernel's IO thread is covered end to end by tests/test_large_answers.py.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import linecache
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.display import Image
from traitlets.config import Config

from nb2svc.runtime.kernel import agent as agent_module
from nb2svc.runtime.kernel.agent import (
    AGENT_NAME,
    JSON,
    MEMORY,
    PROBE_TOKEN,
    RAW_BUFFERS,
    REQUEST_KEY,
    TEXT,
    UNHEALTHY,
    Agent,
    bind,
    install,
)
from nb2svc.runtime.kernel.invoke import (
    PROBE_EXPRESSION,
    EndpointCode,
    RequestPayload,
    agent_bootstrap,
    code_with_request,
    out_of_band,
    read_report,
    response_info_expression,
)

TRICKY = 'quote " backslash \\ newline \n unicode é ☃ 𝄞 nul \x00 dollar $x'
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class Parent:
    """What the agent reads of ipykernel: the execute request being run."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {"header": {"msg_id": "none"}, "metadata": {}}
        self._execute_sleep = 0.0005  # ipykernel's default: seconds slept before each reply

    def get_parent(self) -> dict[str, Any]:
        return self.message

    def request(self, msg_id: str, metadata: dict[str, Any], buffers: list[bytes]) -> None:
        views = [memoryview(buffer) for buffer in buffers]  # as zmq hands them over
        self.message = {"header": {"msg_id": msg_id}, "metadata": metadata, "buffers": views}


def new_shell() -> InteractiveShell:
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell(config=config)
    shell.kernel = Parent()
    return shell


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    shell = new_shell()
    stdout, stderr = sys.stdout, sys.stderr
    try:
        yield shell
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        shell.history_manager.end_session()


@pytest.fixture
def agent(shell: InteractiveShell) -> Agent:
    return install(shell, raw_min=64)


def run(shell: InteractiveShell, code: str) -> Any:
    result = shell.run_cell(code, store_history=False)
    assert result.error_in_exec is None and result.error_before_exec is None
    return result


# --- the request's globals ----------------------------------------------------------


def test_request_globals_bind_from_the_out_of_band_payload(shell: InteractiveShell, agent: Agent) -> None:
    request_json = json.dumps({"body": None, "args": {"q": [TRICKY]}, "path": {}, "headers": {}})
    uploads = [("img", "a.png", "image/png", PNG), ("img", "b.bin", "", b"\xff"), ("doc", "c", "text/x", b"")]
    payload = RequestPayload(request_json, b"\xff\x00 raw body", uploads)
    shell.kernel.request("m1", *out_of_band(payload))
    run(shell, "seen = (REQUEST, REQUEST_BODY, REQUEST_FILES)")
    request, body, files = shell.user_ns["seen"]
    assert request == request_json and json.loads(request)["args"]["q"] == [TRICKY]
    assert type(body) is bytes and body == b"\xff\x00 raw body"
    assert files == {
        "img": [
            {"filename": "a.png", "content_type": "image/png", "data": PNG},
            {"filename": "b.bin", "content_type": "", "data": b"\xff"},
        ],
        "doc": [{"filename": "c", "content_type": "text/x", "data": b""}],
    }
    assert all(type(upload["data"]) is bytes for uploads in files.values() for upload in uploads)


def test_a_request_without_the_key_binds_nothing(shell: InteractiveShell, agent: Agent) -> None:
    shell.kernel.request("m1", {"other": 1}, [b"x"])
    run(shell, "x = 1")
    assert "REQUEST" not in shell.user_ns and "REQUEST_BODY" not in shell.user_ns


def test_one_more_global_needs_no_change_in_the_agent() -> None:
    """A named JSON global (PARAMS, say) binds by its kind alone."""
    names = [["REQUEST", TEXT], ["PARAMS", JSON], ["AFTER", TEXT]]
    buffers = [memoryview(b'{"a": 1}'), memoryview('{"n": 2, "s": "é"}'.encode()), memoryview(b"z")]
    assert bind(names, buffers) == {"REQUEST": '{"a": 1}', "PARAMS": {"n": 2, "s": "é"}, "AFTER": "z"}
    with pytest.raises(ValueError, match="unknown kind"):
        bind([["X", "pickle"]], [b""])


def test_the_probe_says_whether_buffers_arrive(shell: InteractiveShell, agent: Agent) -> None:
    def probe(token: bytes) -> str:
        shell.kernel.request("probe", {REQUEST_KEY: {"probe": True}}, [token])
        run(shell, "pass")
        return shell.user_expressions({"p": PROBE_EXPRESSION})["p"]["data"]["text/plain"]

    assert probe(b"something else") == "False"
    assert probe(PROBE_TOKEN) == "True"
    assert "REQUEST" not in shell.user_ns


def test_raw_outputs_are_asked_only_where_the_hooks_are_in(shell: InteractiveShell, agent: Agent) -> None:
    # a plain shell's stdout and display publisher take no hooks: no raw outputs promised
    assert agent.raw_ok is False
    shell.kernel.request("m1", *out_of_band(RequestPayload("{}")))
    run(shell, "pass")
    assert agent.raw_parent is None
    agent.raw_ok = True
    run(shell, "pass")
    assert agent.raw_parent == "m1"


# --- large outputs as raw buffers ---------------------------------------------------


def _message(parent: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"parent_header": {"msg_id": parent}, "metadata": {}, "content": content}


def test_a_large_stdout_flush_of_the_request_goes_as_one_buffer(agent: Agent) -> None:
    agent.raw_parent = "m1"
    text = ("é ☃ \udcff " * 20)[:70]  # a lone surrogate, as ipykernel may decode bytes
    msg = agent.raw_stream(_message("m1", {"name": "stdout", "text": text}))
    assert msg["content"]["text"] == "" and msg["metadata"][RAW_BUFFERS] == ["text"]
    assert msg["buffers"] == [text.encode("utf-8", "surrogateescape")]
    for small_or_other in (_message("m1", {"text": "short"}), _message("m2", {"text": text})):
        assert agent.raw_stream(small_or_other)["metadata"] == {}


def test_large_binary_displays_of_the_request_go_as_their_bytes(agent: Agent) -> None:
    agent.raw_parent = "m1"
    data = {
        "image/png": base64.b64encode(PNG).decode(),
        "text/html": "<b>" + "x" * 100 + "</b>",  # text stays text
        "image/x-not-base64": "!" * 100,  # not strict base64: stays as it is
        "text/plain": "<Image>",
    }
    bundle = dict(data)
    msg = agent.raw_display(_message("m1", {"data": bundle, "metadata": {}}))
    assert msg["metadata"][RAW_BUFFERS] == ["image/png"] and msg["buffers"] == [PNG]
    assert msg["content"]["data"] == {**data, "image/png": ""}
    assert bundle == data  # the caller's bundle is not changed
    other = agent.raw_display(_message("m2", {"data": dict(data), "metadata": {}}))
    assert other["metadata"] == {} and other["content"]["data"] == data


def test_an_embedded_image_keeps_its_bytes_during_a_raw_request(
    shell: InteractiveShell, agent: Agent
) -> None:
    agent.install_image_printer()
    shell.kernel.message = {"header": {"msg_id": "m1"}}
    agent.raw_parent = "m1"
    bundle, _ = shell.display_formatter.format(Image(data=PNG, format="png"))
    assert bundle["image/png"] == PNG  # no base64 on the way
    agent.raw_parent = "another request"
    bundle, _ = shell.display_formatter.format(Image(data=PNG, format="png"))
    assert base64.b64decode(bundle["image/png"]) == PNG  # the stock bundle


# --- ResponseInfo in the same execute ------------------------------------------------


def test_response_info_runs_as_a_user_expression(shell: InteractiveShell, agent: Agent) -> None:
    run(shell, "status = 201")
    ok = EndpointCode(
        "# GET /x", "import json\nprint(json.dumps({'status': status}))", "<ResponseInfo cell 3>"
    )
    value = shell.user_expressions({"r": response_info_expression(ok)})["r"]
    assert read_report(value) == {"stdout": '{"status": 201}\n'}
    failing = EndpointCode("# GET /x", "x = 1\nraise KeyError('k')", "<ResponseInfo cell 4,5>")
    report = read_report(shell.user_expressions({"r": response_info_expression(failing)})["r"])
    assert report["ename"] == "KeyError" and report["evalue"] == "'k'"
    trace = "".join(report["traceback"])
    assert '"<ResponseInfo cell 4,5>", line 2' in trace and "response_info" not in trace


def test_unreadable_or_missing_reports_are_errors() -> None:
    assert read_report(None)["evalue"] == "expression was not evaluated"
    assert read_report({"status": "error", "ename": "E", "evalue": "v"}) == {
        "ename": "E",
        "evalue": "v",
        "traceback": [],
    }
    for unreadable in ("nonsense", repr(json.dumps([1])), repr("not json")):
        assert read_report({"status": "ok", "data": {"text/plain": unreadable}})["ename"] == "Error"


# --- after each cell: memory and health ------------------------------------------------


def test_cells_with_a_request_literal_leave_linecache(shell: InteractiveShell, agent: Agent) -> None:
    def cached(marker: str) -> bool:
        return any(marker in "".join(entry[2]) for entry in list(linecache.cache.values()))

    run(shell, code_with_request("python", "# GET /a\nx = REQUEST", '"literal-marker-1"'))
    run(shell, "# GET /b\ny = 'kept-marker-2'")
    assert shell.user_ns["x"] == '"literal-marker-1"'
    assert not cached("literal-marker-1") and cached("kept-marker-2")


def test_captured_outputs_are_forgotten(shell: InteractiveShell, agent: Agent) -> None:
    if not hasattr(shell.history_manager, "outputs"):
        pytest.skip("this IPython keeps no outputs in its history (IPython < 9): nothing to forget")
    shell.history_manager.outputs[0].append("an answer")
    run(shell, "pass")
    assert not shell.history_manager.outputs


def test_swapped_streams_come_back_and_closed_ones_are_reported(
    shell: InteractiveShell, agent: Agent
) -> None:
    out = sys.stdout
    run(shell, "import io, sys\nsys.stdout = io.StringIO()")
    assert sys.stdout is out
    assert not health_payloads(shell)
    closed = io.StringIO()
    closed.close()
    agent.streams = (closed, sys.stderr)
    shell.payload_manager.clear_payload()
    run(shell, "pass")
    assert health_payloads(shell) == [
        {"source": UNHEALTHY, "reason": "its code closed sys.stdout or sys.stderr"}
    ]


def health_payloads(shell: InteractiveShell) -> list[dict[str, object]]:
    return [p for p in shell.payload_manager.read_payload() if p["source"] != MEMORY]


def test_every_cell_reports_the_kernels_resident_memory(shell: InteractiveShell, agent: Agent) -> None:
    """What ``--kernel-max-memory`` reads for a kernel the worker cannot see (a remote one)."""

    def reported() -> int:
        (memory,) = [p for p in shell.payload_manager.read_payload() if p["source"] == MEMORY]
        shell.payload_manager.clear_payload()
        return int(memory["rss"])  # type: ignore[call-overload]

    shell.payload_manager.clear_payload()
    run(shell, "pass")
    before = reported()
    run(shell, "KEPT = b'x' * (64 << 20)")
    assert reported() - before >= 60 << 20
    run(shell, "del KEPT")


# --- the bootstrap a kernel runs, and what the agent may import ------------------------


def test_the_bootstrap_installs_the_agent_from_its_source() -> None:
    shell = new_shell()
    try:
        run(shell, agent_bootstrap())
        sent = shell.user_ns[AGENT_NAME]
        assert type(sent).__name__ == "Agent" and type(sent).__module__ == "nb2svc_agent"
        assert shell.user_ns_hidden[AGENT_NAME] is sent
        assert [n for n in shell.user_ns if n.startswith("_nb2svc")] == [AGENT_NAME]
        shell.kernel.request("m1", *out_of_band(RequestPayload('{"from": "source"}', b"b")))
        run(shell, "seen = REQUEST, REQUEST_BODY")
        assert shell.user_ns["seen"] == ('{"from": "source"}', b"b")
        assert AGENT_NAME not in shell.run_line_magic("who_ls", "")
    finally:
        shell.history_manager.end_session()


def test_the_agent_imports_only_what_a_remote_kernel_has() -> None:
    tree = ast.parse(Path(agent_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    outside = imported - set(sys.stdlib_module_names) - {"__future__", "IPython", "ipykernel"}
    assert not outside, f"the agent runs in kernels without these: {sorted(outside)}"


def test_the_kernel_no_longer_sleeps_before_each_reply(shell: InteractiveShell, agent: Agent) -> None:
    assert shell.kernel._execute_sleep == 0.0


def test_log_records_no_handler_would_show_are_not_made() -> None:
    import logging

    from nb2svc.runtime.kernel.agent import no_dropped_log_records

    def logger(name: str, handler_levels: list[int], propagate: bool) -> logging.Logger:
        log = logging.getLogger(f"nb2svc-test.{name}")
        log.handlers = [logging.NullHandler(level) for level in handler_levels]
        log.setLevel(logging.DEBUG)  # as ipykernel's
        log.propagate = propagate
        return log

    kernels = logger("kernel", [logging.WARNING, logging.ERROR], propagate=False)
    no_dropped_log_records(kernels)
    assert kernels.level == logging.WARNING and not kernels.isEnabledFor(logging.DEBUG)
    shown = logger("shown", [logging.WARNING, logging.DEBUG], propagate=False)
    propagating = logger("propagating", [logging.WARNING], propagate=True)  # its parents may show DEBUG
    bare = logger("bare", [], propagate=False)
    for log in (shown, propagating, bare):
        no_dropped_log_records(log)
        assert log.level == logging.DEBUG
    no_dropped_log_records(None)  # a kernel without a logger: nothing to do

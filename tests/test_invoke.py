"""The invocation protocol's worker side without a kernel process: which implementation a
language gets, what each sends for an endpoint and its request, and what it answers.

Kernels are :class:`tests.scripted.ScriptedKernel` (the channel layer's contract); the
Python agent's kernel side is tested in tests/test_agent.py, both together end to end in
tests/test_request_oob.py and tests/test_large_answers.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nb2svc.runtime.kernel.agent import AGENT_NAME, PROBE_TOKEN, REQUEST_KEY
from nb2svc.runtime.kernel.invoke import (
    OUT_OF_BAND,
    PROBE_KEY,
    RESPONSE_INFO_KEY,
    EndpointCode,
    LiteralAssignment,
    PythonAgent,
    RequestPayload,
    invoker_for,
    out_of_band,
    supports_language,
)
from tests.notebooks import notebook
from tests.scripted import IDLE, ScriptedKernel, iopub, reply
from tests.support import REPO

PAYLOAD = RequestPayload('{"body": "x"}', b"raw", [("f", "a.txt", "text/plain", b"A"), ("f", "b", "", b"B")])
ENDPOINT = EndpointCode.of("# GET /x\nprint(REQUEST)", "print('{\"status\": 201}')", (3, 4))


def test_each_language_gets_its_implementation_once() -> None:
    python = invoker_for("Python")
    assert isinstance(python, PythonAgent) and python.binary_body
    assert "def install(" in python.bootstrap and "nb2svc_agent" in python.bootstrap
    bash = invoker_for("bash")
    assert isinstance(bash, LiteralAssignment) and bash.bootstrap == "" and not bash.binary_body
    assert supports_language("R") and not supports_language("cobol")
    with pytest.raises(ValueError, match="'cobol'"):
        invoker_for("cobol")


def test_the_cli_can_ask_in_gunicorns_master_without_zmq_or_gevent() -> None:
    code = (
        "import sys\n"
        "from nb2svc.runtime.kernel.invoke import supports_language\n"
        "import nb2svc.cli, nb2svc.runtime.http_api.request, nb2svc.runtime.http_api.responses\n"
        "heavy = {'zmq', 'gevent', 'jupyter_client', 'IPython', 'ipykernel'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_serve_refuses_a_language_no_invoker_serves_before_anything_starts(tmp_path: Path) -> None:
    path = tmp_path / "cobol.ipynb"
    nbformat.write(notebook("# GET /x\nDISPLAY 'x'", kernel="cobol", language="cobol"), path)
    out = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(path), "--comment-prefix", "#", "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "API mode cannot serve 'cobol' kernels yet" in out.stderr and "Traceback" not in out.stderr


def test_out_of_band_names_each_global_and_its_buffers_in_order() -> None:
    metadata, buffers = out_of_band(PAYLOAD)
    assert metadata == {
        REQUEST_KEY: {
            "globals": [
                ["REQUEST", "text"],
                ["REQUEST_BODY", "bytes"],
                ["REQUEST_FILES", "files", [["f", "a.txt", "text/plain"], ["f", "b", ""]]],
                ["PARAMS", "json"],
            ],
            "raw_outputs": True,
        }
    }
    assert buffers == [b'{"body": "x"}', b"raw", b"A", b"B", b"{}"]


def test_literal_assignment_runs_response_info_as_a_second_execute() -> None:
    kernel = ScriptedKernel(
        lambda sent: [iopub("stream", name="stdout", text=sent["code"][-6:]), reply(), IDLE]
    )
    done = invoker_for("r").invoke(kernel, ENDPOINT, PAYLOAD, timeout=30)
    first, second = kernel.sent
    assert first["content"]["code"] == 'REQUEST <- "{\\"body\\": \\"x\\"}"; ' + ENDPOINT.code
    assert first["metadata"] is None and first["buffers"] is None
    assert second["content"]["code"] == ENDPOINT.response_info
    assert done.hide == 'REQUEST <- "{\\"body\\": \\"x\\"}"; '
    assert done.result.stdout == ENDPOINT.code[-6:] and done.response_info is not None


def test_literal_assignment_skips_response_info_after_an_error() -> None:
    failed = iopub("error", ename="E", evalue="v", traceback=[])
    kernel = ScriptedKernel(lambda _: [failed, reply("error"), IDLE])
    done = invoker_for("bash").invoke(kernel, ENDPOINT, PAYLOAD, timeout=30)
    assert len(kernel.sent) == 1 and done.response_info is None and done.result.error is not None


def _answers_response_info(report: dict) -> ScriptedKernel:
    value = {"status": "ok", "data": {"text/plain": repr(json.dumps(report))}}
    return ScriptedKernel(lambda _: [reply(user_expressions={RESPONSE_INFO_KEY: value}), IDLE])


def test_the_python_agent_sends_the_notebooks_code_and_the_request_beside_it() -> None:
    kernel = _answers_response_info({"stdout": '{"status": 201}'})
    kernel.traits[OUT_OF_BAND] = True
    done = PythonAgent().invoke(kernel, ENDPOINT, PAYLOAD, timeout=30)
    (sent,) = kernel.sent  # ResponseInfo rides in the same execute
    assert sent["content"]["code"] == ENDPOINT.code
    assert (sent["metadata"], sent["buffers"]) == out_of_band(PAYLOAD)
    expression = sent["content"]["user_expressions"][RESPONSE_INFO_KEY]
    assert expression.startswith(f"{AGENT_NAME}.response_info(") and "<ResponseInfo cell 3,4>" in expression
    assert done.hide == "" and done.response_info is not None
    assert done.response_info.stdout == '{"status": 201}'


def test_a_python_kernel_without_out_of_band_gets_the_literal_and_the_same_execute() -> None:
    kernel = _answers_response_info({"ename": "KeyError", "evalue": "'k'", "traceback": ["  line 1\n"]})
    done = PythonAgent().invoke(kernel, ENDPOINT, PAYLOAD, timeout=30)
    (sent,) = kernel.sent
    assert sent["content"]["code"] == 'REQUEST = "{\\"body\\": \\"x\\"}"; ' + ENDPOINT.code
    assert sent["metadata"] is None and done.hide.startswith("REQUEST = ")
    assert done.response_info is not None and done.response_info.error is not None
    assert done.response_info.error.ename == "KeyError"


@pytest.mark.parametrize(("answer", "trait"), [("True", True), ("False", False)])
def test_prepare_probes_once_for_out_of_band(answer: str, trait: bool) -> None:
    value = {"status": "ok", "data": {"text/plain": answer}}
    kernel = ScriptedKernel(lambda _: [reply(user_expressions={PROBE_KEY: value}), IDLE])
    PythonAgent().prepare(kernel, timeout=30)
    (sent,) = kernel.sent
    assert sent["metadata"] == {REQUEST_KEY: {"probe": True}} and sent["buffers"] == [PROBE_TOKEN]
    assert kernel.traits[OUT_OF_BAND] is trait

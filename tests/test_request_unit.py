"""Unit tests of the request/response rules, without kernels: REQUEST building and injection,
ResponseInfo parsing and the output-to-body rules."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from flask import Flask, request

from nb2svc.runtime.http_api.request import BadRequestBody, build_request
from nb2svc.runtime.http_api.responses import (
    ResponseInfo,
    ResponseInfoError,
    make_response,
    parse_response_info,
)
from nb2svc.runtime.kernel.executor import ExecutionResult
from nb2svc.runtime.kernel.invoke import code_with_request

APP = Flask(__name__)
TRICKY = "quote \" backslash \\ dollar $HOME $(id) `id` newline \n unicode ü \u2028 single ' end"


def request_for(**kwargs: object) -> dict:
    with APP.test_request_context("/x?a=1&a=2&token=secret", **kwargs):  # type: ignore[arg-type]
        return json.loads(build_request(request, {"id": "7"}, hidden_query=("token",)))


def test_request_shape_and_hidden_token() -> None:
    req = request_for(headers={"X-Thing": "y", "Authorization": "token secret"})
    assert req["args"] == {"a": ["1", "2"]}
    assert req["path"] == {"id": "7"}
    assert req["headers"]["X-Thing"] == "y"
    assert "Authorization" not in req["headers"]
    assert req["body"] == ""


@pytest.mark.parametrize(
    ("kwargs", "body"),
    [
        ({"json": {"n": [1, 2]}}, {"n": [1, 2]}),
        (
            {"data": "a=1&a=2&b=3", "content_type": "application/x-www-form-urlencoded"},
            {"a": ["1", "2"], "b": ["3"]},
        ),
        ({"data": "just text", "content_type": "text/plain"}, "just text"),
        ({"data": '{"x": 1}', "content_type": "application/vnd.api+json"}, {"x": 1}),
    ],
)
def test_body_by_content_type(kwargs: dict, body: object) -> None:
    assert request_for(method="POST", **kwargs)["body"] == body


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [("{oops", "application/json", "invalid JSON"), (b"\xff\xfe", "text/plain", "UTF-8")],
)
def test_bad_bodies_are_rejected(data: object, content_type: str, message: str) -> None:
    with APP.test_request_context("/x", method="POST", data=data, content_type=content_type):
        with pytest.raises(BadRequestBody, match=message):
            build_request(request, {})


def test_python_assignment_keeps_line_numbers_and_value() -> None:
    cell = "# GET /x\nvalue = REQUEST\nraise ValueError(value)"
    code = code_with_request("python", cell, TRICKY)
    assert code.count("\n") == cell.count("\n")
    namespace: dict = {}
    with pytest.raises(ValueError) as info:
        exec(compile(code, "cell", "exec"), namespace)
    assert namespace["REQUEST"] == TRICKY
    assert info.traceback[-1].lineno + 1 == 3  # pytest's lineno is 0-based


def test_bash_assignment_is_quoted_safely() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    code = code_with_request("bash", '# GET /x\nprintf %s "$REQUEST"', TRICKY)
    out = subprocess.run([bash, "-c", code], capture_output=True, text=True, timeout=10, check=True)
    assert out.stdout == TRICKY


def test_javascript_assignment() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    code = code_with_request("javascript", "// GET /x\nprocess.stdout.write(REQUEST)", TRICKY)
    out = subprocess.run([node, "-e", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == TRICKY


def test_julia_assignment_escapes_interpolation() -> None:
    assert "\\$HOME" in code_with_request("julia", "# GET /x", TRICKY)


def test_response_info_parsing() -> None:
    assert parse_response_info("") == ResponseInfo()
    info = parse_response_info('{"status": 201, "headers": {"X-A": 1}}\n')
    assert info == ResponseInfo(201, {"X-A": "1"})
    for bad in ("nope", "[1]", '{"status": 99}', '{"status": "200"}', '{"headers": []}'):
        with pytest.raises(ResponseInfoError):
            parse_response_info(bad)


def response_body(result: ExecutionResult, info: ResponseInfo) -> tuple[bytes, str]:
    """The body and Content-Type of the response the service would send."""
    response = make_response(result, info)
    return response.get_data(), response.headers["Content-Type"]


def test_body_is_stdout_then_execute_result_then_empty() -> None:
    info = ResponseInfo()
    assert response_body(ExecutionResult(stdout_parts=["a", "b"], result={"text/plain": "2"}), info) == (
        b"ab",
        "text/plain",
    )
    assert response_body(ExecutionResult(result={"text/plain": "2"}), info) == (
        b'{"text/plain": "2"}',
        "text/plain",
    )
    assert response_body(ExecutionResult(), info) == (b"", "text/plain")


def test_rich_output_matching_the_content_type_is_the_body() -> None:
    png = ExecutionResult(
        stdout_parts=["log line"], displays=[{"image/png": "iVBORw0KGgo=", "text/plain": "<Image>"}]
    )
    assert response_body(png, ResponseInfo(headers={"Content-Type": "image/png"})) == (
        b"\x89PNG\r\n\x1a\n",
        "image/png",
    )
    html = ExecutionResult(displays=[{"text/html": "<b>hi</b>"}])
    assert response_body(html, ResponseInfo(headers={"content-type": "text/html"})) == (
        b"<b>hi</b>",
        "text/html",
    )

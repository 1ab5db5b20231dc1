"""`nb2svc test`: example requests declared in cell metadata, sent to the real service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from nb2svc.compiler import CompileError, compile_notebook
from nb2svc.endpoint_tests import (
    Example,
    Outcome,
    check_response,
    endpoints_without_examples,
    examples_from_spec,
    format_table,
    json_equal,
)
from tests.notebooks import md, notebook
from tests.support import EXAMPLES


def declared(path: Path) -> list[Example]:
    return examples_from_spec(compile_notebook(path))


def cell(source: str, *examples: dict[str, Any]) -> nbformat.NotebookNode:
    code = new_code_cell(source)
    code.metadata["nb2svc"] = {"examples": list(examples)}
    return code


def write(tmp_path: Path, *cells: Any, name: str = "svc.ipynb") -> Path:
    nb = notebook(*cells, kernel="python3", language="python")
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def nb2svc_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", "test", *args], capture_output=True, text=True, timeout=180
    )


GREETER = (
    "import json",
    cell(
        "# GET /greet/:name\nprint('hi ' + json.loads(REQUEST)['path']['name'])",
        {"name": "says hi", "request": {"path": "/greet/ann"}, "response": {"body": "hi ann\n"}},
    ),
    cell(
        "# POST /greet\nprint(json.dumps({'got': json.loads(REQUEST)['body']}))",
        {
            "request": {"json": {"a": 1}},
            "response": {"content_type": "text/plain", "json": {"got": {"a": 1}}},
        },
    ),
)


# --- declarations -------------------------------------------------------------------------


def test_example_notebooks_have_examples_for_every_endpoint() -> None:
    for name in ("hello.ipynb", "todo.ipynb"):
        path = EXAMPLES / name
        examples = declared(path)
        assert examples, name
        assert endpoints_without_examples(compile_notebook(path), examples) == [], name


def test_examples_take_the_endpoints_method_and_encode_their_body(tmp_path: Path) -> None:
    first, second = declared(write(tmp_path, *GREETER))
    assert (first.cell, first.name, first.request_line, first.body) == (2, "says hi", "GET /greet/ann", None)
    assert (first.status, first.expect_body) == (200, "hi ann\n")
    assert (second.name, second.request_line, second.body) == ("example 1", "POST /greet", b'{"a": 1}')
    assert second.headers == {"Content-Type": "application/json"}


def test_an_example_without_a_path_uses_the_endpoints_literal_path(tmp_path: Path) -> None:
    (example,) = declared(write(tmp_path, cell("# GET /a/b\nprint(1)", {"response": {"status": 200}})))
    assert example.path == "/a/b"


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ({"nope": 1}, "an example is an object"),
        ({"request": {"path": "/items/1", "verb": "GET"}}, "unknown request field 'verb'"),
        ({"request": {}}, "request.path must be a path like '/items/:id'"),
        (
            {"request": {"path": "/items/special"}},
            "GET /items/special goes to GET /items/special, not to GET /items/:id",
        ),
        ({"request": {"path": "/other/1"}}, "GET /other/1 goes to no endpoint"),
        ({"request": {"path": "/items/1", "body": "x", "json": 1}}, "request has both 'body' and 'json'"),
        ({"request": {"path": "/items/1", "body": 5}}, "request.body must be text"),
        (
            {"request": {"path": "/items/1"}, "response": {"status": "200"}},
            "response.status must be an HTTP status code",
        ),
        (
            {"request": {"path": "/items/1"}, "response": {"headers": {"X": 1}}},
            "response.headers must be an object of text values",
        ),
    ],
)
def test_invalid_examples_are_compile_errors_naming_the_cell(
    tmp_path: Path, examples: dict[str, Any], message: str
) -> None:
    path = write(
        tmp_path, "x = 1", "# GET /items/special\nprint(1)", cell("# GET /items/:id\nprint(2)", examples)
    )
    with pytest.raises(CompileError) as info:
        declared(path)
    assert f"svc.ipynb, cell 3: nb2svc.examples[0]: {message}" in str(info.value)


def test_examples_on_a_setup_cell_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, cell("x = 1", {"request": {"path": "/"}}), md("docs"), "# GET /a\nprint(x)")
    with pytest.raises(CompileError, match="cell 1: examples on a cell that is not an endpoint"):
        declared(path)


def test_examples_on_a_response_info_cell_belong_to_its_endpoint(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# POST /a\nprint(1)",
        cell("# ResponseInfo POST /a\nprint('{\"status\": 201}')", {"response": {"status": 201}}),
    )
    (example,) = declared(path)
    assert (example.cell, example.request_line) == (2, "POST /a")


# --- comparing answers ----------------------------------------------------------------------


def example(**fields: Any) -> Example:
    base: dict[str, Any] = dict(
        cell=1, name="x", endpoint="GET /", method="GET", path="/", headers={}, body=None
    )
    base.setdefault("status", 200)
    return Example(**{**base, **fields})


def test_check_response() -> None:
    ok = {"Content-Type": "application/json; charset=utf-8", "Location": "/x/1"}
    assert check_response(example(content_type="application/json", expect_json=[1]), 200, ok, b"[1]") == []
    assert check_response(example(expect_headers={"location": "/x/1"}), 200, ok, b"") == []
    assert check_response(example(status=201), 200, ok, b"") == ["status 200, expected 201"]
    assert check_response(example(content_type="text/plain"), 200, ok, b"") == [
        "content type 'application/json; charset=utf-8', expected 'text/plain'"
    ]
    # parameters are compared only when the expectation names some
    assert check_response(example(content_type="application/json; charset=latin-1"), 200, ok, b"")
    assert check_response(example(expect_body="a\n"), 200, ok, b"a") == ["body 'a', expected 'a\\n'"]
    assert check_response(example(expect_json={"a": 1}), 200, ok, b"{") == ["body is not JSON: '{'"]
    assert check_response(example(expect_json={"a": True}), 200, ok, b'{"a": 1}') == [
        "JSON body '{\"a\": 1}', expected '{\"a\": true}'"
    ]


def test_json_equal() -> None:
    assert json_equal({"a": [1, 2.0, None]}, {"a": [1.0, 2, None]})
    assert not json_equal(True, 1)
    assert not json_equal([0], [False])
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert not json_equal([1, 2], [2, 1])


def test_format_table_lists_failures_under_the_table() -> None:
    table = format_table(
        [Outcome(example(name="good"), 200, []), Outcome(example(name="bad", path="/b"), 500, ["status 500"])]
    )
    lines = table.splitlines()
    assert lines[0].split() == ["RESULT", "CELL", "REQUEST", "STATUS", "EXAMPLE"]
    assert lines[1].split() == ["pass", "1", "GET", "/", "200", "good"]
    assert lines[2].split() == ["FAIL", "1", "GET", "/b", "500", "bad"]
    assert lines[-2:] == ["FAIL cell 1, GET /b (bad):", "  status 500"]


def test_format_table_names_the_notebook_of_examples_of_several() -> None:
    table = format_table(
        [
            Outcome(example(name="good", notebook="a.ipynb"), 200, []),
            Outcome(example(name="bad", notebook="b.ipynb", path="/b/x"), 500, ["status 500"]),
        ]
    )
    lines = table.splitlines()
    assert lines[0].split() == ["RESULT", "NOTEBOOK", "CELL", "REQUEST", "STATUS", "EXAMPLE"]
    assert lines[2].split() == ["FAIL", "b.ipynb", "1", "GET", "/b/x", "500", "bad"]
    assert lines[-2:] == ["FAIL b.ipynb, cell 1, GET /b/x (bad):", "  status 500"]


# --- the command, against real servers ----------------------------------------------------------


@pytest.mark.slow
def test_example_notebook_passes(tmp_path: Path) -> None:
    result = nb2svc_test(str(EXAMPLES / "hello.ipynb"))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RESULT", "CELL", "REQUEST", "STATUS", "EXAMPLE"]
    assert [line.split()[0] for line in lines[1:5]] == ["pass"] * 4
    assert lines[-1] == "4 passed, 0 failed"


@pytest.mark.slow
def test_a_bundle_passes_with_stateful_examples_in_order(tmp_path: Path) -> None:
    bundle = tmp_path / "todo"
    built = subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", str(EXAMPLES / "todo.ipynb"), "-o", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    result = nb2svc_test(str(bundle), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = json.loads(result.stdout)
    assert [o["request"] for o in outcomes][-2:] == ["DELETE /todos/3", "DELETE /todos/3"]
    assert [o["status"] for o in outcomes][-2:] == [204, 404]
    assert all(o["passed"] for o in outcomes)


@pytest.mark.slow
def test_failures_are_reported_and_exit_1(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        *GREETER,
        cell(
            "# GET /boom\nraise ValueError('on purpose')",
            {"response": {"status": 200, "body": "fine"}},
            {"name": "raises", "response": {"status": 500, "json": {"error": "ValueError"}}},
        ),
    )
    result = nb2svc_test(str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "2 passed, 2 failed"
    assert "FAIL cell 4, GET /boom (example 1):\n  status 500, expected 200\n  body " in result.stdout
    assert "FAIL cell 4, GET /boom (raises):\n  JSON body " in result.stdout  # JSON-equal: all keys


@pytest.mark.slow
def test_a_running_service_can_be_tested_by_url(start_server: Any) -> None:
    server = start_server(str(EXAMPLES / "hello.ipynb"))
    result = nb2svc_test(str(EXAMPLES / "hello.ipynb"), "--url", server.base)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_a_service_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    path = write(tmp_path, "raise RuntimeError('setup is broken')", cell("# GET /a\nprint(1)", {}))
    result = nb2svc_test(str(path), "--start-timeout", "60")
    assert result.returncode == 1
    assert "setup is broken" in result.stderr


def test_no_examples_is_a_usage_error(tmp_path: Path) -> None:
    result = nb2svc_test(str(write(tmp_path, "# GET /a\nprint(1)")))
    assert result.returncode == 2
    assert "declares no examples" in result.stderr


def test_invalid_examples_exit_2_and_name_the_cell(tmp_path: Path) -> None:
    result = nb2svc_test(str(write(tmp_path, cell("# GET /a/:b\nprint(1)", {"request": {}}))))
    assert result.returncode == 2
    assert "svc.ipynb, cell 1: nb2svc.examples[0]: request.path" in result.stderr


def test_missing_examples_are_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, cell("# GET /a\nprint(1)", {}), "# GET /b\nprint(2)")
    examples = declared(path)
    assert [ep.path for ep in endpoints_without_examples(compile_notebook(path), examples)] == ["/b"]

"""Typed contracts at compile time (issue 21, items 3 and 5): the author's `# param` lines
and the machine form in cell metadata compile to JSON Schema 2020-12; malformed ones are
errors naming the cell and line; examples are checked against their endpoint's contract;
the swagger parser's parameter schemas feed the same contract; `nb2svc test` reports an
answer that breaks a declared `returns` schema."""

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
from nb2svc.compiler.declarations import SCHEMA_DIALECT, parse_declaration
from nb2svc.compiler.validation import Contract, coerce, draft7_compatible
from tests.notebooks import md, notebook


def problems(nb: nbformat.NotebookNode, **kwargs: Any) -> list[str]:
    with pytest.raises(CompileError) as info:
        compile_notebook(nb, **kwargs)
    return [str(p) for p in info.value.problems]


def with_metadata(source: str, **ours: Any) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["nb2svc"] = ours
    return cell


# --- the author's form ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "schema", "required"),
    [
        ("integer", {"type": "integer"}, False),
        ("int, minimum 1 - how many", {"type": "integer", "minimum": 1, "description": "how many"}, False),
        ("string, required, enum a|b c", {"type": "string", "enum": ["a", "b c"]}, True),
        (
            "number, default 0.5, exclusiveMaximum 1",
            {"type": "number", "default": 0.5, "exclusiveMaximum": 1},
            False,
        ),
        ("bool, default false", {"type": "boolean", "default": False}, False),
        (
            "array of integer, minItems 1",
            {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            False,
        ),
        (
            'string, pattern "^a, b - c$" - quoted',
            {"type": "string", "pattern": "^a, b - c$", "description": "quoted"},
            False,
        ),
        ("string, maxLength 3 - a - b", {"type": "string", "maxLength": 3, "description": "a - b"}, False),
        ('object, default {"a": 1}', {"type": "object", "default": {"a": 1}}, False),
    ],
)
def test_declaration_lines_read_as_json_schema(text: str, schema: dict[str, Any], required: bool) -> None:
    assert parse_declaration(text) == (schema, required)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("# param qty: integr", "unknown type 'integr' (did you mean 'integer'?)"),
        ("# param qty: integer, minimun 1", "unknown facet 'minimun' (did you mean 'minimum'?"),
        ("# param qty: integer, default x", "'x' is not a number"),
        ("# param qty: integer, minimum 5, default 1", "the default 1 breaks its own schema"),
        ("# param qty:", "missing type after ':'"),
        ("# param qty: string, minimum 1", "minimum applies to numbers, not to string"),
        ("# param qty: string, pattern ([", "is not a regular expression"),
        ("# param qty: integer, required 1", "required takes no value"),
        ("# param qty: string, enum a|b, enum c", "enum is given twice"),
        ("# param q-x: string", "'q-x' is not a parameter name"),
        ("# param body: string", "a parameter cannot be called 'body'"),
        ("# param id: integer, default 1", "the path parameter :id always has a value"),
        ('# param q: string, pattern "^a', "a quoted value is not closed"),
        ("# header X Y: string", None),  # not a declaration at all: an ordinary comment
    ],
)
def test_malformed_declarations_are_errors_with_cell_and_line(line: str, message: str | None) -> None:
    nb = notebook("import json", f"# GET /items/:id\n# a comment\n{line}\nprint(1)")
    if message is None:
        assert compile_notebook(nb).endpoints[0].contract == {}
        return
    (found,) = problems(nb)
    assert found.startswith(f"<notebook>, cell 2, line 3: `{line}`: ")
    assert message in found


def test_a_declaration_below_the_code_is_an_error() -> None:
    (found,) = problems(notebook("# GET /a\nx = 1\n# param q: integer\nprint(x)"))
    assert found.startswith("<notebook>, cell 1, line 3: `# param q: integer` is below the code")


def test_a_full_contract_compiles_to_2020_12_schemas() -> None:
    spec = compile_notebook(
        notebook(
            "# POST /orders/:id\n"
            "# param id: integer, minimum 1\n"
            "\n"
            "# param qty: integer, default 1\n"
            "# header X-Token: string, required\n"
            "# body sku: string, required\n"
            "# returns total: number\n"
            "print(1)",
            "# POST /orders/:id\n# body note: string\nprint(2)",
        )
    )
    contract = spec.endpoints[0].contract
    assert set(contract) == {"params", "headers", "body", "returns"}
    assert all(schema["$schema"] == SCHEMA_DIALECT for schema in contract.values())
    assert contract["params"]["required"] == ["id"]
    assert contract["params"]["properties"]["qty"] == {"type": "integer", "default": 1}
    assert contract["headers"] == {
        "$schema": SCHEMA_DIALECT,
        "type": "object",
        "properties": {"X-Token": {"type": "string"}},
        "required": ["X-Token"],
    }
    # both cells of the endpoint declare body fields
    assert set(contract["body"]["properties"]) == {"sku", "note"}


def test_declared_twice_is_an_error() -> None:
    (found,) = problems(
        notebook("# GET /a\n# param q: integer\nprint(1)", "# GET /a\n# param q: string\nprint(2)")
    )
    assert "param q is declared twice" in found and found.startswith("<notebook>, cell 2, line 2")


# --- the machine form -----------------------------------------------------------------------


def test_metadata_schemas_merge_with_lines() -> None:
    cell = with_metadata(
        "# PUT /stock/:sku\n# param n: integer\nprint(1)",
        params={"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+$"}}},
        body={"type": "array", "items": {"type": "integer"}},
    )
    contract = compile_notebook(notebook(cell)).endpoints[0].contract
    assert contract["params"]["properties"] == {
        "sku": {"type": "string", "pattern": "^[A-Z]+$"},
        "n": {"type": "integer"},
    }
    assert contract["params"]["required"] == ["sku"]  # a path parameter always is
    assert contract["body"] == {"$schema": SCHEMA_DIALECT, "type": "array", "items": {"type": "integer"}}


@pytest.mark.parametrize(
    ("ours", "message"),
    [
        ({"params": {"type": "integer"}}, "nb2svc.params: must describe an object"),
        ({"params": []}, "nb2svc.params: must be a JSON Schema object"),
        ({"body": {"type": "wat"}}, "nb2svc.body: not a valid JSON Schema"),
        ({"params": {"properties": {"body": {"type": "string"}}}}, "a parameter cannot be called 'body'"),
    ],
)
def test_malformed_metadata_is_an_error_naming_the_cell(ours: dict[str, Any], message: str) -> None:
    (found,) = problems(notebook("import json", with_metadata("# POST /a\nprint(1)", **ours)))
    assert found.startswith("<notebook>, cell 2: ") and message in found


def test_the_same_name_in_both_forms_is_an_error() -> None:
    cell = with_metadata(
        "# GET /a\n# param q: integer\nprint(1)", params={"properties": {"q": {"type": "string"}}}
    )
    (found,) = problems(notebook(cell))
    assert "param q is declared both in a comment line and in nb2svc.params" in found


# --- examples against the contract ----------------------------------------------------------


FIX = "fix the example, or expect a 400 answer if it shows a refused request"


def test_an_example_that_breaks_its_contract_is_a_compile_error() -> None:
    cell = with_metadata(
        "# POST /orders\n# param qty: integer, minimum 1\n# body sku: string, required\nprint(1)",
        examples=[
            {"name": "good", "request": {"path": "/orders?qty=2", "json": {"sku": "a"}}},
            {"name": "bad", "request": {"path": "/orders?qty=0", "json": {}}},
            {"name": "refused", "request": {"path": "/orders?qty=0"}, "response": {"status": 400}},
        ],
    )
    found = problems(notebook("import json", cell))
    assert found == [
        "<notebook>, cell 2: nb2svc.examples[1] (bad) breaks the endpoint's contract at /qty: "
        f"0 is less than the minimum of 1 ({FIX})",
        "<notebook>, cell 2: nb2svc.examples[1] (bad) breaks the endpoint's contract at /body/sku: "
        f"'sku' is required ({FIX})",
    ]


def test_an_example_answer_that_breaks_returns_is_a_compile_error() -> None:
    cell = with_metadata(
        "# GET /total\n# returns total: number, required\nprint(1)",
        examples=[{"response": {"json": {"total": "x"}}}],
    )
    (found,) = problems(notebook(cell))
    assert "its answer breaks the declared returns schema at /total: 'x' is not of type 'number'" in found


# --- the swagger cell parser ------------------------------------------------------------------


def test_swagger_parameter_schemas_feed_the_contract() -> None:
    document = {
        "openapi": "3.0.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/items": {
                "get": {
                    "operationId": "get_item",
                    "parameters": [{"name": "id", "in": "path", "schema": {"type": "integer", "minimum": 1}}],
                },
                "post": {
                    "operationId": "add_item",
                    "requestBody": {
                        "content": {"application/json": {"schema": {"type": "object", "required": ["name"]}}}
                    },
                },
            },
            "/old": {
                "get": {
                    "operationId": "old",
                    "parameters": [{"name": "n", "in": "query", "type": "integer", "maximum": 9}],
                }
            },
        },
    }
    spec = compile_notebook(
        notebook(
            md("```json\n" + json.dumps(document) + "\n```"),
            "# operationId: get_item\nprint(1)",
            "# operationId: add_item\nprint(2)",
            "# operationId: old\nprint(3)",
        ),
        cell_parser="swagger",
    )
    contracts = {f"{ep.method} {ep.path}": ep.contract for ep in spec.endpoints}
    assert contracts["GET /items/:id"]["params"]["properties"] == {"id": {"type": "integer", "minimum": 1}}
    assert contracts["GET /items/:id"]["params"]["required"] == ["id"]
    assert contracts["POST /items"]["body"]["required"] == ["name"]
    assert contracts["GET /old/:n"]["params"]["properties"] == {"n": {"type": "integer", "maximum": 9}}
    checked = Contract(contracts["GET /items/:id"], ("id",)).check_request({"id": "0"}, {}, {})
    assert [e["pointer"] for e in checked.errors] == ["/id"]


# --- the checking rules ------------------------------------------------------------------------


def test_text_is_read_as_the_declared_type() -> None:
    assert coerce("2", {"type": "integer"}) == 2
    assert coerce("2.5", {"type": "integer"}) == "2.5"  # then reported as not an integer
    assert coerce("2.5", {"type": "number"}) == 2.5
    assert coerce("nan", {"type": "number"}) == "nan"
    assert coerce("true", {"type": "boolean"}) is True and coerce("0", {"type": "boolean"}) is False
    assert coerce("[1]", {"type": "array"}) == [1]
    assert coerce("7", {"type": ["integer", "string"]}) == 7
    assert coerce("x", {"type": "integer"}) == "x"


def test_fast_and_full_validators_agree() -> None:
    assert draft7_compatible({"type": "object", "properties": {"a": {"type": "integer", "minimum": 1}}})
    assert not draft7_compatible({"type": "string", "format": "email"})  # fastjsonschema would assert it
    assert not draft7_compatible({"prefixItems": [{"type": "integer"}]})
    assert not draft7_compatible({"$ref": "#/$defs/x"})
    schema = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 1}}}
    contract = Contract({"body": schema})
    for body, valid in (({"a": 1}, True), ({"a": 0}, False), ({"a": 1.0}, True), ({"a": True}, False)):
        assert bool(contract.check_request({}, {}, {}, body, has_body=True).errors) is not valid


def test_a_missing_body_is_checked_as_an_empty_object() -> None:
    optional = Contract({"body": {"type": "object", "properties": {"a": {"type": "integer", "default": 3}}}})
    assert optional.check_request({}, {}, {}).params == {"body": {"a": 3}}
    required = Contract({"body": {"type": "object", "required": ["a"]}})
    assert [e["pointer"] for e in required.check_request({}, {}, {}).errors] == ["/body"]


# --- nb2svc test and the returns schema ----------------------------------------------------------


@pytest.mark.slow
def test_nb2svc_test_reports_answers_that_break_returns(tmp_path: Path) -> None:
    cell = with_metadata(
        "# GET /total\n# param n: integer, default 1\n# returns total: number, required\n"
        "import json\nprint(json.dumps({'total': 'many'} if PARAMS['n'] > 1 else {'total': 1}))",
        examples=[
            {"name": "one", "request": {"path": "/total"}},
            {"name": "many", "request": {"path": "/total?n=2"}},
        ],
    )
    path = tmp_path / "totals.ipynb"
    nbformat.write(notebook("import json", cell, kernel="python3", language="python"), path)
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "test", str(path)], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "1 passed, 1 failed"
    assert (
        "FAIL cell 2, GET /total?n=2 (many):\n  the answer breaks the declared returns schema at /total: "
        "'many' is not of type 'number'" in result.stdout
    )

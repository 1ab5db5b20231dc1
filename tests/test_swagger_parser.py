"""The swagger cell parser (``--cell-parser swagger``), compiled: Kernel Gateway's rules
(``kernel_gateway/notebook_http/swagger/parser.py`` and its tests) and nb2svc's errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nb2svc.compiler import CompileError, ServiceSpec, compile_notebook
from nb2svc.compiler.openapi import openapi_document, swagger_document
from tests.notebooks import md, notebook


def doc_cell(document: dict[str, Any], fence: str = "```json") -> Any:
    return md(f"Some words first.\n\n{fence}\n{json.dumps(document, indent=1)}\n```\n\nAnd after.")


def compile_swagger(*cells: Any) -> ServiceSpec:
    return compile_notebook(notebook(*cells), cell_parser="swagger")


def routes(spec: ServiceSpec) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(ep.method, ep.path, ep.cells) for ep in spec.endpoints]


def test_kernel_gateway_routes_and_concatenation() -> None:
    """Kernel Gateway's test_endpoint_concatenation: named parameters become trailing
    segments, cells naming one operation are concatenated, unrelated comments are setup."""
    document = {
        "swagger": "2.0",
        "paths": {
            "/foo": {
                "put": {"operationId": "putFoo", "parameters": [{"name": "bar"}]},
                "post": {"operationId": "postFooBody"},
                "get": {"operationId": "getFoo", "parameters": [{"name": "bar"}]},
            }
        },
    }
    spec = compile_swagger(
        doc_cell(document),
        "# operationId: postFooBody \nprint(1)",
        "# unrelated comment ",
        "# operationId: putFoo\nprint(2)",
        "# operationId: getFoo\nprint(3)",
        "#operationId:putFoo\nprint(4)",
    )
    assert routes(spec) == [("POST", "/foo", (2,)), ("GET", "/foo/:bar", (5,)), ("PUT", "/foo/:bar", (4, 6))]
    assert [c.cell for c in spec.setup] == [3]
    put = spec.endpoints[2]
    assert put.code == "# operationId: putFoo\nprint(2)\n#operationId:putFoo\nprint(4)"
    assert put.operation_id == "putFoo"


def test_empty_path_templates_and_response_info() -> None:
    document = {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "": {"post": {"operationId": "postRoot", "parameters": [{"name": "foo"}]}},
            "/items/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True}],
                "get": {"operationId": "getItem", "parameters": [{"name": "id", "in": "path"}]},
            },
        },
    }
    spec = compile_swagger(
        doc_cell(document, fence="```"),
        "# operationId: postRoot\nprint(1)",
        "# operationId: getItem\nprint(2)",
        "# ResponseInfo operationId: getItem\nprint('{\"status\": 202}')",
    )
    assert routes(spec) == [("GET", "/items/:id", (3,)), ("POST", "/:foo", (2,))]
    assert spec.endpoints[0].response_info is not None and spec.endpoints[0].response_info.cells == (4,)


def test_the_document_travels_in_the_spec_and_describes_the_api() -> None:
    document = {
        "swagger": "2.0",
        "info": {"version": "2.0.0"},
        "paths": {"/a": {"get": {"operationId": "getA", "summary": "The A", "tags": ["letters"]}}},
    }
    spec = compile_swagger(doc_cell(document), "# operationId: getA\nprint('a')")
    assert ServiceSpec.from_json(spec.to_json()) == spec
    assert swagger_document(spec) == {**document, "info": {"version": "2.0.0", "title": "service"}}
    openapi = openapi_document(spec)
    assert openapi["info"]["version"] == "2.0.0"
    operation = openapi["paths"]["/a"]["get"]
    assert (operation["operationId"], operation["summary"], operation["tags"]) == (
        "getA",
        "The A",
        ["letters"],
    )
    assert spec.endpoints[0].summary == "The A"


def test_default_parser_specs_are_unchanged() -> None:
    spec = compile_notebook(notebook("# GET /a\nprint(1)"))
    data = json.loads(spec.to_json())
    assert "swagger" not in data and "operation_id" not in data["endpoints"][0]


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (
            ["# operationId: greet\nprint(1)"],
            ["<notebook>: no Swagger/OpenAPI document found"],
        ),
        (
            [md('```\n{"swagger": "2.0", "paths": {,}}\n```'), "# operationId: x\nprint(1)"],
            ["cell 1: the Swagger/OpenAPI document is not valid JSON", "no Swagger/OpenAPI document found"],
        ),
        (
            [
                doc_cell({"swagger": "2.0", "paths": {"/a": {"get": {"operationId": "a"}}}}),
                "# operationId: b\n1",
            ],
            ["cell 2: operationId 'b' is not declared in the Swagger/OpenAPI document (declared: a)"],
        ),
        (
            [doc_cell({"swagger": "2.0", "paths": {"/a": {"get": {"operationId": "a"}}}}), "# GET /a\n1"],
            ["cell 2: '# GET /a' is a default-parser annotation"],
        ),
        (
            [
                doc_cell({"swagger": "2.0", "paths": {"/a": {"head": {"operationId": "a"}}}}),
                "# operationId: a\n1",
            ],
            ["cell 2: operation 'a' is HEAD '/a'; nb2svc serves GET, POST, PUT, DELETE, PATCH"],
        ),
        (
            [
                doc_cell(
                    {
                        "swagger": "2.0",
                        "paths": {"/a": {"get": {"operationId": "a", "parameters": [{"name": "x-y"}]}}},
                    }
                ),
                "# operationId: a\n1",
            ],
            ["cell 2: operation 'a' (GET '/a', route /a/:x-y)"],
        ),
        (
            [doc_cell({"swagger": "2.0", "info": {}}), "# operationId: a\n1"],
            ['cell 1: the Swagger/OpenAPI document has no "paths" object'],
        ),
    ],
)
def test_errors_name_the_cell(cells: list[Any], expected: list[str]) -> None:
    with pytest.raises(CompileError) as caught:
        compile_swagger(*cells)
    message = str(caught.value)
    for part in expected:
        assert part in message, message


def test_declared_but_unimplemented_is_a_warning() -> None:
    document = {
        "swagger": "2.0",
        "paths": {"/a": {"get": {"operationId": "a"}}, "/b": {"get": {"operationId": "b"}}},
    }
    spec = compile_swagger(doc_cell(document), "# operationId: a\nprint(1)")
    assert spec.warnings == (
        "<notebook>, cell 1: operation 'b' (GET '/b') is declared but no cell implements it "
        "(annotate one with `# operationId: b`)",
    )


def test_unknown_parser_is_refused() -> None:
    with pytest.raises(ValueError, match="cell_parser must be one of default, swagger"):
        compile_notebook(notebook("# GET /a\n1"), cell_parser="kernel_gateway.notebook_http.cell.parser")

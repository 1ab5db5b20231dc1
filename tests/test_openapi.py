"""OpenAPI 3.1 and Kernel Gateway swagger.json documents from a compiled spec."""

from __future__ import annotations

import json

import pytest

from nb2svc.compiler import compile_notebook
from nb2svc.compiler.openapi import openapi_document, openapi_path, swagger_document
from nb2svc.compiler.spec import ServiceSpec
from tests.notebooks import md, notebook
from tests.support import EXAMPLES


@pytest.fixture
def spec():
    return compile_notebook(
        notebook(
            "import json",
            md("## Greet someone\nSays hello."),
            "# GET /hello/:name\nprint('hi')",
            "# POST /hello/:name\nprint(REQUEST)",
            "# ResponseInfo POST /hello/:name\nprint(json.dumps({'status': 201}))",
            "# GET /\nprint('root')",
            "# GET /items/:id/parts/:part_no",
            "# DELETE /items/:id/parts/:part_no",
            "# PATCH /items/id/parts/x",
        ),
        name="greeter",
    )


def test_openapi_path_conversion() -> None:
    assert openapi_path("/hello/:name") == "/hello/{name}"
    assert openapi_path("/a/:b/c/:d") == "/a/{b}/c/{d}"
    assert openapi_path("/") == "/"
    assert openapi_path("/plain") == "/plain"


def test_paths_parameters_and_operations(spec) -> None:
    doc = openapi_document(spec)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "greeter"
    assert doc["info"]["version"] == "1.0.0"
    assert "servers" not in doc
    assert list(doc["paths"]) == ["/", "/hello/{name}", "/items/id/parts/x", "/items/{id}/parts/{part_no}"]

    hello = doc["paths"]["/hello/{name}"]
    assert hello["parameters"] == [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    assert [p["name"] for p in doc["paths"]["/items/{id}/parts/{part_no}"]["parameters"]] == ["id", "part_no"]
    assert "parameters" not in doc["paths"]["/"]
    assert set(hello) == {"parameters", "get", "post"}

    get = hello["get"]
    assert get["operationId"] == "get_hello_name"
    assert get["summary"] == "Greet someone"
    assert get["description"] == "Says hello."
    assert "requestBody" not in get
    assert get["responses"]["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
    assert get["responses"]["500"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


def test_response_info_endpoint_notes_that_status_may_differ(spec) -> None:
    post = openapi_document(spec)["paths"]["/hello/{name}"]["post"]
    ok = post["responses"]["200"]
    assert "ResponseInfo" in ok["description"] and "status" in ok["description"]
    assert ok["content"] == {"*/*": {"schema": {}}}
    assert "summary" not in post


def test_request_body_only_for_post_put_patch(spec) -> None:
    doc = openapi_document(spec)
    post = doc["paths"]["/hello/{name}"]["post"]
    body = post["requestBody"]
    assert body["required"] is False
    assert set(body["content"]) == {
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "text/plain",
    }
    assert "requestBody" in doc["paths"]["/items/id/parts/x"]["patch"]
    assert "requestBody" not in doc["paths"]["/items/{id}/parts/{part_no}"]["delete"]


def test_error_schema(spec) -> None:
    error = openapi_document(spec)["components"]["schemas"]["Error"]
    assert error["properties"] == {
        "error": {"type": "string", "description": "Exception class name"},
        "message": {"type": "string", "description": "Exception message"},
        "traceback": {"type": "array", "items": {"type": "string"}},
    }


def test_operation_ids_are_unique_and_deterministic() -> None:
    spec = compile_notebook(notebook("# GET /items/:id", "# GET /items/id", "# GET /", "# POST /a-b/c.d"))
    doc = openapi_document(spec)
    ids = {
        (path, method): op["operationId"]
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    }
    assert ids == {
        ("/", "get"): "get_root",
        ("/a-b/c.d", "post"): "post_a_b_c_d",
        ("/items/id", "get"): "get_items_id",
        ("/items/{id}", "get"): "get_items_id_2",
    }


def test_server_url(spec) -> None:
    assert openapi_document(spec, server_url="https://api.example.com")["servers"] == [
        {"url": "https://api.example.com"}
    ]


def test_documents_are_deterministic_and_independent(spec) -> None:
    first = openapi_document(spec)
    first["paths"]["/hello/{name}"]["post"]["requestBody"]["content"]["text/plain"]["schema"]["type"] = "x"
    first["components"]["schemas"]["Error"]["required"].append("x")
    a = json.dumps(openapi_document(spec), sort_keys=True)
    b = json.dumps(openapi_document(spec), sort_keys=True)
    assert a == b
    assert '"x"' not in a
    assert json.dumps(swagger_document(spec), sort_keys=True) == json.dumps(
        swagger_document(spec), sort_keys=True
    )


def test_openapi_document_validates(spec) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(openapi_document(spec, server_url="http://127.0.0.1:8888"))


def test_swagger_document_matches_kernel_gateway() -> None:
    spec = compile_notebook(
        notebook(
            "# POST /hello/:name",
            "# GET /a",
            "# ResponseInfo POST /hello/:name",
            "# GET /hello/:name",
            "# GET /hello/me",
        ),
        name="hello",
    )
    doc = swagger_document(spec)
    success = {"responses": {"200": {"description": "Success"}}}
    assert doc == {
        "swagger": "2.0",
        "info": {"title": "hello", "version": "0.0.0"},
        "paths": {
            "/hello/:name": {"post": success, "get": success},
            "/a": {"get": success},
            "/hello/me": {"get": success},
        },
    }
    assert list(doc["paths"]) == ["/hello/:name", "/a", "/hello/me"]  # notebook order, as Kernel Gateway
    assert list(doc["paths"]["/hello/:name"]) == ["post", "get"]


def test_swagger_document_validates(spec) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.OpenAPIV2SpecValidator(swagger_document(spec)).validate()


def test_examples_and_declared_statuses_are_documented() -> None:
    spec = compile_notebook(EXAMPLES / "todo.ipynb")
    doc = openapi_document(spec)
    one = doc["paths"]["/todos/{id}"]
    assert one["parameters"][0]["example"]  # "try it" is prefilled from an example's path
    get = one["get"]["responses"]
    assert "404" in get  # declared by an example (and the ResponseInfo cell)
    examples = [
        e for r in get.values() for c in r.get("content", {}).values() for e in c.get("examples", {}).values()
    ]
    assert examples and all("summary" in e and "value" in e for e in examples)
    post = doc["paths"]["/todos"]["post"]
    assert "201" in post["responses"]
    assert post["requestBody"]["content"]["application/json"]["examples"]
    assert "204" in doc["paths"]["/todos/{id}"]["delete"]["responses"]


def test_response_info_literal_statuses_are_documented() -> None:
    nb = notebook(
        "# POST /things\nprint('made')",
        "# ResponseInfo POST /things\nimport json\nprint(json.dumps({'status': 202, 'headers': {}}))",
        kernel="python3",
        language="python",
    )
    responses = openapi_document(compile_notebook(nb))["paths"]["/things"]["post"]["responses"]
    assert "202" in responses


def test_examples_survive_service_json() -> None:
    spec = compile_notebook(EXAMPLES / "hello.ipynb")
    again = ServiceSpec.from_json(spec.to_json())
    assert [ep.examples for ep in again.endpoints] == [ep.examples for ep in spec.endpoints]
    assert any(ep.examples for ep in again.endpoints)


# --- typed contracts (issue 21) ---------------------------------------------------------------

CONTRACT_CELL = """# POST /orders/:id
# param id: integer, minimum 1 - the order number
# param qty: integer, minimum 1, maximum 100, default 1 - how many
# param color: string, enum red|green
# header X-Api-Version: string, required, pattern ^v[0-9]+$
# body sku: string, required - stock keeping unit
# returns total: number, required
print(PARAMS)"""


def test_contracts_carry_into_the_openapi_document_which_validates() -> None:
    spec = compile_notebook(notebook(CONTRACT_CELL, "# GET /plain\nprint(1)"))
    doc = openapi_document(spec)
    pytest.importorskip("openapi_spec_validator").validate(doc)
    item = doc["paths"]["/orders/{id}"]
    assert item["parameters"] == [
        {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
            "description": "the order number",
        }
    ]
    op = item["post"]
    assert op["parameters"] == [
        {
            "name": "qty",
            "in": "query",
            "required": False,
            "description": "how many",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
        },
        {
            "name": "color",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["red", "green"]},
        },
        {
            "name": "X-Api-Version",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": "^v[0-9]+$"},
        },
    ]
    assert op["requestBody"]["required"] is True
    assert op["requestBody"]["content"] == {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"sku": {"type": "string", "description": "stock keeping unit"}},
                "required": ["sku"],
            }
        }
    }
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["required"] == ["total"]
    assert op["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ContractError"
    }
    assert "ContractError" in doc["components"]["schemas"]
    # an endpoint without a contract is documented as before
    plain = doc["paths"]["/plain"]["get"]
    assert "parameters" not in plain and "400" not in plain["responses"]


def test_a_notebook_without_contracts_keeps_its_document() -> None:
    doc = openapi_document(compile_notebook(notebook("# GET /a/:x\nprint(1)")))
    assert "ContractError" not in doc["components"]["schemas"]
    assert doc["paths"]["/a/{x}"]["parameters"][0]["schema"] == {"type": "string"}


def test_contracts_survive_service_json() -> None:
    spec = compile_notebook(notebook(CONTRACT_CELL))
    again = ServiceSpec.from_json(spec.to_json())
    assert again.endpoints[0].contract == spec.endpoints[0].contract
    assert json.loads(spec.to_json())["endpoints"][0]["contract"]["params"]["$schema"].endswith(
        "2020-12/schema"
    )
    # a service.json written before contracts existed still loads, with none
    old = json.loads(compile_notebook(notebook("# GET /a\nprint(1)")).to_json())
    assert "contract" not in old["endpoints"][0]
    assert ServiceSpec.from_dict(old).endpoints[0].contract == {}

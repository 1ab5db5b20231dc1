"""Typed contracts served (issue 21, item 4): a request that breaks its endpoint's declared
contract answers 400 with every violation before a kernel is leased; one that keeps it
reaches the cell with typed ``PARAMS`` while ``REQUEST`` stays as Kernel Gateway sends it.

One real server with one kernel; a setup cell counts every execute the kernel runs
(IPython's ``pre_execute`` event fires for each), so "no kernel time" is observed on the
kernel itself, not inferred from the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from tests.notebooks import notebook
from tests.support import Server

COUNTER = (
    "EXECUTES = [0]\n"
    "def _count_executes():\n"
    "    EXECUTES[0] += 1\n"
    "get_ipython().events.register('pre_execute', _count_executes)"
)

ORDER = """# GET /orders
# param qty: integer, minimum 1 - how many
# param color: string, enum red|green, default red
import json
print(json.dumps({"params": PARAMS, "types": {k: type(v).__name__ for k, v in PARAMS.items()},
                  "request": json.loads(REQUEST)}))"""

CREATE = """# POST /orders/:id
# param id: integer, minimum 1 - the order number
# header X-Api-Version: string, pattern ^v[0-9]+$
# body sku: string, required
# body qty: integer, minimum 1, default 1
# body gift: boolean, default false
import json
print(json.dumps(PARAMS))"""


def _machine_cell() -> nbformat.NotebookNode:
    cell = new_code_cell("# PUT /stock/:sku\nimport json\nprint(json.dumps(PARAMS))")
    cell.metadata["nb2svc"] = {
        "params": {
            "type": "object",
            "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+$"}, "n": {"type": "integer"}},
            "required": ["n"],
        },
        "body": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
    }
    return cell


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path: Path = tmp_path_factory.mktemp("contracts") / "orders.ipynb"
    plain = "# GET /plain/:x\nprint(json.dumps(PARAMS))"
    cells = [COUNTER, ORDER, CREATE, _machine_cell(), "# GET /executes\nprint(EXECUTES[0])", plain]
    nbformat.write(notebook("import json", *cells, kernel="python3", language="python"), path)
    srv = Server([str(path), "--pool-size", "1"], log_dir=path.parent)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def executes(server: Server) -> int:
    """The kernel's execute count before this read (the read itself is one more)."""
    return int(server.get("/executes").text) - 1


def test_a_request_that_breaks_the_contract_is_refused_without_a_kernel_execute(server: Server) -> None:
    before = executes(server)
    answer = server.get("/orders", params={"qty": "0"})
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "BadRequest"
    assert body["errors"] == [
        {"pointer": "/qty", "expected": "minimum 1", "got": 0, "message": "0 is less than the minimum of 1"}
    ]
    assert "/qty" in body["message"]
    after = executes(server)
    assert after == before + 1  # only the first read itself ran on the kernel


def test_every_violation_is_reported(server: Server) -> None:
    before = executes(server)
    answer = server.request(
        "POST",
        "/orders/0",
        json={"qty": "x", "gift": 3},
        headers={"X-Api-Version": "latest"},
    )
    assert answer.status_code == 400
    errors = {e["pointer"]: e for e in answer.json()["errors"]}
    assert set(errors) == {"/id", "/headers/X-Api-Version", "/body/sku", "/body/qty", "/body/gift"}
    assert errors["/id"]["got"] == 0 and errors["/id"]["expected"] == "minimum 1"
    assert errors["/body/sku"]["expected"] == "a value (required)"
    assert errors["/body/qty"] == {
        "pointer": "/body/qty",
        "expected": "integer",
        "got": "x",
        "message": "'x' is not of type 'integer'",
    }
    answer = server.get("/orders", params={"qty": ["1", "2"], "color": "blue"})
    assert [(e["pointer"], e["expected"]) for e in answer.json()["errors"]] == [
        ("/qty", "one value"),
        ("/color", 'one of "red", "green"'),
    ]
    assert executes(server) == before + 1


def test_a_valid_request_gets_typed_params_and_the_untouched_request(server: Server) -> None:
    answer = server.get("/orders", params={"qty": "2"})
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert seen["params"] == {"qty": 2, "color": "red"}
    assert seen["types"] == {"qty": "int", "color": "str"}
    # REQUEST is Kernel Gateway's: text values, no defaults
    assert seen["request"]["args"] == {"qty": ["2"]}


def test_body_defaults_and_path_types(server: Server) -> None:
    answer = server.request("POST", "/orders/7", json={"sku": "A-1"}, headers={"X-Api-Version": "v2"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": 7, "body": {"sku": "A-1", "qty": 1, "gift": False}}
    missing = server.request("POST", "/orders/7", headers={"X-Api-Version": "v2"})
    assert [e["pointer"] for e in missing.json()["errors"]] == ["/body"]
    text = server.request("POST", "/orders/7", data="sku=x", headers={"Content-Type": "text/plain"})
    assert text.status_code == 400 and text.json()["errors"][0]["expected"].startswith("a JSON body")


def test_machine_form_in_cell_metadata(server: Server) -> None:
    ok = server.request("PUT", "/stock/ABC", params={"n": "3"}, json=[1, 2])
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"sku": "ABC", "n": 3, "body": [1, 2]}
    bad = server.request("PUT", "/stock/abc", json=[])
    assert sorted(e["pointer"] for e in bad.json()["errors"]) == ["/body", "/n", "/sku"]


def test_an_endpoint_without_a_contract_gets_its_path_as_params(server: Server) -> None:
    assert json.loads(server.get("/plain/hi").text) == {"x": "hi"}

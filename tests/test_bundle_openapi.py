"""The bundle's OpenAPI document: valid, and true enough for schemathesis to find no server error.

schemathesis generates requests from the served ``/openapi.json`` (hypothesis,
derandomized so runs repeat) and sends them to a real server. nb2svc itself must never
answer 5xx; a 500 is acceptable only as the documented cell error (the notebook's own
code raised), which the hello example does on purpose-free input: its ``POST /hello``
calls ``.get`` on whatever body it receives.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import EXAMPLES

openapi_spec_validator = pytest.importorskip("openapi_spec_validator")


def build(notebook: str, out: Path) -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", str(EXAMPLES / notebook), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("notebook", ["hello.ipynb", "todo.ipynb"])
def test_bundle_openapi_json_validates(tmp_path: Path, notebook: str) -> None:
    document = json.loads((build(notebook, tmp_path / "b") / "openapi.json").read_text())
    openapi_spec_validator.validate(document)
    assert document["openapi"].startswith("3.1")


def fuzz(base_url: str, max_examples: int = 60) -> Counter[tuple[str, int, str]]:
    """Send schemathesis' generated requests for every operation; count (operation, status, error)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings

    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    seen: Counter[tuple[str, int, str]] = Counter()
    for result in schema.get_all_operations():

        @given(case=result.ok().as_strategy())
        @settings(
            max_examples=max_examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            response = case.call(base_url=base_url, timeout=30)
            error = ""
            if response.status_code >= 500:
                try:
                    body = response.json()
                except ValueError:
                    body = {"error": response.text[:80]}
                # the documented cell error carries the cell's traceback; anything else is nb2svc's fault
                error = str(body.get("error")) + (" (cell)" if "traceback" in body else "")
            seen[f"{case.method.upper()} {case.operation.path}", response.status_code, error] += 1

        call()
    return seen


def undocumented(base_url: str, seen: Counter[tuple[str, int, str]]) -> set[tuple[str, int]]:
    """(operation, status) pairs answered but not listed in the served document."""
    document = requests.get(base_url + "/openapi.json", timeout=10).json()
    missing = set()
    for operation, status, _ in seen:
        method, path = operation.split(" ", 1)
        responses = document["paths"][path][method.lower()]["responses"]
        if str(status) not in responses and "default" not in responses:
            missing.add((operation, status))
    return missing


def server_errors(seen: Counter[tuple[str, int, str]]) -> dict[tuple[str, int, str], int]:
    return {key: count for key, count in seen.items() if key[1] >= 500}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error_in_the_todo_bundle(start_server: Any, tmp_path: Path) -> None:
    server = start_server(str(build("todo.ipynb", tmp_path / "todo")))
    seen = fuzz(server.base)
    assert server_errors(seen) == {}
    assert undocumented(server.base, seen) == set()
    assert {operation for operation, _, _ in seen} == {
        "GET /todos",
        "POST /todos",
        "GET /stats",
        "GET /todos/{id}",
        "PUT /todos/{id}",
        "DELETE /todos/{id}",
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error_in_hello(start_server: Any) -> None:
    server = start_server(str(EXAMPLES / "hello.ipynb"))
    seen = fuzz(server.base)
    assert server_errors(seen) == {}
    assert undocumented(server.base, seen) == set()
    assert seen["GET /hello/{name}", 200, ""] > 0 and seen["POST /hello", 201, ""] > 0

"""Rough edges a new user met (issue 22): rebuilding over a bundle, `nb2svc test` beside a
folder named nb2svc, upper-case swagger methods, doubled mount prefixes, the 413 body, 202's
Preference-Applied, the docs page without a token, and sizes with units."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
import requests

from nb2svc.build import write_files
from nb2svc.compiler import compile_notebook
from nb2svc.compiler.bundle import BundleError
from nb2svc.compiler.mounts import default_mount
from nb2svc.config import OPTIONS_BY_NAME, parse_value
from tests.notebooks import md, notebook
from tests.support import EXAMPLES, REPO, Server

StartServer = Callable[..., Server]
HELLO = EXAMPLES / "hello.ipynb"


# --- nb2svc build over an earlier bundle ------------------------------------------------------


def test_rebuilding_a_bundle_never_deletes_a_file_it_would_not_write_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = {"service.json": b"{}", "app.py": b"1", "k8s/deployment.yaml": b"d"}
    write_files(first, out)
    write_files(first, out)  # the same files again: replaced silently
    (out / "__pycache__").mkdir()
    (out / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"x")  # what serving it leaves
    write_files({**first, "app.py": b"2"}, out)
    assert (out / "app.py").read_bytes() == b"2"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"notes\.txt\); pass --force"):
        write_files(first, out)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    without_k8s = {"service.json": b"{}", "app.py": b"3"}
    with pytest.raises(BundleError, match=r"k8s/deployment\.yaml"):
        write_files(without_k8s, out)
    assert (out / "k8s" / "deployment.yaml").exists()
    write_files(without_k8s, out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["app.py", "service.json"]


def test_build_says_it_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def build(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "nb2svc", "build", str(HELLO), "-o", str(out), *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)

    assert build("--k8s").returncode == 0
    refused = build()
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "k8s/deployment.yaml" in line and "--force" in line
    assert (out / "k8s").is_dir()
    assert build("--force").returncode == 0 and not (out / "k8s").exists()


# --- nb2svc test from a folder holding a directory named nb2svc -------------------------------


def test_nb2svc_test_works_beside_a_folder_named_nb2svc(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "nb2svc"
    if not script.exists():
        pytest.skip("the nb2svc console script is not installed beside this python")
    (tmp_path / "nb2svc").mkdir()  # a namespace package that would shadow the real one
    (tmp_path / "hi.ipynb").write_bytes(HELLO.read_bytes())
    bundle = tmp_path / "bundle"  # several notebooks: its app was named after the package
    built = subprocess.run(
        [str(script), "build", str(HELLO), "hi.ipynb", "-o", str(bundle)], cwd=tmp_path, capture_output=True
    )
    assert built.returncode == 0, built.stderr
    result = subprocess.run(
        [str(script), "test", str(bundle), "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(row["passed"] for row in json.loads(result.stdout))


# --- the swagger cell parser: methods in any case ---------------------------------------------


def test_an_upper_case_method_key_in_the_swagger_document_is_routed() -> None:
    document = {
        "swagger": "2.0",
        "paths": {"/hi": {"GET": {"operationId": "hi"}, "Post": {"operationId": "p"}}},
    }
    nb = notebook(
        md(f"```json\n{json.dumps(document)}\n```"),
        "# operationId: hi\nprint('hi')",
        "# operationId: p\nprint('p')",
    )
    spec = compile_notebook(nb, cell_parser="swagger")
    assert [(ep.method, ep.path, ep.operation_id) for ep in spec.endpoints] == [
        ("GET", "/hi", "hi"),
        ("POST", "/hi", "p"),
    ]


# --- mount prefixes never double up ------------------------------------------------------------


def _spec(*routes: str) -> object:
    return compile_notebook(notebook(*(f"# GET {route}\nprint(1)" for route in routes)))


def test_a_notebook_whose_routes_carry_its_stem_is_served_at_its_own_paths() -> None:
    mount = default_mount("orders", _spec("/orders", "/orders/:id"))
    assert mount.prefix == "/orders"
    assert [mount.full_path(ep) for ep in mount.spec.endpoints] == ["/orders", "/orders/:id"]
    assert [ep.path for ep in mount.spec.endpoints] == ["/", "/:id"]


def test_other_notebooks_keep_the_prefix_in_front() -> None:
    mixed = default_mount("orders", _spec("/orders/:id", "/health"))
    assert {mixed.full_path(ep) for ep in mixed.spec.endpoints} == {"/orders/orders/:id", "/orders/health"}
    todo = default_mount("todo", _spec("/todos", "/todos/:id"))  # a segment, not a string prefix
    assert {todo.full_path(ep) for ep in todo.spec.endpoints} == {"/todo/todos", "/todo/todos/:id"}


def test_examples_follow_their_routes_and_hello_is_served_at_hello(tmp_path: Path) -> None:
    hello = default_mount("hello", compile_notebook(HELLO))
    paths = [example["request"]["path"] for ep in hello.spec.endpoints for example in ep.examples]
    assert paths and all(not path.startswith("/hello") for path in paths)
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "routes", str(HELLO), str(EXAMPLES / "todo.ipynb"), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    routes = {(row["method"], row["path"]) for row in json.loads(result.stdout)}
    assert {("GET", "/hello/:name"), ("POST", "/hello"), ("GET", "/todo/todos")} <= routes


# --- answers: 413's reason, 202's Preference-Applied, the docs without a token, sizes ----------


def test_sizes_are_accepted_with_the_units_help_prints() -> None:
    option = OPTIONS_BY_NAME["max_body_size"]
    assert option.default_text == "10 MiB"
    assert parse_value(option, option.default_text) == 10 * 1024 * 1024
    assert parse_value(option, "10MB") == parse_value(option, "10mib") == 10 * 1024 * 1024
    assert parse_value(option, "512KiB") == 512 * 1024 and parse_value(option, "2048") == 2048
    with pytest.raises(ValueError, match="--max-body-size"):
        parse_value(option, "ten")


def test_answers_carry_what_clients_and_the_docs_page_expect(
    start_server: StartServer, tmp_path: Path
) -> None:
    nb = notebook(
        md("Echoes `the body`."),
        "# POST /echo\nprint(REQUEST)",
        md("Runs ``later``, in the background."),
        "# POST /later\nprint('done')",
        kernel="python3",
    )
    nbformat.write(nb, tmp_path / "svc.ipynb")
    server = start_server(str(tmp_path / "svc.ipynb"), "--pool-size", "1", "--max-body-size", "1KiB")
    too_large = server.request("POST", "/echo", data=b"x" * 2048)
    assert too_large.status_code == 413
    assert set(too_large.json()) == {"error", "message", "reason"} and too_large.json()["reason"]
    accepted = server.request("POST", "/later", headers={"Prefer": "respond-async"})
    assert accepted.status_code == 202 and accepted.headers["Preference-Applied"] == "respond-async"
    plain = server.request("POST", "/echo", data=b"{}")
    assert plain.status_code == 200 and "Preference-Applied" not in plain.headers
    doc = server.get("/openapi.json").json()
    assert "security" not in doc and "securitySchemes" not in doc["components"]  # no token, no padlock
    summaries = [
        op.get("summary", "") for item in doc["paths"].values() for op in item.values() if "summary" in op
    ]
    assert summaries and not any("`" in summary for summary in summaries)


def test_with_a_token_the_docs_offer_authorize(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(str(HELLO), "--pool-size", "1", env={"NB2SVC_TOKEN": "docs-token-1"})
    doc = requests.get(
        server.url("/openapi.json"), headers={"Authorization": "token docs-token-1"}, timeout=30
    )
    assert "token" in doc.json()["components"]["securitySchemes"]


def test_the_readme_tells_a_newcomer_what_they_need() -> None:
    readme = (REPO / "README.md").read_text()
    assert "Python 3.11 or later" in readme and "python3 -m venv" in readme
    assert not any(line.startswith("open http") for line in readme.splitlines())
    assert os.path.exists(REPO / "examples" / "notebooks" / "hello.ipynb")

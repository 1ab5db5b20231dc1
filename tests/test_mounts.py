"""Several notebooks in one service: mounts, one document, one readiness, clashes refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat

from tests.notebooks import notebook
from tests.support import Server, wait_for

StartServer = Callable[..., Server]


def write(folder: Path, name: str, *cells: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(notebook(*cells, kernel="python3", language="python"), path)
    return path


def greeter(folder: Path, name: str) -> Path:
    return write(
        folder,
        name,
        f"import json, os\nWHO = {name!r}",
        "# GET /hello/:name\nprint(WHO + ' greets ' + json.loads(REQUEST)['path']['name'])",
        "# GET /pid\nprint(os.getpid())",
    )


def test_two_notebooks_each_with_its_own_kernels(start_server: StartServer, tmp_path: Path) -> None:
    a, b = greeter(tmp_path, "alpha"), greeter(tmp_path, "beta")
    server = start_server(str(a), str(b), "--pool-size", "1")
    assert server.get("/alpha/hello/x").text == "alpha greets x\n"
    assert server.get("/beta/hello/y").text == "beta greets y\n"
    assert server.get("/alpha/pid").text != server.get("/beta/pid").text  # separate pools
    ready = server.get("/_api/health/ready").json()
    assert ready["ready"] is True and set(ready["notebooks"]) == {"alpha", "beta"}
    doc = server.get("/openapi.json").json()
    assert {"/alpha/hello/{name}", "/beta/hello/{name}", "/alpha/pid", "/beta/pid"} <= set(doc["paths"])
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values() if "operationId" in op]
    assert len(ids) == len(set(ids))
    metrics = server.get("/_api/metrics").text
    assert 'nb2svc_requests_total{notebook="alpha",route="GET /hello/:name",status="200"} 1' in metrics
    assert 'nb2svc_pool_size{notebook="beta"} 1' in metrics
    assert server.get("/hello/x").status_code == 404
    wait_for(lambda: "ready: 2 notebooks, 2 kernels warm" in server.log(), 10, "the ready line")
    log = server.log()
    assert "alpha.ipynb at /alpha: 1 python3 kernels warm" in log and log.count("ready: ") == 1


def test_a_folder_of_notebooks_and_an_explicit_mount(start_server: StartServer, tmp_path: Path) -> None:
    folder = tmp_path / "services"
    greeter(folder, "alpha")
    beta = greeter(folder, "beta")
    server = start_server(str(folder), "--mount", f"/api/v1={beta}", "--pool-size", "1")
    assert server.get("/alpha/hello/x").text == "alpha greets x\n"
    assert server.get("/api/v1/hello/y").text == "beta greets y\n"
    assert server.get("/beta/hello/y").status_code == 404


def test_a_config_file_sizes_each_notebooks_pool(start_server: StartServer, tmp_path: Path) -> None:
    a, b, c = greeter(tmp_path, "alpha"), greeter(tmp_path, "beta"), greeter(tmp_path, "gamma")
    config = tmp_path / "service.toml"
    config.write_text(
        'pool_size = 1\nmax_queue = 5\n[mounts."/alpha"]\npool_size = 2\n[mounts.beta]\nmax_queue = 0\n'
    )
    server = start_server(str(a), str(b), str(c), "--config", str(config))
    notebooks = server.get("/_api/health/ready").json()["notebooks"]
    assert {name: state["size"] for name, state in notebooks.items()} == {"alpha": 2, "beta": 1, "gamma": 1}
    assert notebooks["alpha"]["kernels"] == 2
    assert len({server.get("/alpha/pid").text for _ in range(12)}) <= 2
    assert server.get("/gamma/hello/g").text == "gamma greets g\n"


def test_a_flag_beats_a_mounts_table_and_a_mount_variable(start_server: StartServer, tmp_path: Path) -> None:
    a, b = greeter(tmp_path, "alpha"), greeter(tmp_path, "beta")
    config = tmp_path / "service.toml"
    config.write_text('[mounts."/alpha"]\npool_size = 3\n')
    env = {"NB2SVC_POOL_SIZE__BETA": "3"}
    server = start_server(str(a), str(b), "--config", str(config), "--pool-size", "1", env=env)
    notebooks = server.get("/_api/health/ready").json()["notebooks"]
    assert notebooks["alpha"]["size"] == 1 and notebooks["beta"]["size"] == 1


def test_a_mount_variable_beats_the_global_one_and_the_file(
    start_server: StartServer, tmp_path: Path
) -> None:
    a, b = greeter(tmp_path, "alpha"), greeter(tmp_path, "beta")
    config = tmp_path / "service.toml"
    config.write_text("[mounts.alpha]\npool_size = 3\n[mounts.beta]\npool_size = 3\n")
    env = {"NB2SVC_POOL_SIZE": "1", "NB2SVC_POOL_SIZE__ALPHA": "2"}
    server = start_server(str(a), str(b), "--config", str(config), env=env)
    notebooks = server.get("/_api/health/ready").json()["notebooks"]
    # alpha: its variable; beta: the global variable beats the file's table (a source beats a scope)
    assert notebooks["alpha"]["size"] == 2 and notebooks["beta"]["size"] == 1


def test_a_bundle_bakes_and_takes_per_notebook_pools(start_server: StartServer, tmp_path: Path) -> None:
    a, b = greeter(tmp_path, "alpha"), greeter(tmp_path, "beta")
    config = tmp_path / "service.toml"
    config.write_text('pool_size = 1\nport = 9000\nmax_queue = 4\n[mounts."/alpha"]\npool_size = 2\n')
    bundle = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", str(a), str(b), "--config", str(config), "-o", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    assert "not baked into the bundle (set them as NB2SVC_* where it runs): max_queue" in built.stderr
    dockerfile = (bundle / "Dockerfile").read_text()
    assert "NB2SVC_POOL_SIZE=1 " in dockerfile and "NB2SVC_POOL_SIZE__ALPHA=2 " in dockerfile
    assert "NB2SVC_PORT=9000 " in dockerfile
    baked = {"NB2SVC_POOL_SIZE": "1", "NB2SVC_POOL_SIZE__ALPHA": "2"}  # as the image sets them
    server = start_server(str(bundle), env=baked)
    notebooks = server.get("/_api/health/ready").json()["notebooks"]
    assert notebooks["alpha"]["size"] == 2 and notebooks["beta"]["size"] == 1
    override = start_server(str(bundle), env={**baked, "NB2SVC_POOL_SIZE__BETA": "2"})
    notebooks = override.get("/_api/health/ready").json()["notebooks"]
    assert notebooks["alpha"]["size"] == 2 and notebooks["beta"]["size"] == 2
    flagged = start_server(str(bundle), "--pool-size", "1", env=baked)
    notebooks = flagged.get("/_api/health/ready").json()["notebooks"]
    assert notebooks["alpha"]["size"] == 1 and notebooks["beta"]["size"] == 1
    config.write_text("[mounts.beta]\npool_size = 2\n")  # a table: below any variable, so none here
    tabled = start_server(str(bundle), "--config", str(config), env={"NB2SVC_POOL_SIZE__ALPHA": "2"})
    notebooks = tabled.get("/_api/health/ready").json()["notebooks"]
    assert notebooks["alpha"]["size"] == 2 and notebooks["beta"]["size"] == 2


def test_bad_mounts_tables_are_one_line_usage_errors(tmp_path: Path) -> None:
    a, b = greeter(tmp_path, "alpha"), greeter(tmp_path, "beta")
    config = tmp_path / "service.toml"
    cases = {
        '[mounts."/nope"]\npool_size = 2\n': "[mounts./nope] names no mounted notebook (mounted: /alpha",
        "[mounts.alpha]\nport = 9\n": "not a per-notebook setting 'port'",
        "[mounts.alpha]\npool_size = 0\n": "[mounts.alpha]: --pool-size (NB2SVC_POOL_SIZE): must be at",
        '[mounts.alpha]\npool_size = 2\n[mounts."/alpha"]\npool_size = 3\n': "has two tables",
        "mounts = 3\n": "one table per notebook",
    }
    for text, expected in cases.items():
        config.write_text(text)
        result = serve_fails(str(a), str(b), "--config", str(config))
        assert result.returncode == 2, (text, result.stderr)
        assert expected in result.stderr, (text, result.stderr)
        assert "Traceback" not in result.stderr
    config.write_text("[mounts.alpha]\npool_size = 2\n")
    alone = serve_fails(str(a), "--config", str(config))
    assert alone.returncode == 2 and "for one notebook, set them at the top level" in alone.stderr
    bad = serve_fails(str(a), str(b), env={"NB2SVC_POOL_SIZE__ALPHA": "0"})
    assert bad.returncode == 2 and "NB2SVC_POOL_SIZE__ALPHA: must be at least 1, got 0" in bad.stderr
    assert "Traceback" not in bad.stderr
    typo = serve_fails(str(a), str(b), env={"NB2SVC_MAX_QUEUE__ALPAH": "3"})
    assert typo.returncode == 2, typo.stderr
    assert "NB2SVC_MAX_QUEUE__ALPAH names no mounted notebook (mounted: ALPHA (/alpha), BETA" in typo.stderr


def serve_fails(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", *args, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_routes_that_clash_across_mounts_are_compile_errors(tmp_path: Path) -> None:
    outer = write(tmp_path, "x", "# GET /y/z\nprint(1)")
    inner = write(tmp_path / "more", "inner", "# GET /z\nprint(2)")
    result = serve_fails(str(outer), "--mount", f"/x/y={inner}")
    assert result.returncode == 2
    assert "GET /x/y/z is also GET /x/y/z of x.ipynb (cell 1)" in result.stderr
    assert "Traceback" not in result.stderr


def test_two_notebooks_of_the_same_name_need_a_mount(tmp_path: Path) -> None:
    one, two = greeter(tmp_path / "one", "same"), greeter(tmp_path / "two", "same")
    result = serve_fails(str(one), str(two))
    assert result.returncode == 2 and "mounted at /same like same.ipynb" in result.stderr


def test_a_notebook_named_alone_and_in_its_folder_is_mounted_once(tmp_path: Path) -> None:
    a, b = greeter(tmp_path, "alpha"), greeter(tmp_path, "beta")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nb2svc",
            "routes",
            str(tmp_path),
            str(b),
            str(a.parent / "." / a.name),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rows = __import__("json").loads(result.stdout)
    assert [row["notebook"] for row in rows] == ["alpha.ipynb"] * 2 + ["beta.ipynb"] * 2


def test_routes_lists_every_mount(tmp_path: Path) -> None:
    a, b = greeter(tmp_path, "alpha"), greeter(tmp_path, "beta")
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "routes", str(a), str(b), "--json"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    paths = {(row["notebook"], row["path"]) for row in __import__("json").loads(result.stdout)}
    assert ("alpha.ipynb", "/alpha/hello/:name") in paths and ("beta.ipynb", "/beta/pid") in paths


def test_nb2svc_test_runs_every_notebooks_examples_mounted(tmp_path: Path) -> None:
    from tests.support import EXAMPLES

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nb2svc",
            "test",
            str(EXAMPLES / "hello.ipynb"),
            str(EXAMPLES / "todo.ipynb"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERNEL_TODO_DB": str(tmp_path / "todo.db")},  # not the examples folder's
    )
    assert result.returncode == 0, result.stderr
    rows = __import__("json").loads(result.stdout)
    assert all(row["passed"] for row in rows)
    assert {"GET /hello/world", "DELETE /todo/todos/3"} <= {row["request"] for row in rows}

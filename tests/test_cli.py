"""The command line: exit codes, error messages, routes, build output, and the docs it promises."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from nb2svc.config import OPTIONS
from tests.notebooks import notebook
from tests.support import EXAMPLES, REPO, Server


def nb2svc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=120
    )


def write(tmp_path: Path, *cells: str, name: str = "nb.ipynb") -> Path:
    path = tmp_path / name
    nbformat.write(notebook(*cells, kernel="python3", language="python"), path)
    return path


def test_version_and_help() -> None:
    assert nb2svc("--version").stdout.strip().startswith("nb2svc, version")
    for command in ("build", "serve", "routes"):
        result = nb2svc(command, "-h")
        assert result.returncode == 0
        assert "Usage:" in result.stdout


def test_serve_help_lists_every_api_option_with_env_and_default() -> None:
    text = nb2svc("serve", "--help").stdout
    for option in OPTIONS:
        if "api" in option.modes:
            assert option.flag in text
            assert option.env in text


def test_readme_documents_every_option() -> None:
    readme = (REPO / "README.md").read_text()
    for option in OPTIONS:
        assert option.flag in readme, f"{option.flag} is missing from README.md"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    command = 'pip install -e ".[test]" && python -m pytest -q -n 3 --dist loadfile'
    assert command in readme
    assert 'pip install -q -e ".[test]" && python -m pytest -q -n 3 --dist loadfile' in ci


def test_routes_table_and_json() -> None:
    table = nb2svc("routes", str(EXAMPLES / "todo.ipynb"))
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["METHOD", "PATH", "CELLS", "RESPONSEINFO"]
    paths = [line.split()[1] for line in lines[1:]]
    assert paths == ["/stats", "/todos", "/todos", "/todos/:id", "/todos/:id", "/todos/:id"]
    rows = json.loads(nb2svc("routes", "--json", str(EXAMPLES / "hello.ipynb")).stdout)
    assert {"method": "GET", "path": "/hello/:name", "cells": [4], "response_info": []} in rows


def test_compile_error_exits_2_with_cell_number_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "x = 1", "# GET hello\nprint(1)", name="bad.ipynb")
    result = nb2svc("build", str(path), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "bad.ipynb, cell 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_duplicate_route_is_a_compile_error(tmp_path: Path) -> None:
    path = write(tmp_path, "# GET /items/:id\nprint(1)", "# GET /items/:key\nprint(2)", name="dup.ipynb")
    result = nb2svc("serve", str(path))
    assert result.returncode == 2
    assert "cell 2" in result.stderr and "cell 1" in result.stderr


def test_not_a_notebook_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.ipynb"
    path.write_text("this is not json")
    result = nb2svc("build", str(path))
    assert result.returncode == 2
    assert "junk.ipynb" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_rejects_a_directory_that_is_not_a_bundle(tmp_path: Path) -> None:
    result = nb2svc("serve", str(tmp_path))
    assert result.returncode == 2
    assert "not a bundle" in result.stderr


def test_bad_option_value_from_environment_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(EXAMPLES / "hello.ipynb")],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NB2SVC_POOL_SIZE": "lots"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "NB2SVC_POOL_SIZE" in result.stderr


def test_build_is_deterministic_and_complete(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        result = nb2svc("build", str(EXAMPLES / "todo.ipynb"), "-o", str(out))
        assert result.returncode == 0, result.stderr
    assert "built" in result.stdout
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    for name in (
        "app.py",
        "service.json",
        "openapi.json",
        "notebook.ipynb",
        "requirements.txt",
        "gunicorn.conf.py",
        "Dockerfile",
        ".dockerignore",
    ):
        assert Path(name) in files
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    app = (first / "app.py").read_text()
    assert app.count("@app.route(") == 6
    compile(app, "app.py", "exec")
    assert (first / "notebook.ipynb").read_bytes() == (EXAMPLES / "todo.ipynb").read_bytes()


def test_build_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = nb2svc("build", str(EXAMPLES / "hello.ipynb"), "-o", str(out))
    assert result.returncode == 1
    assert "--force" in result.stderr
    assert (out / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_installed_wheel_ships_templates_and_renders_a_bundle(tmp_path: Path) -> None:
    """A non-editable install must carry templates/ as package data."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("nb2svc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    templates = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "templates").rglob("*.j2"))
    assert templates
    assert sorted(n for n in names if n.endswith(".j2")) == sorted("nb2svc/" + t for t in templates)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    script = (
        "import nb2svc.build as b, sys; assert b.__file__.startswith(sys.argv[1]), b.__file__; "
        "from nb2svc.compiler import compile_notebook; from pathlib import Path; "
        "spec = compile_notebook(sys.argv[2]); b.write_bundle(spec, Path(sys.argv[2]), Path(sys.argv[3]))"
    )
    out = tmp_path / "bundle"
    subprocess.run(
        [sys.executable, "-c", script, str(target), str(EXAMPLES / "hello.ipynb"), str(out)],
        check=True,
        timeout=120,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert "def get_hello_name" in (out / "app.py").read_text()


def test_config_file_precedence(tmp_path: Path) -> None:
    from nb2svc.config import load_config_file, settings_from_env

    toml = tmp_path / "nb2svc.toml"
    toml.write_text('pool-size = 3\nrequest_timeout = 5\ntoken = "from-file"\n')
    values = load_config_file(toml)
    assert values == {"pool_size": 3, "request_timeout": 5.0, "token": "from-file"}
    settings = settings_from_env({}, values)
    assert (settings.pool_size, settings.request_timeout, settings.port) == (3, 5.0, 8888)
    env = {"NB2SVC_POOL_SIZE": "4", "KG_AUTH_TOKEN": "from-kg"}
    settings = settings_from_env(env, values, pool_size=5)
    assert (settings.pool_size, settings.token, settings.request_timeout) == (5, "from-kg", 5.0)
    nested = tmp_path / "nb2svc.json"
    nested.write_text('{"nb2svc": {"workers": 2}}')
    assert load_config_file(nested) == {"workers": 2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pool_sise = 3\n", "unknown setting 'pool_sise'"),
        ("workers = 'many'\n", "expected int"),
        ("pool_size = 'many'\n", "--pool-size (NB2SVC_POOL_SIZE): must be N or MIN..MAX"),
        ("pool_size = '4..2'\n", "MIN must not be above MAX"),
        ("x = [", "TOML"),
    ],
)
def test_bad_config_file_is_a_usage_error(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = nb2svc("serve", str(EXAMPLES / "hello.ipynb"), "--config", str(config))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reads_the_config_file(start_server: Callable[..., Server], tmp_path: Path) -> None:
    config = tmp_path / "nb2svc.toml"
    config.write_text("[nb2svc]\npool_size = 1\n")
    server = start_server(str(EXAMPLES / "hello.ipynb"), "--config", str(config))
    assert server.get("/_api/health/ready").json()["size"] == 1
    assert server.get("/hello/config").text == "hello, config\n"

